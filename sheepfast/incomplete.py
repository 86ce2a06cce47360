"""Partial uploads: a mark on the VDI while it is written, and the way to
find and reclaim the VDIs whose writer died.

A VDI an upload is filling looks exactly like a finished image (its size is
declared up front, its objects are there). So while an upload runs, the VDI
carries one Sheepdog attribute, :data:`MARK_KEY`, whose value (JSON) says
when the upload started, when its writer last showed signs of life, and who
the writer is (host, pid). The upload refreshes that heartbeat every
:data:`HEARTBEAT_INTERVAL` seconds from a thread of its own (a slow source
that leaves the writer idle for minutes still keeps it fresh) and removes
the mark once every byte is stored. A worker killed mid-upload leaves the
mark behind with a heartbeat that no longer moves.

:func:`find_incomplete` lists the VDIs carrying a mark whose heartbeat is
older than a given age; :func:`reclaim_incomplete` deletes them. Neither
ever touches a VDI without a mark (a complete image), one whose heartbeat is
fresh, or one whose writer is a live process on this host.

sheep keeps attributes by VDI *name*: they survive a delete of the VDI, and a
new VDI of the same name sees them again. A mark therefore also records the
vid and creation time of the VDI it was made for, and a mark that does not
match the VDI now carrying the name is a leftover that is ignored.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

from sheepfast import errors

__all__ = [
    "HEARTBEAT_INTERVAL",
    "MARK_KEY",
    "MIN_STALE_AGE",
    "Incomplete",
    "Mark",
    "ReclaimReport",
    "UploadMark",
    "find_incomplete",
    "parse_age",
    "reclaim_incomplete",
]

LOG = logging.getLogger(__name__)

#: The attribute that marks a VDI as being written (or left half-written).
MARK_KEY = "sheepfast.incomplete"
#: Seconds between two heartbeats of a running upload.
HEARTBEAT_INTERVAL = 30.0
#: The youngest heartbeat age find/reclaim accept: a live writer on another
#: host may be a whole interval (plus a slow attribute write) behind.
MIN_STALE_AGE = 2 * HEARTBEAT_INTERVAL
_MARK_FORMAT = 1


def _this_host() -> str:
    return socket.gethostname()


def _process_start(pid: int) -> Optional[int]:
    """When process pid started (clock ticks since boot, /proc/PID/stat
    field 22), so a pid the kernel reused is not taken for the writer;
    None where /proc does not say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold anything
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Mark:
    """What the mark of an upload says."""

    started: float  #: unix time the upload started
    heartbeat: float  #: unix time the writer last refreshed the mark
    host: str  #: the writer's host name
    pid: int  #: the writer's process id
    pid_start: Optional[int]  #: the writer's start time (/proc), None if unknown
    vid: int  #: the VDI the mark was made for ...
    vdi_ctime: int  #: ... and its creation time in whole seconds

    def encode(self) -> bytes:
        return json.dumps(
            {
                "format": _MARK_FORMAT,
                "started": round(self.started, 3),
                "heartbeat": round(self.heartbeat, 3),
                "host": self.host,
                "pid": self.pid,
                "pid_start": self.pid_start,
                "vid": self.vid,
                "vdi_ctime": self.vdi_ctime,
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Mark:
        """The mark in raw; ValueError naming what is wrong if it is not one."""
        try:
            d = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise ValueError(f"{MARK_KEY} is not JSON: {raw[:80]!r}") from None
        if not isinstance(d, dict) or d.get("format") != _MARK_FORMAT:
            raise ValueError(f"{MARK_KEY} has an unknown format: {raw[:80]!r}")
        try:
            mark = cls(
                float(d["started"]),
                float(d["heartbeat"]),
                str(d["host"]),
                int(d["pid"]),
                None if d["pid_start"] is None else int(d["pid_start"]),
                int(d["vid"]),
                int(d["vdi_ctime"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{MARK_KEY} lacks or garbles {exc}: {raw[:80]!r}") from None
        if mark.pid <= 0:  # 0 and below would name process groups to os.kill
            raise ValueError(f"{MARK_KEY} has pid {mark.pid}: {raw[:80]!r}")
        return mark

    def belongs_to(self, vid: int, create_time: float) -> bool:
        """Made for the VDI with this vid and creation time, not for an
        earlier one of the same name."""
        return self.vid == vid and self.vdi_ctime == int(create_time)

    def writer_alive(self) -> bool:
        """The writer is a running process on this host."""
        if self.host != _this_host():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, owned by someone else
        start = _process_start(self.pid)
        return self.pid_start is None or start is None or start == self.pid_start


class UploadMark:
    """The mark of one upload into an open VDI handle (a BackendImage).

    start() sets it and starts the heartbeat thread; clear() stops the
    thread and removes the mark (the upload succeeded); stop() only stops the
    thread, leaving the mark for a failed upload whose VDI may outlive it.
    """

    def __init__(
        self,
        handle: Any,
        *,
        interval: Optional[float] = None,
        clock: Callable[[], float] = time.time,
    ):
        self._handle = handle
        self._interval = HEARTBEAT_INTERVAL if interval is None else interval
        self._clock = clock
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()  # one attribute write at a time
        info = handle.info
        now = clock()
        pid = os.getpid()
        self.mark = Mark(
            now, now, _this_host(), pid, _process_start(pid), info.vid, int(info.create_time)
        )

    def start(self) -> None:
        """Sets the mark; raises whatever setting it raised (the upload must
        not begin unmarked)."""
        self._handle.metadata_set(MARK_KEY, self.mark.encode())
        self._thread = threading.Thread(
            target=self._beat_until_stopped, daemon=True, name="sheepfast-heartbeat"
        )
        self._thread.start()

    def beat(self) -> None:
        """Refreshes the heartbeat now."""
        with self._lock:
            if self._stopping.is_set():
                return  # the mark is being removed, or left as it is
            mark = Mark(
                self.mark.started,
                self._clock(),
                self.mark.host,
                self.mark.pid,
                self.mark.pid_start,
                self.mark.vid,
                self.mark.vdi_ctime,
            )
            self._handle.metadata_set(MARK_KEY, mark.encode())
            self.mark = mark

    def _beat_until_stopped(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self.beat()
            except Exception:  # the next beat tries again; the upload goes on
                LOG.warning(
                    "could not refresh the upload mark of VDI %s",
                    self._handle.info.name,
                    exc_info=True,
                )

    def stop(self) -> None:
        """Stops the heartbeat (a beat under way finishes first)."""
        with self._lock:
            self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def clear(self) -> None:
        """Stops the heartbeat and removes the mark: the image is complete."""
        self.stop()
        self._handle.metadata_remove(MARK_KEY)


# ----------------------------------------------------------- find and reclaim


@dataclass(frozen=True)
class Incomplete:
    """A VDI left half-written: its mark and how old its heartbeat is."""

    name: str
    vid: int
    size: int
    mark: Mark
    age: float  #: seconds since the heartbeat


@dataclass
class ReclaimReport:
    deleted: List[Incomplete]
    failed: List[Tuple[Incomplete, Exception]]


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """Seconds in '90s', '15m', '1h', '2d' or '3600'; InvalidArgument otherwise."""
    m = _AGE.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if m is None:
        raise errors.InvalidArgument(f"bad age {text!r} (want e.g. 90s, 15m, 1h or 2d)")
    return float(m.group(1)) * _AGE_UNITS[m.group(2)]


def _check_age(older_than: float) -> float:
    if isinstance(older_than, bool) or not isinstance(older_than, (int, float)):
        raise errors.InvalidArgument(f"older_than must be seconds (got {older_than!r})")
    if not older_than >= MIN_STALE_AGE:
        raise errors.InvalidArgument(
            f"older_than must be at least {MIN_STALE_AGE:g} s (got {older_than:g}): a live "
            f"upload refreshes its heartbeat only every {HEARTBEAT_INTERVAL:g} s"
        )
    return float(older_than)


def _open(cluster: Any, name: str, listed: Any = None) -> Any:
    """A handle on VDI name; a backend that can skip the lookup for a VDI
    it just listed (the dog backend: another `dog vdi list`) is let to."""
    open_listed = getattr(cluster, "open_listed", None)
    if listed is not None and open_listed is not None:
        return open_listed(listed)
    return cluster.open(name)


def _stale(
    cluster: Any,
    name: str,
    vid: int,
    size: int,
    create_time: float,
    older_than: float,
    now: float,
    listed: Any = None,
) -> Optional[Incomplete]:
    """VDI name (vid, created at create_time) if it carries a mark of its own
    whose heartbeat is older than older_than and whose writer is not alive
    here; else None."""
    try:
        with _open(cluster, name, listed) as handle:
            if handle.info.vid != vid:
                return None  # replaced since it was listed
            raw = handle.metadata_get(MARK_KEY)
    except (errors.AttributeNotFound, errors.VdiNotFound):
        return None  # complete, or gone
    try:
        mark = Mark.decode(raw)
    except ValueError as exc:
        LOG.warning("VDI %s: %s; left alone", name, exc)
        return None
    if not mark.belongs_to(vid, create_time):
        return None  # left by an earlier VDI of this name
    age = now - mark.heartbeat
    if age < older_than or mark.writer_alive():
        return None
    return Incomplete(name, vid, size, mark, age)


def find_incomplete(
    cluster: Any, older_than: float, *, now: Optional[float] = None
) -> List[Incomplete]:
    """The VDIs whose upload mark has a heartbeat older than older_than
    seconds (at least MIN_STALE_AGE) and whose writer is not a live process
    on this host, by name.

    cluster: a sheepfast.Cluster or a backend (anything with list() and
    open()). now: the unix time to measure ages against (default: now).
    One attribute read per VDI in the cluster.
    """
    older_than = _check_age(older_than)
    now = time.time() if now is None else now
    found = []
    for info in cluster.list():
        if info.snapshot:
            continue  # uploads write working VDIs only
        entry = _stale(
            cluster, info.name, info.vid, info.size, info.create_time, older_than, now, listed=info
        )
        if entry is not None:
            found.append(entry)
    return found


def reclaim_incomplete(
    cluster: Any,
    older_than: float,
    *,
    dry_run: bool = False,
    now: Optional[float] = None,
    on_result: Optional[Callable[[Incomplete, Optional[Exception]], None]] = None,
) -> ReclaimReport:
    """Deletes what find_incomplete finds (nothing with dry_run). Each VDI is
    checked again just before it is deleted; one that cannot be deleted is
    reported in .failed and the others still go. on_result(entry, error) is
    called after each (error None: deleted, or would be with dry_run)."""
    older_than = _check_age(older_than)
    now = time.time() if now is None else now
    report = ReclaimReport([], [])
    for entry in find_incomplete(cluster, older_than, now=now):
        error: Optional[Exception] = None
        if not dry_run:
            try:
                again = _stale(
                    cluster,
                    entry.name,
                    entry.vid,
                    entry.size,
                    entry.mark.vdi_ctime,
                    older_than,
                    now,
                )
                if again is None or again.mark.heartbeat != entry.mark.heartbeat:
                    continue  # completed, resumed or replaced meanwhile
                cluster.delete(entry.name)
            except errors.VdiNotFound:
                continue  # someone else deleted it
            except errors.SheepfastError as exc:
                error = exc
        if error is None:
            report.deleted.append(entry)
        else:
            report.failed.append((entry, error))
        if on_result is not None:
            on_result(entry, error)
    return report
