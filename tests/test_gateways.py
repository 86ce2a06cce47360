"""Addresses, several gateways, and carrying on when one goes away."""

from __future__ import annotations

import os
import socket

import pytest

import sheepfast
from sheepfast.testing import FakeSheep

MiB = 1 << 20


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_ipv6_address():
    try:
        sheep = FakeSheep(host="::1").start()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        with sheepfast.connect(sheep.address) as c:
            assert sheep.address.startswith("[::1]:")
            c.create("v6", MiB)
            with c.open("v6") as vdi:
                vdi.write(b"six", 0)
                assert vdi.read(0, 3) == b"six"
            assert c.nodes == [sheep.address]
    finally:
        sheep.stop()


def test_first_gateway_down_uses_the_next():
    with FakeSheep() as sheep:
        with sheepfast.connect(f"{_dead_address()}, {sheep.address}", connect_timeout=2) as c:
            c.create("second", MiB)
            assert c.exists("second")


def test_node_list_is_learned():
    with FakeSheep(nodes=3) as sheep:
        with sheepfast.connect(sheep.addresses[0]) as c:
            assert sorted(c.nodes) == sorted(sheep.addresses)


def test_gateway_loss_fails_over_to_a_learned_node():
    """Only node 0 was configured; when it goes away, the client carries on
    through the nodes GET_NODE_LIST named, resending what was in flight."""
    with FakeSheep(nodes=3) as sheep:
        with sheepfast.connect(sheep.addresses[0], connect_timeout=2) as c:
            c.create("failover", 16 * MiB, block_size_shift=20)
            data = os.urandom(16 * MiB)
            with c.open("failover") as vdi:
                vdi.write(data, 0)
                sheep.stop_node(0)
                assert vdi.read(0, 16 * MiB) == data
                vdi.write(b"after", 5)
                assert vdi.read(0, 10) == data[:5] + b"after"
            assert c.exists("failover")
        assert sheep.hazards == []


def test_all_gateways_down_is_a_connection_error():
    with FakeSheep(nodes=2) as sheep:
        c = sheepfast.connect(sheep.addresses[0], connect_timeout=1)
        c.create("gone", MiB)
        vdi = c.open("gone")
        sheep.stop_node(0)
        sheep.stop_node(1)
        with pytest.raises(sheepfast.ConnectionError):
            vdi.read(0, 1)
        vdi.close()
        c.close()


def test_pooled_connection_closed_by_the_server_is_not_used():
    """A restarted gateway closed the pooled connection; a create (which is
    never resent) must not fail because of it."""
    with FakeSheep() as sheep:
        with sheepfast.connect(sheep.address, connect_timeout=2) as c:
            c.create("before", MiB)
            sheep.stop_node(0)
            sheep.start_node(0)
            c.create("after", MiB)
            assert c.exists("after")


def test_one_transfer_spreads_over_the_configured_gateways():
    with FakeSheep(nodes=3) as sheep:
        with sheepfast.connect(",".join(sheep.addresses)) as c:
            c.create("spread", 32 * MiB, block_size_shift=20)
            data = os.urandom(32 * MiB)
            sheep.enable_request_log()
            with c.open("spread") as vdi:
                vdi.write(data, 0)
                assert vdi.read(0, 32 * MiB) == data
            log = sheep.request_log()
        creates = {e.node for e in log if e.opcode == 0x01}
        reads = {e.node for e in log if e.opcode == 0x02 and not e.oid >> 63}
        assert creates == {0, 1, 2} and reads == {0, 1, 2}


def test_a_dead_configured_gateway_is_skipped_quickly():
    import time

    with FakeSheep(nodes=2) as sheep:
        addresses = f"{sheep.addresses[0]},{_dead_address()},{sheep.addresses[1]}"
        with sheepfast.connect(addresses, connect_timeout=2) as c:
            c.create("skip", 16 * MiB, block_size_shift=20)
            data = os.urandom(16 * MiB)
            with c.open("skip") as vdi:
                t0 = time.monotonic()
                for _ in range(5):
                    vdi.write(data, 0)
                    assert vdi.read(0, 16 * MiB) == data
                assert time.monotonic() - t0 < 10


# ------------------------------------------------------------ read routing

_FNV_INIT, _FNV_PRIME, _M64 = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def _fnv(data: bytes, h: int = _FNV_INIT) -> int:
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _M64
    return h


def _next(h: int) -> int:
    return _fnv(h.to_bytes(8, "little"), h)


