"""Fault injection through FakeSheep's knobs: timeouts, dropped
connections, forced result codes, out-of-order replies."""

from __future__ import annotations

import os

import pytest

import sheepfast
from sheepfast.testing import wire as w

MiB = 1 << 20


@pytest.fixture
def fake(fake_sheep):
    fake_sheep.clear_faults()
    yield fake_sheep
    fake_sheep.clear_faults()
    assert fake_sheep.hazards == []


@pytest.fixture
def fcluster(fake):
    with sheepfast.connect(fake.address, io_timeout=5) as c:
        yield c


def _name(tag: str) -> str:
    return f"sf-fault-{tag}-{os.urandom(4).hex()}"


def test_timeout_when_sheep_is_silent(fake):
    c = sheepfast.connect(fake.address, io_timeout=0.3)
    name = _name("timeout")
    c.create(name, MiB)
    vdi = c.open(name)
    vdi.write(b"abc", 0)
    fake.set_delay(2.0, opcode=w.OP_READ_OBJ)
    with pytest.raises(sheepfast.TimeoutError, match="no reply"):
        vdi.read(0, 3)
    fake.clear_faults()
    # the broken connection was dropped; the next call uses a fresh one
    assert vdi.read(0, 3) == b"abc"
    vdi.close()
    c.delete(name)
    c.close()


def test_forced_result_maps_to_exception(fake, fcluster):
    name = _name("nospace")
    fake.fail_nth(1, w.RES_NO_SPACE, opcode=w.OP_NEW_VDI)
    with pytest.raises(sheepfast.NoSpace) as info:
        fcluster.create(name, MiB)
    assert info.value.result == 0x15 and name in str(info.value)
    assert not fcluster.exists(name)


def test_failed_create_mid_write_still_indexes_created_objects(fake, fcluster):
    """A write that fails part-way leaves every object it did create in the
    index, so delete can reclaim it (no leaked objects)."""
    name = _name("midfail")
    fcluster.create(name, 16 * MiB, block_size_shift=20)
    with fcluster.open(name) as vdi:
        fake.fail_nth(5, w.RES_NO_SPACE, opcode=w.OP_CREATE_AND_WRITE_OBJ)
        with pytest.raises(sheepfast.NoSpace):
            vdi.write(os.urandom(16 * MiB), 0)
        vid = vdi.vid
    info = fake.vdi(name)
    owned = {o for o in fake.object_ids() if (o >> 32) & 0xFFFFFF == vid}
    indexed = {w.data_oid(vid, i) for i, e in info.entries.items() if e == vid}
    assert owned and owned == indexed
    fcluster.delete(name)
    assert not {o for o in fake.object_ids() if (o >> 32) & 0xFFFFFF == vid}


def test_dropped_connection_is_retried(fake, fcluster):
    name = _name("drop")
    fcluster.create(name, 8 * MiB, block_size_shift=20)
    data = os.urandom(8 * MiB)
    with fcluster.open(name) as vdi:
        vdi.write(data, 0)
        fake.drop_nth(3, opcode=w.OP_READ_OBJ)
        assert vdi.read(0, 8 * MiB) == data  # reconnected and resent


def test_create_is_not_blindly_resent(fake, fcluster):
    """NEW_VDI is not idempotent: a lost reply is an error, not a retry
    that would answer VDI_EXIST for our own VDI."""
    name = _name("newdrop")
    fake.drop_nth(1, opcode=w.OP_NEW_VDI)
    with pytest.raises(sheepfast.ConnectionError):
        fcluster.create(name, MiB)


def test_out_of_order_replies(fake, fcluster):
    name = _name("reorder")
    fcluster.create(name, 32 * MiB, block_size_shift=20)
    data = os.urandom(32 * MiB)
    fake.set_reorder(True)
    with fcluster.open(name) as vdi:
        vdi.write(data, 0)
        assert vdi.read(0, 32 * MiB) == data
    fcluster.delete(name)


def test_open_is_o1_and_never_reads_the_whole_inode(fake, fcluster):
    name = _name("o1")
    fcluster.create(name, 64 * MiB)
    fake.enable_request_log()
    try:
        with fcluster.open(name) as vdi:
            vdi.write(os.urandom(9 * MiB), 2 * MiB)
            vdi.read(0, 64 * MiB)
        log = fake.request_log()
    finally:
        fake.enable_request_log(False)
    ops = [e.opcode for e in log]
    assert w.OP_READ_VDIS not in ops  # no cluster scan by name
    assert ops.count(w.OP_GET_VDI_INFO) == 1
    assert all(e.data_length < w.INODE_SIZE for e in log)
    inode_reads = [e for e in log if e.opcode == w.OP_READ_OBJ and e.oid >> 63]
    assert sum(e.data_length for e in inode_reads) <= w.INODE_HEADER_SIZE + 4096 * 2
    fcluster.delete(name)


def test_requests_in_flight_up_to_depth(fake):
    """With replies delayed, a read of many objects still takes about one
    delay, not one per object: requests were pipelined."""
    import time

    c = sheepfast.connect(fake.address, depth=16)
    name = _name("depth")
    c.create(name, 16 * MiB, block_size_shift=20)
    vdi = c.open(name)
    vdi.write(b"\x01" * (16 * MiB), 0)
    fake.set_delay(0.2, opcode=w.OP_READ_OBJ)
    t0 = time.monotonic()
    vdi.read(0, 16 * MiB)
    elapsed = time.monotonic() - t0
    fake.clear_faults()
    vdi.close()
    c.delete(name)
    c.close()
    assert elapsed < 16 * 0.2 / 2, elapsed


