"""Load through the real Glance API: N concurrent HTTP clients uploading
(chunked with no size, and with Content-Length) and downloading images, on
three stores of one Glance side by side, every byte verified.

    python -m benchmarks glance                                  # embedded FakeSheep
    python -m benchmarks glance --cluster 127.0.0.1:7000 --sizes 256M,1G \\
        --clients 1,4,8,16 --repeat 3 --json out.json

The Glance API (the version tests/glance_e2e pins) runs under gunicorn
(examples/gunicorn.conf.py) or, with --server uwsgi, uWSGI
(examples/uwsgi.ini), --workers processes x --threads threads, on a
PostgreSQL server started here in a temporary directory. Its enabled
backends:
  sd    sheepfast's store (examples/glance-api.conf) on the cluster
  file  Glance's own file store on tmpfs (/dev/shm): the HTTP path's ceiling
  old   the removed driver's algorithm (benchmarks/old_store.py), needs dog
Each round (N clients, one case, one image size and pattern) runs once per
store, the stores' order alternating from round to round; --repeat runs
them all again, and the table gives medians with the range of MiB/s.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # glance_e2e: the e2e test's Glance harness

from glance_e2e import harness, servers  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
PIECE = MiB  # what a client sends per write / chunk
STORES = {"sd": "sheepdog", "file": "file", "old": "oldsheep"}
CASES = ("upload-chunked", "upload-sized", "download")
PATTERNS = ("dense", "sparse")
TICK = os.sysconf("SC_CLK_TCK")


# -- data ----------------------------------------------------------------------


class Content:
    """The bytes of image number `k`: 1 MiB pieces taken from a random pool
    (shifted by k, so that images differ), and for "sparse" three objects in
    four (4 MiB each) of zeros.

    The clients verify every byte without hashing while they are timed: a
    download is compared with pieces() as it arrives (memcmp), an upload's
    md5 is computed once beforehand (md5()) and compared with the checksum
    Glance computed of what it received. Hashing in the clients would make
    them, not the API, the bottleneck of a 2-CPU machine."""

    _pool: Optional[list[bytes]] = None
    _zero = bytes(PIECE)
    _md5: dict[tuple[int, str, int], str] = {}

    def __init__(self, size: int, pattern: str, k: int):
        self.size, self.pattern, self.k = size, pattern, k
        if Content._pool is None:
            rnd = random.Random(0x5EE9).randbytes(64 * PIECE)  # the same in every process
            Content._pool = [rnd[i * PIECE : (i + 1) * PIECE] for i in range(64)]

    def pieces(self) -> Iterator[bytes]:
        pool = Content._pool
        assert pool is not None
        left, i = self.size, 0
        while left > 0:
            n = min(PIECE, left)
            if self.pattern == "sparse" and (i // 4) % 4 != 0:
                piece = Content._zero
            else:
                piece = pool[(i * 7 + self.k) % len(pool)]
            yield piece if n == PIECE else piece[:n]
            left -= n
            i += 1

    def md5(self) -> str:
        key = (self.size, self.pattern, self.k)
        if key not in Content._md5:
            h = hashlib.md5()
            for piece in self.pieces():
                h.update(piece)
            Content._md5[key] = h.hexdigest()
        return Content._md5[key]


# -- /proc ---------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime+stime of pid and of the children it waited for (dog processes)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / TICK


def peak_rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def reset_peak_rss(pid: int) -> None:
    """Start VmHWM over (clear_refs 5); needs to own the process."""
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")


def sheep_pids(ports: list[int]) -> list[int]:
    """Processes named sheep listening on one of `ports` (from their argv)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not argv or os.path.basename(argv[0]) != b"sheep":
            continue
        for a, b in zip(argv, argv[1:]):
            if a == b"-p" and b.isdigit() and int(b) in ports:
                found.append(int(entry))
    return found


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Every thread of pid onto cpus (sched_setaffinity takes one thread)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            os.sched_setaffinity(int(tid), cpus)


