"""The sheepfast command: move images in and out of a Sheepdog cluster.

  sheepfast put FILE NAME        upload FILE (- for stdin) as VDI NAME
  sheepfast get NAME FILE        download VDI NAME to FILE (- for stdout)
  sheepfast ls [--json]          list VDIs
  sheepfast info NAME [--json]   size, used, object size, copies, vid, snapshot
  sheepfast rm NAME [NAME...]    delete VDIs (-s SNAP: a snapshot of each)
  sheepfast snapshot NAME [-s TAG]       snapshot a VDI
  sheepfast clone NAME SNAP NEW [--size SIZE]
                                 a copy-on-write clone of a snapshot
  sheepfast rollback NAME SNAP   make the VDI what the snapshot holds
  sheepfast tree [NAME]          parents, snapshots and clones as a tree
  sheepfast flatten NAME         copy what a clone inherits: it shares nothing after
  sheepfast lock list | lock unlock NAME [-s SNAP]
                                 sheep's VDI locks (a cluster formatted with -l)
  sheepfast attr ls|get|set|rm NAME [KEY [VALUE]]
                                 a VDI's key/value attributes
  sheepfast reclaim --older-than AGE [--dry-run]
                                 delete VDIs left half-written by uploads that died
  sheepfast demo                 the README's main job, through glance_store

The cluster is --cluster host:port[,host:port...], else $SHEEPFAST_CLUSTER,
else 127.0.0.1:7000 (as dog). --embedded runs a throwaway in-process
FakeSheep instead. The options above the commands may be given before or
after the command: 'sheepfast put f img --quiet' works.

SNAP is a snapshot's tag, or its id (a number, as dog's -s).

Sizes: a byte count, or a number with K, M, G, T (powers of 1024, as in dog
and rbd) or KiB, MiB, GiB, TiB: 1048576, 512K, 4M, 1.5G, 4MiB. 4MB is
refused as ambiguous.

Errors are one line on stderr. Exit status: 0 done, 1 failed, 2 bad command
line, 130 interrupted, 141 when the reader of stdout went away (as dog).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import secrets
import signal
import stat
import sys
import time
import warnings
from typing import Any, BinaryIO, Callable, Iterator, Optional, Union, cast

import sheepfast
from sheepfast import errors, incomplete
from sheepfast.address import NAME_MAX, check_name, parse_addresses
from sheepfast.backends import (
    KINDS,
    Backend,
    Capability,
    UsageImage,
    is_zero,
    open_backend,
    resolve_kind,
)
from sheepfast.defaults import (
    DEFAULT_CLUSTER,
    MAX_BLOCK_SIZE_SHIFT,
    MAX_COPIES,
    MIN_BLOCK_SIZE_SHIFT,
)
from sheepfast.image import SheepdogImage
from sheepfast.sizes import SizeError, format_size, parse_size

CLUSTER_ENV = "SHEEPFAST_CLUSTER"
MiB = 1 << 20
CHUNK = 64 * MiB  # bytes moved per call: bounds memory

__all__ = ["main", "build_parser", "UsageError", "parse_size"]


class UsageError(Exception):
    """A mistake on the command line (exit status 2)."""


class ReplaceFailed(Exception):
    """put --force lost the old image and could not finish the new one in
    its place; the new one is complete in a temporary VDI (see cmd_put)."""

    def __init__(self, message: str, cause: BaseException):
        super().__init__(message)
        self.cause = cause


# ------------------------------------------------------------------ helpers


def human(n: float) -> str:
    return format_size(n)


def format_vid(vid: int) -> str:
    """A vid as dog shows it (hex, no prefix): the table, info and --json."""
    return f"{vid:x}"


def _vdi_name(text: str) -> str:
    try:
        return check_name(text)
    except errors.InvalidArgument as exc:
        raise UsageError(str(exc)) from None


def _size_arg(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return parse_size(text, what)
        except SizeError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _object_size_shift(text: str) -> int:
    size = _size_arg("--object-size")(text)
    shift = size.bit_length() - 1
    if size <= 0 or size != 1 << shift or not MIN_BLOCK_SIZE_SHIFT <= shift <= MAX_BLOCK_SIZE_SHIFT:
        raise argparse.ArgumentTypeError(
            f"--object-size must be a power of two from {format_size(1 << MIN_BLOCK_SIZE_SHIFT)}"
            f" to {format_size(1 << MAX_BLOCK_SIZE_SHIFT)} (got {text})"
        )
    return shift


def _copies(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= MAX_COPIES:
        raise argparse.ArgumentTypeError(
            f"--copies must be 0 (the cluster's default) to {MAX_COPIES} (got {text})"
        )
    return n


def _timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 1e6:
        raise argparse.ArgumentTypeError(
            f"--timeout must be a positive number of seconds (got {text})"
        )
    return seconds


class Progress:
    """A tqdm bar on stderr: fits the terminal (re-measured as it changes),
    redrawn in place at most ten times a second, its last line drawn once
    when closed. Disabled unless stderr is a terminal and not --quiet."""

    def __init__(self, label: str, total: Optional[int], enabled: bool):
        self._bar: Any = None
        if not enabled:
            return
        from tqdm import tqdm

        class Bar(tqdm):  # type: ignore[type-arg]
            # sizes as the rest of the command prints them (tqdm's own say
            # "MB" for MiB)
            @property
            def format_dict(self) -> dict[str, Any]:
                d = dict(super().format_dict)
                rate = d.get("rate") or (d["n"] / d["elapsed"] if d.get("elapsed") else 0)
                d.update(
                    done=format_size(d["n"]),
                    speed=f"{format_size(rate)}/s",
                    whole=format_size(d["total"] or 0),
                )
                return d

        if total:
            fmt = "{desc} {percentage:3.0f}%|{bar}| {done} / {whole}  {speed}  ETA {remaining}"
        else:
            fmt = "{desc} {done}  {speed}  {elapsed}"
        try:
            shape = os.get_terminal_size(sys.stderr.fileno())
        except OSError:
            shape = os.terminal_size((0, 0))
        # A terminal that reports no size (script(1), some ptys) gets 80x24:
        # tqdm hides its bar below a screen height of 0.
        width: dict[str, Any] = {"dynamic_ncols": True} if shape.columns else {"ncols": 80}
        if not shape.lines:
            width["nrows"] = 24
        self._bar = Bar(
            total=total or None,
            desc=label,
            file=sys.stderr,
            mininterval=0.1,
            smoothing=0.1,
            leave=True,
            bar_format=fmt,
            **width,
        )

    def update(self, n: int) -> None:
        bar = self._bar
        if bar is None:
            return
        if bar.total and bar.n + n >= bar.total:
            bar.n += n  # drawn by close(): the last line once
        else:
            bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.close()


class _Counted:
    """A file the upload reads through, telling the bar of every read (a
    pipe gives a read per pipe buffer: the bar moves smoothly)."""

    def __init__(self, f: BinaryIO, progress: Progress):
        self._f, self._progress = f, progress

    def readinto(self, buffer: Any) -> Optional[int]:
        n = self._f.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self._progress.update(n)
        return n  # type: ignore[no-any-return]

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._progress.update(len(data))
        return data


# ----------------------------------------------------------------- commands


def _image(backend: Backend, name: str, *, thin: bool = True) -> SheepdogImage:
    host, port = parse_addresses(backend.addresses)[0]
    return SheepdogImage(host, port, name, CHUNK, backend=backend, thin=thin)


def _open_source(path: str) -> tuple[BinaryIO, Optional[int], bool]:
    """(file, its size or None when unknown, whether we opened it)."""
    if path == "-":
        return sys.stdin.buffer, None, False
    src = open(path, "rb")
    st = os.fstat(src.fileno())
    if stat.S_ISDIR(st.st_mode):
        src.close()
        raise IsADirectoryError(21, "is a directory", path)
    return src, (st.st_size if stat.S_ISREG(st.st_mode) else None), True


def _upload(
    backend: Backend,
    name: str,
    source: Any,
    size: Optional[int],
    args: argparse.Namespace,
    label: str,
) -> int:
    """Creates VDI name and streams source into it; on any failure, Ctrl-C
    included, deletes it again (when that fails too, its upload mark lets
    'reclaim' find it)."""
    # atomic on the server: a taken name fails here, before any data moves
    backend.create(name, size or 0, copies=args.copies, block_size_shift=args.bss)
    progress = Progress(label, size, args.progress)
    image = _image(backend, name, thin=not args.no_thin)
    try:
        if hasattr(source, "readinto") or hasattr(source, "read"):
            source = _Counted(source, progress)
            consumers: list[Callable[[Any], None]] = []
        else:
            consumers = [lambda chunk: progress.update(len(chunk))]
        # the upload engine the glance driver uses: reading overlaps writing
        written = image.upload(source, size or 0, consumers=consumers)
    except BaseException:
        progress.close()
        gone = False
        with contextlib.suppress(Exception):
            gone = image.discard()
        image.close()
        if not gone:
            print(
                f"sheepfast: the partial VDI {name} could not be deleted; 'sheepfast "
                "reclaim' finds it once its writer is gone",
                file=sys.stderr,
            )
        raise
    progress.close()
    image.close()
    return written


def _temp_name(name: str) -> str:
    """A sibling for put --force to upload into: NAME.put-XXXXXXXX."""
    suffix = f".put-{secrets.token_hex(4)}"
    room = NAME_MAX - len(suffix)
    return name.encode()[:room].decode(errors="ignore") + suffix


def cmd_put(args: argparse.Namespace, backend: Backend) -> int:
    """Sheep cannot rename a VDI, so put --force over an existing NAME goes
    in three steps, the old image untouched until the new one is safe:

    1. everything is checked (options, NAME, FILE readable) and the new
       image is uploaded whole into a temporary VDI NAME.put-XXXXXXXX; any
       failure here (short input, the cluster, Ctrl-C) deletes that and
       leaves NAME as it was;
    2. the old NAME is deleted and NAME created again;
    3. the temporary VDI is copied into NAME (read back and written: the
       data crosses the network twice more) and then deleted.

    A failure in step 2 or 3 leaves the new image complete in the temporary
    VDI and says so, with the command that finishes the job."""
    name = _vdi_name(args.name)
    src, size, opened = _open_source(args.file)
    with contextlib.ExitStack() as stack:
        if opened:
            stack.enter_context(src)
        source = _source(src, size)
        replacing = args.force and backend.exists(name)
        if not replacing:
            written = _upload(backend, name, source, size, args, f"put {name}")
        else:
            temp = _temp_name(name)
            written = _upload(backend, temp, source, size, args, f"put {name} (into {temp})")
            _replace(backend, name, temp, written, args)
    if not args.quiet:
        print(f"{name}: {written} bytes", file=sys.stderr)
    return 0


def _replace(backend: Backend, name: str, temp: str, size: int, args: argparse.Namespace) -> None:
    try:
        backend.delete(name)
        with _image(backend, temp) as image:
            _upload(backend, name, image.chunks(0, size), size, args, f"copy {temp} to {name}")
    except BaseException as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else _describe(exc)
        raise ReplaceFailed(
            f"replacing {name} failed after the old image was deleted ({why}); the new "
            f"image is complete in VDI {temp}: 'sheepfast get {temp} - | sheepfast put "
            f"--force - {name}' finishes the job, then 'sheepfast rm {temp}'",
            exc,
        ) from None
    try:
        backend.delete(temp)
    except errors.SheepfastError as exc:
        raise ReplaceFailed(
            f"{name} is replaced, but the temporary VDI {temp} could not be "
            f"deleted ({_describe(exc)}): 'sheepfast rm {temp}'",
            exc,
        ) from None


def _source(src: BinaryIO, size: Optional[int]) -> Union[BinaryIO, Iterator[memoryview]]:
    """What put uploads: a regular file mapped, in pieces the upload passes
    to the socket with no copy (only a last piece shorter than a chunk is
    gathered into a buffer); anything else as the file it is."""
    if not size:
        return src
    try:
        mapped = mmap.mmap(src.fileno(), size, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return src  # not mappable: read it
    # The mapping is not closed here: views of it may be held until the
    # upload's threads let go of them; it goes with the last of them.
    whole = memoryview(mapped)
    return (whole[offset : offset + CHUNK] for offset in range(0, size, CHUNK))


def cmd_get(args: argparse.Namespace, backend: Backend) -> int:
    """FILE is written as FILE's hidden sibling, flushed to disk and renamed
    over FILE only once complete: a failed or interrupted download leaves
    no partial FILE (and an old FILE as it was). An existing FILE is
    replaced only with --force; devices and FIFOs are written in place."""
    name = _vdi_name(args.name)
    with _image(backend, name) as image:
        size = image.size  # VdiNotFound here, before any file is made
        if args.file == "-":
            _download(image, size, sys.stdout.buffer, args, sparse=False)
            return 0
        path = args.file
        try:
            st: Optional[os.stat_result] = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(21, "is a directory", path)
            with open(path, "wb") as dst:
                _download(image, size, dst, args, sparse=False)
            return 0
        if st is not None and not args.force:
            raise FileExistsError(17, "file exists (use --force to replace it)", path)
        folder, base = os.path.split(os.path.abspath(path))
        temp = os.path.join(folder, f".{base}.sheepfast-{secrets.token_hex(4)}.part")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileNotFoundError:
            raise FileNotFoundError(2, "no such directory", folder) from None
        try:
            with open(fd, "wb") as dst:
                _download(image, size, dst, args, sparse=True)
                os.fsync(dst.fileno())
            if args.force:
                os.replace(temp, path)
            else:
                os.link(temp, path)  # fails, rather than replace, if FILE appeared meanwhile
                os.unlink(temp)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        with contextlib.suppress(OSError):  # the rename itself, durable
            dirfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
    return 0


def _download(
    image: SheepdogImage, size: int, dst: BinaryIO, args: argparse.Namespace, *, sparse: bool
) -> None:
    """All-zero objects become holes when dst is a regular file (sparse)."""
    progress = Progress(f"get {image.name}", size, args.progress)
    try:
        # the granularity sheep allocates in
        step = image.open().object_size
        # the read engine the glance driver uses: the next chunk is read
        # while this one is written out
        for chunk in image.chunks(0, size):
            view = memoryview(chunk)
            for start in range(0, len(view), step):
                piece = view[start : start + step]
                if sparse and is_zero(piece):
                    dst.seek(len(piece), os.SEEK_CUR)
                else:
                    dst.write(piece)
                progress.update(len(piece))
            del view, piece, chunk  # let the engine refill it
        if sparse:
            dst.truncate(size)  # a trailing hole still counts
        dst.flush()
    finally:
        progress.close()


def _info_dict(
    info: sheepfast.VdiInfo, used: Optional[int] = None, shared: Optional[int] = None
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": info.name,
        "vid": info.vid,
        "vid_hex": format_vid(info.vid),
        "size": info.size,
        "object_size": info.object_size,
        "copies": info.copies,
        "redundancy": info.redundancy,
        "snapshot": info.snapshot,
        "snap_id": info.snap_id,
        "tag": info.tag,
        "parent_vid": info.parent_vid,
        "parent": None
        if info.parent is None
        else {
            "name": info.parent.name,
            "vid": info.parent.vid,
            "snap_id": info.parent.snap_id,
            "tag": info.parent.tag,
        },
        "type": _kind(info),
        "create_time": info.create_time,
        "hyper": info.store_policy == 1,
    }
    if used is not None:
        d["used"] = used
        d["shared"] = shared
    return d


def _kind(info: sheepfast.VdiInfo) -> str:
    """What dog's list shows in its first column, in words."""
    if info.snapshot:
        return "snapshot"
    return "clone" if info.is_clone else ""


