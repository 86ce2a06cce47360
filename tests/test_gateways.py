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
        return "127.0.0.1:%d" % s.getsockname()[1]


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
