"""The ``sheepfast`` command: move images in and out of a Sheepdog cluster.

    sheepfast put FILE NAME        upload (FILE may be - for stdin)
    sheepfast get NAME FILE        download (FILE may be - for stdout)
    sheepfast ls [--json]          list VDIs
    sheepfast info NAME [--json]   size, used, object size, copies, vid, snapshot
    sheepfast rm NAME              delete
    sheepfast reclaim --older-than AGE [--dry-run]
                                   delete VDIs left half-written by uploads that died
    sheepfast bench                the benchmark harness
    sheepfast demo                 the README's main job

The cluster comes from --cluster host:port[,host:port...] or
$SHEEPFAST_CLUSTER; --embedded runs an in-process FakeSheep instead.
Errors are one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import re
import signal
import stat
import sys
import time
from typing import BinaryIO, Iterator, Optional, Union

import sheepfast
from sheepfast import errors, incomplete
from sheepfast.backends import KINDS, Backend, open_backend
from sheepfast.image import SheepdogImage, check_name, is_zero, parse_address

CLUSTER_ENV = "SHEEPFAST_CLUSTER"
MiB = 1 << 20
CHUNK = 64 * MiB  # bytes moved per call: bounds memory, paces the progress bar


class UsageError(Exception):
    """A mistake on the command line (exit status 2)."""


# ------------------------------------------------------------------ helpers

_SIZE = re.compile(r"(\d+)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'4M', '1GiB', '512k', '1048576' -> bytes (binary units)."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise UsageError(f"bad size {text!r} (want e.g. 4M, 1G or a byte count)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def object_size_shift(text: str) -> int:
    size = parse_size(text)
    shift = size.bit_length() - 1
    if size <= 0 or size != 1 << shift or not 20 <= shift <= 31:
        raise UsageError(f"object size must be a power of two from 1M to 2G (got {text})")
    return shift


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


class Progress:
    """Bytes, rate and ETA on stderr, redrawn in place; silent unless stderr
    is a terminal and --quiet was not given."""

    def __init__(self, label: str, total: Optional[int], enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done == self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        line = f"{self.label} {human(self.done)}"
        if self.total:
            pct = 100.0 * self.done / self.total
            eta = (self.total - self.done) / rate if rate > 0 else 0
            line += f" / {human(self.total)} ({pct:3.0f}%)  {human(rate)}/s  ETA {eta:4.0f} s"
        else:
            line += f"  {human(rate)}/s"
        sys.stderr.write("\r" + line.ljust(78)[:100])
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            sys.stderr.write("\n")
            sys.stderr.flush()


# ----------------------------------------------------------------- commands

def cmd_put(args: argparse.Namespace, backend: Backend) -> int:
    name = check_name(args.name)  # before anything is created
    if args.file == "-":
        src: BinaryIO = sys.stdin.buffer
        size: Optional[int] = None
    else:
        src = open(args.file, "rb")
        st = os.fstat(src.fileno())
        size = st.st_size if stat.S_ISREG(st.st_mode) else None
    with contextlib.ExitStack() as stack:
        if src is not sys.stdin.buffer:
            stack.enter_context(src)
        if args.force and backend.exists(name):
            backend.delete(name)
        # atomic on the server: an existing VDI fails here, before any data moves
        backend.create(name, size or 0, copies=args.copies, block_size_shift=args.bss)
        host, port = parse_address(backend.addresses.split(",")[0])
        image = stack.enter_context(
            SheepdogImage(host, port, name, CHUNK, backend=backend, thin=not args.no_thin))
        try:
            progress = Progress(f"put {name}", size, args.progress)
            # the upload engine the glance driver uses: reading overlaps writing
            written = image.upload(_source(src, size), size or 0,
                                   consumers=[lambda chunk: progress.update(len(chunk))])
            progress.finish()
        except BaseException:
            # Ctrl-C, a short file, the cluster: never leave a partial VDI
            # (if this delete fails, the upload mark lets `reclaim` find it)
            with contextlib.suppress(Exception):
                image.discard()
            raise
    if not args.quiet:
        print(f"{name}: {written} bytes", file=sys.stderr)
    return 0


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
    return (whole[offset:offset + CHUNK] for offset in range(0, size, CHUNK))


def cmd_get(args: argparse.Namespace, backend: Backend) -> int:
    host, port = parse_address(backend.addresses.split(",")[0])
    with SheepdogImage(host, port, args.name, CHUNK, backend=backend) as image:
        size = image.size
        to_stdout = args.file == "-"
        dst: BinaryIO = sys.stdout.buffer if to_stdout else open(args.file, "wb")
        with contextlib.ExitStack() as stack:
            if not to_stdout:
                stack.enter_context(dst)
            # all-zero chunks become holes, but only where seeking is possible
            sparse = not to_stdout and stat.S_ISREG(os.fstat(dst.fileno()).st_mode)
            progress = Progress(f"get {args.name}", size, args.progress)
            hole = image.open().object_size  # the granularity sheep allocates in
            # the read engine the glance driver uses: the next chunk is read
            # while this one is written out
            for chunk in image.chunks(0, size):
                view = memoryview(chunk)
                if not sparse:
                    dst.write(view)
                else:
                    for start in range(0, len(view), hole):
                        piece = view[start:start + hole]
                        if is_zero(piece):
                            dst.seek(len(piece), os.SEEK_CUR)
                        else:
                            dst.write(piece)
                progress.update(len(view))
                del view, chunk  # let the engine refill it
            if sparse:
                dst.truncate(size)  # a trailing hole still counts
            dst.flush()
            progress.finish()
    return 0


def _info_dict(info: sheepfast.VdiInfo, used: Optional[int] = None,
               shared: Optional[int] = None) -> dict:
    d = {
        "name": info.name,
        "vid": info.vid,
        "size": info.size,
        "object_size": info.object_size,
        "copies": info.copies,
        "redundancy": info.redundancy,
        "snapshot": info.snapshot,
        "snap_id": info.snap_id,
        "tag": info.tag,
        "parent_vid": info.parent_vid,
        "create_time": info.create_time,
        "hyper": info.store_policy == 1,
    }
    if used is not None:
        d["used"] = used
        d["shared"] = shared
    return d


def cmd_ls(args: argparse.Namespace, backend: Backend) -> int:
    vdis = backend.list()
    if args.json:
        json.dump([_info_dict(v) for v in vdis], sys.stdout, indent=2)
        print()
        return 0
    print(f"{'NAME':<32} {'TYPE':<8} {'SIZE':>12} {'VID':>8} {'COPIES':>6} {'OBJECT':>8}  TAG")
    for v in vdis:
        kind = "snapshot" if v.snapshot else ("clone" if v.parent_vid and v.snap_id == 1 else "")
        print(f"{v.name:<32} {kind:<8} {human(v.size):>12} {v.vid:>8x} {v.redundancy:>6} "
              f"{human(v.object_size):>8}  {v.tag}")
    return 0


def cmd_info(args: argparse.Namespace, backend: Backend) -> int:
    info = backend.stat(args.name)
    used = shared = None
    with backend.open(args.name) as image:
        if hasattr(image, "usage"):
            used, shared = image.usage()
    d = _info_dict(info, used, shared)
    if args.json:
        json.dump(d, sys.stdout, indent=2)
        print()
        return 0
    rows = [
        ("name", d["name"]),
        ("vid", f"{info.vid:x}"),
        ("size", f"{human(info.size)} ({info.size} bytes)"),
        ("used", "unknown" if used is None else f"{human(used)} ({used} bytes)"),
        ("shared", "unknown" if shared is None else f"{human(shared)} ({shared} bytes)"),
        ("object size", human(info.object_size)),
        ("copies", info.redundancy),
        ("snapshot", "yes" if info.snapshot else "no"),
        ("created", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.create_time))),
    ]
    for key, value in rows:
        print(f"{key:<12} {value}")
    return 0


def cmd_rm(args: argparse.Namespace, backend: Backend) -> int:
    backend.delete(args.name)
    return 0


def cmd_reclaim(args: argparse.Namespace, backend: Backend) -> int:
    try:
        older_than = incomplete.parse_age(args.older_than)
    except errors.InvalidArgument as exc:
        raise UsageError(str(exc)) from None
    if older_than < incomplete.MIN_STALE_AGE:
        raise UsageError(f"--older-than must be at least {incomplete.MIN_STALE_AGE:g}s: a live "
                         f"upload refreshes its mark every {incomplete.HEARTBEAT_INTERVAL:g}s")
    rows: list[dict] = []
    now = time.time()

    def show(entry: incomplete.Incomplete, error: Optional[Exception]) -> None:
        action = "would delete" if args.dry_run else "deleted" if error is None else "failed"
        mark = entry.mark
        row = {"name": entry.name, "vid": entry.vid, "size": entry.size,
               "started": mark.started, "heartbeat": mark.heartbeat, "age": entry.age,
               "host": mark.host, "pid": mark.pid, "action": action,
               "error": None if error is None else str(error)}
        rows.append(row)
        if not args.json:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mark.started))
            line = (f"{action:<12} {entry.name:<32} {human(entry.size):>10} {entry.vid:>8x}  "
                    f"started {started}, heartbeat {_duration(entry.age)} ago, "
                    f"writer {mark.host} pid {mark.pid}")
            print(line + (f": {error}" if error is not None else ""), flush=True)

    report = incomplete.reclaim_incomplete(backend, older_than, dry_run=args.dry_run, now=now,
                                           on_result=show)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    elif not args.quiet and not rows:
        print(f"no incomplete VDIs with a heartbeat older than {args.older_than}",
              file=sys.stderr)
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


def cmd_bench(args: argparse.Namespace, backend: Optional[Backend]) -> int:
    # The harness is not installed with the package: it is found in the
    # source checkout the command is run from.
    if os.path.isdir(os.path.join(os.getcwd(), "benchmarks")) and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        from benchmarks.__main__ import main as bench_main  # type: ignore[import-not-found]
    except ImportError:
        raise UsageError("the benchmark harness lives in benchmarks/ of a source checkout; "
                         "run 'sheepfast bench' from there") from None
    argv = list(args.bench_args)
    if args.cluster and "--cluster" not in argv:
        argv += ["--cluster", args.cluster]
    return bench_main(argv)


# ------------------------------------------------------------------ parsing

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sheepfast", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"sheepfast {sheepfast.__version__}")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--cluster", default=os.environ.get(CLUSTER_ENV),
                       help=f"host:port[,host:port...] (default ${CLUSTER_ENV})")
    where.add_argument("--embedded", action="store_true",
                       help="use an in-process FakeSheep (gone when the command exits)")
    p.add_argument("--backend", choices=KINDS, default=None,
                   help="native (C client), cli (dog), or auto (default: $SHEEPFAST_BACKEND or auto)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    put = sub.add_parser("put", help="upload FILE (or - for stdin) as VDI NAME")
    put.add_argument("file", metavar="FILE")
    put.add_argument("name", metavar="NAME")
    put.add_argument("--force", action="store_true", help="replace NAME if it exists")
    put.add_argument("--copies", type=int, default=0, help="replicas (default: cluster's)")
    put.add_argument("--object-size", dest="object_size", default=None,
                     help="object size, a power of two from 1M to 2G (default: cluster's)")
    put.add_argument("--no-thin", action="store_true",
                     help="write all-zero objects too (default: skip them)")
    put.set_defaults(func=cmd_put)

    get = sub.add_parser("get", help="download VDI NAME to FILE (or - for stdout)")
    get.add_argument("name", metavar="NAME")
    get.add_argument("file", metavar="FILE")
    get.set_defaults(func=cmd_get)

    ls = sub.add_parser("ls", help="list VDIs")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)

    info = sub.add_parser("info", help="describe one VDI")
    info.add_argument("name", metavar="NAME")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    rm = sub.add_parser("rm", help="delete a VDI (its objects are reclaimed)")
    rm.add_argument("name", metavar="NAME")
    rm.set_defaults(func=cmd_rm)

    reclaim = sub.add_parser(
        "reclaim", help="delete VDIs left half-written by uploads whose writer died")
    reclaim.add_argument("--older-than", dest="older_than", required=True, metavar="AGE",
                         help="only marks whose heartbeat is older than AGE: 90s, 15m, 1h, "
                              f"2d (at least {incomplete.MIN_STALE_AGE:g}s)")
    reclaim.add_argument("--dry-run", action="store_true",
                         help="list what would be deleted, delete nothing")
    reclaim.add_argument("--json", action="store_true")
    reclaim.set_defaults(func=cmd_reclaim)

    bench = sub.add_parser("bench", help="run the benchmark harness (from a source checkout; "
                                         "its options after --, e.g. bench -- --sizes 1G)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER,
                       help="passed to the harness (see sheepfast bench -- --help)")
    bench.set_defaults(func=cmd_bench, own_cluster=True)

    demo = sub.add_parser("demo", help="the README's main job on the embedded cluster")
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
    if not args.cluster:
        raise UsageError(f"no cluster: give --cluster host:port, set {CLUSTER_ENV}, "
                         "or use --embedded")
    yield args.cluster


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.progress = not args.quiet and sys.stderr.isatty()
    try:
        if getattr(args, "object_size", None):
            args.bss = object_size_shift(args.object_size)
        else:
            args.bss = 0
        if getattr(args, "own_cluster", False):
            # demo and bench pick (or start) their cluster themselves
            return args.func(args, None)
        with cluster_address(args) as address, \
                open_backend(address, args.backend) as backend:
            return args.func(args, backend)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"sheepfast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nsheepfast: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # the reader of our stdout went away (e.g. '| head'): not an error to report
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return 1
    except (errors.SheepfastError, OSError, MemoryError) as exc:
        print(f"sheepfast: error: {_describe(exc)}", file=sys.stderr)
        return 1


def _describe(exc: BaseException) -> str:
    if isinstance(exc, errors.VdiExists):
        return f"{exc} (use --force to replace it)"
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}"
    if isinstance(exc, OSError) and not isinstance(exc, errors.SheepfastError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