def _parent_text(info: sheepfast.VdiInfo) -> str:
    p = info.parent
    if p is None:
        return ""
    return f"{p.name}@{p.tag or p.snap_id}" if p.name != info.name else f"@{p.tag or p.snap_id}"


def _usage(backend: Backend, info: sheepfast.VdiInfo) -> tuple[Optional[int], Optional[int]]:
    """(used, shared) bytes, or (None, None) where the backend cannot tell."""
    if Capability.USAGE not in backend.capabilities:
        return None, None
    try:
        with backend.open_listed(info) as image:
            return cast(UsageImage, image).usage()
    except errors.VdiNotFound:
        return None, None  # deleted since the list


def cmd_ls(args: argparse.Namespace, backend: Backend) -> int:
    vdis = backend.list()
    usage = {(v.vid): _usage(backend, v) for v in vdis}
    if args.json:
        json.dump([_info_dict(v, *usage[v.vid]) for v in vdis], sys.stdout, indent=2)
        print()
        return 0
    print(
        f"{'NAME':<32} {'TYPE':<8} {'SIZE':>10} {'USED':>10} {'SHARED':>10} {'VID':>8} "
        f"{'COPIES':>6} {'OBJECT':>8}  {'TAG':<12} PARENT"
    )
    for v in vdis:
        used, shared = usage[v.vid]
        print(
            f"{v.name:<32} {_kind(v):<8} {human(v.size):>10} "
            f"{'-' if used is None else human(used):>10} "
            f"{'-' if shared is None else human(shared):>10} {format_vid(v.vid):>8} "
            f"{v.redundancy:>6} {human(v.object_size):>8}  {v.tag:<12} {_parent_text(v)}"
        )
    return 0


