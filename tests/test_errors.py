"""Bad input gets a clear error naming what was wrong, from every layer."""

from __future__ import annotations

import socket

import pytest

import sheepfast
from sheepfast import errors

MiB = 1 << 20


# Missing VDI, existing VDI and out-of-range I/O are part of the backend
# contract (tests/test_backends.py), checked for the native and CLI backends.


@pytest.mark.parametrize("name,why", [
    ("", "empty"),
    ("x" * 256, "longer than 255"),
    ("a\0b", "NUL"),
    (b"", "empty"),
])
def test_bad_names(cluster, name, why):
    for call in (lambda: cluster.create(name, MiB), lambda: cluster.open(name),
                 lambda: cluster.stat(name), lambda: cluster.delete(name)):
        with pytest.raises(sheepfast.InvalidArgument, match=why):
            call()
    with pytest.raises(TypeError):
        cluster.create(123, MiB)


def test_bad_create_options(cluster, new_name):
    name = new_name()
    with pytest.raises(sheepfast.InvalidArgument, match="block_size_shift"):
        cluster.create(name, MiB, block_size_shift=19)
    with pytest.raises(sheepfast.InvalidArgument, match="parity"):
        cluster.create(name, MiB, copy_policy=0x10)  # would panic sheep
    with pytest.raises(sheepfast.InvalidArgument, match="limit"):
        cluster.create(name, (1 << 20) * (4 * MiB) + 1)  # past the flat index
    with pytest.raises(sheepfast.OutOfRange):
        cluster.create(name, -1)
    assert not cluster.exists(name)


def test_shrink_refused(cluster, new_name):
    name = new_name()
    cluster.create(name, 8 * MiB)
    with cluster.open(name) as vdi:
        with pytest.raises(sheepfast.InvalidArgument, match="shrink"):
            vdi.resize(4 * MiB)
        assert vdi.size == 8 * MiB


def test_closed_handles(cluster, new_name):
    name = new_name()
    cluster.create(name, MiB)
    vdi = cluster.open(name)
    vdi.close()
    vdi.close()  # idempotent
    assert vdi.closed
    with pytest.raises(sheepfast.InvalidArgument, match="closed"):
        vdi.read(0, 1)
    c2 = sheepfast.connect(cluster.addresses)
    c2.close()
    with pytest.raises(sheepfast.InvalidArgument, match="closed"):
        c2.list()


def test_vdi_outlives_its_cluster_handle(target, new_name):
    name = new_name()
    c = sheepfast.connect(target.address)
    c.create(name, MiB)
    vdi = c.open(name)
    c.close()
    vdi.write(b"still here", 0)
    assert vdi.read(0, 10) == b"still here"
    vdi.close()


def test_connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    with pytest.raises(sheepfast.ConnectionError) as info:
        sheepfast.connect(f"127.0.0.1:{port}", connect_timeout=2)
    assert str(port) in str(info.value)
    assert isinstance(info.value, ConnectionError)  # the built-in too


@pytest.mark.parametrize("address", ["", "host:notaport", "host:0", "host:70000", "[::1", ","])
def test_bad_addresses(address):
    with pytest.raises((sheepfast.ConnectionError, sheepfast.InvalidArgument)):
        sheepfast.connect(address)


def test_not_sheep_is_a_clear_error():
    """A server that answers garbage is a ProtocolError or a closed connection,
    never a hang or a crash."""
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def answer():
        conn, _ = srv.accept()
        conn.recv(48)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n" + b"\0" * 100)
        conn.close()

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    with pytest.raises((sheepfast.ProtocolError, sheepfast.ConnectionError)):
        sheepfast.connect("127.0.0.1:%d" % srv.getsockname()[1], io_timeout=5)
    srv.close()


def test_error_table():
    assert isinstance(errors.server_error(0x15, "x"), sheepfast.NoSpace)
    assert isinstance(errors.server_error(0x0E, "x"), sheepfast.VdiNotFound)
    assert isinstance(errors.server_error(0x17, "x"), sheepfast.ClusterNotReady)
    e = errors.server_error(0x99, "odd")
    assert type(e) is sheepfast.ServerError and e.result == 0x99
    assert isinstance(errors.from_status(errors.SF_E_TIMEOUT, 110, 0, "t"), TimeoutError)
    assert isinstance(errors.from_status(errors.SF_E_RANGE, 0, 0, "r"), ValueError)
    assert str(errors.from_status(errors.SF_E_IO, 104, 0, "reset by peer")) == "reset by peer"
    assert sheepfast.SheepdogError is sheepfast.SheepfastError
