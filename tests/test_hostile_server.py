"""The native client against a hostile server.

A small proxy on 127.0.0.1 stands between the client and a FakeSheep and
passes everything through, except one reply it mangles: random bytes, a
header cut short, a huge or wrong data_length, a wrong id or opcode, a
result code, silence, garbage after a valid reply, the reply twice. The
client must answer each with sheepfast.ProtocolError, ConnectionError or
TimeoutError (or the ServerError the mangled result code names), never
crash, hang, read past what it asked for, or allocate what a length from
the wire says; and when it reports success the bytes are right. Bounded:
30 examples of well under a second each (SHEEPFAST_FUZZ_EXAMPLES=N for
more, SHEEPFAST_FUZZ_RANDOM=1 for fresh ones instead of the same each run).

Mangling the data of a well-formed reply is out of scope: the protocol
carries no checksum, so no client could tell.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import struct
import threading
from typing import Optional

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import sheepfast  # noqa: E402
from sheepfast.testing import FakeSheep  # noqa: E402
from sheepfast.testing import wire as w  # noqa: E402

MiB = 1 << 20
# io_timeout when the server keeps the connection after the mangled reply
# (the client may be left waiting for bytes that never come: each such
# example can cost one), and when it closes it (never reached by a reply
# that comes, however loaded the machine)
SILENT_TIMEOUT = 0.5
IO_TIMEOUT = 10.0
HANG_GUARD = 30.0  # far past anything the client may legitimately take
IMAGE = 3 * MiB + 4096  # four 1 MiB objects, the last one short
#: examples per run; the default keeps the suite fast, more go looking harder
FUZZ_EXAMPLES = int(os.environ.get("SHEEPFAST_FUZZ_EXAMPLES", "30"))
#: the same examples every run unless asked otherwise (CI stays repeatable)
FUZZ_RANDOM = os.environ.get("SHEEPFAST_FUZZ_RANDOM") == "1"


def _recv_exact(sock: socket.socket, size: int) -> Optional[bytes]:
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(buf)


# ------------------------------------------------------------------ mangling


@dataclasses.dataclass(frozen=True)
class Mangle:
    """What becomes of one reply: the bytes sent instead, then what the
    server does with the connection ("close", "silence" or "carry on").
    "late" is not a reply: the connection is reset before the request is
    executed, and the server executes it later all the same."""

    kind: str
    value: int = 0
    blob: bytes = b""
    then: str = "close"

    def apply(self, header: bytes, data: bytes) -> bytes:
        rsp = w.ResponseHeader.unpack(header)
        if self.kind == "random":
            return self.blob
        if self.kind == "truncate":  # a cut somewhere in header or data
            return (header + data)[: self.value % (len(header) + len(data))]
        if self.kind == "silence":
            return b""
        if self.kind == "garbage_after":
            return header + data + self.blob
        if self.kind == "twice":
            return (header + data) * 2
        if self.kind == "short_data":  # the header is true, the data stops early
            return header + data[: self.value % (len(data) or 1)]
        # one header field replaced, the data as it was
        field = {
            "id": "id",
            "opcode": "opcode",
            "length": "data_length",
            "result": "result",
            "proto_ver": "proto_ver",
            "flags": "flags",
            "epoch": "epoch",
        }[self.kind]
        limit = (
            0xFF if field in ("opcode", "proto_ver") else 0xFFFF if field == "flags" else 0xFFFFFFFF
        )
        new = dataclasses.replace(rsp, **{field: self.value & limit})
        return new.pack() + data


_u32 = st.one_of(
    st.sampled_from([0, 1, 2, 47, 48, 4096, 448 * 1024, 1 << 31, (1 << 31) - 1, (1 << 32) - 1]),
    st.integers(0, (1 << 32) - 1),
)
_then = st.sampled_from(["close", "carry on", "close", "carry on", "silence"])

mangles = st.one_of(
    st.builds(Mangle, st.just("random"), blob=st.binary(min_size=0, max_size=200), then=_then),
    st.builds(
        Mangle,
        st.just("truncate"),
        value=st.integers(0, 1 << 20),
        then=st.sampled_from(["close", "silence"]),
    ),
    st.builds(Mangle, st.just("silence"), then=st.just("silence")),
    st.builds(
        Mangle,
        st.just("garbage_after"),
        blob=st.binary(min_size=1, max_size=120),
        then=st.just("carry on"),
    ),
    st.builds(Mangle, st.just("twice"), then=st.just("carry on")),
    st.builds(Mangle, st.just("short_data"), value=st.integers(0, 1 << 20), then=_then),
    st.builds(
        Mangle,
        st.sampled_from(["id", "opcode", "length", "proto_ver", "flags", "epoch"]),
        value=_u32,
        then=_then,
    ),
    st.builds(
        Mangle,
        st.just("result"),
        value=st.sampled_from(
            [
                w.RES_EIO,
                w.RES_NO_OBJ,
                w.RES_NO_VDI,
                w.RES_VDI_EXIST,
                w.RES_NO_SPACE,
                w.RES_SYSTEM_ERROR,
                w.RES_INVALID_PARMS,
                w.RES_READONLY,
                0xFF,
                0xDEADBEEF,
            ]
        ),
        then=_then,
    ),
)


class HostileProxy:
    """Forwards requests to `upstream` one at a time and their replies
    back, mangling the reply to the `target`-th request once armed."""

    def __init__(self, upstream: str):
        self.hold: Optional[threading.Event] = None  # see arm()
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._target = -1
        self._opcode: Optional[int] = None
        self._mangle: Optional[Mangle] = None
        self._threads: list = []
        self.fired: Optional[tuple] = None  # (opcode, Mangle) once it fired
        self._socks: set = set()
        self._closing = False
        threading.Thread(target=self._accept, daemon=True, name="hostile-accept").start()

    def arm(
        self,
        target: int,
        mangle: Mangle,
        *,
        opcode: Optional[int] = None,
        hold: Optional[threading.Event] = None,
    ) -> None:
        """Mangle the reply to the target-th request from now (counting from
        0, only requests of `opcode` if given). hold: after the mangled reply
        the connection forwards nothing more until the event is set."""
        with self._lock:
            self._target, self._mangle, self.fired = target, mangle, None
            self._opcode, self.hold = opcode, hold

    def join(self) -> None:
        """Waits for every connection the proxy served to end."""
        with self._lock:
            threads, self._threads = self._threads, []
        for t in threads:
            t.join(HANG_GUARD)
            assert not t.is_alive(), "a proxy connection did not end"

    def _take(self, opcode: int) -> Optional[Mangle]:
        with self._lock:
            if self._opcode is not None and opcode != self._opcode:
                return None
            self._target -= 1
            if self._target != -1 or self._mangle is None:
                return None
            mangle, self._mangle = self._mangle, None
            self.fired = (opcode, mangle)
            return mangle

    def close(self) -> None:
        self._closing = True
        self.listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(
                target=self._serve, args=(client,), daemon=True, name="hostile-conn"
            )
            with self._lock:
                self._threads.append(t)
            t.start()

    def _serve(self, client: socket.socket) -> None:
        up = None
        with self._lock:
            self._socks.add(client)
        try:
            up = socket.create_connection(self.upstream, timeout=HANG_GUARD)
            while True:
                header = _recv_exact(client, w.HEADER_SIZE)
                if header is None:
                    return
                req = w.RequestHeader.unpack(header)
                payload = b""
                if req.flags & w.FLAG_WRITE:
                    payload = _recv_exact(client, req.data_length)
                    if payload is None:
                        return
                mangle = self._take(req.opcode)
                if mangle is not None and mangle.kind == "late":
                    # the connection breaks under the client, but this server
                    # has the request and executes it later (when released)
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    client.close()
                    if self.hold is not None:
                        self.hold.wait(HANG_GUARD)
                    up.sendall(header + payload)
                    _recv_exact(up, w.HEADER_SIZE)
                    return
                up.sendall(header + payload)
                rhdr = _recv_exact(up, w.HEADER_SIZE)
                if rhdr is None:
                    return
                data = _recv_exact(up, w.ResponseHeader.unpack(rhdr).data_length)
                if data is None:
                    return
                if mangle is None:
                    client.sendall(rhdr + data)
                    continue
                client.sendall(mangle.apply(rhdr, data))
                if self.hold is not None:
                    self.hold.wait(HANG_GUARD)
                if mangle.then == "close":
                    return
                if mangle.then == "silence":
                    while client.recv(1 << 16):  # swallow until the client gives up
                        pass
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._socks.discard(client)
            client.close()
            if up is not None:
                up.close()


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def upstream():
    with FakeSheep() as sheep:
        yield sheep
        assert sheep.internal_errors == []


@pytest.fixture(scope="module")
def proxy(upstream):
    p = HostileProxy(upstream.address)
    yield p
    p.close()


def _reset_peak_rss() -> bool:
    """Resets this process's peak RSS (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def _owned(sheep: FakeSheep, vid: int) -> set:
    return {o for o in sheep.object_ids() if w.vid_of(o) == vid and w.is_data(o)}