def _snapshot_arg(text: str) -> Union[str, int]:
    """SNAP: a number is a snapshot id (as dog's -s), anything else a tag."""
    return int(text) if text.isdigit() else text


def cmd_info(args: argparse.Namespace, backend: Backend) -> int:
    name = _vdi_name(args.name)
    snapshot = None if args.snapshot is None else _snapshot_arg(args.snapshot)
    info = backend.stat(name, snapshot=snapshot)
    used, shared = _usage(backend, info)
    d = _info_dict(info, used, shared)
    if Capability.SNAPSHOTS in backend.capabilities and not info.snapshot:
        d["snapshots"] = [
            {"tag": s.tag, "snap_id": s.snap_id, "vid": s.vid} for s in backend.snapshots(name)
        ]
    if args.json:
        json.dump(d, sys.stdout, indent=2)
        print()
        return 0
    rows = [
        ("name", d["name"]),
        ("vid", format_vid(info.vid)),
        ("type", _kind(info) or "working VDI"),
        ("size", f"{human(info.size)} ({info.size} bytes)"),
        ("used", "unknown" if used is None else f"{human(used)} ({used} bytes)"),
        ("shared", "unknown" if shared is None else f"{human(shared)} ({shared} bytes)"),
        ("object size", human(info.object_size)),
        ("copies", info.redundancy),
        ("snapshot", f"yes (id {info.snap_id}, tag {info.tag!r})" if info.snapshot else "no"),
        (
            "parent",
            "none"
            if info.parent is None
            else f"{info.parent.name} (snapshot {info.parent.tag or info.parent.snap_id}, "
            f"vid {format_vid(info.parent.vid)})",
        ),
        ("created", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.create_time))),
    ]
    if "snapshots" in d:
        rows.append(
            (
                "snapshots",
                ", ".join(f"{s['tag'] or '-'} (id {s['snap_id']})" for s in d["snapshots"])
                or "none",
            )
        )
    for key, value in rows:
        print(f"{key:<12} {value}")
    return 0


