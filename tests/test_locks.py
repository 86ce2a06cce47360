"""Sheep's VDI locks through the Python API: what they mean depends on how
the cluster was formatted (docs/PROTOCOL.md section 6.11). FakeSheep is run
both ways; a real cluster is tested as it was formatted.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import sheepfast
from sheepfast import errors
from sheepfast.testing import FakeSheep

MiB = 1 << 20


@pytest.fixture(scope="module")
def locking_sheep():
    with FakeSheep(nodes=3, use_lock=True) as sheep:
        yield sheep


@pytest.fixture(params=["target", "locking-fake"])
def locked_cluster(request, target):
    """A cluster of the target's, or a FakeSheep formatted with -l."""
    if request.param == "locking-fake":
        if not target.is_fake:
            pytest.skip("the locking FakeSheep runs once, beside the fake target")
        address = request.getfixturevalue("locking_sheep").address
    else:
        address = target.address
    with sheepfast.connect(address) as c:
        yield c


def test_an_exclusive_lock(locked_cluster, new_name):
    c, name = locked_cluster, new_name()
    c.create(name, 4 * MiB)
    with c.open(name, lock="exclusive") as vdi:
        if not c.locking:
            # formatted without -l: a lock is a lookup, and always succeeds
            with c.open(name, lock="exclusive"):
                pass
            assert c.locks() == []
            return
        held = [lock for lock in c.locks() if lock.vid == vdi.vid]
        assert len(held) == 1 and held[0].name == name and held[0].state == "exclusive"
        assert len(held[0].owners) == 1 and held[0].owners[0] in c.nodes
        for kind in ("exclusive", "shared"):
            with pytest.raises(errors.VdiLocked, match="is locked"):
                c.open(name, lock=kind)
        vdi.write(b"still mine", 0)  # a lock does not stop writes: sheep checks nothing there
    assert all(lock.vid != vdi.vid for lock in c.locks())  # close released it
    with c.open(name, lock="exclusive"):
        pass


def test_shared_locks_are_per_sheep(locked_cluster, new_name):
    c, name = locked_cluster, new_name()
    c.create(name, 4 * MiB)
    if not c.locking or len(c.nodes) < 2:
        pytest.skip("needs a cluster of two sheep or more formatted with -l")
    first, second = c.nodes[:2]
    with sheepfast.connect(first) as a, sheepfast.connect(second) as b:
        with a.open(name, lock="shared") as one, b.open(name, lock="shared"):
            held = [lock for lock in a.locks() if lock.vid == one.vid]
            assert held[0].state == "shared" and set(held[0].owners) == {first, second}
            with pytest.raises(errors.VdiLocked):
                a.open(name, lock="shared")  # the same sheep twice
            with pytest.raises(errors.VdiLocked):
                a.open(name, lock="exclusive")
            b.break_lock(name)  # the participation of the sheep it reaches
            held = [lock for lock in a.locks() if lock.vid == one.vid]
            assert held[0].owners == (first,)
        assert all(lock.vid != one.vid for lock in a.locks())


def test_a_lock_outlives_its_client_until_broken(locked_cluster, new_name):
    c, name = locked_cluster, new_name()
    c.create(name, 4 * MiB)
    code = (
        "import os, sheepfast\n"
        f"v = sheepfast.connect({c.addresses!r}).open({name!r}, lock='exclusive')\n"
        "os._exit(0)\n"  # no close(): the lock is never released
    )
    # the sheepfast this test imports, not a source tree in the working directory
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(sheepfast.__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd="/", env=env)
    if not c.locking:
        assert c.locks() == []
        with pytest.raises(errors.InvalidArgument, match="not locked"):
            c.break_lock(name)
        return
    with pytest.raises(errors.VdiLocked):
        c.open(name, lock="exclusive")
    c.break_lock(name)
    with c.open(name, lock="exclusive"):
        pass


def test_a_lock_stays_with_the_snapshot(locked_cluster, new_name):
    c, name = locked_cluster, new_name()
    c.create(name, 4 * MiB)
    with c.open(name, lock="exclusive") as vdi:
        snap = c.snapshot(name, "s")
        if not c.locking:
            return
        assert [lock.vid for lock in c.locks() if lock.name == name] == [snap.vid]
        with c.open(name, lock="exclusive"):  # the new working VDI is not locked
            pass
        assert vdi.vid == snap.vid
    # close() released the lock on the vid it took, the snapshot's
    assert [lock for lock in c.locks() if lock.name == name] == []