@contextlib.contextmanager
def pinned(sheep: list[int]) -> Iterator[tuple[set[int], set[int]]]:
    """The sheep on the last CPU, this process (and what it starts from now
    on: PostgreSQL, Glance) on the others; all back on every CPU after."""
    everything = os.sched_getaffinity(0)
    cpus = sorted(everything)
    if len(cpus) < 2 or not sheep:
        raise SystemExit("benchmarks glance: --pin needs 2 CPUs and a local real cluster")
    api, storage = set(cpus[:-1]), {cpus[-1]}
    own = {pid: os.sched_getaffinity(pid) for pid in sheep}
    try:
        for pid in sheep:
            try:
                set_affinity(pid, storage)
            except PermissionError as exc:
                raise SystemExit(
                    f"benchmarks glance: --pin cannot move sheep {pid}: {exc}"
                ) from exc
        os.sched_setaffinity(0, api)
        yield api, storage
    finally:
        os.sched_setaffinity(0, everything)
        for pid, cpus_before in own.items():
            with contextlib.suppress(OSError):
                set_affinity(pid, cpus_before)


# -- one client ------------------------------------------------------------------


class Client:
    def __init__(self, port: int):
        self.port = port

    def _conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=900)

    def _json(self, method: str, path: str, payload: Any = None) -> Any:
        hdrs = dict(harness.AUTH_HEADERS)
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            hdrs["Content-Type"] = "application/json"
        conn = self._conn()
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {raw[:500]!r}")
        return json.loads(raw) if raw else None

    def create(self) -> str:
        image = self._json(
            "POST",
            "/v2/images",
            {
                "name": f"load-{uuid.uuid4().hex[:8]}",
                "disk_format": "raw",
                "container_format": "bare",
            },
        )
        return str(image["id"])

    def upload(self, image_id: str, store: str, content: Content, sized: bool) -> float:
        """Seconds; the caller checks Glance's checksum against content.md5()."""
        hdrs = dict(harness.AUTH_HEADERS)
        hdrs["Content-Type"] = "application/octet-stream"
        hdrs["X-Image-Meta-Store"] = store
        if sized:
            hdrs["Content-Length"] = str(content.size)
        else:
            hdrs["Transfer-Encoding"] = "chunked"
        conn = self._conn()
        t0 = time.monotonic()
        try:
            conn.request(
                "PUT",
                f"/v2/images/{image_id}/file",
                body=content.pieces(),
                headers=hdrs,
                encode_chunked=not sized,
            )
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        took = time.monotonic() - t0
        if resp.status != 204:
            raise RuntimeError(f"upload {image_id} to {store}: HTTP {resp.status}: {raw[:500]!r}")
        return took

    def download(self, image_id: str, content: Content) -> tuple[float, float]:
        """(seconds, seconds to the first body byte); RuntimeError naming the
        offset when the body differs from content or its length does."""
        conn = self._conn()
        t0 = time.monotonic()
        ttfb = None
        pos = 0
        try:
            conn.request("GET", f"/v2/images/{image_id}/file", headers=harness.AUTH_HEADERS)
            resp = conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"download {image_id}: HTTP {resp.status}: {resp.read(500)!r}")
            # The first byte, however little has come: readinto() below waits
            # for a whole piece.
            if resp.peek(1):
                ttfb = time.monotonic() - t0
            buf = bytearray(PIECE)
            view = memoryview(buf)
            for want in content.pieces():
                got = 0
                while got < len(want):  # a whole piece, however the body arrives
                    n = resp.readinto(view[got : len(want)])
                    if not n:
                        raise RuntimeError(
                            f"download {image_id}: ended at byte {pos + got} of {content.size}"
                        )
                    got += n
                # bytearray == bytes is a memcmp; a memoryview compares byte by byte
                if (buf if got == len(buf) else bytes(view[:got])) != want:
                    raise RuntimeError(f"download {image_id}: bytes differ in [{pos}, {pos + got})")
                pos += got
            if resp.read(1):
                raise RuntimeError(f"download {image_id}: longer than the {content.size} sent")
        finally:
            conn.close()
        return time.monotonic() - t0, ttfb or 0.0

    def first_byte(self, image_id: str) -> float:
        """Seconds from sending GET to the first body byte; the response is
        then dropped (Glance closes the store's iterator)."""
        conn = self._conn()
        t0 = time.monotonic()
        try:
            conn.request("GET", f"/v2/images/{image_id}/file", headers=harness.AUTH_HEADERS)
            resp = conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"download {image_id}: HTTP {resp.status}: {resp.read(500)!r}")
            if not resp.peek(1):
                raise RuntimeError(f"download {image_id}: no body")
            return time.monotonic() - t0
        finally:
            conn.close()

    def image(self, image_id: str) -> Any:
        return self._json("GET", f"/v2/images/{image_id}")

    def delete(self, image_id: str) -> None:
        self._json("DELETE", f"/v2/images/{image_id}")


