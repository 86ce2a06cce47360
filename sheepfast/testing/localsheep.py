"""A throwaway Sheepdog cluster from the ``sheep`` and ``dog`` on PATH.

Used by the test suite when ``SHEEPFAST_TEST_SHEEP=1``: it starts N sheep
with the ``local`` cluster driver on free loopback ports, each with its own
zone and store directory under a temporary directory, formats the cluster
and tears everything down afterwards. Sheepdog itself is not part of this
project; this only runs binaries that are already installed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Callable, Iterable

__all__ = ["LocalSheep", "LocalSheepError", "ObjectMismatch", "VdiComparison", "available"]


class LocalSheepError(RuntimeError):
    pass


class SheepExited(LocalSheepError):
    """A sheep process died while the cluster was starting."""


def available() -> bool:
    """True when both sheep and dog can be run."""
    return shutil.which("sheep") is not None and shutil.which("dog") is not None


def _read_full(stream: IO[bytes], n: int) -> bytes:
    """Up to n bytes from a pipe: fewer only at its end."""
    parts: list[bytes] = []
    left = n
    while left:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


#: The unit in which ObjectMismatch reports wrong ranges (sheep's block size).
MISMATCH_GRAIN = 4096


@dataclass
class ObjectMismatch:
    """One object that did not read back as expected."""

    index: int
    length: int
    right_prefix: int  # bytes equal to the expected ones from its start
    rest_zero: bool  # everything after that prefix reads as zeros
    expected_zero: bool  # the expected object is all zeros
    # (start, end, "zeros" or "other") of each wrong run, in MISMATCH_GRAIN blocks
    wrong: list[tuple[int, int, str]] = field(default_factory=list)

    @classmethod
    def of(cls, index: int, want: bytes, got: bytes) -> ObjectMismatch:
        n = min(len(want), len(got))
        lo, hi = 0, n  # binary search over equal prefixes, in bytes
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if want[:mid] == got[:mid]:
                lo = mid
            else:
                hi = mid - 1
        wrong: list[tuple[int, int, str]] = []
        for start in range(0, max(len(want), len(got)), MISMATCH_GRAIN):
            a = want[start : start + MISMATCH_GRAIN]
            b = got[start : start + MISMATCH_GRAIN]
            if a == b:
                continue
            kind = "zeros" if b.count(0) == len(b) else "other"
            end = start + max(len(a), len(b))
            if wrong and wrong[-1][1] == start and wrong[-1][2] == kind:
                wrong[-1] = (wrong[-1][0], end, kind)
            else:
                wrong.append((start, end, kind))
        return cls(
            index=index,
            length=len(got),
            right_prefix=lo,
            rest_zero=got[lo:].count(0) == len(got) - lo,
            expected_zero=want.count(0) == len(want),
            wrong=wrong,
        )

    def __str__(self) -> str:
        what = "then zeros" if self.rest_zero else "then other bytes"
        if self.expected_zero:
            what += " (expected all zeros)"
        runs = ", ".join(f"{a // 1024}-{b // 1024} KiB {kind}" for a, b, kind in self.wrong[:6])
        return (
            f"object {self.index}: {self.right_prefix} of {self.length} bytes right "
            f"({self.right_prefix / 1024:.0f} KiB), {what}; wrong: {runs}"
        )


@dataclass
class VdiComparison:
    """What ``dog vdi read`` of a VDI gave, against the expected bytes."""

    name: str
    via: int
    size: int
    read: int = 0
    returncode: int | None = None
    timed_out: bool = False
    stderr: str = ""
    sha256: str = ""
    expected_sha256: str = ""
    bad_objects: list[ObjectMismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.returncode == 0
            and not self.timed_out
            and self.read == self.size
            and self.sha256 == self.expected_sha256
        )

    def __str__(self) -> str:
        if self.ok:
            return f"{self.name} via sheep {self.via}: all {self.size} bytes right"
        parts = [
            f"{self.name} via sheep {self.via}: read {self.read} of {self.size} bytes, "
            f"dog exit {self.returncode}"
        ]
        if self.timed_out:
            parts.append("timed out")
        if self.stderr:
            parts.append(f"stderr {self.stderr!r}")
        parts.append(f"{len(self.bad_objects)} wrong objects")
        parts.extend(str(m) for m in self.bad_objects[:8])
        return "; ".join(parts)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalSheep:
    """``nodes`` sheep on 127.0.0.1, formatted with ``copies`` copies."""

    host = "127.0.0.1"

    def __init__(
        self,
        nodes: int = 3,
        copies: int = 2,
        *,
        start_timeout: float = 30.0,
        log_level: str | None = None,
    ):
        if not available():
            raise LocalSheepError("sheep and dog must be on PATH")
        self.nodes = nodes
        self.copies = copies
        self.start_timeout = start_timeout
        self.log_level = log_level  # sheep's own names: "debug", "info", ...
        self.ports: list[int] = []
        self.base_dir = ""
        self._procs: list[subprocess.Popen[bytes] | None] = []
        self._paused: set[int] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.ports[0]}"

    @property
    def addresses(self) -> list[str]:
        return [f"{self.host}:{p}" for p in self.ports]

    def dog(
        self, *args: str, node: int = 0, input: bytes | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[bytes]:
        """Runs dog against one node; raises with dog's stderr on failure."""
        cmd = ["dog", *args, "-a", self.host, "-p", str(self.ports[node])]
        done = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
        if done.returncode != 0:
            raise LocalSheepError(
                f"{' '.join(cmd)}: {done.stderr.decode(errors='replace').strip()}"
            )
        return done

    def _spawn(self, i: int) -> None:
        node_dir = os.path.join(self.base_dir, str(i))
        os.makedirs(node_dir, exist_ok=True)
        cmd = [
            "sheep",
            "-f",  # foreground: we are its parent and reap it
            "-n",  # no O_SYNC: a throwaway cluster
            "-b",
            self.host,
            "-y",
            self.host,
            "-p",
            str(self.ports[i]),
            "-z",
            str(i),  # one zone per node, or copies can't spread
            *(["-l", f"level={self.log_level}"] if self.log_level else []),
            "-c",
            "local:" + os.path.join(self.base_dir, "shm"),  # own driver file
            node_dir,
        ]
        log = open(os.path.join(node_dir, "stdout.log"), "ab")
        with log:
            self._procs[i] = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        while True:
            try:
                if ready():
                    return
            except SheepExited:
                raise
            except (LocalSheepError, subprocess.TimeoutExpired):
                pass  # dog could not answer yet
            if time.monotonic() > deadline:
                raise LocalSheepError(f"timed out waiting for {what} (logs in {self.base_dir})")
            time.sleep(0.1)

    def _listening(self, i: int) -> bool:
        proc = self._procs[i]
        if proc is not None and proc.poll() is not None:
            raise SheepExited(f"sheep {i} exited with status {proc.returncode}")
        try:
            socket.create_connection((self.host, self.ports[i]), timeout=1).close()
        except OSError:
            return False
        return True

    def _nodes_listed(self) -> int:
        out = self.dog("node", "list", "-r").stdout.decode()
        return sum(1 for line in out.splitlines() if line.strip())

    def start(self) -> LocalSheep:
        self.base_dir = tempfile.mkdtemp(prefix="sheepfast-localsheep-")
        self.ports = [_free_port() for _ in range(self.nodes)]
        self._procs = [None] * self.nodes
        try:
            for i in range(self.nodes):
                # One at a time: sheep purges a fixed lock directory at start,
                # and two starting at once race on it and one gives up.
                self._spawn(i)
                self._wait(f"node {i} to listen", functools.partial(self._listening, i))
            self._wait("all nodes to join", lambda: self._nodes_listed() == self.nodes)
            self.dog("cluster", "format", "-c", str(self.copies))
            self._wait(
                "the cluster to run",
                lambda: b"running" in self.dog("cluster", "info").stdout.splitlines()[0],
            )
        except LocalSheepError as exc:
            logs = self._log_tails()
            self.stop()
            raise LocalSheepError(f"{exc}\n{logs}") from None
        except BaseException:
            self.stop()
            raise
        return self

    def _log_tails(self, lines: int = 8) -> str:
        """The end of every node's logs, for an error message."""
        out = []
        for i in range(self.nodes):
            for log in ("sheep.log", "stdout.log"):
                path = os.path.join(self.base_dir, str(i), log)
                try:
                    with open(path, errors="replace") as f:
                        tail = f.readlines()[-lines:]
                except OSError:
                    continue
                out.append(f"--- node {i} {log}\n" + "".join(tail))
        return "\n".join(out)

    def stop_node(self, i: int, *, hard: bool = True) -> None:
        """Stops one sheep (SIGKILL by default), for fail-over tests."""
        proc = self._procs[i]
        if proc is None:
            return
        proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        if i in self._paused and not hard:
            proc.send_signal(signal.SIGCONT)  # a stopped process never sees SIGTERM
        proc.wait(timeout=30)
        self._procs[i] = None
        self._paused.discard(i)

    def start_node(self, i: int) -> None:
        """Restarts a stopped sheep; it rejoins with its data (wait for it
        with wait_for_nodes)."""
        if self._procs[i] is None:
            self._spawn(i)

    def pause_node(self, i: int) -> None:
        """Freezes one sheep with SIGSTOP: its sockets stay open and its
        process stays alive, so the cluster does not see it leave; whoever
        talks to it just gets no answer."""
        proc = self._procs[i]
        if proc is None:
            raise LocalSheepError(f"sheep {i} is not running")
        proc.send_signal(signal.SIGSTOP)
        self._paused.add(i)

    def resume_node(self, i: int) -> None:
        """Lets a paused sheep run again (SIGCONT)."""
        proc = self._procs[i]
        if proc is None:
            raise LocalSheepError(f"sheep {i} is not running")
        proc.send_signal(signal.SIGCONT)
        self._paused.discard(i)

    def running(self, i: int) -> bool:
        """True when sheep i is started and not paused."""
        return self._procs[i] is not None and i not in self._paused

    def pid(self, i: int) -> int | None:
        proc = self._procs[i]
        return None if proc is None else proc.pid

    # ------------------------------------------------ what the cluster says

    def epoch(self, node: int = 0) -> int:
        """The newest epoch node knows of (``dog cluster info``)."""
        out = self.dog("cluster", "info", "-r", node=node).stdout.decode()
        epochs = []
        for line in out.splitlines()[1:]:
            fields = line.split()
            # "<creation time> <epoch> [host:port:vnodes, ...]"
            if len(fields) >= 3 and fields[0].isdigit() and fields[1].isdigit():
                epochs.append(int(fields[1]))
        if not epochs:
            raise LocalSheepError(f"no epoch in dog cluster info from node {node}: {out!r}")
        return max(epochs)

    def members(self, node: int = 0) -> list[int]:
        """Which of our sheep node's node list names (``dog node list``)."""
        out = self.dog("node", "list", "-r", node=node).stdout.decode()
        listed = set()
        for line in out.splitlines():
            fields = line.split()  # "<id> host:port <vnodes> <zone>"
            if len(fields) >= 2:
                listed.add(fields[1])
        by_address = {a: i for i, a in enumerate(self.addresses)}
        unknown = listed - by_address.keys()
        if unknown:
            raise LocalSheepError(f"node {node} lists sheep that are not ours: {sorted(unknown)}")
        return sorted(by_address[a] for a in listed)

    def wait_for_nodes(
        self, expected: Iterable[int], *, via: int | None = None, timeout: float | None = None
    ) -> int:
        """Waits until the running sheep (or ``via``) list exactly the sheep
        in ``expected`` and agree on one epoch: the cluster has noticed a
        node leave or join. Returns that epoch."""
        expected = sorted(expected)
        askers = [via] if via is not None else [i for i in expected if self.running(i)]
        found: dict[int, tuple[list[int], int]] = {}

        def settled() -> bool:
            found.clear()
            for i in askers:
                found[i] = (self.members(i), self.epoch(i))
            return (
                all(m == expected for m, _ in found.values())
                and len({e for _, e in found.values()}) == 1
            )

        self._wait(f"the cluster to list nodes {expected} (last seen {found})", settled, timeout)
        return next(iter(found.values()))[1]

    def recovery_progress(self, node: int = 0) -> dict[int, tuple[int, int]]:
        """Sheep -> (objects recovered, objects to recover) for every sheep
        that reports recovery under way (``dog node recovery``)."""
        out = self.dog("node", "recovery", "-r", node=node).stdout.decode()
        by_address = {a: i for i, a in enumerate(self.addresses)}
        busy: dict[int, tuple[int, int]] = {}
        for line in out.splitlines():
            fields = line.split()  # "<id> host:port <vnodes> <zone> <done> <total>"
            if len(fields) >= 6:
                busy[by_address.get(fields[1], -1)] = (int(fields[4]), int(fields[5]))
        return busy

    def recovering(self, node: int = 0) -> list[int]:
        """Which sheep report recovery under way."""
        return sorted(self.recovery_progress(node))

    def wait_for_recovery(self, *, via: int = 0, timeout: float | None = None) -> None:
        """Waits until no sheep in the cluster is recovering objects."""
        seen: dict[int, tuple[int, int]] = {}

        def done() -> bool:
            seen.clear()
            seen.update(self.recovery_progress(via))
            return not seen

        try:
            self._wait("recovery to finish", done, timeout)
        except LocalSheepError as exc:
            raise LocalSheepError(
                f"{exc}; still recovering (sheep: (done, total)): {seen}\n{self._log_tails(12)}"
            ) from None

    def restart_cluster(self) -> None:
        """Throws the whole cluster away and starts a fresh one (new ports,
        new directories): for going on after a cluster that no longer heals."""
        self.stop()
        self.start()

    def vdi_names(self, node: int = 0) -> set[str]:
        """The names of the working (not snapshot) VDIs, as dog vdi list gives them."""
        out = self.dog("vdi", "list", "-r", node=node).stdout.decode()
        names = set()
        for line in out.splitlines():
            # "= name id size ..." with spaces and backslashes in the name escaped
            if not line.startswith("= "):
                continue
            name, escaped = [], False
            for ch in line[2:]:
                if escaped:
                    name.append(ch)
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == " ":
                    break
                else:
                    name.append(ch)
            names.add("".join(name))
        return names

    def compare_vdi(
        self,
        name: str,
        expected: bytes | bytearray | memoryview,
        *,
        via: int,
        object_size: int,
        timeout: float = 120.0,
    ) -> VdiComparison:
        """Reads VDI ``name`` with ``dog vdi read`` through sheep ``via`` and
        compares it, object by object, with ``expected`` (bytes-like)."""
        expected = memoryview(expected)
        cmd = ["dog", "vdi", "read", name, "-a", self.host, "-p", str(self.ports[via])]
        result = VdiComparison(name=name, via=via, size=len(expected))
        whole = hashlib.sha256()
        timed_out = threading.Event()
        with subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as proc:
            assert proc.stdout is not None and proc.stderr is not None  # both PIPEs

            def give_up() -> None:
                timed_out.set()
                proc.kill()

            timer = threading.Timer(timeout, give_up)
            timer.start()
            try:
                index = 0
                while True:
                    got = _read_full(proc.stdout, object_size)
                    if not got:
                        break
                    whole.update(got)
                    start = index * object_size
                    want = expected[start : start + len(got)]
                    if got != want:
                        result.bad_objects.append(ObjectMismatch.of(index, bytes(want), got))
                    result.read += len(got)
                    index += 1
                result.stderr = proc.stderr.read().decode(errors="replace").strip()
                proc.wait()
            finally:
                timer.cancel()
        result.returncode = proc.returncode
        result.timed_out = timed_out.is_set()
        result.sha256 = whole.hexdigest()
        result.expected_sha256 = hashlib.sha256(expected).hexdigest()
        return result

    def object_files(self, oid: int) -> dict[int, bytes]:
        """Node -> the bytes of object ``oid`` in that sheep's store
        directory (plain store: one file per object), for diagnosis."""
        found: dict[int, bytes] = {}
        for i in range(self.nodes):
            path = os.path.join(self.base_dir, str(i), "obj", f"{oid:016x}")
            try:
                with open(path, "rb") as f:
                    found[i] = f.read()
            except FileNotFoundError:
                continue
        return found

    def log_path(self, i: int) -> str:
        return os.path.join(self.base_dir, str(i), "sheep.log")

    def log_marks(self) -> list[int]:
        """Where every sheep's log ends now (for log_since)."""
        marks = []
        for i in range(self.nodes):
            try:
                marks.append(os.path.getsize(self.log_path(i)))
            except OSError:
                marks.append(0)
        return marks

    def log_since(self, marks: list[int]) -> dict[int, list[str]]:
        """Node -> the log lines each sheep wrote after ``marks``."""
        out: dict[int, list[str]] = {}
        for i, mark in enumerate(marks):
            try:
                with open(self.log_path(i), "rb") as f:
                    f.seek(mark)
                    out[i] = f.read().decode(errors="replace").splitlines()
            except OSError:
                out[i] = []
        return out

    def stop(self) -> None:
        for i in sorted(self._paused):
            proc = self._procs[i]
            if proc is not None:
                proc.send_signal(signal.SIGCONT)  # or it could not shut down
        self._paused.clear()
        if any(p is not None for p in self._procs):
            try:
                self.dog("cluster", "shutdown", timeout=15)
            except (LocalSheepError, subprocess.TimeoutExpired, OSError):
                pass
        for proc in self._procs:
            if proc is None:
                continue
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._procs = [None] * len(self._procs)
        if self.base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = ""

    def __enter__(self) -> LocalSheep:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
