"""No wrong byte after a fault: replies lost after the write happened, and
gateways that go away mid-write when the client was given several.

Each test arms one of FakeSheep's faults, writes through the native client
and then judges the outcome by the principle the data path keeps: a write
that reports success reads back exactly, every byte, through the same
handle and through a fresh connection; a write that fails leaves the VDI
consistent, every object it created in the index (so delete reclaims it)
and no index entry naming an object that does not exist.
"""

from __future__ import annotations

import hashlib
import os

import pytest

import sheepfast
from sheepfast.testing import FakeSheep
from sheepfast.testing import wire as w

MiB = 1 << 20
K = 1024
SIZE = 24 * MiB  # 24 objects of 1 MiB
SHIFT = 20


def owned(sheep: FakeSheep, vid: int) -> set:
    """Data objects of vid that exist."""
    return {oid for oid in sheep.object_ids() if w.vid_of(oid) == vid and w.is_data(oid)}


def indexed(sheep: FakeSheep, name: str) -> set:
    """Data objects vid's own index entries name."""
    info = sheep.vdi(name)
    return {w.data_oid(info.vid, i) for i, e in info.entries.items() if e == info.vid}


def assert_consistent(sheep: FakeSheep, name: str, vid: int) -> None:
    made, listed = owned(sheep, vid), indexed(sheep, name)
    assert made - listed == set(), f"objects created but not indexed: {sorted(made - listed)}"
    assert listed - made == set(), f"index entries naming no object: {sorted(listed - made)}"


def reads_back(addresses: str, name: str, data: bytes) -> None:
    """The VDI holds data, read through a fresh connection."""
    with sheepfast.connect(addresses, io_timeout=10, connect_timeout=2) as c:
        with c.open(name) as vdi:
            got = vdi.read(0, len(data))
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()


def cases(*pairs):
    """(opcode, n) parameters named like 'create-7'."""
    names = {w.OP_CREATE_AND_WRITE_OBJ: "create", w.OP_WRITE_OBJ: "write"}
    return [pytest.param(op, n, id=f"{names[op]}-{n}") for op, n in pairs]