# -- a round: N clients at once -------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def run_round(
    client: Client,
    case: str,
    store: str,
    images: list[tuple[str, Content]],
    workers: list[int],
    sheep: list[int],
) -> dict[str, Any]:
    """One case for every image at once, one thread each. `images` holds
    (image id, content) pairs. Raises when a byte differs."""
    n = len(images)
    results: list[Any] = [None] * n
    errors: list[str] = []
    start = threading.Barrier(n + 1)

    def one(i: int) -> None:
        image_id, content = images[i]
        try:
            start.wait()
            if case == "download":
                results[i] = client.download(image_id, content)
            else:
                took = client.upload(image_id, store, content, case == "upload-sized")
                meta = client.image(image_id)
                if meta["checksum"] != content.md5() or meta["size"] != content.size:
                    raise RuntimeError(
                        f"upload {image_id}: Glance has {meta}; sent md5 {content.md5()}"
                    )
                results[i] = (took, None)
        except Exception as exc:  # reported for the round as a whole
            errors.append(f"{type(exc).__name__}: {exc}")

    # daemons: a SIGTERM while they wait at the barrier must not keep the process alive
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for pid in workers:
        reset_peak_rss(pid)
    cpu0 = sum(cpu_seconds(p) for p in workers)
    sheep0 = sum(cpu_seconds(p) for p in sheep)
    start.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    cpu = sum(cpu_seconds(p) for p in workers) - cpu0
    sheep_cpu = sum(cpu_seconds(p) for p in sheep) - sheep0
    if errors:
        raise RuntimeError(f"{case} on {store}, {n} clients: " + "; ".join(errors))
    moved = sum(c.size for _i, c in images)
    times = [r[0] for r in results]
    row: dict[str, Any] = {
        "case": case,
        "store": store,
        "clients": n,
        "bytes": moved,
        "wall_s": wall,
        "mib_s": moved / MiB / wall,
        "p50_s": statistics.median(times),
        "p99_s": _percentile(times, 0.99),
        "api_cpu_s_per_gib": cpu / (moved / GiB),
        "api_peak_rss_mib": max((peak_rss_mib(p) for p in workers), default=0.0),
        "sheep_cpu_s_per_gib": sheep_cpu / (moved / GiB) if sheep else None,
    }
    if case == "download":
        ttfbs = [r[1] for r in results]
        row["ttfb_p50_s"] = statistics.median(ttfbs)
        row["ttfb_p99_s"] = _percentile(ttfbs, 0.99)
    return row


# -- the deployment --------------------------------------------------------------


