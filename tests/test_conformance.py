"""What the client relies on, checked against FakeSheep and a real cluster.

Each test runs once per target (see conftest.py); the real variant is skipped
unless a real cluster is configured.
"""

from __future__ import annotations

import mmap
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sheepfast
from sheepfast.testing import wire as w

MiB = 1 << 20


def test_cluster_defaults_and_nodes(cluster):
    d = cluster.defaults
    assert 20 <= d.block_size_shift <= 31
    assert d.copies >= 1
    nodes = cluster.nodes
    assert nodes and all(":" in n for n in nodes)


def test_create_open_stat_list_delete(cluster, new_name):
    name = new_name()
    vid = cluster.create(name, 10 * MiB)
    assert 0 < vid < 1 << 24
    assert cluster.exists(name)
    info = cluster.stat(name)
    assert (info.name, info.vid, info.size, info.snapshot) == (name, vid, 10 * MiB, False)
    assert info.object_size == 1 << cluster.defaults.block_size_shift
    with cluster.open(name) as vdi:
        assert (vdi.name, vdi.vid, vdi.size) == (name, vid, 10 * MiB)
        assert vdi.object_size == info.object_size
    listed = {i.name: i for i in cluster.list()}
    assert listed[name].vid == vid and listed[name].size == 10 * MiB
    cluster.delete(name)
    assert not cluster.exists(name)
    assert name not in {i.name for i in cluster.list()}


def test_write_read_roundtrip_across_objects(cluster, new_name):
    name = new_name()
    cluster.create(name, 20 * MiB)
    data = os.urandom(9 * MiB + 12345)
    with cluster.open(name) as vdi:
        assert vdi.write(data, 3 * MiB - 7) == len(data)
        assert vdi.read(3 * MiB - 7, len(data)) == data
        # the edges around the write are still zero
        assert vdi.read(0, 3 * MiB - 7) == bytes(3 * MiB - 7)
        tail = 3 * MiB - 7 + len(data)
        assert vdi.read(tail, 20 * MiB - tail) == bytes(20 * MiB - tail)
    # a second handle sees the same bytes (nothing was only cached)
    with cluster.open(name) as vdi:
        assert vdi.read(3 * MiB - 7, len(data)) == data


def test_unallocated_reads_zero(cluster, new_name):
    name = new_name()
    cluster.create(name, 64 * MiB)
    with cluster.open(name) as vdi:
        assert vdi.read(0, 64 * MiB) == bytes(64 * MiB)
        assert vdi.stats["read_requests"] == 0  # holes cost no round trip
        vdi.write(b"x", 40 * MiB)
        got = vdi.read(39 * MiB, 2 * MiB)
        assert got[MiB] == ord("x") and got.count(0) == 2 * MiB - 1


@pytest.mark.parametrize("bss", [20, 23])
def test_non_default_object_size(cluster, new_name, bss):
    name = new_name()
    obj = 1 << bss
    cluster.create(name, 5 * obj + 100, block_size_shift=bss)
    with cluster.open(name) as vdi:
        assert vdi.object_size == obj
        data = os.urandom(2 * obj + 50)
        vdi.write(data, obj - 25)
        assert vdi.read(obj - 25, len(data)) == data
        assert vdi.stats["create_requests"] == 4  # objects 0..3 touched
        vdi.write(b"end", 5 * obj + 97)
        assert vdi.read(5 * obj + 97, 3) == b"end"


