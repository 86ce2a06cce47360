"""Snapshots and clones, side by side with dog on one cluster.

    python -m benchmarks.clones                                  # embedded FakeSheep, small
    python -m benchmarks.clones --cluster 127.0.0.1:7000 --sizes 1G,10G --fill 2G \
        --data-size 1G --json out.json --plot out.png

Cases, each repeated (--runs) and reported as median and min-max:

  snapshot, clone          Cluster.snapshot / Cluster.clone of an image of each
                           size, and the commands `sheepfast snapshot|clone`
                           against `dog vdi snapshot|clone` (command vs command).
                           The images are dense (every byte written). Time
                           must not grow with the image: the summary gives
                           large/small.
  first-read               the first read of a fresh clone of a dense image,
                           whole, against a read of its parent snapshot (same
                           bytes), and `dog vdi read` of the clone.
  cow-storm                one random 4 KiB write into every object of a fresh
                           clone (each copies its whole object first) against
                           the same writes into a dense VDI that owns its objects;
                           writes/s, and MiB/s of objects copied.
  flatten                  Vdi.flatten of a fresh clone against `dog vdi read SNAP |
                           dog vdi write NEW` of the same bytes (what an operator
                           without flatten does) and sheepfast's own read + write
                           into a new VDI.

Library calls are timed in this process against library calls, commands
against commands (each a fresh process). Every case runs on the same cluster,
which holds --fill of dense data (written first, deleted last) and the
benchmark's own images while it runs; what each run makes is deleted after it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from typing import Callable, Iterator, Optional

import sheepfast
from benchmarks.harness import Cluster, child_env, cluster, dog_version, find_dog

MiB = 1 << 20
TAG = "bench"


def _timed(fn: Callable[..., object], *args: object, **kwargs: object) -> float:
    """Seconds fn(*args, **kwargs) takes (arguments bound now, not when called)."""
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


class Bench:
    def __init__(self, info: Cluster, dog: Optional[str], runs: int):
        self.info = info
        self.address = address = info.address
        self.dog = dog
        self.runs = runs
        self.c = sheepfast.connect(address, io_timeout=300)
        self.rows: list[dict] = []
        self.names: list[str] = []
        self.env = child_env()

    # ---------------------------------------------------------- helpers

    def name(self, prefix: str) -> str:
        n = f"bench-{prefix}-{uuid.uuid4().hex[:8]}"
        self.names.append(n)
        return n

    def record(self, case: str, variant: str, size: int, seconds: list[float], **extra) -> None:
        row = {
            "case": case,
            "variant": variant,
            "size": size,
            "runs": len(seconds),
            "median_s": statistics.median(seconds),
            "min_s": min(seconds),
            "max_s": max(seconds),
            **extra,
        }
        self.rows.append(row)
        print(
            f"{case:<11} {variant:<28} {size >> 20:>7} MiB  median {row['median_s'] * 1e3:9.1f} ms"
            f"  ({row['min_s'] * 1e3:.1f}-{row['max_s'] * 1e3:.1f})",
            flush=True,
        )

    def dog_cmd(self, *args: str) -> list[str]:
        assert self.dog is not None
        host, _, port = self.address.split(",")[0].rpartition(":")
        return [self.dog, "vdi", *args[:1], "-a", host.strip("[]"), "-p", port, *args[1:]]

    def sf_cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sheepfast", "--cluster", self.address, "-q", *args]

    def run(self, argv: list[str], **kw) -> None:
        subprocess.run(argv, check=True, env=self.env, stdout=subprocess.DEVNULL, **kw)

    def dense_image(self, size: int) -> str:
        name = self.name("dense")
        self.c.create(name, size)
        chunk = os.urandom(64 * MiB)
        with self.c.open(name) as v:
            for offset in range(0, size, len(chunk)):
                v.write(memoryview(chunk)[: min(len(chunk), size - offset)], offset)
        return name

    def drop(self, *names: str) -> None:
        """Deletes what one run made, so that a large run fits the disk."""
        for n in names:
            self.c.delete(n)
            self.names.remove(n)

    def cleanup(self) -> None:
        for info in reversed(self.c.list()):
            if info.name in self.names:
                with contextlib.suppress(sheepfast.VdiNotFound):
                    self.c.delete(info.name, snapshot=info.snap_id if info.snapshot else None)

    # ------------------------------------------------------------ cases

    def snapshot_and_clone(self, sizes: list[int]) -> None:
        images = {size: self.dense_image(size) for size in sizes}
        times: dict[tuple[int, str], list[float]] = {}

        def timed(size: int, variant: str, fn: Callable[..., object], *args: object) -> None:
            times.setdefault((size, variant), []).append(_timed(fn, *args))

        # repetition outside size, so that drift in the cluster hits every size alike
        for rep in range(self.runs):
            for size, image in images.items():
                tag = f"{TAG}{rep}"
                timed(size, "Cluster.snapshot", self.c.snapshot, image, tag)
                timed(size, "Cluster.clone", self.c.clone, image, tag, self.name("clone"))
                tag = f"{TAG}cmd{rep}"
                timed(
                    size, "sheepfast snapshot", self.run, self.sf_cmd("snapshot", image, "-s", tag)
                )
                clone = self.sf_cmd("clone", image, tag, self.name("clone"))
                timed(size, "sheepfast clone", self.run, clone)
                if self.dog:
                    tag = f"{TAG}dog{rep}"
                    timed(
                        size,
                        "dog vdi snapshot",
                        self.run,
                        self.dog_cmd("snapshot", "-s", tag, image),
                    )
                    clone = self.dog_cmd("clone", "-s", tag, image, self.name("clone"))
                    timed(size, "dog vdi clone", self.run, clone)
        for (size, variant), seconds in times.items():
            self.record("snapshot" if "snapshot" in variant else "clone", variant, size, seconds)

    def first_read(self, size: int) -> None:
        image = self.dense_image(size)
        self.c.snapshot(image, TAG)
        buf = bytearray(size)
        buf[::4096] = b"\1" * len(buf[::4096])  # faulted in before any clock starts
        parent, clone, dog = [], [], []
        for _ in range(self.runs):
            parent.append(self._read(image, TAG, buf))
            fresh = self.name("clone")
            self.c.clone(image, TAG, fresh)
            clone.append(self._read(fresh, None, buf))
            self.drop(fresh)
            if self.dog:
                fresh = self.name("clone")
                self.c.clone(image, TAG, fresh)
                dog.append(self._dog_read(fresh))
                self.drop(fresh)
        self.record("first-read", "snapshot (parent)", size, parent)
        self.record("first-read", "fresh clone", size, clone)
        if dog:
            self.record("first-read", "dog vdi read, fresh clone", size, dog)

    def _read(self, name: str, snapshot: Optional[str], buf: bytearray) -> float:
        with self.c.open(name, snapshot=snapshot) as v:
            return _timed(v.readinto, buf, 0)

    def _dog_read(self, name: str) -> float:
        with open(os.devnull, "wb") as sink:
            return _timed(subprocess.run, self.dog_cmd("read", name), check=True, stdout=sink)

    def _copy(self, image: str, target: str, size: int, buf: bytearray) -> None:
        """What flatten saves: the snapshot's bytes read and written anew."""
        self.c.create(target, size)
        with self.c.open(image, snapshot=TAG) as src, self.c.open(target) as dst:
            src.readinto(buf, 0)
            dst.write(buf, 0)

    def cow_storm(self, size: int) -> None:
        image = self.dense_image(size)
        self.c.snapshot(image, TAG)
        owned = self.dense_image(size)
        rng = random.Random(7)
        for block in (4096, 64 * 1024):
            data = os.urandom(block)
            clone_t, owned_t = [], []
            for _ in range(self.runs):
                fresh = self.name("clone")
                self.c.clone(image, TAG, fresh)
                with self.c.open(fresh) as v:
                    offsets = [
                        o + rng.randrange(0, v.object_size - block, 4096)
                        for o in range(0, size, v.object_size)
                    ]
                    rng.shuffle(offsets)
                    clone_t.append(_timed(_write_all, v, data, offsets))
                    object_size = v.object_size
                self.drop(fresh)
                with self.c.open(owned) as v:
                    owned_t.append(_timed(_write_all, v, data, offsets))
            n = len(offsets)
            self.record(
                "cow-storm",
                f"{block >> 10} KiB into a fresh clone",
                size,
                clone_t,
                writes=n,
                writes_per_s=n / statistics.median(clone_t),
                copied_mib_per_s=n * object_size / MiB / statistics.median(clone_t),
            )
            self.record(
                "cow-storm",
                f"{block >> 10} KiB into owned objects",
                size,
                owned_t,
                writes=n,
                writes_per_s=n / statistics.median(owned_t),
            )

    def flatten(self, size: int) -> None:
        image = self.dense_image(size)
        self.c.snapshot(image, TAG)
        flat, copy, piped = [], [], []
        buf = bytearray(size)
        for _ in range(self.runs):
            fresh = self.name("clone")
            self.c.clone(image, TAG, fresh)
            with self.c.open(fresh) as v:
                flat.append(_timed(v.flatten))
                assert v.usage()[1] == 0
            self.drop(fresh)
            target = self.name("copy")
            copy.append(_timed(self._copy, image, target, size, buf))
            self.drop(target)
            if self.dog:
                target = self.name("copy")
                self.run(self.dog_cmd("create", target, str(size)))
                host, _, port = self.address.split(",")[0].rpartition(":")
                pipeline = (
                    f"{self.dog} vdi read -s {TAG} -a {host} -p {port} {image} | "
                    f"{self.dog} vdi write -a {host} -p {port} {target}"
                )
                piped.append(_timed(subprocess.run, pipeline, shell=True, check=True))
                self.drop(target)
        self.record("flatten", "Vdi.flatten", size, flat)
        self.record("flatten", "sheepfast read + write", size, copy)
        if piped:
            self.record("flatten", "dog vdi read | dog vdi write", size, piped)


