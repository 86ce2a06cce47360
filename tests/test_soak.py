"""A bounded concurrency soak: many threads, one Cluster, every byte checked.

16 threads share one ``sheepfast.connect()`` Cluster. Each, until the time
is up, creates an image of a random size (a few MiB, 1 MiB objects, with
all-zero objects and zero runs inside others), writes it in pieces of
random size in random order, reads it back whole and in part and compares
sha256, and deletes it; and rewrites its own stripe of one VDI that all of
them share, whose stripes straddle object boundaries so that neighbours
create and fill the same objects at the same time. A second soak does the
same through the glance_store driver's Store (add with known and unknown
size, get, delete). At the end no VDI is left and, on FakeSheep, no data
object of the deleted ones.

SHEEPFAST_SOAK_SECONDS sets how long each soak runs (3 s by default, so the
suite stays fast; minutes on real sheep). The real-cluster variants run when
SHEEPFAST_TEST_CLUSTER or SHEEPFAST_TEST_SHEEP is set (tests/conftest.py).
A failure names the thread, round and seed: rerun it with
SHEEPFAST_SOAK_SEED.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import threading
import time
import uuid

import pytest

import sheepfast
from sheepfast.testing import wire as w

MiB = 1 << 20
SOAK_SECONDS = float(os.environ.get("SHEEPFAST_SOAK_SECONDS", "3"))
SEED = int(os.environ.get("SHEEPFAST_SOAK_SEED", str(random.randrange(1 << 32))))
THREADS = 16
SHIFT = 20  # 1 MiB objects: a few MiB make several
STRIPE = 3 * MiB // 2  # stripes of the shared VDI straddle objects
MAX_IMAGE = 4 * MiB + 12345


def random_image(rng: random.Random, size: int) -> bytes:
    """Random bytes with some whole objects and some runs inside others zero."""
    data = bytearray(rng.randbytes(size))
    for idx in range(0, (size + MiB - 1) >> SHIFT):
        roll = rng.random()
        if roll < 0.25:  # an all-zero object: never written
            data[idx * MiB : (idx + 1) * MiB] = bytes(len(data[idx * MiB : (idx + 1) * MiB]))
        elif roll < 0.5:  # a zero run inside a written object
            start = idx * MiB + rng.randrange(MiB)
            end = min(size, start + rng.randrange(1, MiB))
            data[start:end] = bytes(max(0, end - start))
    return bytes(data)


def random_pieces(rng: random.Random, size: int) -> list:
    """(offset, length) pieces covering [0, size), in random order."""
    cuts = sorted({0, size, *(rng.randrange(size) for _ in range(rng.randrange(4)))})
    pieces = list(zip(cuts, cuts[1:]))
    rng.shuffle(pieces)
    return [(a, b - a) for a, b in pieces]


def digest(data) -> str:
    return hashlib.sha256(data).hexdigest()


class Soak:
    """The threads' shared bookkeeping; failures are kept, not raised."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.lock = threading.Lock()
        self.failures: list = []
        self.rounds = [0] * THREADS
        self.vids: set = set()
        self.bytes_checked = 0

    def run(self, work) -> None:
        threads = [
            threading.Thread(target=self._guard, args=(work, i), name=f"soak-{i}")
            for i in range(THREADS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not self.failures, "\n".join(self.failures[:5])
        assert all(self.rounds), f"a thread never completed a round: {self.rounds}"

    def _guard(self, work, i: int) -> None:
        rng = random.Random(SEED * 1000 + i)
        try:
            while True:
                work(i, self.rounds[i], rng)
                self.rounds[i] += 1
                if time.monotonic() >= self.deadline:
                    return
        except BaseException as exc:  # reported by run()
            with self.lock:
                self.failures.append(
                    f"thread {i}, round {self.rounds[i]}, SHEEPFAST_SOAK_SEED={SEED}: {exc!r}"
                )

    def checked(self, n: int) -> None:
        with self.lock:
            self.bytes_checked += n


def _no_objects_left(target, vids) -> None:
    """No data object of a deleted VDI is left (their inodes stay, as on
    sheep: a deleted VDI's vid is never reused)."""
    if target.is_fake:
        left = {o for o in target.fake.object_ids() if w.vid_of(o) in vids}
        assert not left, f"{len(left)} data objects of deleted VDIs are left"


def test_threads_sharing_one_cluster_lose_no_byte(target):
    prefix = f"sf-soak-{uuid.uuid4().hex[:8]}"
    soak = Soak(SOAK_SECONDS)
    last_stripe = [b""] * THREADS
    with sheepfast.connect(target.address, io_timeout=60) as cluster:
        shared_name = f"{prefix}-shared"
        target.names.append(shared_name)
        soak.vids.add(cluster.create(shared_name, THREADS * STRIPE, block_size_shift=SHIFT))
        shared = cluster.open(shared_name)

        def work(i: int, n: int, rng: random.Random) -> None:
            name = f"{prefix}-{i}-{n}"
            size = rng.randrange(1, MAX_IMAGE)
            data = random_image(rng, size)
            with soak.lock:
                target.names.append(name)
            vid = cluster.create(name, size, block_size_shift=SHIFT)
            with soak.lock:
                soak.vids.add(vid)
            with cluster.open(name) as vdi:
                for offset, length in random_pieces(rng, size):
                    vdi.write(memoryview(data)[offset : offset + length], offset)
                assert digest(vdi.read(0, size)) == digest(data), f"{name} reads back wrong"
                offset = rng.randrange(size)
                part = bytearray(rng.randrange(1, size - offset + 1))
                vdi.readinto(part, offset)
                assert part == data[offset : offset + len(part)], f"{name} part at {offset}"
            soak.checked(size + len(part))
            cluster.delete(name)
            # this thread's stripe of the shared VDI
            stripe = random_image(rng, STRIPE)
            for offset, length in random_pieces(rng, STRIPE):
                shared.write(memoryview(stripe)[offset : offset + length], i * STRIPE + offset)
            got = shared.read(i * STRIPE, STRIPE)
            assert digest(got) == digest(stripe), f"stripe {i} of the shared VDI reads back wrong"
            last_stripe[i] = stripe
            soak.checked(STRIPE)

        try:
            soak.run(work)
            whole = shared.read(0, THREADS * STRIPE)
            assert digest(whole) == digest(b"".join(last_stripe)), "the shared VDI as a whole"
        finally:
            shared.close()
        cluster.delete(shared_name)
        left = [v.name for v in cluster.list() if v.name.startswith(prefix)]
        assert left == [], f"VDIs left behind: {left}"
    _no_objects_left(target, soak.vids)
    print(
        f"soak: {sum(soak.rounds)} rounds over {THREADS} threads, "
        f"{soak.bytes_checked / MiB:.0f} MiB checked, seed {SEED}"
    )


def test_threads_sharing_one_glance_store_lose_no_byte(target, monkeypatch, tmp_path):
    glance_support = pytest.importorskip("glance_support")
    g = glance_support.make_multi(monkeypatch, tmp_path, target, "native")
    prefix = f"sf-soak-{uuid.uuid4().hex[:8]}"
    soak = Soak(SOAK_SECONDS)

    def work(i: int, n: int, rng: random.Random) -> None:
        image_id = f"{prefix}-{i}-{n}"
        with soak.lock:
            target.names.append(image_id)
        size = rng.randrange(1, MAX_IMAGE)
        data = random_image(rng, size)
        known = rng.random() < 0.5  # Glance may not know the size
        uri, stored, md5, multihash, _meta = g.add(
            image_id, io.BytesIO(data), size if known else 0, "sha256"
        )
        assert stored == size and md5 == hashlib.md5(data).hexdigest()
        assert multihash == digest(data)
        assert digest(g.read_all(uri)) == digest(data), f"{image_id} reads back wrong"
        soak.checked(size)
        g.delete(uri)

    soak.run(work)
    with sheepfast.connect(target.address) as cluster:
        left = [v.name for v in cluster.list() if v.name.startswith(prefix)]
    assert left == [], f"VDIs left behind: {left}"
    print(
        f"glance soak: {sum(soak.rounds)} rounds over {THREADS} threads, "
        f"{soak.bytes_checked / MiB:.0f} MiB checked, seed {SEED}"
    )
