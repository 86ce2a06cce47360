"""FakeSheep request handlers: one parsed request in, one Reply out.

This layer checks what a gateway sheep checks (proto_ver, data_length,
payload rules), records "hazards" (requests that would crash or corrupt a real
sheep, docs/PROTOCOL.md section 13) and calls the Store. Sockets live in
fakesheep.py.
"""

from __future__ import annotations

import struct
import threading
from typing import Callable, Dict, List, NamedTuple, Optional, Protocol, Sequence, Tuple

from . import wire as w
from ._store import Store


class Reply(NamedTuple):
    result: int
    args: Optional[w.ResponseArgs] = None
    data: Sequence[w.Buffer] = ()  # buffers sent after the header, in order
    data_length: int = 0


class Cluster(Protocol):
    """What the handlers need to know about the running FakeSheep."""

    epoch: int
    ctime: int
    use_lock: bool

    def node_records(self) -> List[w.NodeRecord]: ...
    def node_id(self, node: int) -> bytes: ...
    def record_hazard(self, description: str) -> None: ...


_zero_block = bytes(1 << 20)


def zeros(length: int) -> memoryview:
    """A read-only run of zero bytes, shared so padding costs no allocation."""
    global _zero_block
    if length > len(_zero_block):
        _zero_block = bytes(max(length, 2 * len(_zero_block)))
    return memoryview(_zero_block)[:length]


def _error(result: int) -> Reply:
    return Reply(result)


_INVALID = Reply(w.RES_INVALID_PARMS)

# one request handler: the header and its request data
Handler = Callable[[w.RequestHeader, bytearray], Reply]

# The ops whose request data travels through the cluster driver: sheep
# asserts (aborts) when it exceeds CLUSTER_OP_MAX_DATA (docs/PROTOCOL.md
# section 12). GET_VDI_INFO and GET_VDI_ATTR pass only their reply on.
_CLUSTER_OPS = frozenset({w.OP_NEW_VDI, w.OP_DEL_VDI, w.OP_LOCK_VDI, w.OP_RELEASE_VDI})

# FakeSheep's per-node disk size (STAT_SHEEP, node records)
NODE_SPACE = 64 << 30


def describe(req: w.RequestHeader) -> str:
    name = w.OPCODE_NAMES.get(req.opcode, f"0x{req.opcode:02x}")
    text = f"{name} id={req.id} flags=0x{req.flags:x} dlen={req.data_length}"
    if req.opcode in w.OBJ_OPCODES:
        a = req.obj
        text += f" oid={a.oid:016x} offset={a.offset}"
    return text


