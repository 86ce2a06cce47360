"""Snapshots, clones and locks through both backends (native, and dog: the
real one on a real cluster, tests/fakedog/dog on FakeSheep), with the same
results and the same error classes; what dog cannot do is Unsupported and
says which capability is missing.
"""

from __future__ import annotations

import pytest
from conftest import FAKEDOG

import sheepfast
from sheepfast import errors
from sheepfast.backends import Capability, open_backend
from sheepfast.testing import FakeSheep

MiB = 1 << 20


def test_snapshot_clone_rollback_delete(backend, new_name):
    name, clone = new_name(), new_name("sf-clone")
    backend.create(name, 8 * MiB)
    with backend.open(name) as image:
        image.write(b"first", 0)
    before = backend.stat(name)
    snap = backend.snapshot(name, "t1")
    assert (snap.vid, snap.snapshot, snap.tag) == (before.vid, True, "t1")
    with pytest.raises(errors.VdiExists, match="already has a snapshot tagged 't1'"):
        backend.snapshot(name, "t1")
    assert [(s.tag, s.vid) for s in backend.snapshots(name)] == [("t1", snap.vid)]
    assert backend.exists(name, snapshot="t1") and not backend.exists(name, snapshot="t2")
    assert backend.stat(name).parent == sheepfast.ParentInfo(name, snap.vid, snap.snap_id, "t1")

    with backend.open(name, snapshot="t1") as image:
        assert image.info.snapshot and image.read(0, 5) == b"first"
        with pytest.raises(errors.ReadOnly):
            image.write(b"x", 0)
        with pytest.raises(errors.ReadOnly):
            image.resize(16 * MiB)
    with backend.open(name, snapshot=snap.snap_id) as image:
        assert image.read(0, 5) == b"first"

    info = backend.clone(name, "t1", clone, size=16 * MiB)
    assert info.size == 16 * MiB and info.is_clone and info.parent.vid == snap.vid
    assert [c.name for c in backend.children(name, snapshot="t1")] == [clone]
    with backend.open(clone) as image:
        assert image.read(0, 5) == b"first"
        image.write(b"clone", 0)
    with pytest.raises(errors.InvalidArgument, match="smaller than its snapshot"):
        backend.clone(name, "t1", new_name("sf-clone"), size=MiB)
    with pytest.raises(errors.SnapshotNotFound):
        backend.clone(name, "nope", new_name("sf-clone"))

    with backend.open(name) as image:
        image.write(b"later", 0)
    working = backend.rollback(name, "t1")
    assert not working.snapshot and working.parent.vid == snap.vid
    with backend.open(name) as image:
        assert image.read(0, 5) == b"first"

    with pytest.raises(errors.SnapshotNotFound):
        backend.delete(name, snapshot="nope")
    backend.delete(name, snapshot="t1")
    assert backend.snapshots(name) == []
    with backend.open(clone) as image:  # the clone keeps what it inherited
        assert image.read(0, 5) == b"clone" and image.read(5, 3) == bytes(3)


def test_what_each_backend_cannot_do_says_so(backend, new_name):
    name = new_name()
    backend.create(name, 4 * MiB)
    with backend.open(name) as image:
        for capability, call in (
            (Capability.FLATTEN, image.flatten),
            (Capability.DISCARD, lambda: image.discard(0, MiB)),
            (Capability.ATTRIBUTE_LIST, image.metadata_list),
            (Capability.LOCKS, lambda: backend.open(name, lock="exclusive").close()),
        ):
            if backend.capabilities & capability:
                call()
            else:
                with pytest.raises(errors.Unsupported, match=f"Capability.{capability.name}"):
                    call()


@pytest.mark.parametrize("kind", ["native", "cli"])
def test_locks_listed_and_broken_by_both_backends(kind):
    with FakeSheep(nodes=2, use_lock=True) as sheep:
        b = open_backend(sheep.address, kind, dog_command=FAKEDOG)
        with sheepfast.connect(sheep.address) as c, sheepfast.connect(sheep.addresses[1]) as c2:
            c.create("one", MiB)
            c.create("two words", MiB)
            c.open("one", lock="exclusive")  # never closed: the lock stays
            c.open("two words", lock="shared")
            c2.open("two words", lock="shared")
            held = {lock.name: lock for lock in b.locks()}
            assert held["one"].state == "exclusive" and held["one"].owners == (sheep.address,)
            assert held["two words"].state == "shared"
            assert held["two words"].owners == tuple(sheep.addresses)
            b.break_lock("one")
            assert [lock.name for lock in b.locks()] == ["two words"]
            with pytest.raises(errors.InvalidArgument, match="not locked"):
                b.break_lock("one")
            with pytest.raises(errors.VdiNotFound):
                b.break_lock("nothing")
        b.close()