def entry_point_dir(base: Path) -> Path:
    """A directory that, on PYTHONPATH, makes stevedore find old_store: the
    entry point and a link to benchmarks/ (not the whole repository, whose
    unbuilt sheepfast/ would shadow the installed one)."""
    d = base / "entry-points"
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "benchmarks").exists():
        (d / "benchmarks").symlink_to(REPO / "benchmarks")
    info = d / "sheepfast_benchmark_oldsheep-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sheepfast-benchmark-oldsheep\nVersion: 0\n"
    )
    (info / "entry_points.txt").write_text(
        "[glance_store.drivers]\noldsheep = benchmarks.old_store:Store\n"
    )
    return d


@contextlib.contextmanager
def deployment(
    base: Path,
    sheep_address: str,
    stores: list[str],
    workers: int,
    threads: int,
    dog: Optional[str],
    python: Optional[str] = None,
    sd_options: Optional[dict[str, Any]] = None,
    server: str = "gunicorn",
) -> Iterator[servers.GunicornGlance | servers.UwsgiGlance]:
    """PostgreSQL and Glance with `stores` enabled, served by `server` (a
    key of servers.SERVERS); sd_options: sheepfast store options on top of
    examples/glance-api.conf."""
    shm = Path(tempfile.mkdtemp(prefix="sheepfast-glance-file-", dir="/dev/shm"))
    try:
        with servers.PostgreSQL(base / "pg") as pg:
            first = sheep_address.split(",")[0]  # the store finds the other nodes
            host, _, port = first.rpartition(":")
            extra: dict[str, dict[str, Any]] = {
                "DEFAULT": {
                    "enabled_backends": ",".join(f"{s}:{STORES[s]}" for s in stores),
                    "image_size_cap": 1 << 40,
                },
                "database": {"connection": pg.url},
                "glance_store": {"default_backend": stores[0]},
            }
            if sd_options:
                extra["sd"] = dict(sd_options)
            if "file" in stores:
                extra["file"] = {"filesystem_store_datadir": f"{shm}/"}
            if "old" in stores:
                extra["old"] = {
                    "oldsheep_address": host.strip("[]"),
                    "oldsheep_port": port,
                    "oldsheep_dog": dog or "dog",
                }
            harness.write_config(base / "etc", base / "state", "sd", first, extra=extra)
            glance = servers.SERVERS[server](
                base / "etc",
                base / "glance-api.log",
                python,
                workers=workers,
                threads=threads,
                pythonpath=[str(entry_point_dir(base))],
            )
            glance.db_sync()
            with glance.start():
                yield glance
    finally:
        shutil.rmtree(shm, ignore_errors=True)


# -- the benchmark -----------------------------------------------------------------


def run(args: argparse.Namespace, progress: Any) -> list[dict[str, Any]]:
    from benchmarks import harness as bench

    rows: list[dict[str, Any]] = []
    base = Path(tempfile.mkdtemp(prefix="sheepfast-glance-load-"))
    try:
        with contextlib.ExitStack() as stack:
            cluster = stack.enter_context(bench.cluster(args.cluster))
            args.cluster_info = cluster
            ports = [int(a.rpartition(":")[2]) for a in cluster.nodes]
            sheep = sheep_pids(ports) if cluster.kind == "real" else []
            if args.pin:
                args.pinned = stack.enter_context(pinned(sheep))
            server = stack.enter_context(
                deployment(
                    base,
                    cluster.address,
                    args.stores,
                    args.workers,
                    args.threads,
                    args.dog,
                    server=args.server,
                )
            )
            args.glance_server = server.describe()
            workers = server.worker_pids() + [server.proc.pid]
            client = Client(server.port)
            order = list(args.stores)
            per_run = len(args.sizes) * len(args.patterns) * len(args.clients)
            try:
                for run_no in range(args.repeat):
                    if run_no and per_run % 2 == 0:
                        order.reverse()  # else each round has the same store first every run
                    for size in args.sizes:
                        for pattern in args.patterns:
                            for n in args.clients:
                                for st in order:
                                    for row in _rounds(
                                        client,
                                        st,
                                        size,
                                        pattern,
                                        n,
                                        args.cases,
                                        workers,
                                        sheep,
                                        progress,
                                    ):
                                        rows.append(dict(row, run=run_no))
                                order.reverse()  # alternate which store goes first
                if args.first_bytes:
                    args.first_byte_rows = first_bytes(
                        client, args.stores, args.sizes, args.patterns, args.first_bytes, progress
                    )
            except Exception:
                print(f"Glance's log (tail):\n{server.log()}", file=sys.stderr)
                raise
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return rows


