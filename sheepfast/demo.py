"""The main job, in short: an image through Glance's store layer onto Sheepdog.

    python -m sheepfast.demo                   # on an embedded FakeSheep
    python -m sheepfast.demo --cluster 127.0.0.1:7000

Loads sheepfast's glance_store driver the way Glance does (multi-store,
``enabled_backends = sd:sheepdog``), uploads an image of unknown size as a
client streaming it would, downloads it, checks size, md5 and sha512 against
the source, checks the VDI is thin (all-zero objects not stored), deletes the
image and checks the VDI is gone. Prints the rates.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import tempfile
import time
import uuid
from typing import Iterator, TextIO

import sheepfast

MiB = 1 << 20


def _image(size: int) -> bytes:
    """Incompressible data with a quarter of the 4 MiB objects left as zeros,
    as in real OS images, so thin provisioning has something to skip."""
    buf = bytearray(os.urandom(size))
    step = 4 * MiB
    for off in range(0, size, 4 * step):
        buf[off : off + step] = bytes(min(step, size - off))
    return bytes(buf)


class _Stream:
    """A client upload: read() only, modest pieces, no size known up front."""

    def __init__(self, data: bytes, piece: int = 256 * 1024):
        self._view = memoryview(data)
        self._pos = 0
        self._piece = piece

    def read(self, n: int = -1) -> bytes:
        n = self._piece if n is None or n < 0 else min(n, self._piece)
        out = self._view[self._pos : self._pos + n].tobytes()
        self._pos += len(out)
        return out


@contextlib.contextmanager
def glance_store(address: str, **options: object) -> Iterator[object]:
    """glance_store configured as Glance would from glance-api.conf: the
    store "sd" on the cluster at address, with the driver options given
    (sheepdog_store_...=value) on top."""
    from glance_store import multi_backend  # type: ignore[import-untyped]
    from oslo_config import cfg

    from sheepfast.image import parse_address

    host, port = parse_address(address.split(",")[0])
    with tempfile.TemporaryDirectory() as tmp:
        conf_file = os.path.join(tmp, "glance-api.conf")
        with open(conf_file, "w") as f:
            f.write(
                "[DEFAULT]\nenabled_backends = sd:sheepdog\n"
                "[glance_store]\ndefault_backend = sd\n"
                f"[sd]\nsheepdog_store_address = {host}\n"
                f"sheepdog_store_port = {port}\nsheepdog_store_chunk_size = 32\n"
                + "".join(f"{key} = {value}\n" for key, value in options.items())
            )
        conf = cfg.CONF  # glance_store reads the process-wide config, as in Glance
        conf.register_opt(cfg.DictOpt("enabled_backends"))
        conf(args=["--config-file", conf_file], project="glance")
        multi_backend.register_store_opts(conf)
        multi_backend.create_multi_stores(conf)
        yield conf


def run(address: str, size: int, out: TextIO = sys.stdout) -> None:
    from glance_store import multi_backend

    image_id = str(uuid.uuid4())
    data = _image(size)
    want_md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    want_sha512 = hashlib.sha512(data).hexdigest()
    with sheepfast.connect(address) as cluster, glance_store(address) as conf:
        print(
            f"cluster  {address}  nodes={','.join(cluster.nodes)}  "
            f"object={1 << cluster.defaults.block_size_shift >> 20} MiB",
            file=out,
        )
        t0 = time.perf_counter()
        uri, stored, md5, sha512, meta = multi_backend.add_with_multihash(
            conf, image_id, _Stream(data), 0, "sd", "sha512"
        )
        t1 = time.perf_counter()
        try:
            info = cluster.stat(image_id)
            with cluster.open(image_id) as vdi:
                used, _ = vdi.usage()
            t2 = time.perf_counter()
            chunks, length = multi_backend.get(uri, "sd")
            back = hashlib.sha512()
            got = 0
            for chunk in chunks:
                back.update(chunk)
                got += len(chunk)
            t3 = time.perf_counter()
        finally:
            multi_backend.delete(uri, "sd")
        gone = not cluster.exists(image_id)
    nonzero = sum(
        1
        for off in range(0, size, 4 * MiB)
        if data[off : off + 4 * MiB].count(0) != min(4 * MiB, size - off)
    )
    checks = {
        "size": stored == size == length == got == info.size,
        "md5": md5 == want_md5,
        "sha512": sha512 == want_sha512 == back.hexdigest(),
        "thin": used <= nonzero * info.object_size,
        "deleted": gone,
    }
    print(f"store    {uri}  ({meta})", file=out)
    print(
        f"add      {size >> 20} MiB, size unknown, in {t1 - t0:.3f} s = "
        f"{size / MiB / (t1 - t0):8.1f} MiB/s  (md5 and sha512 computed on the way)",
        file=out,
    )
    print(
        f"get      {got >> 20} MiB in {t3 - t2:.3f} s = {got / MiB / (t3 - t2):8.1f} MiB/s",
        file=out,
    )
    print(
        f"thin     {used >> 20} MiB of objects stored for {size >> 20} MiB "
        f"({(size - used) >> 20} MiB of zeros not written)",
        file=out,
    )
    print(f"sha512   {sha512[:32]}...  md5 {md5}", file=out)
    print(
        "checks   " + "  ".join(f"{k} {'OK' if ok else 'FAILED'}" for k, ok in checks.items()),
        file=out,
    )
    if not all(checks.values()):
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sheepfast.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cluster",
        default=os.environ.get("SHEEPFAST_CLUSTER"),
        help="host:port[,host:port...] of a real cluster "
        "(default: $SHEEPFAST_CLUSTER, else an embedded FakeSheep)",
    )
    parser.add_argument("--size-mib", type=int, default=256, help="image size (default 256)")
    args = parser.parse_args(argv)
    if args.size_mib <= 0:
        parser.error("--size-mib must be positive")
    try:
        import glance_store  # noqa: F401
    except ImportError:
        print(
            "sheepfast demo: glance_store is not installed: pip install 'sheepfast[glance]'",
            file=sys.stderr,
        )
        return 1
    with contextlib.ExitStack() as stack:
        address = args.cluster
        if not address:
            from sheepfast.testing import FakeSheep

            address = stack.enter_context(FakeSheep()).address
            print(
                "embedded FakeSheep (in-process, memory-backed); "
                "use --cluster host:port for a real cluster"
            )
        try:
            run(address, args.size_mib * MiB)
        except sheepfast.SheepfastError as exc:
            print(f"sheepfast demo: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
