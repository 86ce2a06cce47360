"""The parent side: picks the cluster, makes the images, runs every case in a
child process (benchmarks.runner), pairs writes with reads, cleans up."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterator, Optional

import benchmarks
import sheepfast
from benchmarks.cases import BY_NAME, CASES, Case
from benchmarks.data import Image, make_image

MiB = 1 << 20
NAME_PREFIX = "sfbench-"


@dataclass
class Cluster:
    kind: str  #: "embedded" or "real"
    address: str
    description: str
    nodes: list = field(default_factory=list)
    copies: int = 0
    object_size: int = 4 * MiB


@contextlib.contextmanager
def cluster(address: Optional[str]) -> Iterator[Cluster]:
    """The real cluster at address, or an embedded FakeSheep started here."""
    with contextlib.ExitStack() as stack:
        if address:
            kind = "real"
            description = f"cluster at {address}"
        else:
            from sheepfast.testing import FakeSheep

            sheep = stack.enter_context(FakeSheep(nodes=3))
            address = ",".join(sheep.addresses)
            kind = "embedded"
            description = (
                "embedded FakeSheep (in-process Python server, memory-backed, "
                "in the harness's own process): figures describe the client "
                "plus a Python server, not a real cluster; the targets are "
                "for a real cluster (--cluster host:port)"
            )
        with sheepfast.connect(address) as c:
            d = c.defaults
            info = Cluster(
                kind,
                address,
                description,
                nodes=list(c.nodes),
                copies=d.copies,
                object_size=1 << d.block_size_shift,
            )
        yield info


def find_dog(given: Optional[str]) -> Optional[str]:
    if given:
        path = shutil.which(given) or (given if os.access(given, os.X_OK) else None)
        if path is None:
            raise SystemExit(f"benchmarks: --dog {given}: not an executable")
        return path
    return shutil.which("dog") or shutil.which("collie")


def dog_version(dog: Optional[str]) -> Optional[str]:
    """'1.0_173_g3ebe5ea7' from dog's help banner, or None."""
    if not dog:
        return None
    try:
        done = subprocess.run([dog, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    banner = (done.stdout or done.stderr).partition("\n")[0]
    _, found, rest = banner.partition("(version ")
    return rest.rstrip(")").strip() if found else (banner.strip() or None)


def availability(dog: Optional[str]) -> dict[str, Optional[str]]:
    """needs -> None when available, else why not."""
    why: dict[str, Optional[str]] = {"none": None}
    try:
        import sheepfast._native  # noqa: F401

        why["native"] = None
    except ImportError as exc:
        why["native"] = f"sheepfast's extension is not built ({exc})"
    try:
        import glance_store  # noqa: F401

        import sheepfast.glance  # noqa: F401

        why["store"] = None
    except ImportError as exc:
        why["store"] = f"sheepfast.glance not available ({exc})"
    try:
        import sheepfast.backends.dog  # noqa: F401

        why["cli"] = None if dog else "dog is not on PATH (give --dog)"
    except ImportError as exc:
        why["cli"] = f"sheepfast.backends.dog not available ({exc})"
    why["dog"] = None if dog else "dog is not on PATH (give --dog PATH)"
    why["old"] = why["dog"]
    if dog:
        try:
            import glance_store.common.utils  # noqa: F401  (chunkreadable)
            import oslo_concurrency.processutils  # noqa: F401
        except ImportError as exc:
            why["old"] = f"the old driver's libraries are missing ({exc})"
    return why


def child_env() -> dict[str, str]:
    """The same sheepfast and benchmarks the parent imported, whatever the
    working directory (children run in the scratch directory, so a source
    tree without a built extension cannot shadow an installed sheepfast)."""
    roots = [
        os.path.dirname(os.path.dirname(os.path.abspath(sheepfast.__file__))),
        os.path.dirname(os.path.dirname(os.path.abspath(benchmarks.__file__))),
    ]
    if os.environ.get("PYTHONPATH"):
        roots.append(os.environ["PYTHONPATH"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(roots)))
    env.pop("SHEEPFAST_BACKEND", None)
    return env


class Runner:
    """Runs cases one at a time, each in a fresh interpreter."""

    def __init__(
        self,
        cluster: Cluster,
        workdir: str,
        dog: Optional[str],
        timeout: float,
        log=sys.stderr,
        options: Optional[dict] = None,
        sync: bool = False,
    ):
        self.cluster = cluster
        #: flush dirty pages before each case (untimed): a local cluster's
        #: sheep write every upload into the page cache, and the writeback
        #: of one case would otherwise throttle whichever case runs next
        self.sync = sync
        self.options = dict(options or {})  #: passed to every case (e.g. add_source)
        self.workdir = workdir
        self.dog = dog
        self.timeout = timeout
        self.env = child_env()
        self.log = log
        self.wrap: list[str] = []  #: a profiler command line to run the child under
        self._seq = 0

    def run(self, case: Case, image: Image, name: str, **extra) -> dict:
        if self.sync:
            os.sync()
        self._seq += 1
        spec_path = os.path.join(self.workdir, f"spec-{self._seq}.json")
        result_path = os.path.join(self.workdir, f"result-{self._seq}.json")
        spec = {
            "case": case.name,
            "address": self.cluster.address,
            "name": name,
            "size": image.size,
            "path": image.path,
            "md5": image.md5,
            "pattern": image.pattern,
            "dog": self.dog,
            "unknown_size": case.unknown_size,
            "result": result_path,
            **self.options,
            **extra,
        }
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        t0 = time.monotonic()
        try:
            code, stderr, memory = self._spawn(spec_path)
        finally:
            os.unlink(spec_path)
        if code is None:
            return {"ok": False, "error": f"timed out after {self.timeout:.0f} s"}
        if code != 0 or not os.path.exists(result_path):
            lines = stderr.strip().splitlines()
            return {
                "ok": False,
                "error": lines[-1] if lines else f"exit {code}",
                "stderr": "\n".join(lines[-30:]),
            }
        with open(result_path) as f:
            result = json.load(f)
        os.unlink(result_path)
        result.update(memory)
        result["ok"] = True
        result["child_wall_s"] = time.monotonic() - t0
        return result

    def _spawn(self, spec_path: str) -> tuple[Optional[int], str, dict]:
        """Runs the case; samples the RSS of the child and of the helper
        processes it reports while it runs. (exit status or None on timeout,
        stderr, sampled peaks)"""
        from benchmarks.runner import PIDS_FD_ENV

        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        env = dict(self.env, **{PIDS_FD_ENV: str(wfd)})
        err_path = spec_path + ".stderr"
        with open(err_path, "w+b") as err:
            proc = subprocess.Popen(
                [*self.wrap, sys.executable, "-m", "benchmarks.runner", spec_path],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                pass_fds=(wfd,),
                start_new_session=True,
            )
            os.close(wfd)
            helpers: set[int] = set()
            seen = 0
            pending = b""
            peak_tree = peak_helpers = 0
            deadline = time.monotonic() + self.timeout
            code: Optional[int] = None
            try:
                while True:
                    code = proc.poll()
                    if code is not None:
                        break
                    if time.monotonic() > deadline:
                        os.killpg(proc.pid, 9)
                        proc.wait()
                        code = None
                        break
                    with contextlib.suppress(BlockingIOError):
                        pending += os.read(rfd, 4096)
                    *pids, pending = pending.split(b"\n")
                    helpers.update(int(p) for p in pids)
                    seen += len(pids)
                    own = _rss(proc.pid)
                    theirs = 0
                    for pid in list(helpers):
                        rss = _rss(pid)
                        if rss is None:
                            helpers.discard(pid)
                        else:
                            theirs += rss
                    peak_helpers = max(peak_helpers, theirs)
                    peak_tree = max(peak_tree, (own or 0) + theirs)
                    time.sleep(SAMPLE_INTERVAL)
            finally:
                os.close(rfd)
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        os.unlink(err_path)
        return (
            code,
            stderr,
            {
                "rss_tree_peak_kib": peak_tree // 1024,
                "rss_helpers_peak_kib": peak_helpers // 1024,
                "helper_processes": seen,
            },
        )


SAMPLE_INTERVAL = 0.02  # seconds between RSS samples of a running case
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss(pid: int) -> Optional[int]:
    """Resident bytes of a live process (None once it has gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            fields = f.read().split()
    except OSError:
        return None
    if not fields:
        return None
    # a zombie (exited, not yet reaped) has no memory left
    return int(fields[1]) * _PAGE


def fresh_name() -> str:
    return f"{NAME_PREFIX}{uuid.uuid4()}"


def vdi_name(case: Case, name: str, result: dict) -> str:
    """Where a write case left its image (Store.add reports its URI)."""
    uri = result.get("uri")
    if uri and uri.startswith("sheepdog://"):
        return uri.rsplit(":", 1)[1]
    return name


def usage(address: str, name: str) -> Optional[int]:
    try:
        with sheepfast.connect(address) as c, c.open(name) as vdi:
            return vdi.usage()[0]
    except sheepfast.SheepfastError:
        return None


def delete(address: str, name: str) -> None:
    with contextlib.suppress(sheepfast.SheepfastError):
        with sheepfast.connect(address) as c:
            if c.exists(name):
                c.delete(name)


def plan(selected: list[str]) -> list[tuple[str, Optional[str]]]:
    """(writer, reader) steps in CASES order; a selected read case brings its
    writer along (as preparation when the writer was not selected)."""
    steps: list[tuple[str, Optional[str]]] = []
    readers = {c.writer: c.name for c in CASES if c.writer}
    for case in CASES:
        if case.direction == "read":
            continue
        reader = readers.get(case.name)
        want_w = case.name in selected
        want_r = reader in selected if reader else False
        if want_w or want_r:
            steps.append((case.name, reader if want_r else None))
    return steps


def run_all(
    runner: Runner,
    images: list[Image],
    selected: list[str],
    repeat: int,
    why_not: dict[str, Optional[str]],
    progress=sys.stderr,
) -> list[dict]:
    """Every selected case × image × repetition, interleaved so that drift in
    the cluster hits all cases alike. Returns one record per measured run."""
    records: list[dict] = []
    address = runner.cluster.address
    steps = plan(selected)
    for rep in range(repeat):
        for image in images:
            for writer_name, reader_name in steps:
                writer = BY_NAME[writer_name]
                reader = BY_NAME[reader_name] if reader_name else None
                if why_not.get(writer.needs) or (reader and why_not.get(reader.needs)):
                    continue
                name = fresh_name()
                w: dict = {}
                try:
                    w = runner.run(writer, image, name)
                    left = vdi_name(writer, name, w)
                    if w["ok"] and writer.direction == "write":
                        w["allocated"] = usage(address, left)
                    if writer_name in selected:
                        records.append(_record(writer, image, rep, w))
                        _say(progress, records[-1])
                    if reader is not None:
                        if w["ok"]:
                            r = runner.run(reader, image, left, uri=w.get("uri"))
                        else:
                            r = {"ok": False, "error": f"{writer.name} failed: {w['error']}"}
                        records.append(_record(reader, image, rep, r))
                        _say(progress, records[-1])
                finally:
                    delete(address, name)
                    if w.get("uri"):
                        delete(address, vdi_name(writer, name, w))
    return records


def _record(case: Case, image: Image, rep: int, result: dict) -> dict:
    rec = {"case": case.name, "size": image.size, "pattern": image.pattern, "rep": rep}
    rec.update(result)
    if result.get("ok"):
        rec["mib_s"] = image.size / MiB / result["seconds"]
        rec["cpu_s_per_gib"] = result["cpu_s"] / (image.size / (1 << 30))
        if case.needs == "dog":
            # the client is the dog process itself; the wrapper only waits
            rec["rss_mib"] = result["rss_helpers_peak_kib"] / 1024
        else:
            # the Python process (exact peak) or, when higher, the sampled
            # peak of it and its dog processes together
            rec["rss_mib"] = max(result["rss_self_kib"], result["rss_tree_peak_kib"]) / 1024
        if case.direction == "write":
            rec["expected_allocation"] = image.allocation
    return rec


def _say(out, rec: dict) -> None:
    if out is None:
        return
    what = f"{rec['case']:<18} {rec['size'] >> 20:>6} MiB {rec['pattern']:<6} #{rec['rep'] + 1}"
    if rec.get("ok"):
        print(
            f"  {what}  {rec['mib_s']:9.1f} MiB/s  cpu {rec['cpu_s']:.2f} s  "
            f"rss {rec['rss_mib']:.0f} MiB",
            file=out,
            flush=True,
        )
    else:
        print(f"  {what}  FAILED: {rec.get('error')}", file=out, flush=True)


def make_images(
    workdir: str, sizes: list[int], patterns: list[str], object_size: int, progress=sys.stderr
) -> list[Image]:
    images = []
    for size in sizes:
        for pattern in patterns:
            t0 = time.monotonic()
            images.append(make_image(workdir, size, pattern, object_size))
            if progress is not None:
                print(
                    f"  image {pattern} {size >> 20} MiB made in {time.monotonic() - t0:.1f} s",
                    file=progress,
                    flush=True,
                )
    return images


def scratch(base: Optional[str]) -> str:
    return tempfile.mkdtemp(prefix="sheepfast-bench-", dir=base)