def _rounds(
    client: Client,
    store: str,
    size: int,
    pattern: str,
    n: int,
    cases: list[str],
    workers: list[int],
    sheep: list[int],
    progress: Any,
) -> list[dict[str, Any]]:
    """The cases for N clients on one store: a chunked upload then a download
    of the same images, then a sized upload of new ones; images deleted after."""
    out = []
    for upload in ("upload-chunked", "upload-sized"):
        todo = [c for c in (upload, "download" if upload == "upload-chunked" else None) if c]
        if not any(c in cases for c in todo):
            continue
        images = [(client.create(), Content(size, pattern, k)) for k in range(n)]
        for _i, content in images:
            content.md5()  # before the clock starts
        try:
            for case in todo:
                measured = case in cases
                row = run_round(
                    client,
                    case,
                    store,
                    images,
                    workers if measured else [],
                    sheep if measured else [],
                )
                if measured:
                    row.update(size=size, pattern=pattern)
                    out.append(row)
                    if progress:
                        print(_line(row), file=progress, flush=True)
        finally:
            for image_id, _c in images:
                with contextlib.suppress(Exception):
                    client.delete(image_id)
    return out


def first_bytes(
    client: Client,
    stores: list[str],
    sizes: list[int],
    patterns: list[str],
    samples: int,
    progress: Any,
) -> list[dict[str, Any]]:
    """Time to first byte alone, one client: one image per store, then
    `samples` GETs of each, the stores taking turns in ABBA order so that
    neither always goes first or follows the other. Nothing else runs
    between two GETs (no upload or delete in between, unlike the rounds)."""
    out = []
    for size in sizes:
        for pattern in patterns:
            content = Content(size, pattern, 0)
            ids = {}
            try:
                for st in stores:
                    ids[st] = client.create()
                    client.upload(ids[st], st, content, True)
                    meta = client.image(ids[st])
                    if meta["checksum"] != content.md5():
                        raise RuntimeError(f"upload {ids[st]} to {st}: Glance has {meta}")
                times: dict[str, list[float]] = {st: [] for st in stores}
                order = list(stores)
                for _k in range(samples):
                    for st in order:
                        times[st].append(client.first_byte(ids[st]))
                    order.reverse()
                for st in stores:
                    t = sorted(times[st])
                    row = {
                        "store": st,
                        "size": size,
                        "pattern": pattern,
                        "samples": t,
                        "p10_s": _percentile(t, 0.10),
                        "p50_s": statistics.median(t),
                        "p90_s": _percentile(t, 0.90),
                    }
                    out.append(row)
                    if progress:
                        print(
                            f"{st:>4} first byte {_size(size):>5} {pattern:<6} "
                            f"p50 {row['p50_s'] * 1000:.1f} ms (p10 {row['p10_s'] * 1000:.1f}, "
                            f"p90 {row['p90_s'] * 1000:.1f}) of {samples}",
                            file=progress,
                            flush=True,
                        )
            finally:
                for image_id in ids.values():
                    with contextlib.suppress(Exception):
                        client.delete(image_id)
    return out