def cmd_snapshot(args: argparse.Namespace, backend: Backend) -> int:
    snap = backend.snapshot(args.name, args.tag)
    if not args.quiet:
        print(
            f"{args.name}: snapshot {snap.tag or '(no tag)'} (id {snap.snap_id}, vid "
            f"{format_vid(snap.vid)})"
        )
    return 0


def cmd_clone(args: argparse.Namespace, backend: Backend) -> int:
    _vdi_name(args.new)
    info = backend.clone(args.name, _snapshot_arg(args.snap), args.new, size=args.size)
    if not args.quiet:
        print(f"{info.name}: clone of {_parent_text(info) or args.name}, {human(info.size)}")
    return 0


def cmd_rollback(args: argparse.Namespace, backend: Backend) -> int:
    info = backend.rollback(args.name, _snapshot_arg(args.snap))
    if not args.quiet:
        print(f"{args.name}: rolled back to {_parent_text(info)} (vid {format_vid(info.vid)})")
    return 0


def cmd_flatten(args: argparse.Namespace, backend: Backend) -> int:
    with backend.open(args.name) as image:
        image.flatten()
        used, shared = _usage(backend, backend.stat(args.name))
    if not args.quiet and used is not None:
        print(f"{args.name}: flattened, {human(used)} of its own, {human(shared or 0)} shared")
    return 0