def _write_all(vdi: sheepfast.Vdi, data: bytes, offsets: list[int]) -> None:
    for offset in offsets:
        vdi.write(data, offset)


def ratios(rows: list[dict]) -> list[str]:
    """The side-by-side figures the README quotes."""
    by = {(r["case"], r["variant"], r["size"]): r["median_s"] for r in rows}
    sizes = sorted({r["size"] for r in rows if r["case"] in ("snapshot", "clone")})
    out = []
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        for (case, variant, size), t in sorted(by.items()):
            if size == large and (case, variant, small) in by:
                out.append(
                    f"{variant}: {large >> 20} MiB / {small >> 20} MiB = "
                    f"{t / by[(case, variant, small)]:.2f}"
                )
    for case, ours, theirs in (
        ("snapshot", "sheepfast snapshot", "dog vdi snapshot"),
        ("clone", "sheepfast clone", "dog vdi clone"),
        ("first-read", "fresh clone", "snapshot (parent)"),
        ("first-read", "fresh clone", "dog vdi read, fresh clone"),
        ("flatten", "Vdi.flatten", "dog vdi read | dog vdi write"),
        ("flatten", "Vdi.flatten", "sheepfast read + write"),
    ):
        for (c, v, size), t in sorted(by.items()):
            if c == case and v == ours and (case, theirs, size) in by:
                out.append(
                    f"{case} {size >> 20} MiB: {ours} is {by[(case, theirs, size)] / t:.2f}x "
                    f"as fast as {theirs}"
                )
    return out