def _reference_locate(nodes, oid: int, copies: int) -> list[str]:
    """Sheepdog 1.0's placement, written from its description independently
    of the C code: nodes are (ipv4, port, nr_vnodes, zone)."""
    ring = []
    for host, port, vnodes, zone in nodes:
        h = _next(_fnv(bytes(12) + socket.inet_aton(host) + port.to_bytes(2, "little")))
        for _ in range(vnodes):
            h = _next(h)
            ring.append((h, f"{host}:{port}", zone))
    ring.sort()
    key = _next(_fnv(oid.to_bytes(8, "little")))
    start = next((i for i, v in enumerate(ring) if v[0] >= key), 0)
    chosen = []
    for step in range(len(ring)):
        _, addr, zone = ring[(start + step) % len(ring)]
        if all(zone != z for _, z in chosen):
            chosen.append((addr, zone))
        if len(chosen) == copies:
            break
    return [a for a, _ in chosen]


def test_locate_matches_the_reference_placement():
    with FakeSheep(nodes=4) as sheep:
        nodes = [(r.addr, r.port, r.nr_vnodes, r.zone) for r in sheep.node_records()]
        with sheepfast.connect(sheep.addresses[0]) as c:
            for oid in [0, 1, (0x95F9E1 << 32) | 3, (1 << 63) | (0x95F9E1 << 32), _M64]:
                for copies in (1, 2, 3, 4):
                    assert c.locate(oid, copies) == _reference_locate(nodes, oid, copies)
            # more copies than zones: only as many holders as there are zones
            assert len(c.locate(7, 6)) == 4
            with pytest.raises(sheepfast.InvalidArgument, match="copies"):
                c.locate(7, 0)


def test_reads_go_to_a_sheep_holding_the_object():
    """Configured with one gateway, the client learns the others and sends
    each object read to a node that holds the object (which reads its own
    copy instead of forwarding); writes go by load."""
    from sheepfast.testing import wire as w

    with FakeSheep(nodes=3) as sheep:
        with sheepfast.connect(sheep.addresses[0]) as c:
            c.create("routed", 32 * MiB, copies=2, block_size_shift=20)
            data = os.urandom(32 * MiB)
            with c.open("routed") as vdi:
                vdi.write(data, 0)
                assert vdi.stats["routed_requests"] == 0
                sheep.enable_request_log()
                assert vdi.read(0, len(data)) == data
                # every read request: 3 per 1 MiB object (448 + 448 + 128 KiB)
                assert vdi.stats["routed_requests"] == vdi.stats["read_requests"] == 96
                log = [e for e in sheep.request_log() if e.opcode == w.OP_READ_OBJ]
            sheep.enable_request_log(False)
            assert len(log) == 96
            for entry in log:
                assert sheep.addresses[entry.node] in c.locate(entry.oid, 2)
            assert len({e.node for e in log}) == 3  # spread over every node


def test_a_read_of_one_object_and_a_read_ahead_go_to_a_holder():
    """Reads within one object (the small first pieces of a download) and
    the read of object 0 beside the inode at open go to a sheep holding
    the object too, not to whichever connection is idle."""
    from sheepfast.testing import wire as w

    with FakeSheep(nodes=3) as sheep:
        with sheepfast.connect(sheep.addresses[0]) as c:
            c.create("one", 16 * MiB, copies=2, block_size_shift=20)
            data = os.urandom(16 * MiB)
            with c.open("one") as vdi:
                vdi.write(data, 0)
            sheep.enable_request_log()
            with c.open("one", read_ahead=64 << 10) as vdi:
                for i in range(16):  # the first from what was read ahead
                    assert vdi.read(i * MiB + 5, 1000) == data[i * MiB + 5 : i * MiB + 1005]
                assert vdi.stats["routed_requests"] == 15
                assert vdi.stats["read_requests"] == 16
            log = [e for e in sheep.request_log() if e.opcode == w.OP_READ_OBJ]
            sheep.enable_request_log(False)
            data_reads = [e for e in log if not e.oid & w.VDI_BIT]
            assert len(data_reads) == 16  # object 0 read ahead, then each other once
            for entry in data_reads:
                assert sheep.addresses[entry.node] in c.locate(entry.oid, 2)


def test_routing_off_reads_through_the_configured_gateway():
    from sheepfast.testing import wire as w

    with FakeSheep(nodes=3) as sheep:
        with sheepfast.connect(sheep.addresses[0], routing=False) as c:
            assert c.routing is False
            c.create("unrouted", 8 * MiB, block_size_shift=20)
            data = os.urandom(8 * MiB)
            with c.open("unrouted") as vdi:
                vdi.write(data, 0)
                sheep.enable_request_log()
                assert vdi.read(0, len(data)) == data
                assert vdi.stats["routed_requests"] == 0
            log = [e for e in sheep.request_log() if e.opcode == w.OP_READ_OBJ]
            sheep.enable_request_log(False)
            assert {e.node for e in log} == {0}
            with pytest.raises(sheepfast.Unsupported, match="placement"):
                c.locate(1, 2)