def _indexed(sheep: FakeSheep, name: str) -> set:
    info = sheep.vdi(name)
    if info is None:
        return set()
    return {w.data_oid(info.vid, i) for i, e in info.entries.items() if e == info.vid}


_counter = iter(range(1 << 30))


def _scenario(address: str, name: str, data: bytes, outcome: dict, io_timeout: float) -> None:
    """connect, create, open, write, read back: what the data path does."""
    try:
        with sheepfast.connect(
            address, io_timeout=io_timeout, connect_timeout=2, routing=False, depth=4
        ) as c:
            outcome["step"] = "create"
            c.create(name, len(data), block_size_shift=20)
            outcome["step"] = "open"
            with c.open(name) as vdi:
                outcome["vid"] = vdi.vid
                outcome["step"] = "write"
                vdi.write(data, 0)
                outcome["written"] = True
                outcome["step"] = "read"
                outcome["read"] = vdi.read(0, len(data))
    except BaseException as exc:  # judged by the test, in its own thread
        outcome["error"] = exc


ALLOWED = (sheepfast.ProtocolError, sheepfast.ConnectionError, sheepfast.TimeoutError)


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=not FUZZ_RANDOM,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(target=st.integers(0, 24), mangle=mangles)
def test_a_mangled_reply_is_a_clear_error_never_a_wrong_byte(upstream, proxy, target, mangle):
    name = f"hostile-{next(_counter)}"
    data = os.urandom(IMAGE)
    data = data[:MiB] + bytes(MiB) + data[2 * MiB :]  # one all-zero object
    proxy.arm(target, mangle)
    outcome: dict = {}
    silent = mangle.then != "close"
    runner = threading.Thread(
        target=_scenario,
        daemon=True,
        args=(proxy.address, name, data, outcome, SILENT_TIMEOUT if silent else IO_TIMEOUT),
    )
    runner.start()
    runner.join(HANG_GUARD)
    assert not runner.is_alive(), f"the client hung at {outcome.get('step')} on {proxy.fired}"
    try:
        error = outcome.get("error")
        if error is not None:
            fired = proxy.fired
            if fired is None and silent and isinstance(error, sheepfast.TimeoutError):
                # a reply slower than SILENT_TIMEOUT before any was mangled: a
                # loaded machine, and nothing this example set out to test
                hypothesis.reject()
            assert fired is not None, f"failed with no reply mangled: {error!r}"
            allowed = ALLOWED + ((sheepfast.ServerError,) if fired[1].kind == "result" else ())
            if not isinstance(error, allowed):
                raise AssertionError(f"{outcome.get('step')}: {fired} gave {error!r}") from error
        if "read" in outcome:
            assert hashlib.sha256(outcome["read"]).digest() == hashlib.sha256(data).digest()
        # judged on the server itself, not through the proxy
        if outcome.get("written"):
            with sheepfast.connect(upstream.address) as c, c.open(name) as vdi:
                assert vdi.read(0, len(data)) == data
        if "vid" in outcome:
            proxy.join()  # requests still on their way have landed
            owned, indexed = _owned(upstream, outcome["vid"]), _indexed(upstream, name)
            assert indexed <= owned, "an index entry names an object that does not exist"
            # Failed or not, every object the write created is indexed, except
            # when the server carried on with requests the client had given
            # up on (pinned by the strict xfail
            # test_a_create_applied_after_the_client_gave_up_is_indexed)
            known = error is not None and proxy.fired[1].then == "carry on"
            if not known:
                assert owned == indexed, "objects created but not indexed"
        assert upstream.hazards == []
    finally:
        with sheepfast.connect(upstream.address) as c:
            if c.exists(name):
                c.delete(name)