def pattern(size: int, seed: int) -> bytes:
    """Random data with some all-zero objects (skipped on write: thin)."""
    rnd = bytearray(os.urandom(size))
    for idx in range(seed % 3, size // MiB, 5):
        rnd[idx * MiB : (idx + 1) * MiB] = bytes(MiB)
    return bytes(rnd)


@pytest.fixture
def sheep():
    with FakeSheep(nodes=3) as s:
        yield s
        assert s.internal_errors == []
        assert s.hazards == []


# ------------------------------------------------------ a reply lost after the write


@pytest.mark.parametrize(
    "opcode, n",
    cases(
        (w.OP_CREATE_AND_WRITE_OBJ, 1),
        (w.OP_CREATE_AND_WRITE_OBJ, 7),
        (w.OP_CREATE_AND_WRITE_OBJ, 18),
        (w.OP_WRITE_OBJ, 1),
        (w.OP_WRITE_OBJ, 20),
        (w.OP_WRITE_OBJ, 30),
    ),
)
def test_a_lost_reply_is_resent_and_every_byte_reads_back(sheep, opcode, n):
    """The sheep applied the request, then the connection went before the
    reply: the client resends it on a fresh connection (the same request
    again is harmless for an object write or an index write) and the data
    is exactly what was written. WRITE_OBJ counts data requests after the
    first of each object and index updates alike."""
    data = pattern(SIZE, n)
    with sheepfast.connect(sheep.addresses[0], io_timeout=10, connect_timeout=2) as c:
        c.create("lost", SIZE, block_size_shift=SHIFT)
        with c.open("lost") as vdi:
            sheep.drop_reply_nth(n, opcode=opcode)
            vdi.write(data, 0)
            vid = vdi.vid
            assert vdi.read(0, SIZE) == data
    reads_back(sheep.addresses[0], "lost", data)
    assert_consistent(sheep, "lost", vid)
    assert sheep.armed_faults() == 0, "the fault did not fire during the write"


def test_a_lost_index_update_reply_is_resent(sheep):
    """Whole-object requests: every WRITE_OBJ is an index update. Its reply
    lost after sheep applied it, the update is sent again; the index holds
    every object once (reference counts unchanged by the repeat)."""
    data = os.urandom(SIZE)
    with sheepfast.connect(
        sheep.addresses[0], io_timeout=10, connect_timeout=2, request_size=MiB
    ) as c:
        c.create("lostindex", SIZE, block_size_shift=SHIFT)
        with c.open("lostindex") as vdi:
            sheep.enable_request_log()
            sheep.drop_reply_nth(1, opcode=w.OP_WRITE_OBJ)
            vdi.write(data, 0)
            vid = vdi.vid
            log = sheep.request_log()
            sheep.enable_request_log(False)
    index_writes = [e for e in log if e.opcode == w.OP_WRITE_OBJ]
    assert index_writes and all(e.oid == w.inode_oid(vid) for e in index_writes)
    reads_back(sheep.addresses[0], "lostindex", data)
    assert_consistent(sheep, "lostindex", vid)
    assert all(sheep.refcount(oid) == 1 for oid in owned(sheep, vid))


def test_a_create_lost_for_good_is_probed_and_indexed(sheep):
    """The CREATE's reply is lost on every connection the client tries: the
    write fails, but the object that CREATE made (and every other one) is in
    the index, and delete reclaims them all."""
    with sheepfast.connect(
        sheep.addresses[0], io_timeout=10, connect_timeout=2, routing=False, depth=1
    ) as c:
        c.create("lostcreate", SIZE, block_size_shift=SHIFT)
        with c.open("lostcreate") as vdi:
            vid = vdi.vid
            for n in range(3, 9):  # more than the client reconnects for
                sheep.drop_reply_nth(n, opcode=w.OP_CREATE_AND_WRITE_OBJ)
            with pytest.raises(sheepfast.ConnectionError):
                vdi.write(os.urandom(SIZE), 0)
        sheep.clear_faults()
        assert owned(sheep, vid), "objects were created before the write failed"
        assert_consistent(sheep, "lostcreate", vid)
        c.delete("lostcreate")
    assert owned(sheep, vid) == set()


# ------------------------------------------------ a gateway going away mid-write


@pytest.mark.parametrize("applied", [False, True], ids=["before", "after"])
@pytest.mark.parametrize(
    "opcode, n",
    cases(
        (w.OP_CREATE_AND_WRITE_OBJ, 2),
        (w.OP_CREATE_AND_WRITE_OBJ, 11),
        (w.OP_WRITE_OBJ, 5),
        (w.OP_WRITE_OBJ, 30),
    ),
)
def test_a_gateway_stopping_mid_write_loses_no_byte(sheep, opcode, n, applied):
    """Three gateways configured, the write spread over them; one stops when
    it receives the n-th request (having executed it, or not). The write
    carries on through the others, and every byte reads back, through the
    same handle and a fresh connection to a gateway still up."""
    data = pattern(SIZE, n)
    addresses = ",".join(sheep.addresses)
    with sheepfast.connect(addresses, io_timeout=10, connect_timeout=2) as c:
        c.create("gwstop", SIZE, block_size_shift=SHIFT)
        with c.open("gwstop") as vdi:
            vid = vdi.vid
            sheep.stop_node_nth(n, opcode=opcode, applied=applied)
            vdi.write(data, 0)
            assert sheep.armed_faults() == 0, "the gateway did not stop during the write"
            assert len(sheep.node_records()) == 2
            assert vdi.read(0, SIZE) == data
    reads_back(addresses, "gwstop", data)
    assert_consistent(sheep, "gwstop", vid)


def test_gateways_stopping_one_after_another(sheep):
    """Two of three gateways stop during one write, a third write later
    finds only one: still every byte."""
    data = pattern(SIZE, 1)
    addresses = ",".join(sheep.addresses)
    with sheepfast.connect(addresses, io_timeout=10, connect_timeout=2) as c:
        c.create("gwstop2", SIZE, block_size_shift=SHIFT)
        with c.open("gwstop2") as vdi:
            vid = vdi.vid
            sheep.stop_node_nth(4, opcode=w.OP_WRITE_OBJ, applied=True)
            sheep.stop_node_nth(9, opcode=w.OP_CREATE_AND_WRITE_OBJ)
            vdi.write(data, 0)
            assert len(sheep.node_records()) == 1
            again = pattern(SIZE, 2)
            vdi.write(again, 0)
            assert vdi.read(0, SIZE) == again
    reads_back(addresses, "gwstop2", again)
    assert_consistent(sheep, "gwstop2", vid)


# ------------------------------------------------ a write answered with an error


def test_a_failed_index_update_leaves_its_objects_indexed(sheep):
    with sheepfast.connect(sheep.addresses[0], request_size=MiB) as c:
        c.create("idxfail", 8 * MiB, block_size_shift=SHIFT)
        with c.open("idxfail") as vdi:
            vid = vdi.vid
            sheep.fail_nth(1, w.RES_EIO, opcode=w.OP_WRITE_OBJ)  # the first index update
            with pytest.raises(sheepfast.ServerError, match="updating the index"):
                vdi.write(os.urandom(8 * MiB), 0)
    assert len(owned(sheep, vid)) == 8
    assert_consistent(sheep, "idxfail", vid)


def test_a_create_that_failed_after_creating_is_indexed(sheep):
    with sheepfast.connect(sheep.addresses[0]) as c:
        c.create("createfail", 8 * MiB, block_size_shift=SHIFT)
        with c.open("createfail") as vdi:
            vid = vdi.vid
            sheep.fail_nth(3, w.RES_EIO, opcode=w.OP_CREATE_AND_WRITE_OBJ, applied=True)
            with pytest.raises(sheepfast.ServerError):
                vdi.write(os.urandom(8 * MiB), 0)
    assert owned(sheep, vid)
    assert_consistent(sheep, "createfail", vid)


def test_a_write_that_times_out_leaves_its_objects_indexed(sheep):
    """Sheep applies every CREATE at once but answers late: the write fails
    with a timeout, and the objects it made must still be in the index."""
    with sheepfast.connect(sheep.addresses[0], io_timeout=0.5) as c:
        c.create("slow", 8 * MiB, block_size_shift=SHIFT)
        with c.open("slow") as vdi:
            vid = vdi.vid
            sheep.set_delay(2.0, opcode=w.OP_CREATE_AND_WRITE_OBJ)
            with pytest.raises(sheepfast.TimeoutError):
                vdi.write(os.urandom(8 * MiB), 0)
            sheep.clear_faults()
    assert owned(sheep, vid), "the CREATEs were applied"
    assert_consistent(sheep, "slow", vid)