def test_connection_lost_for_good_mid_write_leaves_no_unindexed_object(fake, fcluster):
    """More drops than the client reconnects for: the write fails, but every
    object it created is in the index, so delete reclaims them all."""
    name = _name("lost")
    fcluster.create(name, 32 * MiB, block_size_shift=20)
    with fcluster.open(name) as vdi:
        vid = vdi.vid
        for n in (12, 13, 14, 15):
            fake.drop_nth(n, opcode=w.OP_CREATE_AND_WRITE_OBJ)
        with pytest.raises(sheepfast.ConnectionError):
            vdi.write(os.urandom(32 * MiB), 0)
    fake.clear_faults()
    owned = {o for o in fake.object_ids() if (o >> 32) & 0xFFFFFF == vid}
    indexed = {w.data_oid(vid, i) for i, e in fake.vdi(name).entries.items() if e == vid}
    assert owned, "some objects were created before the connection was lost"
    assert owned == indexed
    fcluster.delete(name)
    assert not {o for o in fake.object_ids() if (o >> 32) & 0xFFFFFF == vid}


def test_write_that_crossed_a_membership_change_is_checked_and_mended(fake, fcluster):
    """A write acknowledged around an epoch change but missing from a copy
    (sheep 1.0's recovery race) is found by reading the copies back and is
    written again before the call returns."""
    name = _name("diverge")
    fcluster.create(name, 16 * MiB, block_size_shift=20)
    data = os.urandom(16 * MiB)
    with fcluster.open(name) as vdi:
        vdi.write(b"\x07" * (16 * MiB), 0)  # every object exists: plain writes follow
        fake.diverge_nth(9, opcode=w.OP_WRITE_OBJ)
        vdi.write(data, 0)
        stats = vdi.stats
        assert stats["objects_checked"] > 0
        assert stats["objects_rewritten"] >= 1
        assert vdi.read(0, 16 * MiB) == data
    assert fake.vdi(name) is not None
    for i in range(16):
        assert fake.object_data(w.data_oid(fake.vdi(name).vid, i)) == data[i * MiB : (i + 1) * MiB]
    fcluster.delete(name)


def test_write_without_a_membership_change_reads_nothing_back(fake, fcluster):
    name = _name("steady")
    fcluster.create(name, 8 * MiB, block_size_shift=20)
    with fcluster.open(name) as vdi:
        vdi.write(os.urandom(8 * MiB), 0)
        assert vdi.stats["objects_checked"] == 0
        assert vdi.stats["objects_rewritten"] == 0
    fcluster.delete(name)


def test_dropped_connection_mid_write_is_checked(fake, fcluster):
    """A resend after a lost connection makes what it carried suspect: the
    copies are read back before the write reports success."""
    name = _name("dropcheck")
    fcluster.create(name, 8 * MiB, block_size_shift=20)
    data = os.urandom(8 * MiB)
    with fcluster.open(name) as vdi:
        vdi.write(b"\x01" * (8 * MiB), 0)
        fake.drop_nth(3, opcode=w.OP_WRITE_OBJ)
        vdi.write(data, 0)
        assert vdi.stats["objects_checked"] > 0, vdi.stats
        assert vdi.read(0, 8 * MiB) == data
    fcluster.delete(name)


def test_one_deadline_per_call_even_while_other_lanes_progress(fake):
    """A reply that never comes fails the call within about io_timeout,
    although requests on other connections keep completing meanwhile."""
    import time

    c = sheepfast.connect(fake.address, io_timeout=1.0)
    name = _name("deadline")
    c.create(name, 32 * MiB, block_size_shift=20)
    vdi = c.open(name)
    vdi.write(b"\x02" * (32 * MiB), 0)
    fake.set_delay(30.0, opcode=w.OP_WRITE_OBJ)
    t0 = time.monotonic()
    with pytest.raises(sheepfast.TimeoutError, match="within the 1000 ms io_timeout"):
        vdi.write(os.urandom(32 * MiB), 0)
    elapsed = time.monotonic() - t0
    fake.clear_faults()
    vdi.close()
    c.close()
    assert elapsed < 3.0, elapsed
    with sheepfast.connect(fake.address) as again:
        again.delete(name)


def test_deadline_scope_shortens_every_call_inside_it(fake, fcluster):
    import time

    name = _name("scope")
    fcluster.create(name, MiB)
    with fcluster.open(name) as vdi:
        vdi.write(b"x", 0)
        fake.set_delay(10.0, opcode=w.OP_READ_OBJ)
        t0 = time.monotonic()
        with sheepfast.deadline(0.5):
            with pytest.raises(sheepfast.TimeoutError):
                vdi.read(0, 1)
        assert time.monotonic() - t0 < 2.0
    fake.clear_faults()
    fcluster.delete(name)


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf"), "x"])
def test_deadline_refuses_what_is_not_a_duration(seconds):
    with pytest.raises((sheepfast.InvalidArgument, ValueError)):
        sheepfast.deadline(seconds)


def test_overwrites_soon_after_a_membership_change_are_checked(fake, fcluster):
    """Sheep recovers moved objects for a while after a change, and a write
    to one being recovered can be lost on its new copy: overwrites in that
    window are read back too; objects the call creates are not (no recovery
    list holds them)."""
    name = _name("window")
    fcluster.create(name, 8 * MiB, block_size_shift=20)
    with fcluster.open(name) as vdi:
        vdi.write(b"\x03" * (4 * MiB), 0)  # objects 0-3 exist
        fake.epoch += 1  # a membership change ...
        vdi.read(0, 1)  # ... that the client has seen
        vdi.write(os.urandom(4 * MiB), 4 * MiB)
        assert vdi.stats["objects_checked"] == 0  # fresh objects: nothing to check
        vdi.write(os.urandom(4 * MiB), 0)
        assert vdi.stats["objects_checked"] == 4
    fcluster.delete(name)