def cmd_tree(args: argparse.Namespace, backend: Backend) -> int:
    """Each VDI under its parent, as `dog vdi tree`: snapshots of a name in
    order, its working VDI last, clones under the snapshot they came from."""
    vdis = backend.list()
    by_vid = {v.vid: v for v in vdis}
    children: dict[int, list[sheepfast.VdiInfo]] = {}
    for v in vdis:
        children.setdefault(v.parent_vid if v.parent_vid in by_vid else 0, []).append(v)
    roots = children.get(0, [])
    if args.name is not None:
        wanted = _vdi_name(args.name)
        roots = [v for v in roots if v.name == wanted] or [
            v for v in vdis if v.name == wanted and v.parent_vid not in by_vid
        ]
        if not roots and not any(v.name == wanted for v in vdis):
            raise errors.VdiNotFound(f"VDI {wanted!r} not found", 0x08)

    def label(v: sheepfast.VdiInfo) -> str:
        if v.snapshot:
            return f"{v.name}@{v.tag or v.snap_id} [snapshot {v.snap_id}, {format_vid(v.vid)}]"
        return f"{v.name} [{_kind(v) or 'working'}, {format_vid(v.vid)}, {human(v.size)}]"

    def show(v: sheepfast.VdiInfo, prefix: str, last: bool, top: bool) -> None:
        print(label(v) if top else f"{prefix}{'└── ' if last else '├── '}{label(v)}")
        below = sorted(children.get(v.vid, []), key=lambda c: (c.name != v.name, c.name))
        inner = "" if top else prefix + ("    " if last else "│   ")
        for i, child in enumerate(below):
            show(child, inner, i == len(below) - 1, False)

    for root in roots:
        show(root, "", True, True)
    return 0


def cmd_lock(args: argparse.Namespace, backend: Backend) -> int:
    if args.action == "list":
        locks = backend.locks()
        if args.json:
            json.dump([lock.__dict__ for lock in locks], sys.stdout, indent=2, default=list)
            print()
            return 0
        if getattr(getattr(backend, "cluster", None), "locking", True) is False and not args.quiet:
            print("sheepfast: this cluster keeps no locks (formatted without -l)", file=sys.stderr)
        print(f"{'NAME':<32} {'TAG':<12} {'VID':>8} {'STATE':<9} OWNERS")
        for lock in locks:
            print(
                f"{lock.name or '(deleted)':<32} {lock.tag:<12} {format_vid(lock.vid):>8} "
                f"{lock.state:<9} {' '.join(lock.owners)}"
            )
        return 0
    if args.name is None:
        raise UsageError("lock unlock needs NAME")
    snapshot = None if args.snapshot is None else _snapshot_arg(args.snapshot)
    backend.break_lock(_vdi_name(args.name), snapshot=snapshot)
    return 0


def cmd_attr(args: argparse.Namespace, backend: Backend) -> int:
    needs = {"ls": 0, "get": 1, "rm": 1, "set": 2}[args.action]
    given = [a for a in (args.key, args.value) if a is not None]
    if len(given) != needs:
        raise UsageError(
            f"attr {args.action} takes NAME"
            + {0: "", 1: " KEY", 2: " KEY VALUE"}[needs]
            + f" (got {len(given)} more)"
        )
    with backend.open(args.name) as image:
        if args.action == "ls":
            pairs = image.metadata_list()
            if args.json:
                json.dump(
                    {k: v.decode("utf-8", "backslashreplace") for k, v in pairs},
                    sys.stdout,
                    indent=2,
                )
                print()
            for key, value in [] if args.json else pairs:
                print(f"{key}\t{value.decode('utf-8', 'backslashreplace')}")
        elif args.action == "get":
            sys.stdout.buffer.write(image.metadata_get(args.key))
            sys.stdout.buffer.flush()
        elif args.action == "set":
            image.metadata_set(args.key, os.fsencode(args.value))
        else:
            image.metadata_remove(args.key)
    return 0