def test_reads_carry_on_when_a_holder_is_down():
    """A node that stopped is skipped for a while; its objects are read
    through the nodes that remain (any sheep serves any object)."""
    with FakeSheep(nodes=3) as sheep:
        with sheepfast.connect(sheep.addresses[0], connect_timeout=2) as c:
            c.create("holes", 16 * MiB, block_size_shift=20)
            data = os.urandom(16 * MiB)
            with c.open("holes") as vdi:
                vdi.write(data, 0)
            sheep.stop_node(2)
            with c.open("holes") as vdi:
                assert vdi.read(0, len(data)) == data


# ------------------------------------------------------------ request size


def _object_requests(sheep, oid):
    from sheepfast.testing import wire as w

    return [
        (e.opcode, e.offset, e.data_length)
        for e in sheep.request_log()
        if e.oid == oid and e.opcode in (w.OP_CREATE_AND_WRITE_OBJ, w.OP_WRITE_OBJ, w.OP_READ_OBJ)
    ]


def test_objects_go_out_in_requests_below_sheeps_mmap_threshold():
    """A new object: its first request creates it, the rest follow once the
    CREATE succeeded; every request stays aligned inside the object and under
    the request size, however the caller's range starts."""
    from sheepfast.testing import wire as w

    K = 1024
    with FakeSheep() as sheep:
        with sheepfast.connect(sheep.address) as c:
            assert c.request_size == sheepfast.DEFAULT_REQUEST_SIZE == 448 * K
            vid = c.create("split", 16 * MiB)
            data = os.urandom(4 * MiB + 1000)
            with c.open("split") as vdi:
                sheep.enable_request_log()
                vdi.write(data, 1000)  # objects 0 and 1, from byte 1000 of object 0
                assert vdi.read(1000, len(data)) == data
                log0 = _object_requests(sheep, vid << 32)
                sheep.enable_request_log(False)
                stats = vdi.stats
    writes = [r for r in log0 if r[0] != w.OP_READ_OBJ]
    assert writes[0] == (w.OP_CREATE_AND_WRITE_OBJ, 1000, 448 * K - 1000)
    assert all(op == w.OP_WRITE_OBJ for op, _, _ in writes[1:])
    assert [(off, n) for _, off, n in writes[1:]] == [
        (i * 448 * K, 448 * K) for i in range(1, 9)
    ] + [(9 * 448 * K, 4 * MiB - 9 * 448 * K)]
    reads = [(off, n) for op, off, n in log0 if op == w.OP_READ_OBJ]
    assert reads == [(off, n) for _, off, n in writes]
    assert stats["create_requests"] == 2  # one per object


def test_request_size_whole_objects_and_bad_values():
    from sheepfast.testing import wire as w

    with FakeSheep() as sheep:
        with sheepfast.connect(sheep.address, request_size=4 * MiB) as c:
            vid = c.create("whole", 8 * MiB)
            with c.open("whole") as vdi:
                sheep.enable_request_log()
                vdi.write(os.urandom(8 * MiB), 0)
                log = _object_requests(sheep, vid << 32) + _object_requests(sheep, (vid << 32) | 1)
                sheep.enable_request_log(False)
            assert log == [(w.OP_CREATE_AND_WRITE_OBJ, 0, 4 * MiB)] * 2
        for bad in (0, 1000, 4096 + 1, -4096):
            with pytest.raises(sheepfast.InvalidArgument, match="request_size"):
                sheepfast.connect(sheep.address, request_size=bad)


def test_a_failed_create_sends_nothing_more_for_its_object():
    """If the CREATE of an object fails, the rest of that object is never
    sent (it would write to an object that does not exist)."""
    from sheepfast.testing import wire as w

    with FakeSheep() as sheep:
        with sheepfast.connect(sheep.address, depth=1) as c:
            vid = c.create("nocreate", 8 * MiB)
            with c.open("nocreate") as vdi:
                sheep.enable_request_log()
                sheep.fail_nth(1, w.RES_NO_SPACE, opcode=w.OP_CREATE_AND_WRITE_OBJ)
                with pytest.raises(sheepfast.NoSpace):
                    vdi.write(os.urandom(8 * MiB), 0)
                sheep.clear_faults()
                log = _object_requests(sheep, vid << 32)
                sheep.enable_request_log(False)
            # a failed CREATE may still have made some copies: it is probed
            # (a read, to index the object if it exists), never written to
            assert [op for op, _, _ in log if op != w.OP_READ_OBJ] == [w.OP_CREATE_AND_WRITE_OBJ]
            assert [op for op, _, _ in log].count(w.OP_READ_OBJ) <= 1
            assert c.stat("nocreate").size == 8 * MiB
