"""The main job, in short: push an image through sheepfast and check it.

    python -m sheepfast.demo                   # on an embedded FakeSheep
    python -m sheepfast.demo --cluster 127.0.0.1:7000

Creates a VDI, writes an image into it from a preallocated buffer, reads it
back into another, verifies the SHA-256, prints throughput, and deletes the
VDI again (also when something fails).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import time
import uuid

import sheepfast

MiB = 1 << 20


def _image(size: int) -> bytearray:
    """Incompressible data, with a quarter of the objects left as zeros so
    thin provisioning has something to skip (as in real OS images)."""
    buf = bytearray(os.urandom(size))
    step = 4 * MiB
    for off in range(0, size, 4 * step):
        buf[off:off + step] = bytes(min(step, size - off))
    return buf


def run(address: str, size: int, out=sys.stdout) -> float:
    """Runs the demo against address; returns the slower of the two rates."""
    name = f"sheepfast-demo-{uuid.uuid4().hex[:8]}"
    image = _image(size)
    want = hashlib.sha256(image).hexdigest()
    back = bytearray(size)
    with sheepfast.connect(address) as cluster:
        print(f"cluster  {address}  nodes={','.join(cluster.nodes)}  "
              f"object={1 << cluster.defaults.block_size_shift >> 20} MiB", file=out)
        cluster.create(name, size)
        try:
            with cluster.open(name) as vdi:
                t0 = time.perf_counter()
                vdi.write(image, 0)
                t1 = time.perf_counter()
                vdi.readinto(back, 0)
                t2 = time.perf_counter()
                stats = vdi.stats
        finally:
            cluster.delete(name)
        gone = not cluster.exists(name)
    got = hashlib.sha256(back).hexdigest()
    write_rate = size / MiB / (t1 - t0)
    read_rate = size / MiB / (t2 - t1)
    print(f"write    {size >> 20} MiB in {t1 - t0:.3f} s = {write_rate:8.1f} MiB/s  "
          f"({stats['create_requests']} objects created, "
          f"{stats['zero_objects_skipped']} all-zero objects skipped, "
          f"{stats['index_updates']} index updates)", file=out)
    print(f"read     {size >> 20} MiB in {t2 - t1:.3f} s = {read_rate:8.1f} MiB/s", file=out)
    print(f"sha256   {got}  {'OK' if got == want else 'MISMATCH, expected ' + want}", file=out)
    print(f"cleanup  VDI {name} {'deleted' if gone else 'STILL PRESENT'}", file=out)
    if got != want or not gone:
        raise SystemExit(1)
    return min(write_rate, read_rate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sheepfast.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cluster", default=os.environ.get("SHEEPFAST_CLUSTER"),
                        help="host:port[,host:port...] of a real cluster "
                             "(default: $SHEEPFAST_CLUSTER, else an embedded FakeSheep)")
    parser.add_argument("--size-mib", type=int, default=256, help="image size (default 256)")
    args = parser.parse_args(argv)
    if args.size_mib <= 0:
        parser.error("--size-mib must be positive")
    with contextlib.ExitStack() as stack:
        address = args.cluster
        if not address:
            from sheepfast.testing import FakeSheep

            address = stack.enter_context(FakeSheep()).address
            print("embedded FakeSheep (in-process, memory-backed); "
                  "use --cluster host:port for a real cluster")
        try:
            run(address, args.size_mib * MiB)
        except sheepfast.SheepfastError as exc:
            print(f"sheepfast demo: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