def cmd_rm(args: argparse.Namespace, backend: Backend) -> int:
    """Deletes every NAME it can (with -s, that snapshot of each); each
    failure is one line, and any makes the exit status 1."""
    names = [_vdi_name(n) for n in args.names]
    snapshot = None if args.snapshot is None else _snapshot_arg(args.snapshot)
    failed = 0
    for name in names:
        try:
            backend.delete(name, snapshot=snapshot)
        except errors.SheepfastError as exc:
            failed += 1
            print(f"sheepfast: error: {name}: {_describe(exc)}", file=sys.stderr)
    return 1 if failed else 0


def cmd_reclaim(args: argparse.Namespace, backend: Backend) -> int:
    try:
        older_than = incomplete.parse_age(args.older_than)
    except errors.InvalidArgument as exc:
        raise UsageError(str(exc)) from None
    if older_than < incomplete.MIN_STALE_AGE:
        raise UsageError(
            f"--older-than must be at least {incomplete.MIN_STALE_AGE:g}s: a live "
            f"upload refreshes its mark every {incomplete.HEARTBEAT_INTERVAL:g}s"
        )
    rows: list[dict[str, Any]] = []
    now = time.time()

    def show(entry: incomplete.Incomplete, error: Optional[Exception]) -> None:
        action = "would delete" if args.dry_run else "deleted" if error is None else "failed"
        mark = entry.mark
        row = {
            "name": entry.name,
            "vid": entry.vid,
            "vid_hex": format_vid(entry.vid),
            "size": entry.size,
            "started": mark.started,
            "heartbeat": mark.heartbeat,
            "age": entry.age,
            "host": mark.host,
            "pid": mark.pid,
            "action": action,
            "error": None if error is None else str(error),
        }
        rows.append(row)
        if not args.json:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mark.started))
            line = (
                f"{action:<12} {entry.name:<32} {human(entry.size):>10} "
                f"{format_vid(entry.vid):>8}  started {started}, heartbeat "
                f"{_duration(entry.age)} ago, writer {mark.host} pid {mark.pid}"
            )
            print(line + (f": {error}" if error is not None else ""), flush=True)

    report = incomplete.reclaim_incomplete(
        backend, older_than, dry_run=args.dry_run, now=now, on_result=show
    )
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    elif not args.quiet and not rows:
        print(f"no incomplete VDIs with a heartbeat older than {args.older_than}", file=sys.stderr)
    return 1 if report.failed else 0


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def cmd_demo(args: argparse.Namespace, backend: Optional[Backend]) -> int:
    from sheepfast import demo

    argv = ["--size-mib", str(args.size_mib)]
    if args.cluster:
        argv += ["--cluster", args.cluster]
    return demo.main(argv)


# ------------------------------------------------------------------ parsing

EPILOG = """\
put --force over an existing NAME never loses the old image: sheep cannot
rename a VDI, so the new image is first uploaded whole into a temporary VDI
NAME.put-XXXXXXXX (a failure there leaves NAME as it was), then NAME is
deleted, created again and filled from the temporary VDI, which is then
deleted. Should that last step fail, the error names the temporary VDI,
which holds the complete new image.

get writes FILE under a hidden temporary name beside it and renames it once
complete; an existing FILE is replaced only with --force.

The benchmark harness is not part of the installed command: from a source
checkout, run 'python -m benchmarks --help'.
"""


