"""FakeSheep driven through raw sockets with the pure-Python wire codec.

Covers framing and pipelining, every result-code path of the ops a client
uses, replays of the request sequences captured from a real Sheepdog 1.0
cluster (tests/vectors, compared reply header by reply header), reference
counting and the fault-injection knobs. Needs no C extension.
"""

import os
import random
import socket
import struct
import time
from typing import NamedTuple, Optional

import pytest

from sheepfast.testing import FakeSheep
from sheepfast.testing import wire as w

VECTOR_DIR = os.path.join(os.path.dirname(__file__), "vectors")
MIB = 1 << 20
OBJ = 4 * MIB
TIMEOUT = 30.0  # generous: CI machines are shared


# ---------------------------------------------------------------------------
# a tiny raw client


def recv_exact(sock, size):
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError("connection closed by FakeSheep")
        got += n
    return bytes(buf)


class Client:
    def __init__(self, port, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.next_id = 0

    def close(self):
        self.sock.close()

    def send(self, header, payload=b""):
        raw = header.pack() if isinstance(header, w.RequestHeader) else header
        self.sock.sendall(raw + bytes(payload))

    def recv(self):
        rsp = w.ResponseHeader.unpack(recv_exact(self.sock, w.HEADER_SIZE))
        return rsp, recv_exact(self.sock, rsp.data_length)

    def request(self, opcode, args=None, payload=b"", *, flags=None, data_length=None, **kw):
        if flags is None:
            flags = w.FLAG_WRITE if payload else 0
        if data_length is None:
            data_length = len(payload)
        self.next_id += 1
        return w.make_request(
            opcode, args, flags=flags, data_length=data_length, id=self.next_id, **kw
        )

    def call(self, opcode, args=None, payload=b"", **kw):
        req = self.request(opcode, args, payload, **kw)
        self.send(req, payload)
        rsp, data = self.recv()
        assert (rsp.id, rsp.opcode) == (req.id, req.opcode)
        return rsp, data

    # -- VDI helpers, shaped like dog's sequences (docs/PROTOCOL.md section 6)

    def new_vdi(self, name, size, **kw):
        return self.call(w.OP_NEW_VDI, w.VdiArgs(vdi_size=size, **kw), w.pad_name(name))[0]

    def lookup(self, name, tag="", snapid=0, opcode=w.OP_GET_VDI_INFO):
        payload = w.vdi_payload(name, tag) if tag is not None else w.pad_name(name)
        return self.call(opcode, w.VdiArgs(snapid=snapid), payload)[0]

    def vid(self, name, tag=""):
        rsp = self.lookup(name, tag)
        assert rsp.result == w.RES_SUCCESS, rsp
        return rsp.vdi.vdi_id

    def delete(self, name, tag="", snapid=0):
        return self.call(w.OP_DEL_VDI, w.VdiArgs(snapid=snapid), w.vdi_payload(name, tag))[0]

    def read(self, oid, length, offset=0):
        rsp, data = self.call(w.OP_READ_OBJ, w.ObjArgs(oid=oid, offset=offset), data_length=length)
        return rsp.result, data

    def create(self, oid, data, offset=0, cow_oid=0, copy_policy=0):
        flags = w.FLAG_WRITE | (w.FLAG_COW if cow_oid else 0)
        return self.call(
            w.OP_CREATE_AND_WRITE_OBJ,
            w.ObjArgs(oid=oid, cow_oid=cow_oid, offset=offset, copy_policy=copy_policy),
            data,
            flags=flags,
        )[0].result

    def write(self, oid, data, offset=0):
        return self.call(w.OP_WRITE_OBJ, w.ObjArgs(oid=oid, offset=offset), data)[0].result

    def set_entry(self, vid, idx, value):
        return self.write(w.inode_oid(vid), struct.pack("<I", value), w.index_entry_offset(idx))

    def put_object(self, vid, idx, data, offset=0):
        """A fresh object the way dog writes it: CREATE, then the index entry."""
        assert self.create(w.data_oid(vid, idx), data, offset) == w.RES_SUCCESS
        assert self.set_entry(vid, idx, vid) == w.RES_SUCCESS

    def zero_index(self, vid, count):
        return self.write(w.inode_oid(vid), bytes(4 * count), w.INDEX_OFFSET)

    def header(self, vid):
        result, raw = self.read(w.inode_oid(vid), w.INODE_HEADER_SIZE)
        assert result == w.RES_SUCCESS
        return w.InodeHeader.unpack(raw)

    def entry(self, vid, idx):
        return struct.unpack("<I", self.read(w.inode_oid(vid), 4, w.index_entry_offset(idx))[1])[0]

    def snapshot(self, name, tag):
        """dog vdi snapshot: tag the working inode, NEW_VDI with snapid=1."""
        base = self.vid(name)
        hdr = self.header(base)
        assert self.write(w.inode_oid(base), w.pad_name(tag), w.INODE_TAG_OFFSET) == 0
        rsp = self.new_vdi(
            name,
            hdr.vdi_size,
            base_vdi_id=base,
            snapid=1,
            copies=hdr.nr_copies,
            copy_policy=hdr.copy_policy,
            store_policy=hdr.store_policy,
            block_size_shift=hdr.block_size_shift,
        )
        assert rsp.result == w.RES_SUCCESS, rsp
        return base, rsp.vdi.vdi_id

    def clone(self, snapshot_vid, name):
        hdr = self.header(snapshot_vid)
        rsp = self.new_vdi(
            name,
            hdr.vdi_size,
            base_vdi_id=snapshot_vid,
            copies=hdr.nr_copies,
            block_size_shift=hdr.block_size_shift,
        )
        assert rsp.result == w.RES_SUCCESS, rsp
        return rsp.vdi.vdi_id


@pytest.fixture
def sheep():
    with FakeSheep() as s:
        yield s
        assert s.internal_errors == []
        assert s.hazards == [], "tests that provoke hazards must check and clear them"


@pytest.fixture
def cluster3():
    with FakeSheep(nodes=3) as s:
        yield s
        assert s.internal_errors == []
        assert s.hazards == []


@pytest.fixture
def client(sheep):
    c = Client(sheep.port)
    yield c
    c.close()


def take_hazards(sheep, count=1):
    found, sheep.hazards[:] = list(sheep.hazards), []
    assert len(found) == count, found
    return found


# ---------------------------------------------------------------------------
# vector replay


class Msg(NamedTuple):
    line: int
    direction: str
    header: bytes
    length: int
    payload: Optional[bytes]  # None when only a sha256 was stored


def load_vector(name):
    msgs = []
    with open(os.path.join(VECTOR_DIR, name + ".txt")) as f:
        for number, line in enumerate(f, 1):
            if not line.startswith(("C>S ", "S>C ")):
                continue
            direction, header, length, payload = line.split()
            raw = (
                None
                if payload.startswith("sha256:")
                else (b"" if payload == "-" else bytes.fromhex(payload))
            )
            msgs.append(Msg(number, direction, bytes.fromhex(header), int(length), raw))
    return msgs


class Replay:
    """Send a vector's C>S messages and compare FakeSheep's replies to its S>C ones.

    Consecutive C>S messages are sent back to back (pipelined), then the
    S>C messages that follow are read and paired by id (or by position when
    the ids repeat, as with dog's id 0).
    """

    def __init__(self, sheep, port=None):
        self.sheep = sheep
        self.client = Client(port or sheep.port)
        self.last_read = {}  # oid -> payload of the latest READ_OBJ reply
        self.reply_ids = []  # reply ids in arrival order, per batch

    def close(self):
        self.client.close()

    def payload_for(self, name, msg, req, synth):
        if msg.payload is not None:
            return msg.payload
        if synth is not None:
            data = synth(self, req, msg)
        else:
            assert w.is_data(req.obj.oid), f"{name}:{msg.line} needs a synth payload"
            data = random.Random(f"{name}:{msg.line}").randbytes(msg.length)
        assert len(data) == msg.length
        return data

    def run(self, name, synth=None, skip=None):
        msgs = load_vector(name)
        if skip is not None:
            msgs = self._without_skipped(msgs, skip)
        i = 0
        while i < len(msgs):
            sent = []
            while i < len(msgs) and msgs[i].direction == "C>S":
                req = w.RequestHeader.unpack(msgs[i].header)
                payload = (
                    self.payload_for(name, msgs[i], req, synth) if req.flags & w.FLAG_WRITE else b""
                )
                self.client.send(msgs[i].header, payload)
                sent.append(req)
                i += 1
            expected = []
            while i < len(msgs) and msgs[i].direction == "S>C":
                expected.append(msgs[i])
                i += 1
            replies = [self.client.recv() for _ in expected]
            self.reply_ids.append([rsp.id for rsp, _ in replies])
            for exp, req, (rsp, data) in self._pair(name, sent, expected, replies):
                self._compare(name, exp, req, rsp, data)
                if req.opcode == w.OP_READ_OBJ and rsp.result == 0:
                    self.last_read[req.obj.oid] = data

    @staticmethod
    def _without_skipped(msgs, skip):
        kept, drop_reply = [], False
        for msg in msgs:
            if msg.direction == "C>S":
                drop_reply = bool(skip(w.RequestHeader.unpack(msg.header)))
                if not drop_reply:
                    kept.append(msg)
            elif not drop_reply:
                kept.append(msg)
        return kept

    @staticmethod
    def _pair(name, sent, expected, replies):
        assert len(sent) == len(expected), name
        ids = [req.id for req in sent]
        if len(set(ids)) == len(ids):
            by_id = {rsp.id: (rsp, data) for rsp, data in replies}
            return [
                (exp, req, by_id[req.id])
                for req in sent
                for exp in expected
                if w.ResponseHeader.unpack(exp.header).id == req.id
            ]
        return list(zip(expected, sent, replies))

    def _compare(self, name, exp_msg, req, rsp, data):
        where = f"{name}:{exp_msg.line}"
        exp = w.ResponseHeader.unpack(exp_msg.header)
        assert (rsp.opcode, rsp.result, rsp.data_length) == (
            exp.opcode,
            exp.result,
            exp.data_length,
        ), where
        assert (rsp.proto_ver, rsp.flags, rsp.id, rsp.epoch) == (0, 0, exp.id, self.sheep.epoch), (
            where
        )
        if exp.result != w.RES_VDI_EXIST:  # VDI_EXIST carries a garbage vdi_id
            assert rsp.args == exp.args, where  # vdi_id, copies, bss, nr_nodes...
        if exp_msg.payload is None or not exp_msg.length:
            return
        if rsp.opcode == w.OP_GET_NODE_LIST:
            n = rsp.node_list.nr_nodes
            ours = w.unpack_node_list(data, n)
            theirs = w.unpack_node_list(exp_msg.payload, n)
            assert [(r.addr, r.nr_vnodes, r.zone) for r in ours] == [
                (r.addr, r.nr_vnodes, r.zone) for r in theirs
            ], where
            assert [r.port for r in ours] == [n.port for n in self.sheep._nodes], where
        elif rsp.opcode == w.OP_STAT_CLUSTER:
            assert data[8:] == exp_msg.payload[8:], where  # all but ctime
        else:
            assert data == exp_msg.payload, where


def header_rewrite(**fields):
    """Synthesize an inode header write from the header read just before it."""

    def synth(replay, req, msg):
        base = replay.last_read[req.obj.oid][: msg.length]
        hdr = w.InodeHeader.unpack(base)._replace(**fields)
        return hdr.pack() + base[w.INODE_HEADER_FIELDS_SIZE :]

    return synth


def hyper_root_rewrite(leaves):
    """hyper_write's offset-0 rewrite: client's header + a depth-1 root."""

    def synth(replay, req, msg):
        base = replay.last_read[req.obj.oid][: w.INODE_HEADER_SIZE]
        root = w.BTREE_HEADER.pack(w.BTREE_MAGIC, 1, len(leaves)) + b"".join(
            w.BTREE_LEAF_ENTRY.pack(idx, vid) for idx, vid in leaves
        )
        return base + root

    return synth


def unknown_vdi(sheep):
    """skip= filter for list vectors that also read VDIs we cannot recreate."""
    known = set(sheep.store.inodes)
    return lambda req: req.opcode == w.OP_READ_OBJ and w.vid_of(req.obj.oid) not in known


# ---------------------------------------------------------------------------
# dog vdi list -r, computed from the inode the way dog does (section 6.3)


def dog_list_line(client, vid):
    result, raw = client.read(w.inode_oid(vid), w.INODE_HEADER_SIZE + 8)
    assert result == 0
    hdr = w.InodeHeader.unpack(raw)
    count = -(-hdr.vdi_size // hdr.object_size)
    _, index = client.read(w.inode_oid(vid), 4 * count, w.INDEX_OFFSET)
    entries = struct.unpack(f"<{count}I", index)
    used = sum(e == vid for e in entries) * hdr.object_size
    shared = sum(bool(e) and e != vid for e in entries) * hdr.object_size
    kind = "s" if hdr.snap_ctime else ("c" if hdr.snap_id == 1 and hdr.parent_vdi_id else "=")
    d, p = w.ec_split(hdr.copy_policy)
    redundancy = f"{d}:{p}" if hdr.copy_policy else str(hdr.nr_copies)
    return " ".join(
        [
            kind,
            hdr.name.decode(),
            str(hdr.snap_id if hdr.snap_ctime else 0),
            str(hdr.vdi_size),
            str(used),
            str(shared),
            str(hdr.create_time >> 32),
            f"{vid:x}",
            redundancy,
            hdr.tag.decode(),
            str(hdr.block_size_shift),
        ]
    )


def captured_list_lines():
    with open(os.path.join(VECTOR_DIR, "dog_list_raw_outputs.txt")) as f:
        return [line.rstrip("\n") for line in f if line[:1] in "=sc"]


def assert_listed_like_dog(client, vid, expected):
    ours, theirs = dog_list_line(client, vid).split(" "), expected.split(" ")
    assert abs(int(ours[6]) - time.time()) < 60  # ctime: our clock
    ours[6] = theirs[6]
    assert ours == theirs


# ===========================================================================
# framing, versions, pipelining


def test_reply_header_echoes_the_request():
    with FakeSheep(epoch=7) as sheep:
        c = Client(sheep.port)
        req = w.make_request(
            w.OP_GET_CLUSTER_DEFAULT, id=0xDEADBEEF, flags=w.FLAG_DIRECT, epoch=999
        )
        c.send(req)
        rsp, data = c.recv()
        assert (
            rsp.proto_ver,
            rsp.opcode,
            rsp.flags,
            rsp.epoch,
            rsp.id,
            rsp.data_length,
            rsp.result,
        ) == (0, w.OP_GET_CLUSTER_DEFAULT, 0, 7, 0xDEADBEEF, 0, 0)
        assert data == b""
        c.close()


def test_payload_is_read_only_when_the_write_flag_is_set(client):
    # Without WRITE the "payload" is parsed as the next request: a faithful
    # desync. Here those 48 bytes happen to be a valid GET_CLUSTER_DEFAULT.
    smuggled = w.make_request(w.OP_GET_CLUSTER_DEFAULT, id=99).pack()
    read = w.make_request(
        w.OP_READ_OBJ, w.ObjArgs(oid=w.data_oid(5, 0)), id=1, data_length=len(smuggled)
    )
    client.send(read, smuggled)
    first, second = client.recv(), client.recv()
    assert (first[0].id, first[0].result) == (1, w.RES_NO_OBJ)
    assert (second[0].id, second[0].result) == (99, w.RES_SUCCESS)
    # With WRITE the same bytes are consumed as payload (and ignored by READ).
    read = w.make_request(
        w.OP_READ_OBJ,
        w.ObjArgs(oid=w.data_oid(5, 0)),
        id=2,
        flags=w.FLAG_WRITE,
        data_length=len(smuggled),
    )
    client.send(read, smuggled)
    assert client.recv()[0].id == 2
    assert client.call(w.OP_GET_CLUSTER_DEFAULT)[0].result == w.RES_SUCCESS


def test_write_without_flag_operates_on_a_zero_buffer(client):
    vid = client.new_vdi("nowrite", 8 * MIB).vdi.vdi_id
    client.put_object(vid, 0, b"\xff" * 64)
    client.send(
        client.request(w.OP_WRITE_OBJ, w.ObjArgs(oid=w.data_oid(vid, 0)), flags=0, data_length=16)
    )
    assert client.recv()[0].result == w.RES_SUCCESS
    assert client.read(w.data_oid(vid, 0), 64)[1] == bytes(16) + b"\xff" * 48


def test_unknown_opcode_is_invalid_and_the_connection_stays_usable(client):
    for opcode in (0x30, 0x00, 0x7F, 0xA3, 0xFF):
        rsp, _ = client.call(opcode)
        assert rsp.result == w.RES_INVALID_PARMS, hex(opcode)
    assert client.call(w.OP_GET_CLUSTER_DEFAULT)[0].result == w.RES_SUCCESS


@pytest.mark.parametrize(
    "proto_ver,result",
    [
        (0, w.RES_SUCCESS),
        (1, w.RES_SUCCESS),
        (2, w.RES_SUCCESS),
        (3, w.RES_VER_MISMATCH),
        (0x0A, w.RES_VER_MISMATCH),
    ],
)
def test_proto_ver_of_public_ops(client, proto_ver, result):
    assert client.call(w.OP_GET_CLUSTER_DEFAULT, proto_ver=proto_ver)[0].result == result


@pytest.mark.parametrize(
    "proto_ver,result",
    [
        (0x0A, w.RES_SUCCESS),
        (0x02, w.RES_VER_MISMATCH),
        (0x0B, w.RES_VER_MISMATCH),
        (0, w.RES_VER_MISMATCH),
    ],
)
def test_proto_ver_of_internal_ops(client, proto_ver, result):
    rsp, data = client.call(
        w.OP_GET_NODE_LIST, data_length=w.NODE_LIST_BUFFER_SIZE, proto_ver=proto_ver
    )
    assert rsp.result == result
    assert len(data) == (80 if result == 0 else 0)


def test_flush_vdi_is_obsolete(client):
    assert client.call(w.OP_FLUSH_VDI)[0].result == w.RES_INVALID_PARMS


def test_pipelined_requests_are_matched_by_id(client):
    vid = client.new_vdi("pipe", 64 * MIB).vdi.vdi_id
    blobs = {idx: os.urandom(1000 + idx) for idx in range(12)}
    for idx, blob in blobs.items():
        client.put_object(vid, idx, blob)
    requests = {}
    wire_bytes = b""
    for idx in blobs:
        req = client.request(
            w.OP_READ_OBJ, w.ObjArgs(oid=w.data_oid(vid, idx)), data_length=len(blobs[idx])
        )
        requests[req.id] = idx
        wire_bytes += req.pack()
    client.sock.sendall(wire_bytes)
    seen = set()
    for _ in blobs:
        rsp, data = client.recv()
        assert rsp.result == 0 and data == blobs[requests[rsp.id]]
        seen.add(rsp.id)
    assert seen == set(requests)


def test_reorder_answers_requests_that_arrive_together_in_reverse(sheep, client):
    sheep.set_reorder(True)
    reqs = [client.request(w.OP_GET_CLUSTER_DEFAULT) for _ in range(5)]
    client.sock.sendall(b"".join(r.pack() for r in reqs))
    assert [client.recv()[0].id for _ in reqs] == [5, 4, 3, 2, 1]
    sheep.set_reorder(False)
    assert client.call(w.OP_GET_CLUSTER_DEFAULT)[0].result == 0


def test_a_delayed_reply_is_overtaken(sheep, client):
    sheep.set_delay(0.3, w.OP_READ_OBJ)
    slow = client.request(w.OP_READ_OBJ, w.ObjArgs(oid=w.data_oid(1, 1)), data_length=8)
    fast = client.request(w.OP_GET_CLUSTER_DEFAULT)
    start = time.monotonic()
    client.sock.sendall(slow.pack() + fast.pack())
    assert client.recv()[0].id == fast.id
    assert time.monotonic() - start < 0.25
    assert client.recv()[0].id == slow.id
    assert time.monotonic() - start >= 0.3
    sheep.clear_faults()
    start = time.monotonic()
    client.read(w.data_oid(1, 1), 8)
    assert time.monotonic() - start < 0.25


def test_delay_applies_to_every_reply_without_opcode(sheep, client):
    sheep.set_delay(0.15)
    start = time.monotonic()
    client.call(w.OP_GET_CLUSTER_DEFAULT)
    assert time.monotonic() - start >= 0.15
    sheep.set_delay(0)
    start = time.monotonic()
    client.call(w.OP_GET_CLUSTER_DEFAULT)
    assert time.monotonic() - start < 0.15


def test_a_client_that_stops_reading_does_not_block_others(sheep, client):
    vid = client.new_vdi("hog", 16 * OBJ).vdi.vdi_id
    for idx in range(4):
        client.put_object(vid, idx, os.urandom(OBJ))
    hog = Client(sheep.port)
    hog.sock.sendall(
        b"".join(
            hog.request(
                w.OP_READ_OBJ, w.ObjArgs(oid=w.data_oid(vid, i % 4)), data_length=OBJ
            ).pack()
            for i in range(24)
        )
    )
    time.sleep(0.2)  # let its replies pile up
    for _ in range(3):
        start = time.monotonic()
        assert client.read(w.data_oid(vid, 1), OBJ)[0] == 0
        assert client.call(w.OP_GET_CLUSTER_DEFAULT)[0].result == 0
        assert time.monotonic() - start < 1.0
    hog.close()


def test_many_connections_share_one_store(cluster3):
    clients = [Client(int(a.rsplit(":", 1)[1])) for a in cluster3.addresses]
    vid = clients[0].new_vdi("shared", 8 * MIB).vdi.vdi_id
    clients[1].put_object(vid, 0, b"via node 1")
    assert clients[2].read(w.data_oid(vid, 0), 10) == (0, b"via node 1")
    assert clients[2].vid("shared") == vid
    for c in clients:
        c.close()


# ===========================================================================
# cluster ops


def test_cluster_defaults_come_from_the_constructor():
    with FakeSheep(copies=3, copy_policy=0x11, block_size_shift=20) as sheep:
        c = Client(sheep.port)
        rsp, data = c.call(w.OP_GET_CLUSTER_DEFAULT)
        assert rsp.cluster_defaults == w.ClusterDefaults(3, 0x11, 20) and data == b""
        rsp = c.new_vdi("defaults", MIB)
        assert (rsp.vdi.copies, rsp.vdi.block_size_shift) == (3, 20)
        c.close()


def test_node_list(cluster3):
    c = Client(cluster3.port)
    rsp, data = c.call(w.OP_GET_NODE_LIST, data_length=w.NODE_LIST_BUFFER_SIZE)
    assert rsp.node_list.nr_nodes == 3 and rsp.data_length == 240
    nodes = w.unpack_node_list(data, 3)
    assert [f"{n.addr}:{n.port}" for n in nodes] == cluster3.addresses
    assert [n.zone for n in nodes] == [0, 1, 2]
    assert all(n.nr_vnodes == 128 and n.space > 0 for n in nodes)
    assert data[24:36] == bytes(12) and data[36:40] == bytes([127, 0, 0, 1])
    # exactly nr_nodes*80 is enough
    assert c.call(w.OP_GET_NODE_LIST, data_length=240)[0].result == 0
    c.close()


def test_cluster_info(cluster3):
    c = Client(cluster3.port)
    assert c.call(w.OP_CLUSTER_INFO, data_length=1000)[0].result == w.RES_INVALID_PARMS
    rsp, data = c.call(w.OP_CLUSTER_INFO, data_length=w.CLUSTER_INFO_SIZE)
    assert rsp.result == 0 and len(data) == w.CLUSTER_INFO_SIZE == 491568
    info = w.ClusterInfo.unpack(data)
    assert (
        info.proto_ver,
        info.nr_nodes,
        info.epoch,
        info.flags,
        info.nr_copies,
        info.status,
        info.block_size_shift,
        info.default_store,
    ) == (0x0A, 3, 1, w.CLUSTER_FLAG_AUTO_VNODES, 2, 1, 22, b"plain")
    assert info.ctime >> 32 == pytest.approx(time.time(), abs=60)
    nodes = w.unpack_node_list(data[48:], 3)
    assert [n.port for n in nodes] == [int(a.rsplit(":", 1)[1]) for a in cluster3.addresses]
    assert not any(data[48 + 3 * 80 :])
    c.close()


def test_stat_cluster(client):
    rsp, data = client.call(w.OP_STAT_CLUSTER, w.ClusterArgs(0), data_length=48)
    assert rsp.result == 0 and len(data) == 48
    rec = w.StatCluster.unpack(data)
    assert (rec.epoch, rec.nr_nodes, rec.nr_copies, rec.flags, rec.driver) == (
        1,
        0,
        2,
        w.CLUSTER_FLAG_AUTO_VNODES,
        b"plain",
    )
    assert rec.ctime >> 32 == pytest.approx(time.time(), abs=60)
    rsp, data = client.call(w.OP_STAT_CLUSTER, w.ClusterArgs(1), data_length=128)
    assert rsp.result == 0 and w.StatCluster.unpack(data).nr_nodes == 1
    assert w.NodeRecord.unpack(data[48:]).port == client.sock.getpeername()[1]
    rsp, _ = client.call(w.OP_STAT_CLUSTER, w.ClusterArgs(1), data_length=48)
    assert rsp.result == w.RES_BUFFER_SMALL


def test_stat_sheep(client):
    rsp, _ = client.call(w.OP_STAT_SHEEP)
    assert rsp.result == 0
    assert 0 < rsp.stat_sheep.store_free <= rsp.stat_sheep.store_size


def test_vdi_bitmaps(client):
    vid = client.new_vdi("bits", MIB).vdi.vdi_id
    for opcode in (w.OP_READ_VDIS, w.OP_READ_DEL_VDIS):
        for bad in (0, 4096, w.VDI_BITMAP_SIZE + 1):
            assert client.call(opcode, data_length=bad)[0].result == w.RES_INVALID_PARMS
    assert (
        client.call(w.OP_READ_DEL_VDIS, data_length=w.VDI_BITMAP_SIZE, proto_ver=2)[0].result
        == w.RES_VER_MISMATCH
    )
    rsp, in_use = client.call(w.OP_READ_VDIS, data_length=w.VDI_BITMAP_SIZE)
    assert rsp.result == 0 and len(in_use) == w.VDI_BITMAP_SIZE
    assert w.bitmap_test(in_use, vid)
    assert sum(bin(b).count("1") for b in in_use) == 1
    _, deleted = client.call(w.OP_READ_DEL_VDIS, data_length=w.VDI_BITMAP_SIZE)
    assert not any(deleted)
    assert client.delete("bits").result == 0
    _, deleted = client.call(w.OP_READ_DEL_VDIS, data_length=w.VDI_BITMAP_SIZE)
    _, in_use = client.call(w.OP_READ_VDIS, data_length=w.VDI_BITMAP_SIZE)
    assert w.bitmap_test(deleted, vid) and w.bitmap_test(in_use, vid)


# ===========================================================================
# VDI ops


def test_new_vdi(client):
    rsp = client.new_vdi("probe-a", 64 * MIB)
    assert rsp.result == 0
    assert rsp.vdi == w.VdiResult(0x7F588F, 0, 2, 22)
    hdr = client.header(0x7F588F)
    assert (
        hdr.name,
        hdr.tag,
        hdr.vdi_size,
        hdr.nr_copies,
        hdr.block_size_shift,
        hdr.snap_id,
        hdr.vdi_id,
        hdr.parent_vdi_id,
        hdr.snap_ctime,
        hdr.copy_policy,
        hdr.store_policy,
    ) == (b"probe-a", b"", 64 * MIB, 2, 22, 1, 0x7F588F, 0, 0, 0, 0)
    sec, nsec = hdr.create_time >> 32, hdr.create_time & 0xFFFFFFFF
    assert abs(sec - time.time()) < 60 and nsec < 10**9
    assert client.new_vdi("probe-a", MIB).result == w.RES_VDI_EXIST
    rsp = client.new_vdi("explicit", 0, copies=3, block_size_shift=20)
    assert rsp.vdi[2:] == (3, 20)
    assert client.header(rsp.vdi.vdi_id).vdi_size == 0


def test_new_vdi_payload_rules(client):
    args = w.VdiArgs(vdi_size=MIB)
    for payload in (w.vdi_payload("x", ""), b"x", b""):
        rsp, _ = client.call(w.OP_NEW_VDI, args, payload, flags=w.FLAG_WRITE)
        assert rsp.result == w.RES_INVALID_PARMS
    rsp, _ = client.call(w.OP_NEW_VDI, args, b"n" * 256)  # no NUL
    assert rsp.result == w.RES_INVALID_PARMS
    rsp, _ = client.call(w.OP_NEW_VDI, args, w.pad_name("n" * 255))
    assert rsp.result == 0


def test_vid_allocation_probes_for_a_free_slot(client):
    first = client.new_vdi("probe-a", 64 * MIB).vdi.vdi_id
    _base, working = client.snapshot("probe-a", "s1")
    assert (first, working) == (0x7F588F, 0x7F5890)


def test_vid_allocation_skips_zero_and_wraps(sheep):
    store = sheep.store
    name = b"wrap"
    start = w.fnv1a_vid(name)
    assert store._alloc_vid(name) == start
    store.in_use[start >> 3] |= 0xFF & ~((1 << (start & 7)) - 1)  # bits start.. of its byte
    store.in_use[(start >> 3) + 1 :] = b"\xff" * (len(store.in_use) - (start >> 3) - 1)
    assert w.bitmap_test(store.in_use, start) and w.bitmap_test(store.in_use, w.VID_MASK)
    assert not w.bitmap_test(store.in_use, start - 1)
    assert store._alloc_vid(name) == 1  # wrapped; 0 is never a vid
    store.in_use[0] |= 0b10
    assert store._alloc_vid(name) == 2
    store.in_use[: start >> 3] = b"\xff" * (start >> 3)
    assert store._alloc_vid(name) == (start & ~7 if start & 7 else None)
    store.in_use[:] = b"\xff" * len(store.in_use)
    assert store._alloc_vid(name) is None
    c = Client(sheep.port)
    assert c.new_vdi("full", MIB).result == w.RES_FULL_VDI
    c.close()


def test_vdi_lookup_table(client):
    client.new_vdi("vm", 8 * MIB)
    snap, working = client.snapshot("vm", "monday")
    assert client.lookup("vm").vdi.vdi_id == working
    assert client.lookup("vm", tag=None).vdi.vdi_id == working  # 256-byte form
    assert client.lookup("vm", "monday").vdi.vdi_id == snap
    assert client.lookup("vm", "monday", snapid=7).vdi.vdi_id == snap  # tag wins
    assert client.lookup("vm", snapid=1).vdi.vdi_id == snap
    # the working VDI has snap_id 2, but snapid lookups only match snapshots
    assert client.header(working).snap_id == 2
    assert client.lookup("vm", snapid=2).result == w.RES_NO_TAG
    assert client.lookup("vm", "tuesday").result == w.RES_NO_TAG
    assert client.lookup("nothing").result == w.RES_NO_VDI
    assert client.lookup("nothing", "monday").result == w.RES_NO_VDI
    rsp, _ = client.call(w.OP_GET_VDI_INFO, w.VdiArgs(), b"vm".ljust(300, b"\0"))
    assert rsp.result == w.RES_INVALID_PARMS
    rsp, _ = client.call(w.OP_GET_VDI_INFO, w.VdiArgs(), b"v" * 256)
    assert rsp.result == w.RES_NO_VDI
    rsp = client.lookup("vm")
    assert rsp.vdi == w.VdiResult(working, 0, 2, 22)


def test_lock_and_release_are_lookups(client):
    vid = client.new_vdi("lockme", MIB).vdi.vdi_id
    for tag in (None, ""):
        rsp = client.lookup("lockme", tag, opcode=w.OP_LOCK_VDI)
        assert rsp.result == 0 and rsp.vdi == w.VdiResult(vid, 0, 2, 22)
    assert client.lookup("lockme", opcode=w.OP_LOCK_VDI).result == 0  # no lock held
    assert client.lookup("nope", opcode=w.OP_LOCK_VDI).result == w.RES_NO_VDI
    rsp, _ = client.call(w.OP_RELEASE_VDI, w.VdiArgs(base_vdi_id=vid))
    assert rsp.result == 0 and rsp.vdi == w.VdiResult()


def _vdi_states(client, data_length):
    rsp, data = client.call(w.OP_GET_VDI_COPIES, data_length=data_length)
    n = len(data) // w.VDI_STATE_SIZE
    return rsp, [w.VdiState.unpack(data[i * w.VDI_STATE_SIZE :]) for i in range(n)]


def test_vdi_states_list_every_vdi_and_need_room_for_all(client):
    a = client.new_vdi("state-a", MIB).vdi.vdi_id
    b = client.new_vdi("state-b", MIB, copies=1).vdi.vdi_id
    rsp, states = _vdi_states(client, w.VDI_STATE_SIZE)  # room for one of two
    assert rsp.result == w.RES_BUFFER_SMALL and states == []
    rsp, states = _vdi_states(client, 512 * w.VDI_STATE_SIZE)  # as dog asks
    assert rsp.result == 0 and rsp.data_length == 2 * w.VDI_STATE_SIZE
    assert [(s.vid, s.copies, s.lock_state) for s in states] == [
        (min(a, b), 2 if min(a, b) == a else 1, w.LOCK_STATE_UNLOCKED),
        (max(a, b), 2 if max(a, b) == a else 1, w.LOCK_STATE_UNLOCKED),
    ]


@pytest.fixture
def locking():
    with FakeSheep(nodes=2, use_lock=True) as s:
        yield s


def test_locks_of_a_cluster_formatted_with_l(locking):
    one, two = (Client(int(a.rpartition(":")[2])) for a in locking.addresses)
    try:
        vid = one.new_vdi("locked", MIB).vdi.vdi_id
        assert one.lookup("locked", opcode=w.OP_LOCK_VDI).result == 0
        for c in (one, two):  # held, whichever sheep is asked
            assert c.lookup("locked", opcode=w.OP_LOCK_VDI).result == w.RES_VDI_LOCKED
        rsp, (state,) = _vdi_states(one, 512 * w.VDI_STATE_SIZE)
        assert (state.vid, state.lock_state, state.owner) == (
            vid,
            w.LOCK_STATE_LOCKED,
            locking.node_id(0),
        )
        # RELEASE through another sheep unlocks whoever holds it
        assert two.call(w.OP_RELEASE_VDI, w.VdiArgs(base_vdi_id=vid))[0].result == 0
        shared = w.VdiArgs(type=w.LOCK_TYPE_SHARED)
        payload = w.pad_name("locked")
        for c in (one, two):
            assert c.call(w.OP_LOCK_VDI, shared, payload)[0].result == 0
        assert one.call(w.OP_LOCK_VDI, shared, payload)[0].result == w.RES_VDI_LOCKED  # twice
        assert one.lookup("locked", opcode=w.OP_LOCK_VDI).result == w.RES_VDI_LOCKED
        state = _vdi_states(one, 512 * w.VDI_STATE_SIZE)[1][0]
        assert state.lock_state == w.LOCK_STATE_SHARED
        assert state.participants == (locking.node_id(0), locking.node_id(1))
        leave = w.VdiArgs(base_vdi_id=vid, type=w.LOCK_TYPE_SHARED)
        assert two.call(w.OP_RELEASE_VDI, leave)[0].result == 0
        assert _vdi_states(one, 512 * w.VDI_STATE_SIZE)[1][0].participants == (locking.node_id(0),)
        assert one.call(w.OP_RELEASE_VDI, leave)[0].result == 0
        assert _vdi_states(one, 512 * w.VDI_STATE_SIZE)[1][0].lock_state == w.LOCK_STATE_UNLOCKED
        assert one.call(w.OP_RELEASE_VDI, leave)[0].result == 0  # always success
        flags = w.StatCluster.unpack(
            one.call(w.OP_STAT_CLUSTER, w.ClusterArgs(), data_length=48)[1]
        ).flags
        assert flags & w.CLUSTER_FLAG_USE_LOCK
    finally:
        one.close()
        two.close()


def test_object_list(sheep, client):
    vid = client.new_vdi("listed", 8 * MIB).vdi.vdi_id
    client.put_object(vid, 1, b"data")
    rsp, data = client.call(w.OP_GET_OBJ_LIST, data_length=8)
    assert rsp.result == w.RES_BUFFER_SMALL
    rsp, data = client.call(w.OP_GET_OBJ_LIST, data_length=1 << 20)
    oids = set(struct.unpack(f"<{len(data) // 8}Q", data))
    assert rsp.result == 0 and oids == {w.inode_oid(vid), w.data_oid(vid, 1)}


def test_snapshot(sheep, client):
    base = client.new_vdi("snapme", 16 * MIB).vdi.vdi_id
    for idx in (0, 2):
        client.put_object(base, idx, b"data %d" % idx)
    snap, working = client.snapshot("snapme", "t1")
    assert snap == base
    s, wk = sheep.vdi_by_id(snap), sheep.vdi_by_id(working)
    assert s.snapshot and s.snap_ctime and s.tag == b"t1" and s.snap_id == 1
    assert not wk.snapshot and wk.parent == snap and wk.snap_id == 2 and wk.tag == b""
    assert wk.entries == s.entries == {0: snap, 2: snap}
    assert sheep.refcount(w.data_oid(snap, 0)) == 2
    # the snapshot's objects are read-only; COW them into the working VDI
    assert client.write(w.data_oid(snap, 0), b"x") == w.RES_READONLY
    assert client.create(w.data_oid(snap, 1), b"x") == w.RES_READONLY
    assert client.create(w.data_oid(working, 0), b"NEW", 1, cow_oid=w.data_oid(snap, 0)) == 0
    assert client.read(w.data_oid(working, 0), 8) == (0, b"dNEW 0\0\0")
    assert client.set_entry(working, 0, working) == 0
    assert sheep.refcount(w.data_oid(snap, 0)) == 1
    assert client.read(w.data_oid(snap, 0), 6) == (0, b"data 0")
    # a second snapshot numbers on
    snap2, working2 = client.snapshot("snapme", "t2")
    assert snap2 == working and sheep.vdi_by_id(working2).snap_id == 3


def test_snapshot_of_an_older_base_keeps_one_working_vdi(sheep, client):
    vid = client.new_vdi("rollback", 8 * MIB).vdi.vdi_id
    client.put_object(vid, 0, b"old")
    snap1, working = client.snapshot("rollback", "s1")
    rsp = client.new_vdi("rollback", 8 * MIB, base_vdi_id=snap1, snapid=1)
    assert rsp.result == 0
    new = sheep.vdi("rollback")
    assert new.vid == rsp.vdi.vdi_id and new.parent == snap1 and new.snap_id == 3
    assert new.entries == {0: snap1}
    assert sheep.vdi_by_id(working).snapshot  # frozen, not a 2nd working VDI


def test_snapshot_and_clone_errors(client):
    client.new_vdi("orig", MIB)
    vid = client.vid("orig")
    assert client.new_vdi("orig", MIB, base_vdi_id=0x123456, snapid=1).result == w.RES_BASE_VDI_READ
    assert client.new_vdi("ghost", MIB, base_vdi_id=vid, snapid=1).result == w.RES_NO_VDI
    assert client.new_vdi("copy", MIB, base_vdi_id=0x123456).result == w.RES_BASE_VDI_READ
    assert client.new_vdi("orig", MIB, base_vdi_id=vid).result == w.RES_VDI_EXIST


def test_clone(sheep, client):
    src = client.new_vdi("golden", 12 * MIB).vdi.vdi_id
    client.put_object(src, 1, b"golden bits")
    snap, _working = client.snapshot("golden", "v1")
    clone = client.clone(snap, "child")
    info = sheep.vdi("child")
    assert (info.vid, info.parent, info.snap_id, info.snapshot, info.entries) == (
        clone,
        snap,
        1,
        False,
        {1: snap},
    )
    assert sheep.refcount(w.data_oid(snap, 1)) == 3  # snapshot, working, clone
    assert client.read(w.data_oid(info.entries[1], 1), 11) == (0, b"golden bits")


def test_delete_after_zeroing_reclaims_everything(sheep, client):
    vid = client.new_vdi("doomed", 12 * MIB).vdi.vdi_id
    for idx in range(3):
        client.put_object(vid, idx, os.urandom(100))
    assert len(sheep.object_ids()) == 3
    assert client.zero_index(vid, 3) == 0
    assert sheep.object_ids() == set()
    rsp = client.delete("doomed")
    assert rsp.result == 0 and rsp.vdi == w.VdiResult(vid, 0, 0, 0)
    info = sheep.vdi_by_id(vid)
    assert info.deleted and info.name == b"" and info.size == 0 and not info.entries
    assert client.lookup("doomed").result == w.RES_NO_VDI
    assert client.delete("doomed").result == w.RES_NO_VDI
    # the inode and the vid stay; a new VDI of the same name gets the next slot
    assert client.read(w.inode_oid(vid), 8)[0] == 0
    assert client.new_vdi("doomed", MIB).vdi.vdi_id == vid + 1


def test_delete_without_zeroing_leaves_a_zombie(sheep, client):
    vid = client.new_vdi("zombie", 12 * MIB).vdi.vdi_id
    for idx in range(2):
        client.put_object(vid, idx, b"leak")
    assert client.delete("zombie").result == 0
    assert sheep.object_ids() == {w.data_oid(vid, 0), w.data_oid(vid, 1)}  # leaked
    assert sheep.vdi_by_id(vid).deleted
    assert client.lookup("zombie").vdi.vdi_id == vid  # still resolves
    assert client.header(vid).name == b"zombie"
    assert client.new_vdi("zombie", MIB).result == w.RES_VDI_EXIST
    _, listed = client.call(w.OP_READ_DEL_VDIS, data_length=w.VDI_BITMAP_SIZE)
    assert w.bitmap_test(listed, vid)


def test_shared_objects_survive_until_the_last_reference(sheep, client):
    vid = client.new_vdi("chain", 8 * MIB).vdi.vdi_id
    client.put_object(vid, 0, b"shared")
    snap, working = client.snapshot("chain", "s")
    clone = client.clone(snap, "branch")
    oid = w.data_oid(snap, 0)
    assert sheep.refcount(oid) == 3
    for name, tag, target in (("chain", "", working), ("branch", "", clone)):
        assert client.zero_index(target, 2) == 0
        assert client.delete(name, tag).result == 0
        assert oid in sheep.object_ids()
    assert sheep.refcount(oid) == 1
    assert client.zero_index(snap, 2) == 0
    assert oid not in sheep.object_ids()
    assert client.delete("chain", "s").result == 0
    assert sheep.object_ids() == set()


def test_index_update_replacing_an_entry_moves_the_reference(sheep, client):
    vid = client.new_vdi("move", 8 * MIB).vdi.vdi_id
    other = client.new_vdi("other", 8 * MIB).vdi.vdi_id
    client.put_object(vid, 0, b"mine")
    assert client.create(w.data_oid(other, 0), b"theirs") == 0
    assert client.set_entry(vid, 0, other) == 0
    assert w.data_oid(vid, 0) not in sheep.object_ids()  # count fell to 0
    assert sheep.refcount(w.data_oid(other, 0)) == 1
    # a partial (2-byte) write inside an entry is still an index update
    assert client.write(w.inode_oid(vid), b"\0\0", w.INDEX_OFFSET + 2) == 0
    assert client.entry(vid, 0) == other & 0xFFFF
    assert sheep.refcount(w.data_oid(other, 0)) == 0


def test_header_rewrite_bypasses_reference_counting(sheep, client):
    vid = client.new_vdi("resize", 4 * MIB).vdi.vdi_id
    client.put_object(vid, 0, b"keep")
    hdr = client.header(vid)._replace(vdi_size=16 * MIB)
    raw = hdr.pack().ljust(w.INODE_HEADER_SIZE, b"\0") + bytes(4)  # also clobbers entry 0
    assert client.write(w.inode_oid(vid), raw) == 0
    assert client.header(vid).vdi_size == 16 * MIB
    assert client.entry(vid, 0) == 0
    assert w.data_oid(vid, 0) in sheep.object_ids()  # not reclaimed


# ===========================================================================
# object ops


def test_create_replaces_an_existing_object(client):
    vid = client.new_vdi("objs", 8 * MIB).vdi.vdi_id
    oid = w.data_oid(vid, 0)
    assert client.create(oid, b"A" * 1000) == 0
    assert client.create(oid, b"BBBBB", offset=10) == 0
    assert client.read(oid, 1000) == (0, bytes(10) + b"BBBBB" + bytes(985))
    assert client.create(oid, b"") == 0
    assert client.read(oid, OBJ) == (0, bytes(OBJ))


def test_write_and_read_edges(client):
    vid = client.new_vdi("edges", 8 * MIB).vdi.vdi_id
    oid = w.data_oid(vid, 1)
    assert client.write(oid, b"x") == w.RES_NO_OBJ
    rsp, data = client.call(w.OP_READ_OBJ, w.ObjArgs(oid=oid), data_length=512)
    assert (rsp.result, rsp.data_length, data) == (w.RES_NO_OBJ, 0, b"")
    assert client.create(oid, b"") == 0
    assert client.write(oid, b"u" * 100, offset=1000) == 0  # unaligned
    assert client.write(oid, b"end!", offset=OBJ - 4) == 0
    result, data = client.read(oid, 1200)
    assert data == bytes(1000) + b"u" * 100 + bytes(100)
    # a read past the object end is padded to the length asked for
    result, data = client.read(oid, 8 * 1024 + 8, offset=OBJ - 8)
    assert result == 0 and data == bytes(4) + b"end!" + bytes(8 * 1024)
    assert client.read(oid, 16, offset=OBJ + 100) == (0, bytes(16))


def test_writes_past_the_object_end_are_refused(sheep, client):
    vid = client.new_vdi("bounds", 8 * MIB).vdi.vdi_id
    oid = w.data_oid(vid, 0)
    assert client.create(oid, b"x" * 10, offset=OBJ - 9) == w.RES_INVALID_PARMS
    assert client.create(oid, b"") == 0
    assert client.write(oid, b"x" * 10, offset=OBJ - 9) == w.RES_INVALID_PARMS
    assert client.write(w.inode_oid(vid), b"x" * 8, offset=w.INODE_SIZE - 4) == w.RES_INVALID_PARMS
    assert all("past the object end" in h for h in take_hazards(sheep, 3))
    assert client.write(w.inode_oid(vid), b"x" * 4, offset=w.INODE_SIZE - 4) == 0


def test_object_size_follows_the_vdis_block_size(sheep, client):
    vid = client.new_vdi("small-objs", 8 * MIB, block_size_shift=20).vdi.vdi_id
    oid = w.data_oid(vid, 3)
    assert client.create(oid, b"y" * 10, offset=MIB - 10) == 0
    assert client.write(oid, b"y" * 11, offset=MIB - 10) == w.RES_INVALID_PARMS
    take_hazards(sheep)
    assert len(sheep.object_data(oid)) == MIB


def test_remove_obj_leaves_the_index_alone(sheep, client):
    vid = client.new_vdi("rm", 8 * MIB).vdi.vdi_id
    client.put_object(vid, 0, b"gone")
    oid = w.data_oid(vid, 0)
    assert client.call(w.OP_REMOVE_OBJ, w.ObjArgs(oid=oid))[0].result == 0
    assert client.call(w.OP_REMOVE_OBJ, w.ObjArgs(oid=oid))[0].result == w.RES_NO_OBJ
    assert client.read(oid, 4)[0] == w.RES_NO_OBJ
    assert client.entry(vid, 0) == vid


def test_discard_obj_zeroes_the_index_entry(sheep, client):
    vid = client.new_vdi("trim", 8 * MIB).vdi.vdi_id
    client.put_object(vid, 1, b"trim me")
    oid = w.data_oid(vid, 1)
    assert client.call(w.OP_DISCARD_OBJ, w.ObjArgs(oid=oid))[0].result == 0
    assert client.entry(vid, 1) == 0
    assert oid not in sheep.object_ids() and sheep.refcount(oid) == 0
    assert client.call(w.OP_DISCARD_OBJ, w.ObjArgs(oid=oid))[0].result == w.RES_NO_OBJ


def test_copy_on_write(sheep, client):
    parent = client.new_vdi("cow-src", 8 * MIB).vdi.vdi_id
    child = client.new_vdi("cow-dst", 8 * MIB).vdi.vdi_id
    client.put_object(parent, 0, b"P" * 64)
    src, dst = w.data_oid(parent, 0), w.data_oid(child, 0)
    assert client.create(dst, b"cc", offset=4, cow_oid=src) == 0
    assert client.read(dst, 66)[1] == b"PPPPccPPPP" + b"P" * 54 + bytes(2)
    # the cow source is not touched, and without the COW flag cow_oid is ignored
    assert client.read(src, 64)[1] == b"P" * 64
    rsp, _ = client.call(
        w.OP_CREATE_AND_WRITE_OBJ, w.ObjArgs(oid=dst, cow_oid=src, offset=4), b"cc"
    )
    assert rsp.result == 0 and client.read(dst, 8)[1] == bytes(4) + b"cc\0\0"
    missing = w.data_oid(parent, 5)
    assert client.create(dst, b"z", cow_oid=missing) == w.RES_NO_OBJ
    assert client.create(dst, b"z" * 8, offset=OBJ - 4, cow_oid=src) == w.RES_INVALID_PARMS
    assert "COW" in take_hazards(sheep)[0]


def test_the_inode_reads_like_the_full_byte_array(sheep, client):
    vid = client.new_vdi("inode", 8 * MIB).vdi.vdi_id
    client.put_object(vid, 1, b"x")
    result, raw = client.read(w.inode_oid(vid), w.INODE_SIZE)
    assert result == 0 and len(raw) == w.INODE_SIZE
    hdr = w.InodeHeader.unpack(raw)
    assert (hdr.name, hdr.vdi_id, hdr.vdi_size) == (b"inode", vid, 8 * MIB)
    assert struct.unpack_from("<2I", raw, w.INDEX_OFFSET) == (0, vid)
    assert not any(raw[w.INDEX_OFFSET + 8 :])
    # sparse storage: memory grows with what is used, not with 12 MiB
    assert len(sheep.store.inodes[vid].buf) < w.INODE_HEADER_SIZE + 64
    # writes anywhere (gref area included) are plain bytes
    gref = w.GREF_OFFSET + 8 * 1000
    assert client.write(w.inode_oid(vid), b"\1\2\3\4", gref) == 0
    assert client.read(w.inode_oid(vid), 8, gref - 2)[1] == b"\0\0\1\2\3\4\0\0"
    assert client.read(w.inode_oid(vid), 16, w.INODE_SIZE - 8)[1] == bytes(16)
    assert client.read(w.inode_oid(0x424242), 8)[0] == w.RES_NO_OBJ
    assert client.read(w.inode_oid(vid) | 1, 8)[0] == w.RES_NO_OBJ


def test_hyper_volume(sheep, client):
    rsp = client.new_vdi("hyper", 64 * MIB, store_policy=1)
    vid = rsp.vdi.vdi_id
    assert client.read(w.inode_oid(vid), 8, w.INDEX_OFFSET)[1] == w.EMPTY_BTREE_ROOT
    assert client.header(vid).store_policy == 1
    for idx in (0, 2, 10):
        assert client.create(w.data_oid(vid, idx), b"h%d" % idx) == 0
    # dog's update: rewrite header + root from offset 0, then the counter
    root = w.BTREE_HEADER.pack(w.BTREE_MAGIC, 1, 3) + b"".join(
        w.BTREE_LEAF_ENTRY.pack(idx, vid) for idx in (0, 2, 10)
    )
    header = client.read(w.inode_oid(vid), w.INODE_HEADER_SIZE)[1]
    assert client.write(w.inode_oid(vid), header + root) == 0
    assert client.write(w.inode_oid(vid), bytes(4), w.INODE_BTREE_COUNTER_OFFSET) == 0
    assert sheep.vdi("hyper").entries == {0: vid, 2: vid, 10: vid}
    # the flat zeroing pass would crash a real sheep: refused and recorded
    assert client.zero_index(vid, 16) == w.RES_INVALID_PARMS
    assert "hyper" in take_hazards(sheep)[0]
    assert client.read(w.inode_oid(vid), 8, w.INDEX_OFFSET)[1][:2] == b"\x74\x62"
    # DEL_VDI alone walks the B-tree and removes the volume's own objects
    assert client.delete("hyper").vdi.vdi_id == vid
    assert sheep.object_ids() == set()
    raw = client.read(w.inode_oid(vid), w.INODE_HEADER_SIZE + 8)[1]
    hdr = w.InodeHeader.unpack(raw)
    assert (hdr.name, hdr.vdi_size, hdr.store_policy, hdr.vdi_id) == (b"", 0, 1, vid)
    assert raw[w.INODE_HEADER_SIZE :] == bytes(8)


def test_hyper_volume_depth_two_delete(sheep, client):
    vid = client.new_vdi("deep", 64 * MIB, store_policy=1).vdi.vdi_id
    node = w.btree_oid(vid, 1)
    leaf = (
        w.BTREE_HEADER.pack(w.BTREE_MAGIC, 1, 2)
        + w.BTREE_LEAF_ENTRY.pack(4, vid)
        + w.BTREE_LEAF_ENTRY.pack(7, vid)
    )
    assert client.create(node, leaf) == 0
    for idx in (4, 7):
        assert client.create(w.data_oid(vid, idx), b"d") == 0
    root = w.BTREE_HEADER.pack(w.BTREE_MAGIC, 2, 1) + w.BTREE_INDEX_ENTRY.pack(7, node)
    header = client.read(w.inode_oid(vid), w.INODE_HEADER_SIZE)[1]
    assert client.write(w.inode_oid(vid), header + root) == 0
    assert sheep.vdi("deep").entries == {4: vid, 7: vid}
    assert client.delete("deep").result == 0
    assert sheep.all_object_ids() == {w.inode_oid(vid)}


def test_erasure_coded_vdis_need_enough_zones(sheep, client):
    rsp = client.new_vdi("ec", 12 * MIB, copies=3, copy_policy=w.ec_policy(2, 1))
    assert rsp.result == 0 and rsp.vdi.copies == 3
    vid = rsp.vdi.vdi_id
    # one node is one zone: 2 data strips cannot be placed
    assert client.create(w.data_oid(vid, 0), b"ec") == w.RES_SYSTEM_ERROR
    assert client.create(w.data_oid(vid, 0), b"ec", copy_policy=0x11) == w.RES_SYSTEM_ERROR
    with FakeSheep(nodes=3) as three:
        c = Client(three.port)
        vid = c.new_vdi("ec", 12 * MIB, copies=3, copy_policy=0x11).vdi.vdi_id
        c.put_object(vid, 0, b"ec data", offset=100)
        assert c.read(w.data_oid(vid, 0), 7, 100) == (0, b"ec data")
        vid42 = c.new_vdi("ec42", 12 * MIB, copies=6, copy_policy=0x22).vdi.vdi_id
        assert c.create(w.data_oid(vid42, 0), b"x") == w.RES_SYSTEM_ERROR
        c.close()


# ===========================================================================
# hazards


def test_hazards_are_recorded_and_refused(sheep, client):
    rsp = client.new_vdi("panic", MIB, copies=1, copy_policy=0x10)
    assert rsp.result == w.RES_INVALID_PARMS
    assert "0x10" in take_hazards(sheep)[0] and client.lookup("panic").result == w.RES_NO_VDI
    vid = client.new_vdi("fine", MIB).vdi.vdi_id
    assert client.create(w.data_oid(vid, 0), b"x", copy_policy=0x20) == w.RES_INVALID_PARMS
    assert "parity" in take_hazards(sheep)[0]
    big = w.CLUSTER_OP_MAX_DATA + 1
    for opcode in (w.OP_NEW_VDI, w.OP_DEL_VDI):
        rsp, _ = client.call(opcode, w.VdiArgs(), b"big".ljust(big, b"\0"))
        assert rsp.result == w.RES_INVALID_PARMS
    assert all("131072" in h for h in take_hazards(sheep, 2))
    # a lookup's request data stays on the gateway: refused, not a hazard
    rsp, _ = client.call(w.OP_GET_VDI_INFO, w.VdiArgs(), b"big".ljust(big, b"\0"))
    assert rsp.result == w.RES_INVALID_PARMS
    take_hazards(sheep, 0)
    rsp, _ = client.call(w.OP_GET_NODE_LIST, data_length=79)
    assert rsp.result == w.RES_INVALID_PARMS and rsp.data_length == 0
    assert "nr_nodes*80" in take_hazards(sheep)[0]
    assert client.call(w.OP_GET_CLUSTER_DEFAULT)[0].result == 0


# ===========================================================================
# fault knobs and introspection


def test_fail_nth(sheep, client):
    vid = client.new_vdi("faulty", 8 * MIB).vdi.vdi_id
    oid = w.data_oid(vid, 0)
    client.put_object(vid, 0, b"first")
    sheep.fail_nth(2, w.RES_EIO, w.OP_WRITE_OBJ)
    assert client.write(oid, b"secnd") == 0
    assert client.call(w.OP_GET_CLUSTER_DEFAULT)[0].result == 0  # not counted
    assert client.write(oid, b"third") == w.RES_EIO
    assert client.read(oid, 5)[1] == b"secnd"  # not executed
    assert client.write(oid, b"forth") == 0
    sheep.fail_nth(1, w.RES_WAIT_FOR_JOIN)  # any opcode
    rsp, data = client.call(w.OP_READ_OBJ, w.ObjArgs(oid=oid), data_length=5)
    assert (rsp.result, rsp.data_length, data) == (w.RES_WAIT_FOR_JOIN, 0, b"")
    assert client.read(oid, 5)[1] == b"forth"
    sheep.fail_nth(1, w.RES_EIO, w.OP_WRITE_OBJ, applied=True)
    assert client.write(oid, b"fifth") == w.RES_EIO
    assert client.read(oid, 5)[1] == b"fifth"  # executed all the same


def test_drop_nth(sheep, client):
    vid = client.new_vdi("droppy", 8 * MIB).vdi.vdi_id
    oid = w.data_oid(vid, 0)
    client.put_object(vid, 0, b"before")
    other = Client(sheep.port)
    sheep.drop_nth(2, w.OP_WRITE_OBJ)
    assert client.write(oid, b"one...") == 0
    client.send(client.request(w.OP_WRITE_OBJ, w.ObjArgs(oid=oid), b"two..."), b"two...")
    with pytest.raises((EOFError, ConnectionError)):
        client.recv()
    assert other.read(oid, 6) == (0, b"one...")  # not executed
    fresh = Client(sheep.port)
    assert fresh.write(oid, b"three.") == 0
    assert other.read(oid, 6) == (0, b"three.")
    other.close()
    fresh.close()


def test_drop_reply_nth_executes_then_resets(sheep, client):
    vid = client.new_vdi("lostreply", 8 * MIB).vdi.vdi_id
    oid = w.data_oid(vid, 0)
    client.put_object(vid, 0, b"before")
    other = Client(sheep.port)
    sheep.drop_reply_nth(2, w.OP_WRITE_OBJ)
    assert client.write(oid, b"one...") == 0
    client.send(client.request(w.OP_WRITE_OBJ, w.ObjArgs(oid=oid), b"two..."), b"two...")
    with pytest.raises((EOFError, ConnectionError)):
        client.recv()
    assert other.read(oid, 6) == (0, b"two...")  # executed
    assert other.write(oid, b"three.") == 0  # fired once
    assert other.read(oid, 6) == (0, b"three.")
    other.close()


def test_stop_node_nth_before_and_after_executing(cluster3):
    ports = [int(a.rsplit(":", 1)[1]) for a in cluster3.addresses]
    c0, c1 = Client(ports[0]), Client(ports[1])
    vid = c0.new_vdi("stopping", 8 * MIB).vdi.vdi_id
    oid = w.data_oid(vid, 0)
    c0.put_object(vid, 0, b"before")
    cluster3.stop_node_nth(1, w.OP_WRITE_OBJ)  # not executed
    c1.send(c1.request(w.OP_WRITE_OBJ, w.ObjArgs(oid=oid), b"lost.."), b"lost..")
    with pytest.raises((EOFError, ConnectionError)):
        c1.recv()
    with pytest.raises(ConnectionError):
        Client(ports[1])  # the node is down
    assert c0.read(oid, 6) == (0, b"before")
    assert c0.call(w.OP_GET_CLUSTER_DEFAULT)[0].epoch == 2
    c2 = Client(ports[2])
    cluster3.stop_node_nth(1, w.OP_WRITE_OBJ, applied=True)  # executed
    c2.send(c2.request(w.OP_WRITE_OBJ, w.ObjArgs(oid=oid), b"kept.."), b"kept..")
    with pytest.raises((EOFError, ConnectionError)):
        c2.recv()
    assert c0.read(oid, 6) == (0, b"kept..")
    rsp, _ = c0.call(w.OP_GET_NODE_LIST, data_length=w.NODE_LIST_BUFFER_SIZE)
    assert rsp.epoch == 3 and rsp.node_list.nr_nodes == 1
    cluster3.start_node(1)
    assert Client(ports[1]).read(oid, 6) == (0, b"kept..")
    for c in (c0, c1, c2):
        c.close()


def test_a_stopped_node_executes_nothing_it_had_read(cluster3):
    """Requests a node had read when it stopped never happen (a dead sheep),
    even if they were waiting for a worker."""
    ports = [int(a.rsplit(":", 1)[1]) for a in cluster3.addresses]
    c0, c1 = Client(ports[0]), Client(ports[1])
    vid = c0.new_vdi("dead", 8 * MIB).vdi.vdi_id
    c0.put_object(vid, 0, b"x")
    oid = w.data_oid(vid, 0)
    # the first WRITE stops the node; the ones behind it were read already
    cluster3.stop_node_nth(1, w.OP_WRITE_OBJ, applied=True)
    cluster3.set_reorder(True)  # read them as one batch
    requests = [
        c1.request(w.OP_WRITE_OBJ, w.ObjArgs(oid=oid, offset=i), b"%d" % i) for i in range(1, 6)
    ]
    c1.sock.sendall(b"".join(r.pack() + b"%d" % (i + 1) for i, r in enumerate(requests)))
    with pytest.raises((EOFError, ConnectionError)):
        c1.recv()
    cluster3.clear_faults()
    written = c0.read(oid, 6)[1]
    assert written[1:2] == b"1"  # the first was executed before the stop
    assert written[2:6] == bytes(4)  # the others never were
    c0.close()
    c1.close()


def test_clear_faults_disarms_everything(sheep, client):
    sheep.fail_nth(1, w.RES_EIO)
    sheep.drop_nth(1)
    sheep.drop_reply_nth(1)
    sheep.stop_node_nth(1)
    sheep.set_delay(5)
    sheep.set_reorder(True)
    assert sheep.armed_faults() == 4
    sheep.clear_faults()
    assert sheep.armed_faults() == 0
    assert client.call(w.OP_GET_CLUSTER_DEFAULT)[0].result == 0
    with pytest.raises(ValueError):
        sheep.fail_nth(0, w.RES_EIO)


def test_stop_and_start_a_node(cluster3):
    c0 = Client(cluster3.port)
    port1 = int(cluster3.addresses[1].rsplit(":", 1)[1])
    c1 = Client(port1)
    assert c1.call(w.OP_GET_CLUSTER_DEFAULT)[0].epoch == 1
    cluster3.stop_node(1)
    with pytest.raises((EOFError, ConnectionError)):
        c1.call(w.OP_GET_CLUSTER_DEFAULT)
    with pytest.raises(ConnectionError):
        Client(port1)
    rsp, data = c0.call(w.OP_GET_NODE_LIST, data_length=w.NODE_LIST_BUFFER_SIZE)
    assert rsp.epoch == 2 and rsp.node_list.nr_nodes == 2
    assert [n.zone for n in w.unpack_node_list(data, 2)] == [0, 2]
    cluster3.start_node(1)
    assert cluster3.addresses[1].endswith(f":{port1}")
    c1 = Client(port1)
    rsp, _ = c1.call(w.OP_GET_NODE_LIST, data_length=w.NODE_LIST_BUFFER_SIZE)
    assert rsp.epoch == 3 and rsp.node_list.nr_nodes == 3
    c0.close()
    c1.close()


def test_request_counts_and_log(sheep, client):
    sheep.reset_request_counts()
    sheep.enable_request_log()
    vid = client.new_vdi("counted", 8 * MIB).vdi.vdi_id
    client.put_object(vid, 1, b"abc", offset=7)
    client.read(w.data_oid(vid, 1), 10)
    assert sheep.request_counts() == {
        w.OP_NEW_VDI: 1,
        w.OP_CREATE_AND_WRITE_OBJ: 1,
        w.OP_WRITE_OBJ: 1,
        w.OP_READ_OBJ: 1,
    }
    log = sheep.request_log()
    assert [(e.opcode, e.oid, e.offset, e.data_length) for e in log] == [
        (w.OP_NEW_VDI, 0, 0, 256),
        (w.OP_CREATE_AND_WRITE_OBJ, w.data_oid(vid, 1), 7, 3),
        (w.OP_WRITE_OBJ, w.inode_oid(vid), w.index_entry_offset(1), 4),
        (w.OP_READ_OBJ, w.data_oid(vid, 1), 0, 10),
    ]
    assert log[1].flags == w.FLAG_WRITE and log[0].node == 0
    sheep.clear_request_log()
    assert sheep.request_log() == []
    sheep.enable_request_log(False)
    client.call(w.OP_GET_CLUSTER_DEFAULT)
    assert sheep.request_log() == []


def test_stop_closes_connections_and_is_idempotent():
    sheep = FakeSheep(nodes=2).start()
    c = Client(sheep.port)
    assert c.call(w.OP_GET_CLUSTER_DEFAULT)[0].result == 0
    sheep.stop()
    with pytest.raises((EOFError, ConnectionError)):
        c.call(w.OP_GET_CLUSTER_DEFAULT)
    sheep.stop()
    assert sheep.connection_count() == 0


def test_throughput_of_4mib_objects(client):
    """Pipelined 4 MiB CREATEs then READs (prints MB/s; run with -s to see)."""
    count, depth = 24, 8
    vid = client.new_vdi("bench", count * OBJ).vdi.vdi_id
    data = os.urandom(OBJ)

    def pipeline(make):
        start, sent, done = time.perf_counter(), 0, 0
        while done < count:
            while sent < count and sent - done < depth:
                make(sent)
                sent += 1
            rsp, _ = client.recv()
            assert rsp.result == 0
            done += 1
        return count * OBJ / (time.perf_counter() - start) / 1e6

    def send_create(i):
        req = client.request(w.OP_CREATE_AND_WRITE_OBJ, w.ObjArgs(oid=w.data_oid(vid, i)), data)
        client.sock.sendall(req.pack())
        client.sock.sendall(data)

    write = pipeline(send_create)
    read = pipeline(
        lambda i: client.send(
            client.request(w.OP_READ_OBJ, w.ObjArgs(oid=w.data_oid(vid, i)), data_length=OBJ)
        )
    )
    print(
        f"\nFakeSheep loopback, 4 MiB objects, depth {depth}: "
        f"write {write:.0f} MB/s, read {read:.0f} MB/s"
    )
    # Speed is the benchmarks' business; here only correctness is asserted.
    assert client.read(w.data_oid(vid, count - 1), OBJ)[1] == data


# ===========================================================================
# replay of captured sequences (tests/vectors)

STORY = [
    # (vector, options) in the order they were captured on the real cluster
    ("create", {}),
    ("list_raw_normal", {"skip": True}),
    ("write_fresh_small", {}),
    ("write_span", {}),
    ("write_overwrite", {}),
    ("read_small", {}),
    ("read_span", {}),
    ("resize_grow", {"synth": header_rewrite(vdi_size=128 * MIB)}),
    ("resize_shrink", {}),
    ("snapshot", {}),
    ("list_raw_snapshot", {"skip": True}),
    ("read_snapshot", {}),
    ("clone", {}),
    ("list_raw_clone", {"skip": True}),
    ("write_clone_cow", {}),
    ("read_clone", {}),
    ("write_after_snapshot_cow", {}),
    ("delete", {}),
    ("delete_snapshot", {}),
]


def test_replay_the_captured_probe_a_story(cluster3):
    """create → write → read → resize → snapshot → clone → COW → delete, as dog did it."""
    replay = Replay(cluster3)
    lines = captured_list_lines()
    a, a2, c = 0x7F588F, 0x7F5890, 0x7F5BF5
    for name, options in STORY:
        skip = unknown_vdi(cluster3) if options.get("skip") else None
        replay.run(name, synth=options.get("synth"), skip=skip)
        if name == "create":
            assert_listed_like_dog(replay.client, a, lines[0])
        elif name == "clone":
            assert_listed_like_dog(replay.client, a, lines[1])
            assert_listed_like_dog(replay.client, a2, lines[2])
            assert_listed_like_dog(replay.client, c, lines[3])
        elif name == "write_after_snapshot_cow":
            assert_listed_like_dog(replay.client, a2, lines[4])
    # probe-a (working and snapshot) is gone; the clone still owns idx 0 and
    # shares idx 1 and 2 with the deleted snapshot, whose objects survive
    assert cluster3.object_ids() == {w.data_oid(c, 0), w.data_oid(a, 1), w.data_oid(a, 2)}
    assert cluster3.vdi("probe-a") is None
    assert cluster3.vdi("probe-c").entries == {0: c, 1: a, 2: a}
    replay.close()


def test_replay_delete_clone(cluster3):
    c = Client(cluster3.port)
    base = c.new_vdi("probe-a", 128 * MIB).vdi.vdi_id
    for idx in range(3):
        c.put_object(base, idx, b"base %d" % idx)
    snap, _working = c.snapshot("probe-a", "snap1")
    clone = c.clone(snap, "probe-c2")
    assert clone == 0x68F325
    assert c.create(w.data_oid(clone, 1), b"own", cow_oid=w.data_oid(snap, 1)) == 0
    assert c.set_entry(clone, 1, clone) == 0
    replay = Replay(cluster3)
    replay.run("delete_clone")
    assert w.data_oid(clone, 1) not in cluster3.object_ids()
    assert {w.data_oid(snap, i) for i in range(3)} <= cluster3.object_ids()
    assert cluster3.vdi_by_id(clone).deleted
    c.close()
    replay.close()


@pytest.mark.parametrize(
    "names",
    [
        ["create_zero"],
        ["create_prealloc"],
        ["create_bss20", "write_bss20"],
        ["ec_create", "ec_write", "ec_read", "ec_delete"],
        ["ec42_create", "ec42_write"],
        ["hyper_create"],
    ],
)
def test_replay_create_variants(cluster3, names):
    replay = Replay(cluster3)
    for name in names:
        replay.run(name)
    replay.close()
    if names == ["create_prealloc"]:
        vid = 0x324D7A
        assert cluster3.object_ids() == {w.data_oid(vid, i) for i in range(3)}
        assert cluster3.vdi("probe-p2").entries == {0: vid, 1: vid, 2: vid}
    if names[0] == "ec_create":
        assert cluster3.object_ids() == set()  # index zeroed, then deleted
        assert cluster3.vdi_by_id(0x57B2E0).deleted


def test_replay_hyper_write_and_direct_delete(cluster3):
    replay = Replay(cluster3)
    replay.run("hyper_create")
    vid = 0x76EF66
    replay.run("hyper_write", synth=hyper_root_rewrite([(2, vid)]))
    assert cluster3.vdi("probe-hv").entries == {2: vid}
    c = Client(cluster3.port)
    for idx in (0, 10):
        assert c.create(w.data_oid(vid, idx), b"more") == 0
    header = c.read(w.inode_oid(vid), w.INODE_HEADER_SIZE)[1]
    root = w.BTREE_HEADER.pack(w.BTREE_MAGIC, 1, 3) + b"".join(
        w.BTREE_LEAF_ENTRY.pack(i, vid) for i in (0, 2, 10)
    )
    assert c.write(w.inode_oid(vid), header + root) == 0
    replay.run("hyper_delete_direct")
    assert cluster3.object_ids() == set()
    c.close()
    replay.close()


def test_replay_direct_errors(cluster3):
    c = Client(cluster3.port)
    assert c.new_vdi("probe-x", MIB).vdi.vdi_id == 0x7F4944
    c.close()
    replay = Replay(cluster3)
    replay.run("direct_errors")
    replay.run("direct_lock")
    replay.run("direct_discovery")
    replay.close()


@pytest.mark.parametrize("reorder", [False, True])
def test_replay_direct_pipeline(cluster3, reorder):
    # recreate 'base' with objects 0x14..0x16; 0x16 holds the bytes the
    # captured READ of id 4 returned
    msgs = load_vector("direct_pipeline")
    expected_read = next(m.payload for m in msgs if m.direction == "S>C" and m.length == 512)
    c = Client(cluster3.port)
    vid = c.new_vdi("base", 64 * MIB).vdi.vdi_id
    assert vid == 0x54C278
    for idx in (0x14, 0x15):
        c.put_object(vid, idx, os.urandom(OBJ))
    c.put_object(vid, 0x16, expected_read)
    c.close()
    cluster3.set_reorder(reorder)
    replay = Replay(cluster3)
    replay.run("direct_pipeline")
    if reorder:
        assert replay.reply_ids == [[5, 4, 3, 2, 1]]
    replay.close()