def plot(rows: list[dict], path: str, title: str) -> Optional[str]:
    """A PNG of the median seconds (min-max bars), one panel per case; returns why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed"
    cases = list(dict.fromkeys(r["case"] for r in rows))
    if not cases:
        return "nothing to plot"
    fig, axes = plt.subplots(len(cases), 1, figsize=(9, 1.2 + 0.45 * len(rows)), squeeze=False)
    for ax, case in zip(axes[:, 0], cases):
        mine = [r for r in rows if r["case"] == case]
        labels = [f"{r['variant']} ({r['size'] >> 20} MiB)" for r in mine]
        med = [r["median_s"] for r in mine]
        err = [
            [m - r["min_s"] for m, r in zip(med, mine)],
            [r["max_s"] - m for m, r in zip(med, mine)],
        ]
        ax.barh(range(len(mine)), med, xerr=err, capsize=2)
        ax.set_yticks(range(len(mine)), labels, fontsize=7)
        ax.set_title(case, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[-1][0].set_xlabel("seconds (median, min-max)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


@contextlib.contextmanager
def bench(address: Optional[str], dog: Optional[str], runs: int) -> Iterator[Bench]:
    with cluster(address) as info:
        b = Bench(info, dog, runs)
        try:
            yield b
        finally:
            b.cleanup()
            b.c.close()


def main(argv: Optional[list[str]] = None) -> int:
    from benchmarks.__main__ import _sizes

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.clones",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--cluster", help="a real cluster (default: an embedded FakeSheep)")
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=_sizes("16M,64M"),
        help="snapshot/clone image sizes (default 16M,64M; the README: 1G,10G)",
    )
    p.add_argument(
        "--data-size",
        type=_sizes,
        default=_sizes("32M"),
        help="the dense image of first-read, cow-storm and flatten (default 32M)",
    )
    p.add_argument(
        "--fill",
        type=_sizes,
        default=[0],
        help="dense data written to the cluster before the cases (default 0; the README: 2G)",
    )
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--dog", help="dog to compare with (default: on PATH; none: skipped)")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--plot", metavar="PNG", help="median seconds by case (needs matplotlib)")
    args = p.parse_args(argv)
    dog = find_dog(args.dog)
    if dog is None:
        print("benchmarks.clones: dog not found: the dog cases are skipped", file=sys.stderr)
    with bench(args.cluster, dog, args.runs) as b:
        if args.fill[0]:
            b.dense_image(args.fill[0])  # the cluster already holds data, as it normally does
        b.snapshot_and_clone(args.sizes)
        b.first_read(args.data_size[0])
        b.cow_storm(args.data_size[0])
        b.flatten(args.data_size[0])
        summary = ratios(b.rows)
    print("\n".join(summary))
    if args.plot:
        why = plot(
            b.rows, args.plot, f"sheepfast snapshots and clones, {args.cluster or 'embedded'}"
        )
        if why:
            print(f"benchmarks.clones: no plot: {why}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "cluster": args.cluster or "embedded",
                    "nodes": [str(n) for n in b.info.nodes],
                    "copies": b.info.copies,
                    "object_size": b.info.object_size,
                    "fill": args.fill[0],
                    "argv": sys.argv,
                    "dog": dog,
                    "dog_version": dog_version(dog),
                    "rows": b.rows,
                    "ratios": summary,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