def _add_common(p: argparse.ArgumentParser, top: bool) -> None:
    """The options every command takes, before or after its name. On the
    commands they default to SUPPRESS, so they do not undo what was given
    before the command name."""
    kw: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    g = p.add_argument_group("options (before or after the command)")
    g.add_argument(
        "--cluster",
        metavar="HOST:PORT[,...]",
        **({"default": None} | kw),
        help=f"the cluster (default: ${CLUSTER_ENV}, else {DEFAULT_CLUSTER})",
    )
    g.add_argument(
        "--embedded",
        action="store_true",
        **kw,
        help="use a throwaway in-process FakeSheep (gone when the command exits)",
    )
    g.add_argument(
        "--backend",
        choices=KINDS,
        **({"default": None} | kw),
        help="native (the C client), cli (runs dog), or auto (default: "
        "$SHEEPFAST_BACKEND, else auto: native when built)",
    )
    g.add_argument(
        "--timeout",
        type=_timeout,
        metavar="SECONDS",
        **({"default": None} | kw),
        help="give up on connecting or on a reply after SECONDS (default: 10 to "
        "connect, 60 for a reply)",
    )
    g.add_argument("-q", "--quiet", action="store_true", **kw, help="no progress bar or summary")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="sheepfast", description=__doc__, epilog=EPILOG, formatter_class=fmt
    )
    p.add_argument("--version", action="version", version=f"sheepfast {sheepfast.__version__}")
    _add_common(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, description: str = "") -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=description or help, formatter_class=fmt)
        _add_common(c, top=False)
        return c

    put = command(
        "put",
        "upload FILE (or - for stdin) as VDI NAME",
        "Upload FILE (or - for stdin) as a new VDI NAME.\n\n" + EPILOG.split("\n\n")[0],
    )
    put.add_argument("file", metavar="FILE")
    put.add_argument("name", metavar="NAME")
    put.add_argument(
        "--force", action="store_true", help="replace NAME if it exists (safely: see above)"
    )
    put.add_argument(
        "--copies",
        type=_copies,
        default=0,
        help=f"replicas, 1 to {MAX_COPIES} (default: the cluster's)",
    )
    put.add_argument(
        "--object-size",
        dest="bss",
        type=_object_size_shift,
        default=0,
        metavar="SIZE",
        help=f"object size, a power of two from {format_size(1 << MIN_BLOCK_SIZE_SHIFT)} to "
        f"{format_size(1 << MAX_BLOCK_SIZE_SHIFT)} (default: the cluster's)",
    )
    put.add_argument(
        "--no-thin", action="store_true", help="write all-zero objects too (default: skip them)"
    )
    put.set_defaults(func=cmd_put)

    get = command(
        "get",
        "download VDI NAME to FILE (or - for stdout)",
        "Download VDI NAME to FILE (or - for stdout).\n\n" + EPILOG.split("\n\n")[1],
    )
    get.add_argument("name", metavar="NAME")
    get.add_argument("file", metavar="FILE")
    get.add_argument("--force", action="store_true", help="replace FILE if it exists")
    get.set_defaults(func=cmd_get)

    ls = command(
        "ls",
        "list VDIs",
        "List VDIs. Vids are written in hex, as dog shows them; --json gives each "
        "as an integer (vid) and in that hex (vid_hex).",
    )
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)

    info = command("info", "describe one VDI: size, used, shared, parent, snapshots")
    info.add_argument("name", metavar="NAME")
    info.add_argument("-s", "--snapshot", metavar="SNAP", help="a snapshot of NAME")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    rm = command(
        "rm",
        "delete VDIs (their objects are reclaimed)",
        "Delete each NAME; a failure is reported and the others are still deleted "
        "(exit status 1 if any failed).",
    )
    rm.add_argument("names", metavar="NAME", nargs="+")
    rm.add_argument(
        "-s", "--snapshot", metavar="SNAP", help="delete this snapshot of each NAME instead"
    )
    rm.set_defaults(func=cmd_rm)

    snapshot = command(
        "snapshot",
        "snapshot VDI NAME",
        "Snapshot VDI NAME: the snapshot keeps what it holds now, read-only; "
        "the VDI goes on, sharing every object with it until written.",
    )
    snapshot.add_argument("name", metavar="NAME")
    snapshot.add_argument("-s", "--tag", metavar="TAG", help="the snapshot's tag")
    snapshot.set_defaults(func=cmd_snapshot)

    clone = command(
        "clone",
        "a copy-on-write clone NEW of a snapshot of NAME",
        "Make NEW a clone of snapshot SNAP of NAME (its tag or id): it shares "
        "the snapshot's objects until they are written, so it takes no time "
        "whatever the size.",
    )
    clone.add_argument("name", metavar="NAME")
    clone.add_argument("snap", metavar="SNAP")
    clone.add_argument("new", metavar="NEW")
    clone.add_argument("--size", type=_size_arg("--size"), help="larger than the snapshot")
    clone.set_defaults(func=cmd_clone)

    rollback = command(
        "rollback",
        "make VDI NAME what snapshot SNAP holds",
        "Replace VDI NAME by the state snapshot SNAP (tag or id) holds; what was "
        "written since is lost. As dog, the current VDI is deleted first: if "
        "this fails half way, run it again.",
    )
    rollback.add_argument("name", metavar="NAME")
    rollback.add_argument("snap", metavar="SNAP")
    rollback.set_defaults(func=cmd_rollback)

    tree = command("tree", "VDIs under their parents: snapshots, working VDIs, clones")
    tree.add_argument("name", metavar="NAME", nargs="?")
    tree.set_defaults(func=cmd_tree)

    flatten = command(
        "flatten",
        "copy every object clone NAME inherits, so it depends on no snapshot",
    )
    flatten.add_argument("name", metavar="NAME")
    flatten.set_defaults(func=cmd_flatten)

    lock = command(
        "lock",
        "list sheep's VDI locks, or release one by force",
        "lock list: every lock the cluster holds (only a cluster formatted with "
        "'dog cluster format -l' keeps them). lock unlock NAME: release NAME's "
        "lock, whoever holds it, as 'dog vdi lock unlock'.",
    )
    lock.add_argument("action", choices=("list", "unlock"))
    lock.add_argument("name", metavar="NAME", nargs="?")
    lock.add_argument("-s", "--snapshot", metavar="SNAP")
    lock.add_argument("--json", action="store_true")
    lock.set_defaults(func=cmd_lock)

    attr = command(
        "attr",
        "list, get, set or remove a VDI's attributes",
        "attr ls NAME | attr get NAME KEY | attr set NAME KEY VALUE | attr rm NAME KEY. "
        "get writes the value's bytes as they are.",
    )
    attr.add_argument("action", choices=("ls", "get", "set", "rm"))
    attr.add_argument("name", metavar="NAME")
    attr.add_argument("key", metavar="KEY", nargs="?")
    attr.add_argument("value", metavar="VALUE", nargs="?")
    attr.add_argument("--json", action="store_true")
    attr.set_defaults(func=cmd_attr)

    reclaim = command("reclaim", "delete VDIs left half-written by uploads whose writer died")
    reclaim.add_argument(
        "--older-than",
        dest="older_than",
        required=True,
        metavar="AGE",
        help="only marks whose heartbeat is older than AGE: 90s, 15m, 1h, "
        f"2d (at least {incomplete.MIN_STALE_AGE:g}s)",
    )
    reclaim.add_argument(
        "--dry-run", action="store_true", help="list what would be deleted, delete nothing"
    )
    reclaim.add_argument("--json", action="store_true")
    reclaim.set_defaults(func=cmd_reclaim)

    demo = command(
        "demo",
        "the README's main job through glance_store (needs "
        "sheepfast[glance]); on an embedded FakeSheep unless a cluster "
        "is given",
    )
    demo.add_argument("--size-mib", type=int, default=256)
    demo.set_defaults(func=cmd_demo, own_cluster=True)
    return p


