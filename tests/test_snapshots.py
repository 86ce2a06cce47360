"""Snapshots, rollback, clones, copy-on-write, flatten and discard through
the Python API, on FakeSheep and (with SHEEPFAST_TEST_CLUSTER or
SHEEPFAST_TEST_SHEEP=1) on real sheep.
"""

from __future__ import annotations

import hashlib

import pytest

import sheepfast
from sheepfast import errors

MiB = 1 << 20


def _fill(cluster, name, size, pattern=b"A"):
    """name with size bytes: each object starts with its index, then pattern."""
    cluster.create(name, size)
    with cluster.open(name) as vdi:
        obj = vdi.object_size
        for i in range(size // obj):
            vdi.write(i.to_bytes(4, "little") + pattern * 1000, i * obj)
    return obj


def _digest(cluster, name, snapshot=None):
    with cluster.open(name, snapshot=snapshot) as vdi:
        return hashlib.sha256(vdi.read(0, vdi.size)).hexdigest()


def test_snapshot_keeps_the_data_and_the_working_vdi_moves_on(cluster, new_name):
    name = new_name()
    _fill(cluster, name, 16 * MiB)
    before = cluster.stat(name)
    digest = _digest(cluster, name)

    snap = cluster.snapshot(name, "s1")
    assert snap.snapshot and snap.tag == "s1" and snap.name == name
    assert snap.vid == before.vid  # the old working vid is the snapshot's
    working = cluster.stat(name)
    assert not working.snapshot and working.vid != before.vid
    assert working.snap_id == snap.snap_id + 1
    assert working.parent == sheepfast.ParentInfo(name, snap.vid, snap.snap_id, "s1")
    assert not working.is_clone

    with cluster.open(name) as vdi:
        vdi.write(b"changed", 0)
        assert vdi.usage() == (vdi.object_size, 3 * vdi.object_size)
    assert _digest(cluster, name, "s1") == digest
    assert _digest(cluster, name, snap.snap_id) == digest
    assert _digest(cluster, name) != digest
    assert [s.vid for s in cluster.snapshots(name)] == [snap.vid]
    assert cluster.exists(name, snapshot="s1") and cluster.exists(name, snapshot=snap.snap_id)
    assert not cluster.exists(name, snapshot="nope")


def test_untagged_snapshots_are_found_by_id(cluster, new_name):
    name = new_name()
    cluster.create(name, 4 * MiB)
    first = cluster.snapshot(name)
    second = cluster.snapshot(name)
    assert (first.tag, second.tag) == ("", "")
    assert second.snap_id == first.snap_id + 1
    assert cluster.stat(name, snapshot=first.snap_id).vid == first.vid
    assert [s.snap_id for s in cluster.snapshots(name)] == [first.snap_id, second.snap_id]


def test_snapshot_errors(cluster, new_name):
    name = new_name()
    with pytest.raises(errors.VdiNotFound):
        cluster.snapshot(name, "t")
    cluster.create(name, 4 * MiB)
    cluster.snapshot(name, "t")
    with pytest.raises(errors.VdiExists, match="already has a snapshot tagged 't'"):
        cluster.snapshot(name, "t")
    # the failed attempt left the working VDI writable and untagged
    working = cluster.stat(name)
    assert working.tag == "" and not working.snapshot
    with pytest.raises(errors.SnapshotNotFound, match="snapshot 'other' of VDI"):
        cluster.stat(name, snapshot="other")
    with pytest.raises(errors.SnapshotNotFound):
        cluster.open(name, snapshot=999)
    with pytest.raises(errors.InvalidArgument, match="longer than 255"):
        cluster.snapshot(name, "x" * 256)
    with pytest.raises(errors.InvalidArgument, match="NUL"):
        cluster.stat(name, snapshot="a\0b")
    with pytest.raises(errors.InvalidArgument, match="empty"):
        cluster.stat(name, snapshot="")
    with pytest.raises(errors.InvalidArgument, match="snapshot id"):
        cluster.stat(name, snapshot=0)
    with pytest.raises(TypeError):
        cluster.stat(name, snapshot=True)


def test_a_handle_opened_before_a_snapshot_never_writes_into_it(cluster, new_name):
    name = new_name()
    cluster.create(name, 8 * MiB)
    with cluster.open(name) as old:
        old.write(b"before", 0)
        cluster.snapshot(name, "s")
        assert old.read(0, 6) == b"before"  # reading goes on
        with pytest.raises(errors.ReadOnly, match="snapshotted after it was opened"):
            old.write(b"after!", 0)
        with pytest.raises(errors.ReadOnly):
            old.write(b"new object", 4 * MiB)  # an object it never had
    with cluster.open(name, snapshot="s") as snap:
        assert snap.read(0, 6) == b"before"
        assert snap.read(4 * MiB, 10) == bytes(10)
        for call in (lambda: snap.write(b"x", 0), lambda: snap.resize(16 * MiB)):
            with pytest.raises(errors.ReadOnly, match="is a snapshot"):
                call()
        with pytest.raises(errors.ReadOnly):
            snap.discard(0, 4 * MiB)
        with pytest.raises(errors.ReadOnly):
            snap.flatten()


def test_clone_shares_objects_until_written(cluster, new_name):
    name, clone = new_name(), new_name("sf-clone")
    obj = _fill(cluster, name, 12 * MiB)
    snap = cluster.snapshot(name, "base")
    digest = _digest(cluster, name, "base")

    info = cluster.clone(name, "base", clone)
    assert (info.name, info.size, info.snapshot) == (clone, 12 * MiB, False)
    assert info.parent == sheepfast.ParentInfo(name, snap.vid, snap.snap_id, "base")
    assert info.is_clone and cluster.stat(clone).is_clone
    assert [c.name for c in cluster.children(name, snapshot="base")] == [clone]
    assert cluster.children(name) == []
    listed = {(i.name, i.snapshot): i for i in cluster.list()}
    assert listed[(clone, False)].parent == info.parent

    with cluster.open(clone) as vdi:
        assert vdi.usage() == (0, 12 * MiB)
        assert hashlib.sha256(vdi.read(0, vdi.size)).hexdigest() == digest
        vdi.write(b"mine", obj + 100)  # copy on write: the rest of the object comes along
        assert vdi.read(obj, 4) == (1).to_bytes(4, "little")
        assert vdi.read(obj + 100, 4) == b"mine"
        assert vdi.usage() == (obj, 12 * MiB - obj)
    assert _digest(cluster, name, "base") == digest  # the image is unchanged


def test_clone_size_and_errors(cluster, new_name):
    name, clone = new_name(), new_name("sf-clone")
    cluster.create(name, 8 * MiB)
    with pytest.raises(errors.InvalidArgument, match="needs a snapshot"):
        cluster.clone(name, None, clone)
    cluster.snapshot(name, "s")
    with pytest.raises(errors.InvalidArgument, match="smaller than its snapshot"):
        cluster.clone(name, "s", clone, size=4 * MiB)
    with pytest.raises(errors.SnapshotNotFound):
        cluster.clone(name, "nope", clone)
    with pytest.raises(errors.InvalidArgument, match="clone name"):
        cluster.clone(name, "s", "x" * 256)
    big = cluster.clone(name, "s", clone, size=64 * MiB)
    assert big.size == 64 * MiB
    with cluster.open(clone) as vdi:
        vdi.write(b"end", 64 * MiB - 3)
        assert vdi.read(64 * MiB - 3, 3) == b"end"
    with pytest.raises(errors.VdiExists):
        cluster.clone(name, "s", clone)


def test_rollback(cluster, new_name):
    name = new_name()
    _fill(cluster, name, 8 * MiB)
    digest = _digest(cluster, name)
    snap = cluster.snapshot(name, "good")
    with cluster.open(name) as vdi:
        vdi.write(b"bad" * 1000, 0)
        vdi.resize(16 * MiB)
    with pytest.raises(errors.InvalidArgument, match="needs a snapshot"):
        cluster.rollback(name, None)
    working = cluster.rollback(name, "good")
    assert working.size == 8 * MiB and not working.snapshot
    assert working.parent is not None and working.parent.vid == snap.vid
    assert working.snap_id == snap.snap_id + 1  # sheep numbers it after the newest snapshot
    assert not working.is_clone
    assert cluster.stat(name).vid == working.vid
    assert _digest(cluster, name) == digest
    assert [s.tag for s in cluster.snapshots(name)] == ["good"]  # the snapshot stays


def test_delete_a_snapshot_by_tag_or_id_and_its_clones_keep_reading(cluster, new_name):
    name, clone = new_name(), new_name("sf-clone")
    _fill(cluster, name, 8 * MiB)
    digest = _digest(cluster, name)
    first = cluster.snapshot(name, "a")
    cluster.snapshot(name, "b")
    cluster.clone(name, "a", clone)
    cluster.delete(name, snapshot="a")
    assert not cluster.exists(name, snapshot="a")
    assert [s.tag for s in cluster.snapshots(name)] == ["b"]
    assert _digest(cluster, clone) == digest  # the clone's inherited objects live on
    assert cluster.stat(clone).parent is None  # its parent is gone
    second = cluster.stat(name, snapshot="b")
    cluster.delete(name, snapshot=second.snap_id)
    assert cluster.snapshots(name) == []
    assert _digest(cluster, name) == digest
    with pytest.raises(errors.SnapshotNotFound):
        cluster.delete(name, snapshot=first.snap_id)
    cluster.delete(name)  # the working VDI, last
    assert not cluster.exists(name)


def test_discard_gives_objects_back_and_reads_zeros(cluster, new_name):
    name = new_name()
    obj = _fill(cluster, name, 16 * MiB)
    with cluster.open(name) as vdi:
        assert vdi.usage()[0] == 16 * MiB
        vdi.discard(obj, 2 * obj)  # objects 1 and 2, whole
        assert vdi.usage()[0] == 2 * obj
        assert vdi.read(obj, 2 * obj) == bytes(2 * obj)
        vdi.discard(10, 20)  # inside object 0: zeros written, the object stays
        assert vdi.read(0, 40) == (0).to_bytes(4, "little") + b"A" * 6 + bytes(20) + b"A" * 10
        assert vdi.usage()[0] == 2 * obj
        vdi.discard(3 * obj + 5, obj - 5)  # to the end: the tail of the last object
        assert vdi.read(3 * obj, 5) == (3).to_bytes(4, "little") + b"A"
        assert vdi.read(3 * obj + 5, obj - 5) == bytes(obj - 5)
        vdi.discard(0, 0)
        with pytest.raises(errors.OutOfRange):
            vdi.discard(16 * MiB - 1, 2)
    with cluster.open(name) as fresh:  # what the cluster holds, not the handle's cache
        assert fresh.usage()[0] == 2 * obj
        assert fresh.read(obj, 2 * obj) == bytes(2 * obj)


def test_discard_in_a_clone_leaves_the_parent_alone(cluster, new_name):
    name, clone = new_name(), new_name("sf-clone")
    obj = _fill(cluster, name, 8 * MiB)
    cluster.snapshot(name, "s")
    digest = _digest(cluster, name, "s")
    cluster.clone(name, "s", clone)
    with cluster.open(clone) as vdi:
        vdi.discard(0, obj)
        assert vdi.read(0, obj) == bytes(obj)
        assert vdi.usage() == (0, 8 * MiB - obj)
    assert _digest(cluster, name, "s") == digest


def test_flatten_makes_a_clone_independent(cluster, new_name):
    name, clone = new_name(), new_name("sf-clone")
    obj = _fill(cluster, name, 12 * MiB)
    with cluster.open(name) as vdi:
        vdi.discard(obj, obj)  # a hole stays a hole
    cluster.snapshot(name, "s")
    digest = _digest(cluster, name, "s")
    cluster.clone(name, "s", clone)
    with cluster.open(clone) as vdi:
        vdi.write(b"own", 0)
        stats = vdi.stats
        vdi.flatten()
        assert vdi.usage() == (2 * obj, 0)  # objects 0 and 2 are its own now
        # sheep copied object 2 itself: one data-less CREATE, no data read
        assert vdi.stats["create_requests"] == stats["create_requests"] + 1
        assert vdi.stats["read_requests"] == stats["read_requests"]
        vdi.flatten()  # nothing left to do
    cluster.delete(name, snapshot="s")
    cluster.delete(name)
    with cluster.open(clone) as vdi:
        assert vdi.read(0, 3) == b"own"
        vdi.write((0).to_bytes(4, "little")[:3], 0)
        assert hashlib.sha256(vdi.read(0, vdi.size)).hexdigest() == digest


def test_flatten_of_a_vdi_with_nothing_inherited(cluster, new_name):
    name = new_name()
    _fill(cluster, name, 8 * MiB)
    digest = _digest(cluster, name)
    with cluster.open(name) as vdi:
        stats = vdi.stats
        vdi.flatten()
        assert vdi.stats == stats  # no request at all
    assert _digest(cluster, name) == digest


def test_lock_arguments(cluster, new_name):
    name = new_name()
    cluster.create(name, 4 * MiB)
    with pytest.raises(errors.InvalidArgument, match="lock must be"):
        cluster.open(name, lock="bogus")
    with cluster.open(name) as vdi:
        assert vdi.locked is None
        with pytest.raises(errors.InvalidArgument, match="not opened with a lock"):
            vdi.unlock()
    with cluster.open(name, lock="exclusive") as vdi:
        assert vdi.locked == "exclusive"
        vdi.unlock()
        assert vdi.locked is None
    with pytest.raises(errors.VdiNotFound):
        cluster.open(new_name(), lock="exclusive")