def test_overwrite_uses_existing_objects(cluster, new_name):
    name = new_name()
    cluster.create(name, 8 * MiB, block_size_shift=20)
    with cluster.open(name) as vdi:
        vdi.write(os.urandom(8 * MiB), 0)
        created, written = vdi.stats["create_requests"], vdi.stats["write_requests"]
        assert created == 8  # one CREATE per object; the rest of each object follows it
        vdi.write(b"\xff" * 1000, 1000)
        assert vdi.stats["create_requests"] == created
        assert vdi.stats["write_requests"] == written + 1
        assert vdi.read(1000, 1000) == b"\xff" * 1000


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.integers(0, 4 * MiB - 1), st.integers(0, 2 * MiB + 17)),
        min_size=1,
        max_size=8,
    )
)
def test_random_ranges_match_a_model(cluster, new_name, ops):
    """Random writes and reads across 1 MiB object boundaries agree with an
    in-memory model of the VDI."""
    size = 4 * MiB
    name = new_name("sf-hyp")
    cluster.create(name, size, block_size_shift=20)
    model = bytearray(size)
    rnd = random.Random(len(ops))
    try:
        with cluster.open(name) as vdi:
            for is_write, offset, length in ops:
                length = min(length, size - offset)
                if is_write:
                    data = rnd.randbytes(length)
                    vdi.write(data, offset)
                    model[offset : offset + length] = data
                else:
                    assert vdi.read(offset, length) == bytes(model[offset : offset + length])
            assert vdi.read(0, size) == bytes(model)
    finally:
        cluster.delete(name)


def test_buffer_types_zero_copy(cluster, new_name):
    import numpy as np

    name = new_name()
    cluster.create(name, 4 * MiB)
    payload = os.urandom(MiB)
    with cluster.open(name) as vdi:
        vdi.write(bytearray(payload), 0)
        vdi.write(memoryview(payload)[10:20], MiB)
        vdi.write(np.frombuffer(payload, dtype=np.uint8), 2 * MiB)
        with mmap.mmap(-1, 4096) as m:
            m[:] = payload[:4096]
            vdi.write(m, 3 * MiB)
        out = bytearray(MiB)
        assert vdi.readinto(out, 0) == MiB and out == payload
        arr = np.zeros(MiB, dtype=np.uint8)
        vdi.readinto(arr, 2 * MiB)
        assert arr.tobytes() == payload
        with mmap.mmap(-1, 4096) as m:
            vdi.readinto(m, 3 * MiB)
            assert m[:] == payload[:4096]
        assert vdi.read(MiB, 10) == payload[10:20]
        # a view into the middle of a larger buffer
        big = bytearray(3 * MiB)
        vdi.readinto(memoryview(big)[MiB : 2 * MiB], 0)
        assert big[MiB : 2 * MiB] == payload and big[:MiB] == bytes(MiB)


def test_read_recycles_only_what_nobody_holds(cluster, new_name):
    """read(recycle=...) refills a bytes object only once the list holds its
    last reference; whoever still holds one never sees it change."""
    name = new_name()
    n = MiB
    cluster.create(name, 8 * n)
    data = os.urandom(8 * n)
    with cluster.open(name) as vdi:
        vdi.write(data, 0)
        pool: list = []
        first = vdi.read(0, n, recycle=pool)
        first_id = id(first)
        hash(first)  # caches a hash the refill must forget
        second = vdi.read(n, n, recycle=pool)
        assert second is not first and len(pool) == 2
        assert first == data[:n] and second == data[n : 2 * n]
        view = memoryview(second)  # a view keeps its bytes from reuse
        del first
        third = vdi.read(2 * n, n, recycle=pool)
        assert id(third) == first_id and len(pool) == 2
        assert third == data[2 * n : 3 * n]
        assert hash(third) == hash(bytes(third))
        del second
        fourth = vdi.read(3 * n, n, recycle=pool)
        assert view.tobytes() == data[n : 2 * n] and fourth == data[3 * n : 4 * n]
        assert len(pool) == 3
        # another size, or a pool at its limit, allocates without pooling
        assert vdi.read(0, 10, recycle=pool) == data[:10] and len(pool) == 4
        assert vdi.read(0, 11, recycle=pool) == data[:11] and len(pool) == 4
        assert vdi.read(0, 0, recycle=pool) == b""
        with pytest.raises(TypeError):
            vdi.read(0, 1, recycle=(1, 2))


def test_readonly_buffer_refused_for_readinto(cluster, new_name):
    name = new_name()
    cluster.create(name, MiB)
    with cluster.open(name) as vdi:
        with pytest.raises((BufferError, TypeError)):
            vdi.readinto(b"immutable", 0)