class Handlers:
    def __init__(self, store: Store, cluster: Cluster):
        self.store = store
        self.cluster = cluster
        self._table: Dict[int, Handler] = {
            w.OP_CREATE_AND_WRITE_OBJ: self.create_and_write_obj,
            w.OP_READ_OBJ: self.read_obj,
            w.OP_WRITE_OBJ: self.write_obj,
            w.OP_REMOVE_OBJ: self.remove_obj,
            w.OP_DISCARD_OBJ: self.discard_obj,
            w.OP_NEW_VDI: self.new_vdi,
            w.OP_LOCK_VDI: self.lock_vdi,
            w.OP_RELEASE_VDI: self.release_vdi,
            w.OP_GET_VDI_INFO: self.get_vdi_info,
            w.OP_READ_VDIS: self.read_vdis,
            w.OP_FLUSH_VDI: lambda req, data: _INVALID,  # obsolete in 1.0
            w.OP_DEL_VDI: self.del_vdi,
            w.OP_GET_CLUSTER_DEFAULT: self.get_cluster_default,
            w.OP_GET_NODE_LIST: self.get_node_list,
            w.OP_STAT_SHEEP: self.stat_sheep,
            w.OP_STAT_CLUSTER: self.stat_cluster,
            w.OP_CLUSTER_INFO: self.cluster_info,
            w.OP_READ_DEL_VDIS: self.read_del_vdis,
            w.OP_GET_VDI_ATTR: self.get_vdi_attr,
            w.OP_GET_VDI_COPIES: self.get_vdi_copies,
            w.OP_GET_OBJ_LIST: self.get_obj_list,
        }
        # Not implemented, answered INVALID_PARMS like unknown opcodes:
        # peer and admin ops.
        self._node = threading.local()  # which node received the request

    def handle(self, req: w.RequestHeader, payload: Optional[bytearray], node: int = 0) -> Reply:
        """Execute one request that node received. payload is None when
        FLAG_WRITE was not set."""
        self._node.index = node
        if req.opcode < w.INTERNAL_OPCODE_MIN:
            if req.proto_ver > w.PROTO_VER:
                return _error(w.RES_VER_MISMATCH)
        elif req.proto_ver != w.INTERNAL_PROTO_VER:
            return _error(w.RES_VER_MISMATCH)
        handler = self._table.get(req.opcode)
        if handler is None:
            return _INVALID
        if req.opcode in _CLUSTER_OPS and req.data_length > w.CLUSTER_OP_MAX_DATA:
            return self._hazard(req, "cluster-op data_length above 131072-96 (sheep asserts)")
        if req.opcode in w.OBJ_OPCODES or req.opcode == w.OP_NEW_VDI:
            # a NEW_VDI without copies takes the cluster's policy instead
            policy = (
                req.obj.copy_policy
                if req.opcode in w.OBJ_OPCODES
                else req.vdi.copy_policy
                if req.vdi.copies
                else 0
            )
            if w.is_fatal_policy(policy):
                return self._hazard(
                    req, f"copy_policy 0x{policy:02x} has a zero parity nibble (sheep panics)"
                )
        # Without FLAG_WRITE sheep runs the op on an unfilled buffer of
        # data_length bytes; FakeSheep uses zeros for it.
        data = (
            payload
            if payload is not None
            else bytearray(req.data_length if req.opcode in _CONSUMES_DATA else 0)
        )
        return handler(req, data)

    def _hazard(self, req: w.RequestHeader, why: str) -> Reply:
        self.cluster.record_hazard(f"{describe(req)}: {why}")
        return _INVALID

    # ------------------------------------------------------------------
    # object ops

    def _check_obj_write(self, req: w.RequestHeader, data: bytearray) -> Optional[Reply]:
        a = req.obj
        end = a.offset + len(data)
        if end > self.store.object_size(a.oid):
            if req.flags & w.FLAG_COW and a.cow_oid:
                return self._hazard(
                    req, "COW create past the object end (out-of-bounds copy in the gateway)"
                )
            # FakeSheep choice: a real plain store would silently grow the file
            return self._hazard(req, "write past the object end")
        if (
            w.is_inode(a.oid)
            and len(data)
            and self.store.is_hyper(w.vid_of(a.oid))
            and w.INDEX_OFFSET <= a.offset
            and end <= w.GREF_OFFSET
        ):
            return self._hazard(
                req,
                "index-range write to a hyper volume inode "
                "(sheep would refcount B-tree words as vids)",
            )
        return None

    def create_and_write_obj(self, req: w.RequestHeader, data: bytearray) -> Reply:
        bad = self._check_obj_write(req, data)
        if bad:
            return bad
        a = req.obj
        cow_oid = a.cow_oid if req.flags & w.FLAG_COW else 0
        return _error(
            self.store.create_and_write(
                a.oid, a.offset, data, cow_oid=cow_oid, copy_policy=a.copy_policy
            )
        )

    def write_obj(self, req: w.RequestHeader, data: bytearray) -> Reply:
        bad = self._check_obj_write(req, data)
        if bad:
            return bad
        a = req.obj
        return _error(self.store.write(a.oid, a.offset, data, copy_policy=a.copy_policy))

    def read_obj(self, req: w.RequestHeader, _data: bytearray) -> Reply:
        a = req.obj
        result, stored, pad = self.store.read(a.oid, a.offset, req.data_length)
        if result:
            return _error(result)
        # the reply is as long as asked, zero-padded past the object end
        parts = (stored, zeros(pad)) if pad else (stored,)
        return Reply(w.RES_SUCCESS, None, parts, req.data_length)

    def remove_obj(self, req: w.RequestHeader, _data: bytearray) -> Reply:
        return _error(self.store.remove(req.obj.oid))

    def discard_obj(self, req: w.RequestHeader, _data: bytearray) -> Reply:
        return _error(self.store.discard(req.obj.oid))

    # ------------------------------------------------------------------
    # VDI ops

    @staticmethod
    def _name_and_tag(data: bytearray) -> Tuple[Optional[bytes], Optional[bytes]]:
        name = w.cstr(data[: w.NAME_SIZE])
        tag = w.cstr(data[w.NAME_SIZE :]) if len(data) > w.NAME_SIZE else b""
        return name, tag

    def new_vdi(self, req: w.RequestHeader, data: bytearray) -> Reply:
        a = req.vdi
        if req.data_length != w.NAME_SIZE:
            return _INVALID  # 512 gives 0x05 [exp]
        name = w.cstr(data)
        if not name:
            return _INVALID  # FakeSheep choice: empty or unterminated name
        result, info = self.store.new_vdi(name, a)
        return Reply(result, info)

    def get_vdi_info(self, req: w.RequestHeader, data: bytearray) -> Reply:
        """GET_VDI_INFO, and the lookup LOCK_VDI does."""
        if req.data_length not in (w.NAME_SIZE, w.NAME_SIZE + w.TAG_SIZE):
            return _INVALID
        name, tag = self._name_and_tag(data)
        result, hdr = self.store.lookup(name, tag, req.vdi.snapid)
        if result:
            return _error(result)
        assert hdr is not None  # success always names the inode
        return Reply(w.RES_SUCCESS, w.VdiResult(hdr.vdi_id, 0, hdr.nr_copies, hdr.block_size_shift))

    def _receiver(self) -> bytes:
        return self.cluster.node_id(getattr(self._node, "index", 0))

    def lock_vdi(self, req: w.RequestHeader, data: bytearray) -> Reply:
        """A lookup; with the cluster formatted -l, the lock of the receiving
        sheep too (section 6.11)."""
        reply = self.get_vdi_info(req, data)
        if reply.result or not self.cluster.use_lock:
            return reply
        assert reply.args is not None
        vid = reply.args.vdi_id  # type: ignore[union-attr]
        if not self.store.lock_vdi(vid, self._receiver(), req.vdi.type):
            return _error(w.RES_VDI_LOCKED)
        return reply

    def release_vdi(self, req: w.RequestHeader, _data: bytearray) -> Reply:
        if self.cluster.use_lock:
            self.store.unlock_vdi(req.vdi.base_vdi_id, self._receiver(), req.vdi.type)
        return Reply(w.RES_SUCCESS)

    def get_vdi_copies(self, req: w.RequestHeader, _data: bytearray) -> Reply:
        states = self.store.vdi_states()
        size = len(states) * w.VDI_STATE_SIZE
        if req.data_length < size:
            return _error(w.RES_BUFFER_SMALL)
        return Reply(w.RES_SUCCESS, None, (b"".join(s.pack() for s in states),), size)

    def get_obj_list(self, req: w.RequestHeader, _data: bytearray) -> Reply:
        """The objects the receiving sheep stores. FakeSheep keeps one store
        for all its nodes, so each lists every object: the union a client
        gathers from all of them is what a real cluster's would be."""
        oids = sorted(self.store.all_object_ids())
        size = 8 * len(oids)
        if req.data_length < size:
            return _error(w.RES_BUFFER_SMALL)
        return Reply(w.RES_SUCCESS, None, (struct.pack(f"<{len(oids)}Q", *oids),), size)

    def del_vdi(self, req: w.RequestHeader, data: bytearray) -> Reply:
        if req.data_length not in (w.NAME_SIZE, w.NAME_SIZE + w.TAG_SIZE):
            return _INVALID
        name, tag = self._name_and_tag(data)
        result, vid = self.store.del_vdi(name, tag, req.vdi.snapid)
        if result:
            return _error(result)
        assert vid is not None  # success always names the vid
        return Reply(w.RES_SUCCESS, w.VdiResult(vid))  # copies and bss are 0

    def get_vdi_attr(self, req: w.RequestHeader, data: bytearray) -> Reply:
        # sheep reads the record's fields at fixed offsets and writes
        # data_length bytes into a fixed-size object: anything but a whole
        # record reads or writes past a buffer
        if req.data_length != w.ATTR_OBJ_SIZE:
            return self._hazard(
                req,
                f"GET_VDI_ATTR with {req.data_length} bytes, not the "
                f"{w.ATTR_OBJ_SIZE}-byte attribute record",
            )
        if (
            w.cstr(data[: w.NAME_SIZE]) is None
            or w.cstr(data[w.NAME_SIZE : 2 * w.NAME_SIZE]) is None
            or w.cstr(data[w.ATTR_KEY_OFFSET : w.ATTR_VALUE_OFFSET]) is None
        ):
            return self._hazard(
                req,
                "GET_VDI_ATTR name, tag or key without a NUL (sheep runs strcmp past the field)",
            )
        value_len = int.from_bytes(data[w.ATTR_VALUE_LEN_OFFSET : w.ATTR_KEY_OFFSET], "little")
        if value_len > w.ATTR_VALUE_MAX:
            # FakeSheep choice: sheep stores it; dog would then print past the value
            return self._hazard(
                req,
                f"GET_VDI_ATTR value_len {value_len} over the {w.ATTR_VALUE_MAX}-byte value field",
            )
        result, args = self.store.vdi_attr(
            data,
            req.vdi.snapid,
            create=bool(req.flags & w.FLAG_ATTR_CREAT),
            excl=bool(req.flags & w.FLAG_ATTR_EXCL),
            delete=bool(req.flags & w.FLAG_ATTR_DEL),
        )
        return Reply(result, args)

    def _bitmap(self, req: w.RequestHeader, deleted: bool) -> Reply:
        if req.data_length != w.VDI_BITMAP_SIZE:
            return _INVALID
        return Reply(w.RES_SUCCESS, None, (self.store.bitmap(deleted),), w.VDI_BITMAP_SIZE)

    def read_vdis(self, req: w.RequestHeader, _data: bytearray) -> Reply:
        return self._bitmap(req, deleted=False)

    def read_del_vdis(self, req: w.RequestHeader, _data: bytearray) -> Reply:
        return self._bitmap(req, deleted=True)

    # ------------------------------------------------------------------
    # cluster ops

    def get_cluster_default(self, req: w.RequestHeader, _data: bytearray) -> Reply:
        s = self.store
        return Reply(
            w.RES_SUCCESS, w.ClusterDefaults(s.default_copies, s.default_copy_policy, s.default_bss)
        )

    def get_node_list(self, req: w.RequestHeader, _data: bytearray) -> Reply:
        records = self.cluster.node_records()
        size = len(records) * w.NODE_RECORD_SIZE
        if req.data_length < size:
            return self._hazard(req, f"buffer below nr_nodes*80 = {size} (heap overflow in sheep)")
        payload = b"".join(r.pack() for r in records)
        return Reply(w.RES_SUCCESS, w.NodeListResult(len(records)), (payload,), size)

    def stat_sheep(self, req: w.RequestHeader, _data: bytearray) -> Reply:
        used = self.store.stored_bytes()
        return Reply(w.RES_SUCCESS, w.SheepStat(NODE_SPACE, max(NODE_SPACE - used, 0)))

    def stat_cluster(self, req: w.RequestHeader, _data: bytearray) -> Reply:
        """One epoch-log record for the current epoch.

        Only nodes_nr=0 was observed [exp]; with nodes_nr > 0 FakeSheep
        appends up to nodes_nr node records (a plausible reading), and
        answers BUFFER_SMALL when the record does not fit.
        """
        want = req.cluster.nodes_nr
        records = self.cluster.node_records()[:want]
        size = w.STAT_CLUSTER_RECORD_SIZE + want * w.NODE_RECORD_SIZE
        if req.data_length < size:
            return _error(w.RES_BUFFER_SMALL)
        s = self.store
        head = w.StatCluster(
            self.cluster.ctime,
            0,
            self.cluster.epoch,
            len(records),
            0,
            s.default_copies,
            s.default_copy_policy,
            w.CLUSTER_FLAG_AUTO_VNODES | (w.CLUSTER_FLAG_USE_LOCK if self.cluster.use_lock else 0),
            b"plain",
        ).pack()
        body = b"".join(r.pack() for r in records).ljust(want * w.NODE_RECORD_SIZE, b"\0")
        return Reply(w.RES_SUCCESS, None, (head + body,), size)

    def cluster_info(self, req: w.RequestHeader, _data: bytearray) -> Reply:
        # FakeSheep choice: a shorter buffer gets INVALID_PARMS
        if req.data_length < w.CLUSTER_INFO_SIZE:
            return _INVALID
        records = self.cluster.node_records()
        s = self.store
        head = w.ClusterInfo(
            w.INTERNAL_PROTO_VER,
            0,
            len(records),
            self.cluster.epoch,
            self.cluster.ctime,
            w.CLUSTER_FLAG_AUTO_VNODES,
            s.default_copies,
            s.default_copy_policy,
            w.CLUSTER_STATUS_OK,
            s.default_bss,
            b"plain",
        ).pack()
        nodes = b"".join(r.pack() for r in records)
        pad = w.CLUSTER_INFO_SIZE - len(head) - len(nodes)
        return Reply(w.RES_SUCCESS, None, (head, nodes, zeros(pad)), w.CLUSTER_INFO_SIZE)


# ops that read their request data (the rest ignore it)
_CONSUMES_DATA = frozenset(
    {
        w.OP_CREATE_AND_WRITE_OBJ,
        w.OP_WRITE_OBJ,
        w.OP_NEW_VDI,
        w.OP_LOCK_VDI,
        w.OP_GET_VDI_INFO,
        w.OP_DEL_VDI,
        w.OP_GET_VDI_ATTR,
    }
)
