"""Where the time of one case goes: ``python -m benchmarks.profile CASE``.

    python -m benchmarks.profile raw-write --cluster 127.0.0.1:7000 --size 1G
    python -m benchmarks.profile store-add --cluster 127.0.0.1:7000 --py-spy add.txt
    python -m benchmarks.profile raw-read --cluster 127.0.0.1:7000 --perf raw-read.data

Runs the case once, as the harness does (a read case has its write case run
first, unprofiled), and prints how the machine's CPU was spent meanwhile:
the client (the case's process and its dog processes), the sheep daemons,
everything else, and idle/iowait. --py-spy records the client's Python and
native stacks (collapsed, one line per stack: feed it to flamegraph.pl or
read the top of `sort -k2 -n`); --perf records the whole machine with
``perf record -a -g`` for ``perf report``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Optional

from benchmarks import harness
from benchmarks.cases import BY_NAME, NAMES
from benchmarks.data import PATTERNS, make_image

_TICK = os.sysconf("SC_CLK_TCK")


def _machine() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def _sheep_cpu() -> float:
    """user+sys seconds of every process named sheep."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if comm == "sheep":
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def _disk_written() -> int:
    """Bytes written to block devices so far (whole disks, not partitions)."""
    total = 0
    with open("/proc/diskstats") as f:
        for line in f:
            parts = line.split()
            if os.path.exists(f"/sys/block/{parts[2]}"):
                total += int(parts[9]) * 512
    return total


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("case", choices=NAMES)
    p.add_argument("--cluster", help="host:port (default: an embedded FakeSheep)")
    p.add_argument("--size", default="1G")
    p.add_argument("--pattern", choices=PATTERNS, default="dense")
    p.add_argument("--dog", help="the dog command (default: on PATH)")
    p.add_argument(
        "--py-spy",
        dest="py_spy",
        metavar="OUT",
        help="record the client with py-spy (collapsed stacks to OUT)",
    )
    p.add_argument("--perf", metavar="OUT", help="perf record -a -g the whole machine to OUT")
    p.add_argument("--rate", type=int, default=250, help="samples per second (default 250)")
    args = p.parse_args(argv)
    from sheepfast.cli import parse_size

    size = parse_size(args.size)
    case = BY_NAME[args.case]
    dog = harness.find_dog(args.dog)
    why = harness.availability(dog).get(case.needs)
    if why:
        raise SystemExit(f"benchmarks.profile: {case.name} cannot run: {why}")
    with harness.cluster(args.cluster) as cluster:
        workdir = harness.scratch(None)
        try:
            image = make_image(workdir, size, args.pattern, cluster.object_size)
            runner = harness.Runner(cluster, workdir, dog, 3600.0)
            name = harness.fresh_name()
            extra: dict = {}
            writer = BY_NAME[case.writer] if case.writer else None
            try:
                if writer:
                    w = runner.run(writer, image, name)
                    if not w["ok"]:
                        raise SystemExit(f"{writer.name} failed: {w['error']}")
                    extra["uri"] = w.get("uri")
                    name = harness.vdi_name(writer, name, w)
                if args.py_spy:
                    spy = shutil.which("py-spy") or shutil.which(
                        "py-spy", path=os.path.dirname(sys.executable)
                    )
                    if not spy:
                        raise SystemExit("py-spy is not installed (pip install py-spy)")
                    runner.wrap = [
                        spy,
                        "record",
                        "--format",
                        "raw",
                        "--threads",
                        "--native",
                        "--idle",
                        "--subprocesses",
                        "-r",
                        str(args.rate),
                        "-o",
                        args.py_spy,
                        "--",
                    ]
                perf = None
                if args.perf:
                    perf = subprocess.Popen(
                        [
                            "perf",
                            "record",
                            "-a",
                            "-g",
                            "-e",
                            "cpu-clock",
                            "-F",
                            str(args.rate),
                            "-o",
                            args.perf,
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    time.sleep(1.0)
                m0, s0, d0, t0 = _machine(), _sheep_cpu(), _disk_written(), time.monotonic()
                result = runner.run(case, image, name, **extra)
                m1, s1, d1, t1 = _machine(), _sheep_cpu(), _disk_written(), time.monotonic()
                if perf is not None:
                    perf.send_signal(signal.SIGINT)
                    perf.wait()
            finally:
                harness.delete(cluster.address, name)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    if not result["ok"]:
        print(f"{case.name} failed: {result['error']}\n{result.get('stderr', '')}")
        return 1
    delta = [(b - a) / _TICK for a, b in zip(m0, m1)]
    user, nice, system, idle, iowait, irq, softirq = (delta + [0] * 7)[:7]
    steal = delta[7] if len(delta) > 7 else 0.0
    busy = user + nice + system + irq + softirq + steal
    sheep = s1 - s0
    client = result["cpu_s"]
    print(
        f"{case.name} {args.size} {args.pattern} on {cluster.kind} cluster: "
        f"{result['seconds']:.2f} s timed = {size / (1 << 20) / result['seconds']:.0f} MiB/s"
    )
    print(
        f"  timed region: client CPU {client:.2f} s (its own {result['cpu_self_s']:.2f}, "
        f"dog processes {result['cpu_children_s']:.2f})"
    )
    print(f"  whole child ({t1 - t0:.2f} s wall, imports and setup included), machine CPU:")
    print(
        f"    busy {busy:.2f} s of {(t1 - t0) * (os.cpu_count() or 1):.2f} "
        f"(user {user:.2f}, sys {system:.2f}, softirq {softirq:.2f}, steal {steal:.2f}); "
        f"idle {idle:.2f}, iowait {iowait:.2f}"
    )
    print(
        f"    sheep daemons {sheep:.2f} s; the rest (client setup, other processes) "
        f"{busy - sheep:.2f} s"
    )
    print(f"  block devices written: {(d1 - d0) / (1 << 20):.0f} MiB")
    if "stats" in result:
        print(f"  Vdi.stats: {result['stats']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