def test_thin_skips_zero_objects(cluster, new_name):
    name = new_name()
    cluster.create(name, 16 * MiB, block_size_shift=20)
    data = bytearray(16 * MiB)
    data[5 * MiB : 5 * MiB + 3] = b"abc"
    with cluster.open(name) as vdi:
        vdi.write(data, 0)
        assert vdi.stats["create_requests"] == 1
        assert vdi.stats["zero_objects_skipped"] == 15
        assert vdi.read(0, 16 * MiB) == bytes(data)
        vdi.thin = False
        vdi.write(bytes(MiB), 0)
        assert vdi.stats["create_requests"] == 2


def test_zero_write_over_data_is_written(cluster, new_name):
    name = new_name()
    cluster.create(name, 2 * MiB, block_size_shift=20)
    with cluster.open(name) as vdi:
        vdi.write(b"\x01" * MiB, 0)
        vdi.write(bytes(MiB), 0)  # allocated: zeros must overwrite
        assert vdi.read(0, MiB) == bytes(MiB)


def test_resize_grow(cluster, new_name):
    name = new_name()
    cluster.create(name, 3 * MiB)
    with cluster.open(name) as vdi:
        vdi.write(b"a" * 10, 3 * MiB - 10)
        vdi.resize(20 * MiB)
        assert vdi.size == 20 * MiB
        vdi.write(b"b" * 10, 20 * MiB - 10)
        assert vdi.read(3 * MiB - 10, 10) == b"a" * 10
        assert vdi.read(20 * MiB - 10, 10) == b"b" * 10
    assert cluster.stat(name).size == 20 * MiB
    with cluster.open(name) as vdi:
        assert vdi.read(20 * MiB - 10, 10) == b"b" * 10


def test_zero_and_odd_sizes(cluster, new_name):
    empty, odd = new_name(), new_name()
    cluster.create(empty, 0)
    cluster.create(odd, 1000)
    with cluster.open(empty) as vdi:
        assert vdi.size == 0 and vdi.read(0, 0) == b""
    with cluster.open(odd) as vdi:
        vdi.write(b"z" * 1000, 0)
        assert vdi.read(0, 1000) == b"z" * 1000


def test_names_with_any_bytes(cluster, new_name):
    base = new_name()
    for name in (base + " with space", base + ":colon\\back", base + "-ünï"):
        cluster.create(name, MiB)
        assert cluster.exists(name)
        assert name in {i.name for i in cluster.list()}
        cluster.delete(name)
    longest = ("L" * 200 + base)[-255:]
    cluster.create(longest, MiB)
    try:
        assert cluster.stat(longest).name == longest
    finally:
        cluster.delete(longest)


def test_delete_reclaims_objects(target, cluster, new_name):
    name = new_name()
    cluster.create(name, 12 * MiB)
    with cluster.open(name) as vdi:
        vdi.write(os.urandom(12 * MiB), 0)
        vid = vdi.vid
    cluster.delete(name)
    assert not cluster.exists(name)
    if target.is_fake:
        # the index was zeroed first, so sheep dropped every object
        assert not [o for o in target.fake.object_ids() if (o >> 32) & 0xFFFFFF == vid]


def test_delete_then_recreate_same_name(cluster, new_name):
    name = new_name()
    cluster.create(name, MiB)
    with cluster.open(name) as vdi:
        vdi.write(b"old", 0)
    cluster.delete(name)
    cluster.create(name, MiB)
    with cluster.open(name) as vdi:
        assert vdi.read(0, 3) == bytes(3)


# A client remembers the vid of a name it looked up (sf_catalog.c) and checks
# it against the inode each time: whatever another client did to the name
# since, it must see what a fresh lookup would.


