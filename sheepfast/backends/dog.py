"""The command-line backend: Sheepdog's ``dog`` (or the older ``collie``).

Used where the extension cannot be built, or when configured. Every
operation is one ``dog`` process:

=================  ===========================================================
create             ``dog vdi create [-c N] [-z SHIFT] -- NAME SIZE``
stat/exists/open   ``dog vdi list -r -- NAME`` (dog reads every VDI's inode
                   and filters by name itself: the cost grows with the cluster)
list               ``dog vdi list -r``
read / readinto    ``dog vdi read -- NAME OFFSET LENGTH``, bytes on stdout
write              ``dog vdi write -- NAME OFFSET LENGTH``, bytes on stdin
resize             ``dog vdi resize -- NAME SIZE``
delete             ``dog vdi delete -- NAME`` (zeroes the index first, so
                   sheep reclaims the objects: no zombie VDI)
metadata_get       ``dog vdi getattr -- NAME KEY``, the value on stdout
metadata_set       ``dog vdi setattr -- NAME KEY VALUE``
metadata_remove    ``dog vdi setattr -d -- NAME KEY``
snapshot           ``dog vdi snapshot [-s TAG] -- NAME``
snapshot=          ``-s TAG|ID`` on list lookups, ``read`` and ``delete``
rollback           ``dog vdi rollback -f -s TAG|ID -- NAME``
clone              ``dog vdi clone -s TAG|ID -- NAME NEW`` (then ``resize``)
children, parent   ``dog vdi graph`` (the only listing with parent vids)
locks, break_lock  ``dog vdi lock list``, ``dog vdi lock unlock -- NAME``
=================  ===========================================================

dog cannot take a lock, list attributes, discard or flatten: those raise
Unsupported naming the missing Capability. A DogImage follows its name: a
write after the VDI was snapshotted lands in the new working VDI (dog looks
the name up each time), never in the snapshot.

Processes run without a shell, from argument lists, with ``--`` before the
VDI name so that no name can be taken for an option. Data goes straight
between the pipes and the caller's buffer. A process that moves no bytes for
``timeout`` seconds is killed (with anything it started) and
:class:`~sheepfast.errors.TimeoutError` is raised.

dog reports failures as text (its exit status is not reliable: ``vdi
delete`` exits 0 even when the VDI is missing), so the error classes come
from its stderr, with the exit status as a fallback. They are the classes
the native backend raises.

What dog does not print, VdiInfo cannot carry: ``store_policy`` and
``parent_vid`` are 0, ``snap_id`` is 0 for working VDIs, and ``create_time``
has whole seconds.
"""

from __future__ import annotations

import builtins
import dataclasses
import errno as _errno
import os
import re
import selectors
import shutil
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, TypeVar, Union, cast

from sheepfast import address, defaults, errors
from sheepfast.backends import (
    Capability,
    MissingBackendCapabilities,
    MissingImageCapabilities,
    missing,
)
from sheepfast.types import LockInfo, ParentInfo, SnapshotRef, VdiInfo

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
    "DogBackend",
    "DogImage",
    "find_dog",
    "parse_addresses",
    "parse_lock_list",
    "parse_vdi_graph",
    "parse_vdi_list",
]

# Limits are sheepfast.defaults' (the C client's); these two names stay for
# the callers that read them here.
MAX_ATTR_KEY_BYTES = defaults.ATTR_KEY_MAX
MAX_ATTR_VALUE_BYTES = defaults.ATTR_VALUE_MAX

# dog's exit statuses (Sheepdog's include/exits.h).
EXIT_SUCCESS, EXIT_FAILURE, EXIT_SYSFAIL = 0, 1, 2
EXIT_EXISTS, EXIT_FULL, EXIT_MISSING, EXIT_USAGE = 3, 4, 5, 64

# The text dog prints for a Sheepdog result code. dog never prints the code
# itself, so this is how a failure gets back its result code and class.
_RESULT_TEXTS = {
    "Unknown error": 0x01,
    "No object found": 0x02,
    "I/O error": 0x03,
    "VDI exists already": 0x04,
    "Invalid parameters": 0x05,
    "System error": 0x06,
    "VDI is already locked": 0x07,
    "No VDI found": 0x08,
    "No base VDI found": 0x09,
    "Failed to read from requested VDI": 0x0A,
    "Failed to write to requested VDI": 0x0B,
    "Failed to read from base VDI": 0x0C,
    "Failed to write to base VDI": 0x0D,
    "Failed to find requested tag": 0x0E,
    "System is still booting": 0x0F,
    "VDI is not locked": 0x10,
    "System is shutting down": 0x11,
    "Out of memory on server": 0x12,
    "Maximum number of VDIs reached": 0x13,
    "Protocol version mismatch": 0x14,
    "Server has no space for new objects": 0x15,
    "Waiting for cluster to be formatted": 0x16,
    "Waiting for other nodes to join cluster": 0x17,
    "Node has failed to join cluster": 0x18,
    "IO has halted as there are not enough living nodes": 0x19,
    "Object is read-only": 0x1A,
    "Inode object is invalidated": 0x1D,
    "Request has an old epoch": 0x81,
    "Request has a new epoch": 0x82,
    "Cluster has not been formatted": 0x83,
    "Creation times differ": 0x84,
    "Invalid epoch": 0x85,
    "Network error between sheep": 0x86,
    "The buffer is too small": 0x88,
    "Operation is not supported": 0x8B,
    "Targeted node is in recovery": 0x8C,
    "Node is killed": 0x8D,
    "Ask to try again": 0x8F,
    "Cluster driver error": 0x91,
}

# dog could not reach the gateway at all: nothing was done, another may serve.
_UNREACHABLE_PREFIXES = ("failed to connect to ", "Invalid ip address ")
# The connection broke during a request.
_NETWORK_PREFIXES = (
    "failed to read a response",
    "failed to read the response data",
    "failed to send request",
    "failed to read from socket",
    "failed to write to socket",
)
_TOO_LARGE_PREFIXES = (
    "VDI size is larger than",
    "VDI size is too large",
    "New VDI size is too large",
)
# dog's messages that quote the VDI name ({} stands for it).
_NAMED_MESSAGES = (
    "Failed to open VDI {} (snapshot id: ",
    "Failed to create VDI {}: ",
    "Failed to delete {}: ",
    "Failed to read a vdi {}",
)
# dog read the vid of the working VDI but not its inode (read_vdi_obj)
_INODE_UNREADABLE = "Failed to read a vdi <name>"