def first_byte_table(rows: list[dict[str, Any]], stores: list[str]) -> str:
    """Markdown: per size and pattern, each store's median time to first
    byte with p10-p90, and sd's median over the others'."""
    by = {(r["size"], r["pattern"], r["store"]): r for r in rows}
    keys = sorted({(r["size"], r["pattern"]) for r in rows})
    others = [s for s in stores if s != "sd"]
    head = ["size", "pattern", "GETs each"]
    head += [f"{s} ms p50 (p10-p90)" for s in stores]
    head += [f"sd/{s}" for s in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size, pattern in keys:
        cells = [_size(size), pattern, str(len(by[(size, pattern, "sd")]["samples"]))]
        for st in stores:
            r = by[(size, pattern, st)]
            cells.append(
                f"{r['p50_s'] * 1000:.1f} ({r['p10_s'] * 1000:.1f}-{r['p90_s'] * 1000:.1f})"
            )
        sd = by[(size, pattern, "sd")]["p50_s"]
        cells += [f"{sd / by[(size, pattern, st)]['p50_s']:.2f}" for st in others]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n >> 30}G" if n % GiB == 0 else f"{n >> 20}M"


def _line(r: dict[str, Any]) -> str:
    ttfb = f" ttfb {r['ttfb_p50_s'] * 1000:.0f} ms" if "ttfb_p50_s" in r else ""
    sheep = (
        f" sheep {r['sheep_cpu_s_per_gib']:.2f} s/GiB"
        if r.get("sheep_cpu_s_per_gib") is not None
        else ""
    )
    return (
        f"{r['store']:>4} {r['case']:<14} {_size(r['size']):>5} {r['pattern']:<6} "
        f"N={r['clients']:<2} {r['mib_s']:7.1f} MiB/s p50 {r['p50_s']:.2f} s "
        f"p99 {r['p99_s']:.2f} s{ttfb} api {r['api_cpu_s_per_gib']:.2f} s/GiB "
        f"rss {r['api_peak_rss_mib']:.0f} MiB{sheep}"
    )


MEDIAN_FIELDS = (
    "mib_s",
    "p50_s",
    "p99_s",
    "ttfb_p50_s",
    "ttfb_p99_s",
    "api_cpu_s_per_gib",
    "api_peak_rss_mib",
    "sheep_cpu_s_per_gib",
)


