"""Compare sheepfast's data paths with dog and the removed glance_store
driver, side by side on one cluster, each case in a fresh child process.

    python -m benchmarks                          # embedded FakeSheep, 256M and 1G
    python -m benchmarks --cluster 127.0.0.1:7000 --sizes 1G --json out.json --plot out.png

Cases (--cases, comma-separated; default all):
  raw-write, raw-read            sheepfast's Vdi API from/into preallocated buffers
  store-add, store-add-unknown,  the glance_store driver (Store.add with the size
  store-get                      known and with image_size=0; full Store.get)
  cli-write, cli-read            the dog-subprocess fallback backend
  old-add, old-add-unknown,      the removed driver's algorithm: one dog process
  old-get                        per 64 MiB chunk through processutils
  dog-write, dog-read            dog vdi write / dog vdi read > /dev/null
  hashes                         md5 + sha512 alone (the CPU floor of Store.add)
dog and old-* need dog (PATH or --dog); read cases bring their write case along.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import time
from typing import Optional

from benchmarks.cases import BY_NAME, CASES, NAMES
from benchmarks.data import PATTERNS

MiB = 1 << 20


def _sizes(text: str) -> list[int]:
    from sheepfast.sizes import SizeError, parse_size

    try:
        sizes = [parse_size(s) for s in text.split(",") if s.strip()]
    except SizeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not sizes or min(sizes) < MiB:
        raise argparse.ArgumentTypeError("sizes must be at least 1M")
    return sizes


def _names(choices, what):
    def parse(text: str) -> list[str]:
        names = [s.strip() for s in text.split(",") if s.strip()]
        if names == ["all"]:
            return list(choices)
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(bad) or '(none)'}; choose from {', '.join(choices)}"
            )
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--cluster",
        metavar="HOST:PORT[,...]",
        help="a real Sheepdog cluster (default: an embedded FakeSheep started by the harness)",
    )
    p.add_argument(
        "--sizes", type=_sizes, default=_sizes("256M,1G"), help="image sizes (default 256M,1G)"
    )
    p.add_argument(
        "--patterns",
        type=_names(PATTERNS, "pattern"),
        default=list(PATTERNS),
        help="dense (random bytes) and/or sparse (75%% zero objects); default both",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of each case (default 3)")
    p.add_argument(
        "--cases",
        type=_names(NAMES, "case"),
        default=list(NAMES),
        help="cases to run (default all)",
    )
    p.add_argument(
        "--add-source",
        choices=("glance", "file"),
        default="glance",
        help="what store-add and old-add read: 'glance', a read()-only stream "
        "as Glance passes (LimitingReader over CooperativeReader), or "
        "'file', the open image file itself (default glance)",
    )
    p.add_argument(
        "--no-sync",
        dest="sync",
        action="store_false",
        help="do not flush dirty pages (sync) before each case; by default every "
        "case starts with the page cache clean, outside its timed region, so "
        "that one case's writeback does not slow the next",
    )
    p.add_argument("--dog", metavar="PATH", help="the dog command (default: dog or collie on PATH)")
    p.add_argument("--json", metavar="PATH", help="write every run and the summary as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of throughput by case and size")
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help="where the images are generated (default: the temp directory)",
    )
    p.add_argument("--keep-images", action="store_true", help="leave the images in --workdir")
    p.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds one case may take (default 1800)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no per-run progress on stderr")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--":
        argv = argv[1:]  # a leading '--' separator is allowed
    if argv and argv[0] == "glance":
        from benchmarks import glance_load

        return glance_load.main(argv[1:], _sizes)
    args = build_parser().parse_args(argv)
    if args.repeat < 1:
        raise SystemExit("benchmarks: --repeat must be at least 1")
    from benchmarks import harness, report

    progress = None if args.quiet else sys.stderr
    dog = harness.find_dog(args.dog)
    why_not = harness.availability(dog)
    selected = args.cases
    skipped = {n: str(why_not[BY_NAME[n].needs]) for n in selected if why_not.get(BY_NAME[n].needs)}
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(harness.cluster(args.cluster))
        if cluster.kind == "embedded" and max(args.sizes) * 2 > 8 << 30:
            print(
                "benchmarks: warning: the embedded FakeSheep keeps every image in this "
                "process's memory",
                file=sys.stderr,
            )
        workdir = harness.scratch(args.workdir)
        if not args.keep_images:
            stack.callback(shutil.rmtree, workdir, True)
        print(f"cluster: {cluster.kind}: {cluster.description}")
        print(
            f"         nodes {', '.join(cluster.nodes)}; {cluster.copies} copies; "
            f"objects of {cluster.object_size >> 20} MiB"
        )
        load_before = os.getloadavg()
        print(
            f"client:  {os.cpu_count()} CPUs (load {load_before[0]:.1f}), Python "
            f"{platform.python_version()}, {platform.platform()}; dog: {dog or 'not found'}"
        )
        print(
            f"runs:    sizes {','.join(report._size(s) for s in args.sizes)}; "
            f"patterns {','.join(args.patterns)}; {args.repeat} runs each; "
            f"each case in a fresh process"
            f"{', after a sync' if args.sync else ''}; uploads read from a "
            f"{args.add_source} source",
            flush=True,
        )
        if progress:
            print("making images ...", file=progress, flush=True)
        images = harness.make_images(
            workdir, args.sizes, args.patterns, cluster.object_size, progress
        )
        runner = harness.Runner(
            cluster,
            workdir,
            dog,
            args.timeout,
            options={"add_source": args.add_source},
            sync=args.sync,
        )
        records = harness.run_all(runner, images, selected, args.repeat, why_not, progress)
    load_after = os.getloadavg()
    rows = report.summarize(records)
    checks = report.targets(rows, cluster.kind)
    print()
    print(report.table(rows, skipped))
    print()
    where = "real cluster" if cluster.kind == "real" else "embedded FakeSheep: indicative only"
    print(f"targets ({where}):")
    print(report.targets_text(checks))
    elapsed = time.monotonic() - t0
    plot_note = None
    if args.plot:
        title = (
            f"sheepfast benchmarks on {cluster.kind} cluster "
            f"({len(cluster.nodes)} nodes, {cluster.copies} copies), {started}"
        )
        plot_note = report.plot(rows, args.plot, title)
        print(f"plot: {'skipped: ' + plot_note if plot_note else args.plot}")
    if args.json:
        doc = {
            "meta": {
                "command": " ".join(
                    ["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]
                ),
                "started": started,
                "elapsed_s": elapsed,
                "cluster": {
                    "kind": cluster.kind,
                    "address": cluster.address,
                    "description": cluster.description,
                    "nodes": cluster.nodes,
                    "copies": cluster.copies,
                    "object_size": cluster.object_size,
                },
                "client": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "loadavg_before": load_before,
                    "loadavg_after": load_after,
                },
                "dog": dog,
                "dog_version": harness.dog_version(dog),
                "sizes": args.sizes,
                "patterns": args.patterns,
                "repeat": args.repeat,
                "add_source": args.add_source,
                "sync_before_each_case": args.sync,
                "cases": selected,
                "timed": {c.name: c.timed for c in CASES if c.name in selected},
                "units": {
                    "mib_s": "MiB/s (2^20 bytes per second)",
                    "cpu_s_per_gib": "user+sys seconds of the client process and the "
                    "dog processes it waited for, per GiB moved",
                    "rss_mib": "peak RSS: for dog-* the dog process's (sampled every "
                    "20 ms); else the Python process's exact peak or, when "
                    "higher, the sampled peak of it and its dog processes "
                    "together",
                },
                "plot": args.plot if args.plot and not plot_note else None,
            },
            "skipped": skipped,
            "summary": rows,
            "targets": checks,
            "runs": records,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"json: {args.json}")
    failed = any(not r.get("ok") for r in records)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