def test_a_remembered_name_follows_what_another_client_did_to_it(target, cluster, new_name):
    name = new_name()
    cluster.create(name, MiB)
    with cluster.open(name) as vdi:
        vdi.write(b"one", 0)
    with sheepfast.connect(target.address) as other:
        other.delete(name)
        with pytest.raises(sheepfast.VdiNotFound):
            cluster.open(name)
        with pytest.raises(sheepfast.VdiNotFound):
            cluster.stat(name)
        other.create(name, 2 * MiB)
        assert cluster.stat(name).size == 2 * MiB
        with cluster.open(name) as vdi:
            assert vdi.read(0, 3) == bytes(3)
            vdi.write(b"two", 0)
            before = vdi.vid
        snap = other.snapshot(name, "s")
        assert snap.vid == before  # the snapshot keeps the vid this client remembers
        info = cluster.stat(name)
        assert info.vid != before and not info.snapshot
        with cluster.open(name) as vdi:
            assert vdi.vid == info.vid
            vdi.write(b"six", 0)
        with cluster.open(name, snapshot="s") as old:
            assert old.read(0, 3) == b"two"
        other.rollback(name, "s")
        with cluster.open(name) as vdi:
            assert vdi.vid not in (before, info.vid)
            assert vdi.read(0, 3) == b"two"


def test_a_second_open_is_one_request_and_its_first_read_needs_no_index_read(
    target, cluster, new_name
):
    if not target.is_fake:
        pytest.skip("counts requests, which only FakeSheep does")
    name = new_name()
    cluster.create(name, 8 * MiB)
    with cluster.open(name) as vdi:  # looks the name up
        vdi.write(b"abc", 5 * MiB)
    fake = target.fake
    fake.reset_request_counts()
    fake.enable_request_log()
    try:
        with cluster.open(name) as vdi:
            assert fake.request_counts() == {w.OP_READ_OBJ: 1}  # inode header and index together
            assert vdi.read(5 * MiB, 3) == b"abc"
        assert fake.request_counts() == {w.OP_READ_OBJ: 2}  # and the data
        inode_read = fake.request_log()[0]
    finally:
        fake.enable_request_log(False)
    assert (inode_read.oid, inode_read.offset) == (w.inode_oid(vdi.vid), 0)


# open(read_ahead=N) reads the first N bytes beside the inode when the
# Cluster saw the VDI's object 0 as its own (sf_vdi.c, sf_catalog.c): the
# first read takes them from memory. Whatever it guessed, every read must
# return what the VDI holds.


def test_read_ahead_brings_the_first_bytes_with_the_inode(target, cluster, new_name):
    name = new_name()
    cluster.create(name, 8 * MiB)
    data = os.urandom(2 * MiB)
    with cluster.open(name, read_ahead=64 << 10) as vdi:
        assert vdi.read_ahead_held == 0  # looked up by name: nothing known of object 0 yet
        vdi.write(data, 0)
    fake = target.fake
    if fake is not None:
        fake.reset_request_counts()
    with cluster.open(name, read_ahead=64 << 10) as vdi:
        if fake is not None:  # the inode and object 0, nothing else
            assert fake.request_counts() == {w.OP_READ_OBJ: 2}
        assert vdi.read_ahead_held == 64 << 10
        assert vdi.read(0, 1000) == data[:1000]
        assert vdi.read_ahead_held == 0
        if fake is not None:
            assert fake.request_counts() == {w.OP_READ_OBJ: 2}  # the read asked no one
        assert vdi.read(0, 64 << 10) == data[: 64 << 10]  # only the first read is served
        if fake is not None:
            assert fake.request_counts() == {w.OP_READ_OBJ: 3}
    with cluster.open(name, read_ahead=64 << 10) as vdi:  # a first read elsewhere drops them
        assert vdi.read(MiB, 10) == data[MiB : MiB + 10]
        assert vdi.read_ahead_held == 0
        assert vdi.read(0, 10) == data[:10]
    with cluster.open(name, read_ahead=64 << 10) as vdi:  # so does a write
        vdi.write(b"new", 0)
        assert vdi.read_ahead_held == 0 and vdi.read(0, 5) == b"new" + data[3:5]
    with cluster.open(name, read_ahead=64 << 10) as vdi:  # and a first read past them
        assert vdi.read(0, (64 << 10) + 1) == b"new" + data[3 : (64 << 10) + 1]
    for bad in (-1, sheepfast.READ_AHEAD_MAX + 1):
        with pytest.raises(sheepfast.InvalidArgument, match="read_ahead must be 0"):
            cluster.open(name, read_ahead=bad)