def merge(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """(size, pattern, case, N, store) -> the median of each figure over the
    runs (--repeat), with mib_s_min/mib_s_max and the number of runs."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(
            (r["size"], r["pattern"], r["case"], r["clients"], r["store"]), []
        ).append(r)
    out = {}
    for key, rs in groups.items():
        m: dict[str, Any] = {"runs": len(rs)}
        for field in MEDIAN_FIELDS:
            values = [r[field] for r in rs if r.get(field) is not None]
            m[field] = statistics.median(values) if values else None
        m["mib_s_min"] = min(r["mib_s"] for r in rs)
        m["mib_s_max"] = max(r["mib_s"] for r in rs)
        out[key] = m
    return out


def table(rows: list[dict[str, Any]], stores: list[str]) -> str:
    """Markdown: one line per (size, pattern, case, N); each store's MiB/s
    (median over the runs, min-max when there are several), sd's ratios to
    the other stores (of the medians), p50/p99, sd's p99/p50, time to first
    byte, API CPU, sd's API peak RSS and the sheep CPU (medians)."""
    by = merge(rows)
    keys = sorted({k[:4] for k in by}, key=lambda k: (k[0], k[1], CASES.index(k[2]), k[3]))
    others = [s for s in stores if s != "sd"]
    head = ["size", "pattern", "case", "N"]
    head += [f"{s} MiB/s" for s in stores]
    head += [f"sd/{s}" for s in others]
    head += [f"{s} p50/p99 s" for s in stores]
    head += ["sd p99/p50"]
    head += ["ttfb p50 ms (" + "/".join(stores) + ")"]
    head += ["api CPU s/GiB (" + "/".join(stores) + ")", "api peak RSS MiB (sd)"]
    head += ["sheep CPU s/GiB (" + "/".join(stores) + ")"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in keys:
        rs = [by.get((*k, s)) for s in stores]
        sd = by.get((*k, "sd"))

        def f(r: Optional[dict[str, Any]], key: str, fmt: str, scale: float = 1.0) -> str:
            if r is None or r.get(key) is None:
                return "–"
            return format(r[key] * scale, fmt)

        cells = [_size(k[0]), k[1], k[2], str(k[3])]
        for r in rs:
            spread = ""
            if r is not None and r["runs"] > 1:
                spread = f" ({r['mib_s_min']:.0f}-{r['mib_s_max']:.0f})"
            cells.append(f(r, "mib_s", ".0f") + spread)
        for s in others:
            o = by.get((*k, s))
            cells.append(f"{sd['mib_s'] / o['mib_s']:.2f}" if sd and o else "–")
        cells += [f"{f(r, 'p50_s', '.2f')}/{f(r, 'p99_s', '.2f')}" for r in rs]
        cells.append(f"{sd['p99_s'] / sd['p50_s']:.2f}" if sd and sd["p50_s"] else "–")
        cells.append("/".join(f(r, "ttfb_p50_s", ".0f", 1000) for r in rs))
        cells.append("/".join(f(r, "api_cpu_s_per_gib", ".1f") for r in rs))
        cells.append(f(sd, "api_peak_rss_mib", ".0f"))
        cells.append("/".join(f(r, "sheep_cpu_s_per_gib", ".1f") for r in rs))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: str, title: str) -> Optional[str]:
    """A PNG of MiB/s by round and store; the reason when it cannot be made."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib is not installed ({exc})"
    stores = sorted({r["store"] for r in rows}, key=list(STORES).index)
    keys = sorted({(r["size"], r["pattern"], r["case"], r["clients"]) for r in rows})
    by = merge(rows)
    fig, ax = plt.subplots(figsize=(max(8, len(keys) * 0.6), 5))
    width = 0.8 / len(stores)
    for j, s in enumerate(stores):
        ax.bar(
            [i + j * width for i in range(len(keys))],
            [by[(*k, s)]["mib_s"] if (*k, s) in by else 0 for k in keys],
            width,
            label=s,
        )
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))])
    ax.set_xticklabels(
        [f"{_size(k[0])} {k[1]}\n{k[2]} N={k[3]}" for k in keys], rotation=90, fontsize=7
    )
    ax.set_ylabel("MiB/s (aggregate)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return None


def _list(choices: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        names = [s.strip() for s in text.split(",") if s.strip()]
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
        return names

    return parse


def build_parser(sizes: Any) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks glance",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--cluster", metavar="HOST:PORT", help="a real cluster (default: FakeSheep)")
    p.add_argument("--sizes", type=sizes, default=sizes("256M"), help="image sizes (default 256M)")
    p.add_argument("--patterns", type=_list(PATTERNS), default=list(PATTERNS))
    p.add_argument("--cases", type=_list(CASES), default=list(CASES))
    p.add_argument("--stores", type=_list(tuple(STORES)), default=list(STORES))
    p.add_argument(
        "--clients",
        type=lambda t: [int(x) for x in t.split(",")],
        default=[1, 4, 8, 16],
        help="concurrent clients per round (default 1,4,8,16)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of every round; the table gives medians and the MiB/s range (default 1)",
    )
    p.add_argument(
        "--server",
        choices=sorted(servers.SERVERS),
        default="gunicorn",
        help="the WSGI server, from examples/gunicorn.conf.py or examples/uwsgi.ini "
        "(default gunicorn)",
    )
    p.add_argument("--workers", type=int, default=2, help="server processes (default 2)")
    p.add_argument("--threads", type=int, default=4, help="threads per process (default 4)")
    p.add_argument(
        "--first-bytes",
        type=int,
        default=20,
        metavar="K",
        help="after the rounds, K GETs of one image per store and size, the stores in "
        "turn, timed to the first byte only (default 20; 0: none)",
    )
    p.add_argument("--dog", help="dog for the 'old' store (default: dog on PATH)")
    p.add_argument(
        "--pin",
        action="store_true",
        help="the local sheep on the last CPU, the API, PostgreSQL and the clients on the "
        "others: the cluster stands in for storage nodes of its own",
    )
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--plot", metavar="PATH")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: list[str], sizes: Any) -> int:
    parser = build_parser(sizes)
    args = parser.parse_args(argv)
    # kill(1) must stop the servers this started as Ctrl-C does: unwind
    # through the context managers instead of dying on the spot.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(128 + signal.SIGTERM))
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    from benchmarks import harness as bench

    args.dog = bench.find_dog(args.dog)
    if "old" in args.stores and not args.dog:
        raise SystemExit(
            "benchmarks glance: the 'old' store needs dog (--dog, or --stores sd,file)"
        )
    if "sd" not in args.stores:
        raise SystemExit("benchmarks glance: --stores must include sd")
    if args.server == "uwsgi":
        why = servers.UwsgiGlance.missing(harness.glance_python())
        if why:
            raise SystemExit(f"benchmarks glance: --server uwsgi: {why}")
    args.stores = ["sd"] + [s for s in args.stores if s != "sd"]
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    t0 = time.monotonic()
    load_before = os.getloadavg()
    rows = run(args, None if args.quiet else sys.stderr)
    cluster = args.cluster_info
    print(f"cluster: {cluster.kind}: {cluster.description}; {cluster.copies} copies")
    pin = getattr(args, "pinned", None)
    placement = f"; pinned: API on CPUs {sorted(pin[0])}, sheep on {sorted(pin[1])}" if pin else ""
    print(f"glance:  {args.glance_server}, PostgreSQL; {os.cpu_count()} CPUs{placement}")
    print()
    print(table(rows, args.stores))
    first_byte_rows = getattr(args, "first_byte_rows", [])
    if first_byte_rows:
        print()
        print("Time to first byte alone (one client, the stores in turn):")
        print(first_byte_table(first_byte_rows, args.stores))
    plot_note = None
    if args.plot:
        plot_note = plot(rows, args.plot, f"Glance API load, {cluster.kind} cluster, {started}")
        print(f"plot: {'skipped: ' + plot_note if plot_note else args.plot}")
    if args.json:
        doc = {
            "meta": {
                "command": " ".join(["python -m benchmarks glance", *argv]),
                "started": started,
                "repeat": args.repeat,
                "elapsed_s": time.monotonic() - t0,
                "cluster": {
                    "kind": cluster.kind,
                    "address": cluster.address,
                    "nodes": cluster.nodes,
                    "copies": cluster.copies,
                },
                "glance": {
                    "server": servers.SERVERS[args.server].name,
                    "deployment": args.glance_server,
                    "workers": args.workers,
                    "threads": args.threads,
                    "database": "postgresql",
                    "cpus": sorted(pin[0]) if pin else None,
                    "sheep_cpus": sorted(pin[1]) if pin else None,
                },
                "client": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg(),
                },
                "units": {
                    "mib_s": "aggregate MiB/s of the round (all clients' bytes / wall time)",
                    "p50_s/p99_s": "per-request seconds",
                    "ttfb": "seconds from sending GET to the first body byte",
                    "first_byte": "--first-bytes: per store, the sorted seconds to the "
                    "first byte of GETs of one image, the stores in ABBA turn",
                    "api_cpu_s_per_gib": "user+sys of the server's master and workers "
                    "(and children they waited for: dog for 'old') per GiB",
                    "api_peak_rss_mib": "largest VmHWM of one server process in the "
                    "round (reset before it)",
                    "sheep_cpu_s_per_gib": "user+sys of the sheep processes on the "
                    "cluster's ports, per GiB (local real cluster only)",
                },
            },
            "rows": rows,
            "first_byte": first_byte_rows,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"json: {args.json}")
    return 0