def test_no_length_from_the_wire_is_allocated(upstream, proxy):
    """Replies that claim 2 GiB and 4 GiB of data: refused from the header,
    nothing allocated or received for them (the peak RSS stays flat)."""
    if not _reset_peak_rss():
        pytest.skip("/proc/self/clear_refs is not writable here")
    with sheepfast.connect(upstream.address) as c:
        c.create("hostile-len", MiB)
        with c.open("hostile-len") as vdi:
            vdi.write(b"x" * 4096, 0)
    base = _peak_rss()
    try:
        for n, claim in enumerate([1 << 31, (1 << 32) - 1] * 3):
            for then in ("carry on", "close"):
                proxy.arm(n % 4, Mangle("length", claim, then=then))
                try:
                    with (
                        sheepfast.connect(proxy.address, io_timeout=IO_TIMEOUT, routing=False) as c,
                        c.open("hostile-len") as vdi,
                    ):
                        vdi.read(0, 4096)
                except ALLOWED:
                    pass
                assert proxy.fired is not None
        assert _peak_rss() - base < 64 * MiB
    finally:
        with sheepfast.connect(upstream.address) as c:
            c.delete("hostile-len")


def test_a_valid_reply_followed_by_garbage_does_not_poison_the_pool(upstream, proxy):
    """Garbage after a complete reply sits on a connection the pool would
    reuse: the next call must not read it as its reply."""
    data = os.urandom(8192)
    with sheepfast.connect(upstream.address) as c:
        c.create("hostile-pool", MiB)
    try:
        with sheepfast.connect(proxy.address, io_timeout=IO_TIMEOUT, routing=False) as c:
            with c.open("hostile-pool") as vdi:
                vdi.write(data, 0)
                for _ in range(5):
                    garbage = w.pack_response(w.OP_READ_OBJ, id=2, data_length=8192) + bytes(8192)
                    proxy.arm(0, Mangle("garbage_after", blob=garbage, then="carry on"))
                    assert vdi.read(0, 8192) == data
                    assert proxy.fired is not None
                    assert vdi.read(0, 8192) == data
    finally:
        with sheepfast.connect(upstream.address) as c:
            c.delete("hostile-pool")


