"""Bad input gets a clear error naming what was wrong, from every layer."""

from __future__ import annotations

import socket
import threading
import time

import pytest

import sheepfast
from sheepfast import errors

MiB = 1 << 20


# Missing VDI, existing VDI and out-of-range I/O are part of the backend
# contract (tests/test_backends.py), checked for the native and CLI backends.


@pytest.mark.parametrize(
    "name,why",
    [
        ("", "empty"),
        ("x" * 256, "longer than 255"),
        ("a\0b", "NUL"),
        (b"", "empty"),
    ],
)
def test_bad_names(cluster, name, why):
    for call in (
        lambda: cluster.create(name, MiB),
        lambda: cluster.open(name),
        lambda: cluster.stat(name),
        lambda: cluster.delete(name),
    ):
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
    # the C core checks each range; nothing is truncated into its byte
    for options, why in [
        ({"copies": 32}, "copies must be 1..31"),
        ({"copies": 256 + 2}, "copies must be 1..31"),
        ({"copies": -1}, "copies must not be negative"),
        ({"block_size_shift": 32}, "block_size_shift must be 20..31"),
        ({"block_size_shift": 256 + 22}, "block_size_shift must be 20..31"),
        ({"copy_policy": 256 + 0x12}, "does not fit in a byte"),
    ]:
        with pytest.raises(sheepfast.InvalidArgument, match=why):
            cluster.create(name, MiB, **options)
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


class _Listener:
    """A TCP listener on 127.0.0.1 that treats every connection with answer
    (conn -> None) in a thread of its own; connections stay open until close."""

    def __init__(self, answer):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.conns.append(conn)
            self.answer(conn)

    def close(self):
        try:  # wakes the accept() (a close from another thread does not)
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for conn in self.conns:
            conn.close()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def listener():
    made = []

    def make(answer):
        made.append(_Listener(answer))
        return made[-1]

    yield make
    for one in made:
        one.close()


HTTP_400 = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 50\r\n\r\n"
    b"<html><body><h1>400 Bad Request</h1></body></html>"
)


def test_an_http_server_is_named_as_not_a_sheep(listener):
    """The header of an HTTP reply decodes to a reply id no request has
    (ASCII "0000"): the message says what the peer is and where."""

    def answer(conn):
        conn.recv(48)
        conn.sendall(HTTP_400)
        conn.close()

    http = listener(answer)
    started = time.monotonic()
    with pytest.raises(sheepfast.ProtocolError) as info:
        sheepfast.connect(http.address, io_timeout=5)
    message = str(info.value)
    assert f"{http.address} is not a Sheepdog server" in message, message
    assert 'it answered "HTTP/1.0 400 Bad Request"' in message, message
    assert time.monotonic() - started < 4, "a refused reply must fail at once, not time out"


def test_a_peer_that_answers_binary_garbage_is_not_a_sheep(listener):
    def answer(conn):
        conn.recv(48)
        conn.sendall(bytes(range(48)) * 2)

    garbage = listener(answer)
    with pytest.raises(sheepfast.ProtocolError) as info:
        sheepfast.connect(garbage.address, io_timeout=5)
    message = str(info.value)
    assert f"{garbage.address} is not a Sheepdog server (reply id" in message, message
    assert "answered" not in message, message


def test_a_peer_that_hangs_up_is_named(listener):
    def answer(conn):
        conn.recv(48)
        conn.sendall(b"HTTP/1.0 400\r\n")
        conn.close()

    short = listener(answer)
    with pytest.raises(sheepfast.ConnectionError) as info:
        sheepfast.connect(short.address, io_timeout=5)
    assert f"{short.address} closed the connection" in str(info.value), str(info.value)


def test_a_listener_that_never_answers_times_out_naming_it(listener):
    silent = listener(lambda conn: None)
    started = time.monotonic()
    with pytest.raises(sheepfast.TimeoutError) as info:
        sheepfast.connect(silent.address, io_timeout=0.5)
    took = time.monotonic() - started
    message = str(info.value)
    assert silent.address in message, message
    assert "500 ms io_timeout" in message, message
    assert took < 3, f"io_timeout 0.5 s, but the call took {took:.1f} s"


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


# What each C error category (sf_errcat) becomes.
CATEGORY_CLASSES = {
    "SF_E_INVALID": sheepfast.InvalidArgument,
    "SF_E_NOMEM": MemoryError,
    "SF_E_RESOLVE": sheepfast.ConnectionError,
    "SF_E_CONNECT": sheepfast.ConnectionError,
    "SF_E_IO": sheepfast.ConnectionError,
    "SF_E_TIMEOUT": sheepfast.TimeoutError,
    "SF_E_PROTOCOL": sheepfast.ProtocolError,
    "SF_E_SERVER": sheepfast.ServerError,
    "SF_E_UNSUPPORTED": sheepfast.Unsupported,
    "SF_E_RANGE": sheepfast.OutOfRange,
}


def test_every_c_error_category_maps_to_its_class():
    native = pytest.importorskip("sheepfast._native")
    c_categories = native.ERROR_CATEGORIES
    assert set(c_categories) == set(CATEGORY_CLASSES)
    python_side = {name for name in dir(errors) if name.startswith("SF_E_")}
    assert python_side == set(c_categories), "errors.py and sheepfast.h disagree on the categories"
    for name, value in c_categories.items():
        assert getattr(errors, name) == value, name
        exc = errors.from_status(value, 0, 0x99, f"a {name} failure")
        assert type(exc) is CATEGORY_CLASSES[name], name
        assert str(exc) == f"a {name} failure"


def test_an_erasure_code_sends_its_strip_count(cluster, new_name):
    """Sheep takes the cluster's redundancy, policy included, for a NEW_VDI
    without copies: the client sends the code's data + parity strips, and a
    copies that contradicts the code is refused before anything is sent."""
    name = new_name()
    with pytest.raises(sheepfast.InvalidArgument, match="does not match copy_policy"):
        cluster.create(name, MiB, copies=2, copy_policy=0x11)
    assert not cluster.exists(name)
    cluster.create(name, MiB, copy_policy=0x11)
    info = cluster.stat(name)
    assert (info.copies, info.copy_policy, info.redundancy) == (3, 0x11, "2:1")