@contextlib.contextmanager
def cluster_address(args: argparse.Namespace) -> Iterator[str]:
    if args.embedded:
        from sheepfast.testing import FakeSheep

        with FakeSheep() as sheep:
            yield sheep.address
        return
    yield args.cluster or os.environ.get(CLUSTER_ENV) or DEFAULT_CLUSTER


def _backend_kind(args: argparse.Namespace) -> str:
    """The backend to open (backends.resolve_kind, the one place that
    chooses); its warning that the extension is not built becomes one line
    on stderr, its refusal an error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            kind = resolve_kind(args.backend)
        except errors.InvalidArgument as exc:
            raise errors.SheepfastError(str(exc)) from None
    if not args.quiet:
        for warning in caught:
            print(f"sheepfast: {warning.message}", file=sys.stderr)
    return kind


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.embedded and args.cluster:
        parser.error("--cluster and --embedded do not go together")
    args.progress = not args.quiet and sys.stderr.isatty()
    try:
        # VDI names are checked before anything is touched
        for attr in ("name", "names"):
            value = getattr(args, attr, None)
            for name in value if isinstance(value, list) else [value] if value else []:
                _vdi_name(name)
        if getattr(args, "own_cluster", False):
            # demo picks (or starts) its cluster itself
            return int(args.func(args, None))
        timeouts = (
            {}
            if args.timeout is None
            else {"connect_timeout": args.timeout, "io_timeout": args.timeout}
        )
        kind = _backend_kind(args)
        with cluster_address(args) as address, open_backend(address, kind, **timeouts) as backend:
            return int(args.func(args, backend))
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"sheepfast: error: {exc}", file=sys.stderr)
        return 2
    except ReplaceFailed as exc:
        interrupted = isinstance(exc.cause, KeyboardInterrupt)
        lead = "\n" if interrupted else ""  # ends the ^C line
        print(f"{lead}sheepfast: error: {exc}", file=sys.stderr)
        return 128 + signal.SIGINT if interrupted else 1
    except KeyboardInterrupt:
        print("\nsheepfast: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader of stdout went away ('| head'). dog dies of SIGPIPE
        # then, silently, and the shell reports 128 + SIGPIPE: so do we.
        # stdout goes to devnull so that the flush at exit cannot fail again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (errors.SheepfastError, OSError, MemoryError) as exc:
        print(f"sheepfast: error: {_describe(exc, args.command)}", file=sys.stderr)
        return 1


def _describe(exc: BaseException, command: Optional[str] = None) -> str:
    if isinstance(exc, errors.VdiExists) and command in ("put", "get"):
        return f"{exc} (use --force to replace it)"
    if isinstance(exc, FileNotFoundError) and not isinstance(exc, errors.SheepfastError):
        return (
            f"no such {'directory' if exc.strerror == 'no such directory' else 'file'}: "
            f"{exc.filename}"
        )
    if isinstance(exc, OSError) and not isinstance(exc, errors.SheepfastError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