@pytest.mark.xfail(
    strict=True,
    reason=(
        "sf_vdi.c index_created_after_loss: after a failed write, each CREATE still in "
        "flight is probed once with a 1-byte read on a fresh connection and indexed only "
        "if it exists then. A CREATE that the server had read but not yet executed "
        "lands after the probe, and its object is never indexed (leaked: delete does "
        "not reclaim it)."
    ),
)
def test_a_create_applied_after_the_client_gave_up_is_indexed(upstream, proxy):
    """The first CREATE's reply comes back with a wrong id while two more
    CREATEs are on their way; the server executes those only after the
    client's write has failed (as a sheep still works through what it read
    from a connection the client closed)."""
    name = f"hostile-ghost-{next(_counter)}"
    hold = threading.Event()
    try:
        with sheepfast.connect(proxy.address, io_timeout=5, routing=False, depth=4) as c:
            c.create(name, IMAGE, block_size_shift=20)
            with c.open(name) as vdi:
                vid = vdi.vid
                proxy.arm(
                    0,
                    Mangle("id", 0xFFFFFF00, then="carry on"),
                    opcode=w.OP_CREATE_AND_WRITE_OBJ,
                    hold=hold,
                )
                with pytest.raises(sheepfast.ProtocolError, match="matches no request"):
                    vdi.write(os.urandom(IMAGE), 0)
        before = _owned(upstream, vid)
        hold.set()
        proxy.join()
        owned, indexed = _owned(upstream, vid), _indexed(upstream, name)
        assert owned - before, "no CREATE was left for the server to execute late"
        assert owned == indexed, f"created, never indexed: {sorted(owned - indexed)}"
    finally:
        hold.set()
        proxy.arm(-1, Mangle("silence"))
        with sheepfast.connect(upstream.address) as c:
            if c.exists(name):
                c.delete(name)