_ATTR_MISSING = re.compile(r"^Attribute '.*' not found$", re.MULTILINE | re.DOTALL)
_PAST_END_LINES = (
    "Read offset is beyond the end of the VDI",
    "Write offset is beyond the end of the VDI",
)

_E = TypeVar("_E", bound=errors.SheepfastError)
_Arg = Union[str, bytes]

_PIPE_CHUNK = 1 << 20  # bytes per write() into dog's stdin
_PIPE_SIZE = 1 << 20  # asked of the kernel for data pipes: fewer wake-ups
_STDERR_LIMIT = 64 << 10
_DRAIN_POLL = 0.01  # seconds between looks at whether dog has read its input


# ------------------------------------------------------------------ helpers


def _name_bytes(name: Union[str, bytes]) -> bytes:
    """A VDI name as sheep stores it (str as UTF-8, as the native backend)."""
    if isinstance(name, str):
        return name.encode("utf-8", "surrogateescape")
    if isinstance(name, (bytes, bytearray, memoryview)):
        return bytes(name)
    raise TypeError(f"VDI name must be str or bytes, not {type(name).__name__}")


def _name_str(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _check_name(raw: bytes) -> None:
    # Refused here: dog would silently truncate or cut the name.
    if not raw:
        raise errors.InvalidArgument("VDI name is empty")
    if len(raw) > defaults.NAME_MAX:
        raise errors.InvalidArgument(f"VDI name is longer than {defaults.NAME_MAX} bytes")
    if b"\0" in raw:
        raise errors.InvalidArgument("VDI name contains a NUL byte")


def _attr_bytes(value: object, what: str) -> bytes:
    """An attribute key or value as bytes: str is UTF-8, bytes-like as it is."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"attribute {what} must be str or bytes, not {type(value).__name__}")


def _check_attr_key(key: bytes) -> None:
    # refused here: dog would cut a long key and stop a key at a NUL
    if not key:
        raise errors.InvalidArgument("attribute key is empty")
    if len(key) > defaults.ATTR_KEY_MAX:
        raise errors.InvalidArgument(f"attribute key is longer than {defaults.ATTR_KEY_MAX} bytes")
    if b"\0" in key:
        raise errors.InvalidArgument("attribute key contains a NUL byte")


def _uint64(value: int, what: str) -> int:
    value = int(value)
    if value < 0:
        raise errors.OutOfRange(f"{what} must not be negative (got {value})")
    if value >= 1 << 64:
        raise errors.OutOfRange(f"{what} {value} does not fit in 64 bits")
    return value


def _max_flat_size(block_size_shift: int) -> int:
    return defaults.MAX_FLAT_OBJECTS << block_size_shift


def _oserror(cls: type[_E], message: str, errnum: int) -> _E:
    exc = cls(message)  # one argument, so str() is the message, not "[Errno N] ..."
    cast(Any, exc).errno = errnum
    return exc


def parse_addresses(addresses: Union[str, Sequence[str]]) -> list[tuple[str, int]]:
    """(host, port) of each gateway (sheepfast.address.parse_addresses),
    refused as the native backend refuses them: a blank list is
    InvalidArgument, a malformed address ConnectionError (EINVAL)."""
    items = address.split_addresses(addresses)
    try:
        return address.parse_addresses(items)
    except errors.InvalidArgument as exc:
        raise _oserror(errors.ConnectionError, str(exc), _errno.EINVAL) from None


# ------------------------------------------------------------ list parsing

# One record of `dog vdi list -r`: TYPE NAME SNAPID SIZE USED SHARED CTIME
# VID REDUNDANCY TAG BLOCK_SIZE_SHIFT. The name escapes whitespace and "\"
# with a "\" (an escaped newline is part of the name); the tag is printed
# as it is, so it is everything between the redundancy and the last field.
_HEAD = rb"([=sc]) ((?:[^\\ \n]|\\.)+) (\d+) (\d+) (\d+) (\d+) (\d+) ([0-9a-f]+) (\d+(?::\d+)?) "
_RECORD = re.compile(_HEAD + rb"([^\n]*) (\d+)(?:\n|\Z)", re.DOTALL)
# Before 1.0 (collie, dog 0.8/0.9) there was no BLOCK_SIZE_SHIFT: objects
# were always 4 MiB. Tried second, so a tag ending in " <number>" on such
# an old tool would be read as a block size shift.
_OLD_RECORD = re.compile(_HEAD + rb"([^\n]*)(?:\n|\Z)", re.DOTALL)
_OLD_BLOCK_SIZE_SHIFT = b"%d" % defaults.DEFAULT_BLOCK_SIZE_SHIFT
_ESCAPED = re.compile(rb"\\(.)", re.DOTALL)


def _redundancy(text: bytes) -> tuple[int, int]:
    """(copies, copy_policy) from "N" or "D:P", as the inode stores them."""
    data, _, parity = text.partition(b":")
    if not parity:
        return int(data), 0
    d, p = int(data), int(parity)
    return d + p, ((d // 2) << 4) | p


def parse_vdi_list(output: bytes) -> list[VdiInfo]:
    """VdiInfo for each record of ``dog vdi list -r`` output, in its order."""
    infos = []
    pos, end = 0, len(output)
    while pos < end:
        if output[pos : pos + 1] == b"\n":  # tolerate blank lines
            pos += 1
            continue
        m = _RECORD.match(output, pos) or _OLD_RECORD.match(output, pos)
        if m is None:
            line = output[pos : output.find(b"\n", pos) if b"\n" in output[pos:] else end]
            raise errors.ProtocolError(f"unexpected line in dog vdi list output: {line[:300]!r}")
        kind, name, snapid, size, _used, _shared, ctime, vid, redundancy, tag, *rest = m.groups()
        bss = rest[0] if rest else _OLD_BLOCK_SIZE_SHIFT
        copies, copy_policy = _redundancy(redundancy)
        infos.append(
            VdiInfo(
                name=_name_str(_ESCAPED.sub(rb"\1", name)),
                vid=int(vid, 16),
                size=int(size),
                block_size_shift=int(bss),
                copies=copies,
                copy_policy=copy_policy,
                store_policy=0,  # not printed by dog
                snap_id=int(snapid),
                tag=_name_str(tag),
                parent_vid=0,  # not printed by dog
                create_time=float(ctime),
                snapshot=kind == b"s",
            )
        )
        pos = m.end()
    return infos


def _sort_key(info: VdiInfo) -> tuple[bytes, bool, int]:
    # as the native list: by name, snapshots (oldest first) before the
    # working VDI, whose snap_id dog does not print
    return (_name_bytes(info.name), not info.snapshot, info.snap_id)


# ------------------------------------------------------- running processes


@dataclass
class _Outcome:
    returncode: int
    stdout: bytes  # collected stdout when there was no sink
    stdout_count: int  # bytes dog wrote to stdout
    stderr: str
    stdin_broken: bool


class _Hung(Exception):
    pass


def _grow_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except (ImportError, AttributeError, OSError):
        pass  # only an optimisation


def _unread(fd: int) -> Optional[int]:
    """Bytes written to the pipe fd and not yet read from it (None where the
    system cannot tell)."""
    try:
        import array
        import fcntl
        import termios

        count = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, count)
    except (ImportError, AttributeError, OSError):
        return None
    return count[0]


class _Process:
    """One dog run: feed goes to its stdin, its stdout into sink (or is
    collected), its stderr is collected; all three pipes are pumped at once
    so none can fill up and stall dog."""

    def __init__(
        self,
        argv: list[_Arg],
        env: dict[str, str],
        feed: Optional[memoryview],
        sink: Optional[memoryview],
    ):
        self.feed, self.sink = feed, sink
        self.sent = self.got = 0
        self.chunks: list[bytes] = []
        self.err = bytearray()
        self.stdin_broken = False
        self._scratch = bytearray(1 << 16)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if feed is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            close_fds=True,
            # its own group, so a timeout kills whatever a wrapper script started
            start_new_session=True,
        )

    def run(self, timeout: float) -> _Outcome:
        """Pumps until dog exits; _Hung after timeout seconds without a byte
        moving. The process group is killed and reaped whatever happens."""
        proc = self.proc
        assert proc.stdout is not None and proc.stderr is not None
        pumps = {proc.stdout.fileno(): self._pump_stdout, proc.stderr.fileno(): self._pump_stderr}
        stdin_fd = -1
        if proc.stdin is not None:
            if self.feed:
                stdin_fd = proc.stdin.fileno()
                pumps[stdin_fd] = self._pump_stdin
                _grow_pipe(stdin_fd)
            else:
                proc.stdin.close()
        if self.sink is not None:
            _grow_pipe(proc.stdout.fileno())
        sel = selectors.DefaultSelector()
        try:
            for fd in pumps:
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_WRITE if fd == stdin_fd else selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            # Once the feed is in the pipe, stdin stays open until dog has read
            # it all: a dog that exits 0 with input left unread (it saw a
            # smaller VDI than we did) wrote less than it was given.
            draining = False
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Hung()
                for key, _events in sel.select(min(left, _DRAIN_POLL) if draining else left):
                    try:
                        moved = pumps[key.fd](key.fd)
                    except BlockingIOError:
                        continue
                    if moved is None:  # that stream is over
                        sel.unregister(key.fd)
                        if key.fd == stdin_fd:
                            draining = not self.stdin_broken and _unread(stdin_fd) is not None
                            if not draining:
                                assert proc.stdin is not None
                                proc.stdin.close()  # EOF for dog
                    if moved != 0:
                        deadline = time.monotonic() + timeout
                if draining and _unread(stdin_fd) == 0:
                    assert proc.stdin is not None
                    proc.stdin.close()  # all read: EOF for dog
                    draining = False
            if draining:  # dog closed its output before reading all its input
                self.stdin_broken = _unread(stdin_fd) != 0
                assert proc.stdin is not None
                proc.stdin.close()
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise _Hung() from None
        finally:
            sel.close()
            self._reap()
        return _Outcome(
            proc.returncode,
            b"".join(self.chunks),
            self.got,
            self.err.decode("utf-8", "surrogateescape"),
            self.stdin_broken,
        )

    # Each pump moves what it can: the byte count, or None at the end.

    def _pump_stdout(self, fd: int) -> Optional[int]:
        if self.sink is not None and self.got < len(self.sink):
            n = os.readv(fd, [self.sink[self.got :]])  # straight into the caller's buffer
        else:  # no sink, or more than asked for (counted, then an error)
            n = os.readv(fd, [self._scratch])
            if self.sink is None:
                self.chunks.append(bytes(self._scratch[:n]))
        self.got += n
        return n or None

    def _pump_stderr(self, fd: int) -> Optional[int]:
        n = os.readv(fd, [self._scratch])
        self.err += self._scratch[: min(n, max(0, _STDERR_LIMIT - len(self.err)))]
        return n or None

    def _pump_stdin(self, fd: int) -> Optional[int]:
        assert self.feed is not None
        try:
            n = os.write(fd, self.feed[self.sent : self.sent + _PIPE_CHUNK])
        except BrokenPipeError:  # dog stopped reading: it failed, stderr says why
            self.stdin_broken = True
            return None
        self.sent += n
        return None if self.sent == len(self.feed) else n

    def _reap(self) -> None:
        proc = self.proc
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()  # reaped: no zombie left behind
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _dog_lines(stderr: str, name: Optional[bytes]) -> list[str]:
    """dog's stderr lines, with the VDI name cut out of the messages that
    quote it: a name can hold anything, newlines and dog's own phrases too."""
    if name:
        shown = _name_str(name)
        for template in _NAMED_MESSAGES:
            stderr = stderr.replace(template.format(shown), template.format("<name>"))
    return [line.strip() for line in stderr.splitlines() if line.strip()]


def _unreachable(lines: list[str]) -> bool:
    """dog could not reach the gateway at all, so it did nothing."""
    return bool(lines) and lines[0].startswith(_UNREACHABLE_PREFIXES)


def _classify(outcome: _Outcome, what: str, name: Optional[bytes]) -> Exception:
    """The exception (a sheepfast.errors class) for a failed dog run."""
    lines = _dog_lines(outcome.stderr, name)
    said = f" (dog: {lines[0]})" if lines else ""
    if _unreachable(lines):
        return _oserror(errors.ConnectionError, f"{what}: {lines[0]}", _errno.ECONNREFUSED)
    # vdi getattr/setattr; the key is quoted as it is, newlines and all
    if outcome.returncode == EXIT_MISSING and _ATTR_MISSING.search(outcome.stderr):
        return errors.AttributeNotFound(f"{what}: no such attribute", 0x02)
    if "VDI not found" in lines and name is not None:
        return errors.VdiNotFound(f"VDI {_name_str(name)!r} not found", 0x08)
    for line in lines:
        if line.startswith(_NETWORK_PREFIXES):
            return _oserror(errors.ConnectionError, f"{what}: {line}", _errno.EIO)
    if _INODE_UNREADABLE in lines and any(line.endswith(" No object found") for line in lines):
        # dog found the vid, then no inode behind it: deleted in between
        shown = repr(_name_str(name)) if name is not None else "named"
        return errors.VdiNotFound(f"VDI {shown} not found (deleted while dog opened it)", 0x08)
    for line in lines:
        for text, result in _RESULT_TEXTS.items():
            if line == text or line.endswith(" " + text):
                if result == 0x08 and name is not None:
                    message = f"VDI {_name_str(name)!r} not found"
                elif result == 0x04 and name is not None:
                    message = f"VDI {_name_str(name)!r} already exists"
                else:
                    message = f"{what}: {text}"
                return errors.server_error(result, message)
    for line in lines:
        if line in _PAST_END_LINES:
            return errors.OutOfRange(f"{what}: {line}")
        if line.startswith("Shrinking VDIs"):
            return errors.InvalidArgument(f"{what}: cannot shrink a VDI{said}")
        if line.startswith(_TOO_LARGE_PREFIXES):
            return errors.InvalidArgument(f"{what}: size exceeds the limit dog allows ({line})")
    code = outcome.returncode
    if code < 0:
        return errors.SheepfastError(f"{what}: dog was killed by signal {-code}{said}")
    if code == EXIT_USAGE:
        return errors.InvalidArgument(f"{what}: dog refused the arguments{said}")
    fallback = {EXIT_EXISTS: 0x04, EXIT_FULL: 0x15, EXIT_MISSING: 0x08}.get(code)
    if fallback is not None:
        return errors.server_error(fallback, f"{what}{said}")
    return errors.SheepfastError(f"{what}: dog failed (exit status {code}){said}")


class _Dog:
    """How to run dog against the cluster: the command, the gateways (the
    last one that answered is tried first), the timeout."""

    def __init__(self, command: list[str], gateways: list[tuple[str, int]], timeout: float):
        self.command = command
        self.gateways = gateways
        self.timeout = timeout
        self._preferred = 0
        env = dict(os.environ, LC_ALL="C")  # untranslated messages to parse
        # -a/-p win over these, but dog refuses to start when they are bad
        env.pop("SHEEPDOG_DOG_ADDR", None)
        env.pop("SHEEPDOG_DOG_PORT", None)
        self.env = env

    def run(
        self,
        what: str,
        subcommand: str,
        options: Sequence[str] = (),
        name: Optional[bytes] = None,
        args: Sequence[_Arg] = (),
        *,
        feed: Optional[memoryview] = None,
        sink: Optional[memoryview] = None,
        idempotent: bool = False,
        benign: Optional[re.Pattern[str]] = None,
    ) -> _Outcome:
        """Runs ``dog vdi SUBCOMMAND OPTIONS -a H -p P [-- NAME ARGS]`` on the
        preferred gateway, moving on to the next one when dog cannot reach it
        (or, for an idempotent call, when the connection broke). Success is
        exit status 0 with nothing on stderr but lines `benign` matches."""
        failures: list[str] = []
        start = self._preferred
        for step in range(len(self.gateways)):
            index = (start + step) % len(self.gateways)
            host, port = self.gateways[index]
            argv: list[_Arg] = [
                *self.command,
                "vdi",
                subcommand,
                *options,
                "-a",
                host,
                "-p",
                str(port),
            ]
            if name is not None:
                argv += ["--", name, *args]  # after "--" nothing is an option
            try:
                outcome = _Process(argv, self.env, feed, sink).run(self.timeout)
            except _Hung:
                raise _oserror(
                    errors.TimeoutError,
                    f"{what}: dog made no progress for {self.timeout:g} s and was killed",
                    _errno.ETIMEDOUT,
                ) from None
            except (FileNotFoundError, PermissionError) as missing:
                raise errors.InvalidArgument(
                    f"cannot run {self.command[0]!r}: {missing.strerror}"
                ) from None
            if outcome.returncode == EXIT_SUCCESS and all(
                benign is not None and benign.fullmatch(line.strip())
                for line in outcome.stderr.splitlines()
                if line.strip()
            ):
                self._preferred = index
                return outcome
            lines = _dog_lines(outcome.stderr, name)
            if _unreachable(lines):
                reason = lines[0]
            else:
                failure = _classify(outcome, what, name)
                if not (idempotent and isinstance(failure, errors.ConnectionError)):
                    raise failure
                reason = str(failure)
            failures.append(f"{host}:{port}: {reason}")
        raise _oserror(
            errors.ConnectionError,
            f"{what}: no gateway answered ({'; '.join(failures)})",
            _errno.ECONNREFUSED,
        )


# A VDI deleted between dog's bitmap read and its inode read: dog skips it
# and says so, as the native list skips it silently.
_LIST_VANISHED = re.compile(
    r"Failed to read object [0-9a-f]{16} No object found|Failed to read inode( header)?"
)


def find_dog(dog_command: Union[str, Sequence[str]]) -> list[str]:
    """The dog command as an argument list with its program found on PATH,
    or InvalidArgument."""
    command = [dog_command] if isinstance(dog_command, str) else list(dog_command)
    if not command:
        raise errors.InvalidArgument("dog_command is empty")
    found = shutil.which(command[0])
    if found is None:
        raise errors.InvalidArgument(
            f"dog command {command[0]!r} not found on PATH; "
            "install Sheepdog's dog (or collie), or point dog_command at it"
        )
    return [found, *command[1:]]


# ------------------------------------------------------------- the backend


class _ObjectRanges:
    """Object ranges being written through one image. dog creates a missing
    object (or copies a shared one) with a create that replaces the whole
    object, so two dogs writing into one object at once could lose bytes:
    writes that share an object take turns; others run in parallel."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy: list[tuple[int, int]] = []

    @contextmanager
    def hold(self, first: int, last: int) -> Iterator[None]:
        span = (first, last)
        with self._cond:
            while any(a <= last and first <= b for a, b in self._busy):
                self._cond.wait()
            self._busy.append(span)
        try:
            yield
        finally:
            with self._cond:
                self._busy.remove(span)
                self._cond.notify_all()


def _working_vdi(dog: _Dog, raw: bytes) -> VdiInfo:
    """VdiInfo of the working VDI called raw, or VdiNotFound."""
    outcome = dog.run(
        f"looking up VDI {_name_str(raw)!r}",
        "list",
        ("-r",),
        raw,
        idempotent=True,
        benign=_LIST_VANISHED,
    )
    for info in parse_vdi_list(outcome.stdout):
        if not info.snapshot and _name_bytes(info.name) == raw:
            return info
    raise errors.VdiNotFound(f"VDI {_name_str(raw)!r} not found", 0x08)


def _snapshot_option(snapshot: SnapshotRef) -> tuple[str, ...]:
    """dog's -s for a snapshot: all digits is an id, anything else a tag,
    so a tag made only of digits cannot be told from an id."""
    if snapshot is None:
        return ()
    if isinstance(snapshot, bool):
        raise TypeError("a snapshot is a tag (str or bytes) or a snap_id (int), not a bool")
    if isinstance(snapshot, int):
        if not 1 <= snapshot <= 0xFFFFFFFF:
            raise errors.InvalidArgument(f"snapshot id must be 1..{0xFFFFFFFF} (got {snapshot})")
        return ("-s", str(snapshot))
    tag = _name_str(_name_bytes(snapshot)) if isinstance(snapshot, bytes) else snapshot
    if not isinstance(tag, str):
        raise TypeError(f"a snapshot is a tag or a snap_id, not {type(snapshot).__name__}")
    raw = _name_bytes(tag)
    if not raw:
        raise errors.InvalidArgument("snapshot tag is empty (use None for the working VDI)")
    if len(raw) > defaults.TAG_MAX:
        raise errors.InvalidArgument(f"snapshot tag is longer than {defaults.TAG_MAX} bytes")
    if b"\0" in raw:
        raise errors.InvalidArgument("snapshot tag contains a NUL byte")
    if raw.isdigit():
        raise errors.Unsupported(
            f"the cli backend cannot select snapshot tag {tag!r}: dog reads a tag of digits "
            "as a snapshot id (select it by its snap_id)"
        )
    return ("-s", tag)


def _select(infos: list[VdiInfo], raw: bytes, snapshot: SnapshotRef) -> Optional[VdiInfo]:
    """The VDI of name raw that snapshot selects among listed ones."""
    for info in infos:
        if _name_bytes(info.name) != raw:
            continue
        if snapshot is None and not info.snapshot:
            return info
        if snapshot is not None and info.snapshot:
            if isinstance(snapshot, int) and info.snap_id == snapshot:
                return info
            if isinstance(snapshot, (str, bytes)) and _name_bytes(info.tag) == _name_bytes(
                snapshot
            ):
                return info
    return None


# `dog vdi graph`: an edge per VDI from its parent's vid ("0": none)
_GRAPH_EDGE = re.compile(rb'^\s*"([0-9a-f]+)" -> "([0-9a-f]+)";', re.MULTILINE)
# `dog vdi lock list`: each owner sheep of a lock, IPv4 or IPv6
_LOCK_OWNER = re.compile(r"IPv([46]) ip:(\S+) port:(\d+)(?:\((\w+)\))?")


def parse_vdi_graph(output: bytes) -> dict[int, int]:
    """vid -> parent vid (0 for none) from ``dog vdi graph`` output."""
    return {int(child, 16): int(parent, 16) for parent, child in _GRAPH_EDGE.findall(output)}


def parse_lock_list(output: bytes, known: set[int]) -> list[tuple[int, str, tuple[str, ...]]]:
    """(vid, "exclusive" or "shared", owners) for each line of ``dog vdi
    lock list``. Names and tags are printed unescaped, so the vid is found
    as the hex field after the snap id that names a VDI in known."""
    found = []
    for line in output.decode("utf-8", "surrogateescape").splitlines()[1:]:
        head, sep, _ = line.partition(" IPv")
        if not sep:
            continue
        fields = head.split()
        vid = next(
            (
                int(fields[i + 1], 16)
                for i in range(len(fields) - 1)
                if fields[i].isdigit()
                and re.fullmatch(r"[0-9a-f]+", fields[i + 1])
                and int(fields[i + 1], 16) in known
            ),
            None,
        )
        if vid is None:
            raise errors.ProtocolError(f"unexpected line in dog vdi lock list output: {line!r}")
        owners = tuple(
            f"[{addr}]:{port}" if family == "6" else f"{addr}:{port}"
            for family, addr, port, _state in _LOCK_OWNER.findall(line)
        )
        shared = any(state for *_, state in _LOCK_OWNER.findall(line))
        found.append((vid, "shared" if shared else "exclusive", owners))
    return found


class DogImage(MissingImageCapabilities):
    """An open VDI reached through dog; one process per read or write.

    Ranges are checked against the size seen at open (or set by resize),
    before any process runs, as the native backend does. Safe to share
    between threads.
    """

    kind = "cli"

    def __init__(self, dog: _Dog, info: VdiInfo):
        self._dog = dog
        self.info = info
        self._raw_name = _name_bytes(info.name)
        # a snapshot is read with -s ID; everything that writes is refused
        self._read_options = ("-s", str(info.snap_id)) if info.snapshot else ()
        self._size = info.size
        self._lock = threading.Lock()  # resize
        self._writing = _ObjectRanges()
        self._closed = False

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def vid(self) -> int:
        return self.info.vid

    @property
    def size(self) -> int:
        return self._size

    @property
    def object_size(self) -> int:
        return 1 << self.info.block_size_shift

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True  # nothing is held between calls

    def __enter__(self) -> DogImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<DogImage {self.info.name!r} vid={self.info.vid:#x} size={self._size}>"

    def _check(self, what: str, offset: int, length: int) -> int:
        if self._closed:
            raise errors.InvalidArgument("I/O operation on a closed VDI")
        offset = _uint64(offset, "offset")
        size = self._size
        if offset > size or length > size - offset:
            raise errors.OutOfRange(
                f"{what} of {length} bytes at offset {offset} is past the end of VDI "
                f"{self.info.name!r} ({size} bytes)"
            )
        return offset

    def read(self, offset: int, length: int) -> bytes:
        length = _uint64(length, "length")
        self._check("read", offset, length)  # before allocating
        buffer = bytearray(length)
        self.readinto(buffer, offset)
        return bytes(buffer)

    def readinto(self, buffer: WriteableBuffer, offset: int) -> int:
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise BufferError("readinto() needs a writable buffer")
        offset = self._check("read", offset, len(view))
        if not view:
            return 0
        what = f"reading VDI {self.info.name!r}"
        with self._deletion_explained():
            outcome = self._dog.run(
                what,
                "read",
                self._read_options,
                self._raw_name,
                (str(offset), str(len(view))),
                sink=view,
                idempotent=True,
            )
            if outcome.stdout_count != len(view):
                raise errors.ProtocolError(
                    f"{what}: dog returned {outcome.stdout_count} of {len(view)} bytes"
                )
        return len(view)

    def _writable(self) -> None:
        if self.info.snapshot:
            raise errors.ReadOnly(f"VDI {self.info.name!r} is a snapshot", 0x1A)

    def write(self, data: ReadableBuffer, offset: int) -> int:
        view = memoryview(data).cast("B")
        offset = self._check("write", offset, len(view))
        self._writable()
        if not view:
            return 0
        what = f"writing VDI {self.info.name!r}"
        shift = self.info.block_size_shift
        with self._deletion_explained():
            with self._writing.hold(offset >> shift, (offset + len(view) - 1) >> shift):
                # the same bytes at the same place: safe to resend on another gateway
                outcome = self._dog.run(
                    what,
                    "write",
                    (),
                    self._raw_name,
                    (str(offset), str(len(view))),
                    feed=view,
                    idempotent=True,
                )
            if outcome.stdin_broken:
                raise errors.ProtocolError(
                    f"{what}: dog stopped reading its input but reported success"
                )
        return len(view)

    @contextmanager
    def _deletion_explained(self) -> Iterator[None]:
        """Turns the ways a delete shows up in a dog read or write into
        VdiNotFound. dog looks the name up, then reads the inode; a delete
        in between leaves it an inode without name or size, so it refuses
        the range as past the end (this range lies inside the size seen at
        open, and VDIs never shrink) or moves no bytes at all. Only when a
        fresh lookup confirms that the VDI opened is gone (the name is free
        or names another vid); otherwise the error stands."""
        try:
            yield
        except (errors.OutOfRange, errors.ProtocolError) as failure:
            if self.info.snapshot:
                raise  # the lookup below finds working VDIs only
            try:
                current = _working_vdi(self._dog, self._raw_name)
            except errors.VdiNotFound:
                current = None
            except errors.SheepfastError:
                raise failure from None
            if current is not None and current.vid == self.info.vid:
                raise failure
            raise errors.VdiNotFound(
                f"VDI {self.info.name!r} not found (vid {self.info.vid:#x} was deleted)", 0x08
            ) from failure

    # Attributes: sheep keeps them by VDI name (dog vdi setattr/getattr).

    def _attr_key(self, key: object) -> bytes:
        if self._closed:
            raise errors.InvalidArgument("I/O operation on a closed VDI")
        raw = _attr_bytes(key, "key")
        _check_attr_key(raw)
        return raw

    def metadata_get(self, key: Union[str, bytes]) -> bytes:
        """The value of attribute key; AttributeNotFound if unset."""
        raw = self._attr_key(key)
        what = f"reading attribute {_name_str(raw)!r} of VDI {self.info.name!r}"
        outcome = self._dog.run(what, "getattr", (), self._raw_name, (raw,), idempotent=True)
        if len(outcome.stdout) > defaults.ATTR_VALUE_MAX:
            raise errors.ProtocolError(f"{what}: dog printed {len(outcome.stdout)} bytes")
        return outcome.stdout

    def metadata_set(self, key: Union[str, bytes], value: Union[str, bytes]) -> None:
        """Creates attribute key or replaces its value. The value travels as
        a command-line argument, so it cannot hold a NUL byte here."""
        raw = self._attr_key(key)
        data = _attr_bytes(value, "value")
        if len(data) > defaults.ATTR_VALUE_MAX:
            raise errors.InvalidArgument(
                f"attribute value of {len(data)} bytes is over the "
                f"{defaults.ATTR_VALUE_MAX}-byte limit"
            )
        if b"\0" in data:
            raise errors.InvalidArgument(
                "attribute value contains a NUL byte, which dog cannot pass on "
                "(use the native backend)"
            )
        what = f"setting attribute {_name_str(raw)!r} of VDI {self.info.name!r}"
        # the same value again: safe to resend
        self._dog.run(what, "setattr", (), self._raw_name, (raw, data), idempotent=True)

    def metadata_remove(self, key: Union[str, bytes]) -> None:
        """Removes attribute key; AttributeNotFound if it was not set."""
        raw = self._attr_key(key)
        what = f"removing attribute {_name_str(raw)!r} of VDI {self.info.name!r}"
        self._dog.run(what, "setattr", ("-d",), self._raw_name, (raw,))

    def resize(self, new_size: int) -> None:
        if self._closed:
            raise errors.InvalidArgument("I/O operation on a closed VDI")
        new_size = _uint64(new_size, "new_size")
        name = self.info.name
        self._writable()
        with self._lock:
            if new_size < self._size:
                raise errors.InvalidArgument(
                    f"cannot shrink VDI {name!r} from {self._size} to {new_size} bytes "
                    "(sheep would leak the objects)"
                )
            limit = _max_flat_size(self.info.block_size_shift)
            if new_size > limit:
                raise errors.InvalidArgument(
                    f"size {new_size} exceeds the {limit}-byte limit of VDI {name!r}"
                )
            if new_size == self._size:
                return
            self._dog.run(
                f"resizing VDI {name!r}",
                "resize",
                (),
                self._raw_name,
                (str(new_size),),
                idempotent=True,
            )
            self._size = new_size


class DogBackend(MissingBackendCapabilities):
    """A Backend that drives ``dog`` (or ``collie``), one process per call.

    addresses: "host:port[,host:port...]" (IPv6 as "[addr]:port"); dog is
    pointed at the first, and at the next one when it cannot reach it.
    dog_command: a name looked up on PATH, a path, or an argument list.
    timeout: seconds a dog process may go without moving a byte.
    """

    kind = "cli"
    # dog writes what it is given, one request at a time, and passes
    # attribute values as arguments (no NUL); it snapshots, clones, rolls
    # back, lists and breaks locks, but cannot take one
    capabilities = (
        Capability.SNAPSHOTS | Capability.CLONES | Capability.ROLLBACK | Capability.LOCK_LIST
    )

    def __init__(
        self,
        addresses: Union[str, Sequence[str]],
        *,
        dog_command: Union[str, Sequence[str]] = "dog",
        timeout: float = defaults.DEFAULT_IO_TIMEOUT,
    ):
        if not isinstance(addresses, str):
            addresses = ",".join(addresses)
        if not timeout > 0:
            raise errors.InvalidArgument("timeouts must be positive")
        self.addresses = addresses
        self.timeout = float(timeout)
        self._dog = _Dog(find_dog(dog_command), parse_addresses(addresses), self.timeout)
        self._closed = False

    @property
    def dog_command(self) -> list[str]:
        return list(self._dog.command)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True  # images opened before stay usable, as native

    def __enter__(self) -> DogBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<DogBackend {self.addresses!r} via {self._dog.command[0]!r}>"

    def _name(self, name: Union[str, bytes]) -> bytes:
        if self._closed:
            raise errors.InvalidArgument("I/O operation on a closed cluster")
        raw = _name_bytes(name)
        _check_name(raw)
        return raw

    def create(
        self, name: Union[str, bytes], size: int, *, copies: int = 0, block_size_shift: int = 0
    ) -> None:
        raw = self._name(name)
        size = _uint64(size, "size")
        if not 0 <= copies <= defaults.MAX_COPIES:
            raise errors.InvalidArgument(f"copies must be 0..{defaults.MAX_COPIES} (got {copies})")
        options = []
        if copies:
            options += ["-c", str(copies)]
        if block_size_shift:
            if (
                not defaults.MIN_BLOCK_SIZE_SHIFT
                <= block_size_shift
                <= defaults.MAX_BLOCK_SIZE_SHIFT
            ):
                raise errors.InvalidArgument(
                    "block_size_shift must be "
                    f"{defaults.MIN_BLOCK_SIZE_SHIFT}..{defaults.MAX_BLOCK_SIZE_SHIFT}, "
                    f"or 0 for the cluster default (got {block_size_shift})"
                )
            limit = _max_flat_size(block_size_shift)
            if size > limit:
                raise errors.InvalidArgument(
                    f"size {size} exceeds the {limit}-byte limit for "
                    f"{1 << block_size_shift}-byte objects"
                )
            options += ["-z", str(block_size_shift)]
        # with the default object size dog checks the limit itself
        # Not idempotent: a resend after a lost reply would find its own VDI.
        self._dog.run(f"creating VDI {_name_str(raw)!r}", "create", options, raw, (str(size),))

    def _working(self, raw: bytes) -> VdiInfo:
        return _working_vdi(self._dog, raw)

    def _lookup(self, raw: bytes, snapshot: SnapshotRef) -> VdiInfo:
        return self._lookup_family(raw, snapshot)[0]

    def _lookup_family(self, raw: bytes, snapshot: SnapshotRef) -> tuple[VdiInfo, bool]:
        """The VDI snapshot selects, and whether it can have a parent: the
        name has snapshots, or dog lists it as a clone ("c")."""
        if snapshot is not None:
            _snapshot_option(snapshot)  # its checks
        outcome = self._dog.run(
            f"looking up VDI {_name_str(raw)!r}",
            "list",
            ("-r",),
            raw,
            idempotent=True,
            benign=_LIST_VANISHED,
        )
        infos = [i for i in parse_vdi_list(outcome.stdout) if _name_bytes(i.name) == raw]
        found = _select(infos, raw, snapshot)
        if found is not None:
            kinds = {line[:2] for line in outcome.stdout.splitlines()}
            return found, b"c " in kinds or any(i.snapshot for i in infos)
        if snapshot is None or not infos:
            raise errors.VdiNotFound(f"VDI {_name_str(raw)!r} not found", 0x08)
        raise errors.SnapshotNotFound(
            f"snapshot {snapshot!r} of VDI {_name_str(raw)!r} not found", 0x0E
        )

    def _parents(self) -> dict[int, int]:
        outcome = self._dog.run("reading the VDI tree", "graph", idempotent=True)
        return parse_vdi_graph(outcome.stdout)

    def _with_parent(self, info: VdiInfo) -> VdiInfo:
        """info with parent_vid and parent, from the graph and the list."""
        return self._family([info])[0]

    def _family(
        self, infos: builtins.list[VdiInfo], everything: Optional[builtins.list[VdiInfo]] = None
    ) -> builtins.list[VdiInfo]:
        """infos with their parents; everything: every live VDI, when known."""
        parents = self._parents()
        by_vid = {i.vid: i for i in (everything or infos)}
        missing = any(parents.get(i.vid, 0) not in by_vid for i in infos if parents.get(i.vid, 0))
        if everything is None and missing:
            by_vid = {i.vid: i for i in self._list()}
        out = []
        for info in infos:
            parent_vid = parents.get(info.vid, 0)
            parent = by_vid.get(parent_vid)
            out.append(
                dataclasses.replace(
                    info,
                    parent_vid=parent_vid,
                    parent=ParentInfo(parent.name, parent.vid, parent.snap_id, parent.tag)
                    if parent
                    else None,
                )
            )
        return out

    def stat(self, name: Union[str, bytes], *, snapshot: SnapshotRef = None) -> VdiInfo:
        """VdiInfo of the working VDI called name, or of the snapshot of it
        that snapshot selects (dog reads every inode; the parent comes from
        ``dog vdi graph``)."""
        info, may_have_parent = self._lookup_family(self._name(name), snapshot)
        # `dog vdi graph` is one more process: only when there can be a parent
        return self._with_parent(info) if may_have_parent else info

    def exists(self, name: Union[str, bytes], *, snapshot: SnapshotRef = None) -> bool:
        try:
            self._lookup(self._name(name), snapshot)
        except errors.VdiNotFound:
            return False
        return True

    def _list(self) -> list[VdiInfo]:
        if self._closed:
            raise errors.InvalidArgument("I/O operation on a closed cluster")
        outcome = self._dog.run(
            "listing VDIs", "list", ("-r",), idempotent=True, benign=_LIST_VANISHED
        )
        return sorted(parse_vdi_list(outcome.stdout), key=_sort_key)

    def list(self) -> list[VdiInfo]:
        """Every live VDI (snapshots included, marked .snapshot), by name,
        with its parent: dog's list prints none, so ``dog vdi graph`` runs
        too when any VDI can have one."""
        infos = self._list()
        return self._family(infos, infos) if any(i.snapshot for i in infos) else infos

    def delete(self, name: Union[str, bytes], *, snapshot: SnapshotRef = None) -> None:
        """Removes the working VDI called name, or the snapshot of it that
        snapshot selects; dog zeroes its index first, so sheep reclaims the
        objects nothing else shares."""
        raw = self._name(name)
        options = _snapshot_option(snapshot)
        if snapshot is not None:
            self._lookup(raw, snapshot)  # dog exits 0 when the tag is missing
        self._dog.run(f"deleting VDI {_name_str(raw)!r}", "delete", options, raw)

    def snapshot(self, name: Union[str, bytes], tag: Optional[str] = None) -> VdiInfo:
        raw = self._name(name)
        options = _snapshot_option(tag) if tag else ()
        before = self._working(raw)
        what = f"snapshotting VDI {_name_str(raw)!r}"
        try:
            self._dog.run(what, "snapshot", options, raw)
        except errors.SheepfastError as exc:
            if "is existed" in str(exc):
                raise errors.VdiExists(
                    f"VDI {_name_str(raw)!r} already has a snapshot tagged {tag!r}", 0x04
                ) from None
            raise
        # the old working vid is the snapshot's
        for info in self._family(self.snapshots_of(raw)):
            if info.vid == before.vid:
                return info
        raise errors.ProtocolError(f"{what}: dog reported success but no snapshot is listed")

    def snapshots_of(self, raw: bytes) -> builtins.list[VdiInfo]:
        outcome = self._dog.run(
            f"looking up VDI {_name_str(raw)!r}",
            "list",
            ("-r",),
            raw,
            idempotent=True,
            benign=_LIST_VANISHED,
        )
        found = [
            i for i in parse_vdi_list(outcome.stdout) if i.snapshot and _name_bytes(i.name) == raw
        ]
        return sorted(found, key=lambda i: i.snap_id)

    def snapshots(self, name: str) -> builtins.list[VdiInfo]:
        return self._family(self.snapshots_of(self._name(name)))

    def rollback(self, name: str, snapshot: Union[str, bytes, int]) -> VdiInfo:
        raw = self._name(name)
        if snapshot is None:
            raise errors.InvalidArgument("rollback needs a snapshot: a tag or a snap_id")
        target = self._lookup(raw, snapshot)
        self._dog.run(
            f"rolling VDI {_name_str(raw)!r} back",
            "rollback",
            ("-f", "-s", str(target.snap_id)),
            raw,
        )
        return self.stat(name)

    def clone(
        self,
        name: str,
        snapshot: Union[str, bytes, int],
        new_name: str,
        *,
        size: Optional[int] = None,
    ) -> VdiInfo:
        raw, raw_new = self._name(name), self._name(new_name)
        if snapshot is None:
            raise errors.InvalidArgument("clone needs a snapshot: a tag or a snap_id")
        source = self._lookup(raw, snapshot)
        if size is not None and _uint64(size, "size") < source.size:
            raise errors.InvalidArgument(
                f"a clone of {name!r} cannot be smaller than its snapshot "
                f"({size} < {source.size} bytes)"
            )
        what = f"cloning VDI {_name_str(raw)!r} into {_name_str(raw_new)!r}"
        outcome_name = raw_new
        self._dog.run(what, "clone", ("-s", str(source.snap_id)), raw, (outcome_name,))
        if size is not None and size > source.size:
            with self.open(new_name) as image:
                image.resize(size)
        return self.stat(new_name)

    def children(self, name: str, *, snapshot: SnapshotRef = None) -> builtins.list[VdiInfo]:
        target = self._lookup(self._name(name), snapshot)
        parents = self._parents()
        return self._family(
            [i for i in self._list() if parents.get(i.vid) == target.vid and i.name != target.name]
        )

    def locks(self) -> builtins.list[LockInfo]:
        infos = {i.vid: i for i in self._list()}
        outcome = self._dog.run("listing locks", "lock", ("list",), idempotent=True)
        out = []
        for vid, state, owners in parse_lock_list(outcome.stdout, set(infos)):
            info = infos[vid]
            out.append(LockInfo(info.name, vid, info.tag, info.snap_id, state, owners))
        return out

    def break_lock(self, name: str, *, snapshot: SnapshotRef = None) -> None:
        raw = self._name(name)
        options = ("unlock",) + _snapshot_option(snapshot)
        try:
            self._dog.run(f"unlocking VDI {_name_str(raw)!r}", "lock", options, raw)
        except errors.SheepfastError as exc:
            # sheep keeps no state for a vid it never locked on some nodes:
            # dog then cannot find the state; either way there is no lock
            if "is not locked" in str(exc) or "Failed to find VDI state" in str(exc):
                raise errors.InvalidArgument(f"VDI {_name_str(raw)!r} is not locked") from None
            raise

    def discard(self, name: Union[str, bytes]) -> bool:
        """Deletes a partial VDI after a failed call: True once it is gone.
        (dog's own timeout bounds it: a dog that makes no progress for
        ``timeout`` seconds is killed.)"""
        try:
            self.delete(name)
        except errors.VdiNotFound:
            return True
        except errors.SheepfastError:
            return False
        return True

    def open(
        self,
        name: Union[str, bytes],
        *,
        snapshot: SnapshotRef = None,
        lock: Optional[str] = None,
        read_ahead: int = 0,  # a hint: every read is a dog process of its own anyway
    ) -> DogImage:
        if lock is not None:
            raise missing(self.kind, Capability.LOCKS, "take a lock")
        return DogImage(self._dog, self._lookup(self._name(name), snapshot))

    def open_listed(self, info: VdiInfo) -> DogImage:
        """A handle on a VDI that list() just returned, without looking it
        up again (each lookup is a `dog vdi list` reading every inode)."""
        if self._closed:
            raise errors.InvalidArgument("I/O operation on a closed cluster")
        return DogImage(self._dog, info)