def test_read_ahead_of_a_small_vdi_stops_at_its_end(cluster, new_name):
    name = new_name()
    cluster.create(name, 1000)
    with cluster.open(name) as vdi:
        vdi.write(b"x" * 1000, 0)
    with cluster.open(name, read_ahead=sheepfast.READ_AHEAD_MAX) as vdi:
        assert vdi.read_ahead_held == 1000
        assert vdi.read(0, 1000) == b"x" * 1000


def test_read_ahead_is_not_tried_for_a_hole_or_an_inherited_object(target, cluster, new_name):
    name, clone = new_name(), new_name()
    cluster.create(name, 8 * MiB)
    with cluster.open(name) as vdi:
        vdi.write(b"far", 5 * MiB)  # object 0 stays a hole
    fake = target.fake
    if fake is not None:
        fake.reset_request_counts()
    with cluster.open(name, read_ahead=64 << 10) as vdi:
        if fake is not None:
            assert fake.request_counts() == {w.OP_READ_OBJ: 1}  # the inode only
        assert vdi.read_ahead_held == 0 and vdi.read(0, 3) == bytes(3)
        vdi.write(b"own", 0)
    cluster.snapshot(name, "base")
    cluster.clone(name, "base", clone)
    with cluster.open(clone) as child:
        assert child.read(0, 3) == b"own"  # object 0 is the parent's
    with cluster.open(clone, read_ahead=64 << 10) as child:
        assert child.read_ahead_held == 0 and child.read(0, 3) == b"own"
        child.write(b"mine", 0)  # copied on write: now the clone's own
    with cluster.open(clone, read_ahead=64 << 10) as child:
        assert child.read_ahead_held == 64 << 10 and child.read(0, 4) == b"mine"
    cluster.delete(clone)
    cluster.delete(name, snapshot="base")


def test_read_ahead_sees_what_another_client_did_to_object_0(target, cluster, new_name):
    name = new_name()
    cluster.create(name, 8 * MiB)
    with cluster.open(name) as vdi:
        vdi.write(b"one", 0)
    with sheepfast.connect(target.address) as other:
        with other.open(name) as vdi:
            vdi.write(b"two", 0)
        with cluster.open(name, read_ahead=64 << 10) as vdi:
            assert vdi.read(0, 3) == b"two"
        with other.open(name) as vdi:  # object 0 given back: the guess finds nothing
            vdi.discard(0, vdi.object_size)
        with cluster.open(name, read_ahead=64 << 10) as vdi:
            assert vdi.read_ahead_held == 0 and vdi.read(0, 3) == bytes(3)
        other.delete(name)
        other.create(name, 8 * MiB)
        with other.open(name) as vdi:
            vdi.write(b"six", 0)
        with cluster.open(name, read_ahead=64 << 10) as vdi:
            assert vdi.read(0, 3) == b"six"
        with cluster.open(name, read_ahead=64 << 10) as vdi:
            assert vdi.read_ahead_held == 64 << 10 and vdi.read(0, 3) == b"six"


def test_many_objects_batch_index_updates(cluster, new_name):
    name = new_name()
    cluster.create(name, 200 * MiB, block_size_shift=20)
    with cluster.open(name) as vdi:
        vdi.write(b"\x07" * (200 * MiB), 0)
        stats = vdi.stats
        assert stats["create_requests"] == 200
        assert stats["index_updates"] < 30  # batched, not one per object
    with cluster.open(name) as vdi:
        assert vdi.read(199 * MiB, MiB) == b"\x07" * MiB


def test_usage_counts_owned_objects(cluster, new_name):
    name = new_name()
    cluster.create(name, 10 * MiB, block_size_shift=20)
    with cluster.open(name) as vdi:
        assert vdi.usage() == (0, 0)
        vdi.write(b"a", 0)
        vdi.write(b"b" * (2 * MiB), 5 * MiB + 1)
        assert vdi.usage() == (4 * MiB, 0)  # objects 0, 5, 6, 7