@pytest.mark.xfail(
    strict=True,
    reason=(
        "sf_conn.c lane_reconnect resends every op in flight on a fresh connection, "
        "CREATE_AND_WRITE included; sheep replaces an existing object on CREATE "
        "(plain_store: write a tmp file, rename over), so when the sheep behind the "
        "broken connection executes the first CREATE after the resent one and the "
        "object's later WRITEs, the object is cut back to its first request: the write "
        "reported success and reads back wrong (the first 448 KiB right, the rest "
        "zeros). Resending a CREATE is safe only once the first one can no longer land"
    ),
)
def test_a_create_executed_late_by_the_old_gateway_loses_no_byte(upstream, proxy):
    """The connection carrying an object's CREATE breaks; the client resends
    it elsewhere and finishes the object; then the old gateway, which had
    read the CREATE, executes it."""
    name = f"hostile-late-{next(_counter)}"
    data = os.urandom(IMAGE)
    hold = threading.Event()
    try:
        with sheepfast.connect(proxy.address, io_timeout=IO_TIMEOUT, routing=False, depth=4) as c:
            c.create(name, IMAGE, block_size_shift=20)
            with c.open(name) as vdi:
                proxy.arm(0, Mangle("late"), opcode=w.OP_CREATE_AND_WRITE_OBJ, hold=hold)
                vdi.write(data, 0)  # succeeds: resent, then completed
        hold.set()
        proxy.join()  # the old CREATE has landed
        with sheepfast.connect(upstream.address) as c, c.open(name) as vdi:
            got = vdi.read(0, IMAGE)
        # compared outside the assert: pytest would diff megabytes (in CI it does not truncate)
        same = got == data
        assert same, f"first wrong byte at {next(i for i in range(IMAGE) if got[i] != data[i])}"
    finally:
        hold.set()
        proxy.arm(-1, Mangle("silence"))
        with sheepfast.connect(upstream.address) as c:
            if c.exists(name):
                c.delete(name)


TRICKLE_TIMEOUT = 0.5
TRICKLE_STEP = 0.15  # far enough inside the timeout for a loaded machine
TRICKLE_BYTES = 20


def test_a_server_that_trickles_its_reply_is_cut_off_at_io_timeout():
    """A sheep that sends its reply one byte at a time, each just inside
    io_timeout, must not keep a call alive for many io_timeouts. It serves
    one connection (a reconnect is refused at once) and trickles 20 bytes
    over 6 io_timeouts, then closes."""
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        listener.close()
        with conn:
            header = _recv_exact(conn, w.HEADER_SIZE)
            if header is None:
                return
            req = w.RequestHeader.unpack(header)
            reply = w.pack_response(req.opcode, id=req.id, args=w.ClusterDefaults(3, 0, 22))
            for b in reply[:TRICKLE_BYTES]:
                if stop.wait(TRICKLE_STEP):
                    return
                try:
                    conn.sendall(bytes([b]))
                except OSError:
                    return

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    outcome: dict = {}

    def call():
        try:
            sheepfast.connect(
                f"127.0.0.1:{listener.getsockname()[1]}",
                io_timeout=TRICKLE_TIMEOUT,
                connect_timeout=1,
            ).close()
        except BaseException as exc:
            outcome["error"] = exc

    try:
        t0 = time.monotonic()
        runner = threading.Thread(target=call, daemon=True)
        runner.start()
        runner.join(HANG_GUARD)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        listener.close()
        server.join(HANG_GUARD)
    assert elapsed < 4 * TRICKLE_TIMEOUT, f"the call lasted {elapsed:.1f} s: {outcome}"
    assert isinstance(outcome.get("error"), sheepfast.TimeoutError)
