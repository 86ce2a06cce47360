"""Pure-Python codec for the Sheepdog 1.0 client wire protocol.

Everything here is written from the facts in docs/PROTOCOL.md (section
numbers below refer to it). All integers are little-endian. This module does
no I/O, so FakeSheep and the tests can share it without touching the C
extension.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any, List, NamedTuple, Optional, Tuple, Union

# what the decoders accept: a reply or request buffer in any of its forms
Buffer = Union[bytes, bytearray, memoryview]

# --------------------------------------------------------------------------
# Protocol versions (section 2.1)

PROTO_VER = 0x02  # opcodes < 0x80; sheep accepts 0, 1 and 2
INTERNAL_PROTO_VER = 0x0A  # opcodes >= 0x80 must carry exactly this
INTERNAL_OPCODE_MIN = 0x80

# --------------------------------------------------------------------------
# Opcodes (section 3)

OP_CREATE_AND_WRITE_OBJ = 0x01
OP_READ_OBJ = 0x02
OP_WRITE_OBJ = 0x03
OP_REMOVE_OBJ = 0x04
OP_DISCARD_OBJ = 0x05
OP_NEW_VDI = 0x11
OP_LOCK_VDI = 0x12
OP_RELEASE_VDI = 0x13
OP_GET_VDI_INFO = 0x14
OP_READ_VDIS = 0x15
OP_FLUSH_VDI = 0x16
OP_DEL_VDI = 0x17
OP_GET_CLUSTER_DEFAULT = 0x18
OP_GET_NODE_LIST = 0x82
OP_STAT_SHEEP = 0x86
OP_STAT_CLUSTER = 0x87
OP_GET_VDI_ATTR = 0x89
OP_GET_OBJ_LIST = 0xA1
OP_GET_VDI_COPIES = 0xAB
OP_CLUSTER_INFO = 0xBE
OP_READ_DEL_VDIS = 0xC9

OPCODE_NAMES = {
    value: name[3:] for name, value in list(globals().items()) if name.startswith("OP_")
}

OBJ_OPCODES = frozenset(
    {
        OP_CREATE_AND_WRITE_OBJ,
        OP_READ_OBJ,
        OP_WRITE_OBJ,
        OP_REMOVE_OBJ,
        OP_DISCARD_OBJ,
    }
)
VDI_OPCODES = frozenset(
    {
        OP_NEW_VDI,
        OP_LOCK_VDI,
        OP_RELEASE_VDI,
        OP_GET_VDI_INFO,
        OP_DEL_VDI,
        OP_GET_VDI_ATTR,
    }
)

# --------------------------------------------------------------------------
# Request flags (section 2.3)

FLAG_WRITE = 0x0001
FLAG_COW = 0x0002
FLAG_CACHE = 0x0004
FLAG_DIRECT = 0x0008
FLAG_PIGGYBACK = 0x0010
FLAG_TGT = 0x0020
FLAG_FWD = 0x0040
# GET_VDI_ATTR only: write the attribute, refuse an existing one, blank it
FLAG_ATTR_CREAT = 0x0100
FLAG_ATTR_EXCL = 0x0200
FLAG_ATTR_DEL = 0x0400

# --------------------------------------------------------------------------
# Result codes (section 10)

RES_SUCCESS = 0x00
RES_UNKNOWN = 0x01
RES_NO_OBJ = 0x02
RES_EIO = 0x03
RES_VDI_EXIST = 0x04
RES_INVALID_PARMS = 0x05
RES_SYSTEM_ERROR = 0x06
RES_VDI_LOCKED = 0x07
RES_NO_VDI = 0x08
RES_NO_BASE_VDI = 0x09
RES_VDI_READ = 0x0A
RES_VDI_WRITE = 0x0B
RES_BASE_VDI_READ = 0x0C
RES_BASE_VDI_WRITE = 0x0D
RES_NO_TAG = 0x0E
RES_STARTUP = 0x0F
RES_VDI_NOT_LOCKED = 0x10
RES_SHUTDOWN = 0x11
RES_NO_MEM = 0x12
RES_FULL_VDI = 0x13
RES_VER_MISMATCH = 0x14
RES_NO_SPACE = 0x15
RES_WAIT_FOR_FORMAT = 0x16
RES_WAIT_FOR_JOIN = 0x17
RES_JOIN_FAILED = 0x18
RES_HALT = 0x19
RES_READONLY = 0x1A
RES_INODE_INVALIDATED = 0x1D
RES_OLD_NODE_VER = 0x81
RES_NEW_NODE_VER = 0x82
RES_NOT_FORMATTED = 0x83
RES_INVALID_CTIME = 0x84
RES_INVALID_EPOCH = 0x85
RES_NETWORK_ERROR = 0x86
RES_NO_CACHE = 0x87
RES_BUFFER_SMALL = 0x88
RES_FORCE_RECOVER = 0x89
RES_NO_STORE = 0x8A
RES_NO_SUPPORT = 0x8B
RES_NODE_IN_RECOVERY = 0x8C
RES_KILLED = 0x8D
RES_OID_EXIST = 0x8E
RES_AGAIN = 0x8F
RES_STALE_OBJ = 0x90
RES_CLUSTER_ERROR = 0x91
RES_VDI_NOT_EMPTY = 0x92
RES_NOT_FOUND = 0x93
RES_INCOMPLETE = 0x94
RES_COLLECTING_CINFO = 0x95
RES_GATEWAY_MODE = 0x97
RES_INVALID_VNODES_STRATEGY = 0x98
RES_NO_CHECKPOINT_ENTRY = 0x99

RESULT_NAMES = {
    value: name[4:] for name, value in list(globals().items()) if name.startswith("RES_")
}

# --------------------------------------------------------------------------
# Sizes and limits (sections 4, 5, 7, 8, 12)

HEADER_SIZE = 48
NAME_SIZE = 256
TAG_SIZE = 256
DEFAULT_BLOCK_SIZE_SHIFT = 22
MAX_OBJECTS_FLAT = 2**20
INODE_HEADER_SIZE = 4664  # SD_INODE_HEADER_SIZE
INDEX_OFFSET = INODE_HEADER_SIZE  # data_vdi_id[2^20] u32
INDEX_SIZE = 4 * MAX_OBJECTS_FLAT
GREF_OFFSET = INDEX_OFFSET + INDEX_SIZE  # 4,198,968
GREF_SIZE = 8 * MAX_OBJECTS_FLAT
INODE_SIZE = GREF_OFFSET + GREF_SIZE  # 12,587,576
ATTR_OBJ_SIZE = 66320
# the attribute record (struct sheepdog_vdi_attr): name[256] tag[256]
# ctime u64 snap_id u32 value_len u32 key[256] value[65536]
ATTR_KEY_SIZE = 256
ATTR_VALUE_MAX = 65536
ATTR_CTIME_OFFSET = 512
ATTR_SNAP_ID_OFFSET = 520
ATTR_VALUE_LEN_OFFSET = 524
ATTR_KEY_OFFSET = 528
ATTR_VALUE_OFFSET = 784
assert ATTR_VALUE_OFFSET + ATTR_VALUE_MAX == ATTR_OBJ_SIZE
BTREE_NODE_SIZE = 4 * 1024 * 1024
NODE_RECORD_SIZE = 80
MAX_NODES = 6144
NODE_LIST_BUFFER_SIZE = MAX_NODES * NODE_RECORD_SIZE  # 491,520 as dog asks
CLUSTER_INFO_SIZE = 491568
CLUSTER_INFO_NODES_OFFSET = 48
STAT_CLUSTER_RECORD_SIZE = 48
VID_BITS = 24
VID_MASK = (1 << VID_BITS) - 1
VDI_BITMAP_SIZE = (1 << VID_BITS) // 8  # 2,097,152
# sheep asserts (aborts) when a cluster op carries more than this (section 12)
CLUSTER_OP_MAX_DATA = 131072 - 96

assert INODE_SIZE == 12587576

# B-tree ("hyper volume") root header (section 5.2)
BTREE_MAGIC = 0x6274
BTREE_HEADER = struct.Struct("<HHI")  # magic, depth, entries
BTREE_LEAF_ENTRY = struct.Struct("<II")  # idx, vdi_id
BTREE_INDEX_ENTRY = struct.Struct("<I4xQ")  # max_idx, pad, node oid
EMPTY_BTREE_ROOT = BTREE_HEADER.pack(BTREE_MAGIC, 1, 0)

STORE_POLICY_FLAT = 0
STORE_POLICY_HYPER = 1

# Cluster flags and status (section 7)
CLUSTER_FLAG_STRICT = 0x01
CLUSTER_FLAG_DISKMODE = 0x02
CLUSTER_FLAG_AUTO_VNODES = 0x04
CLUSTER_FLAG_USE_LOCK = 0x08
CLUSTER_FLAG_RECYCLE_VID = 0x10
CLUSTER_FLAG_AVOID_DISKFULL = 0x20
CLUSTER_STATUS_OK = 1
CLUSTER_STATUS_WAIT = 2
CLUSTER_STATUS_SHUTDOWN = 3
CLUSTER_STATUS_KILLED = 4

# --------------------------------------------------------------------------
# Object ids (section 4.1)

VDI_BIT = 1 << 63
VMSTATE_BIT = 1 << 62
VDI_ATTR_BIT = 1 << 61
VDI_BTREE_BIT = 1 << 60
LEDGER_BIT = 1 << 59
_TYPE_MASK = 0xFF << 56


def data_oid(vid: int, idx: int) -> int:
    return ((vid & VID_MASK) << 32) | (idx & 0xFFFFFFFF)


def inode_oid(vid: int) -> int:
    return VDI_BIT | ((vid & VID_MASK) << 32)


def btree_oid(vid: int, counter: int) -> int:
    return VDI_BTREE_BIT | data_oid(vid, counter)


def attr_oid(vid: int, attr_id: int) -> int:
    return VDI_ATTR_BIT | data_oid(vid, attr_id)


def vmstate_oid(vid: int, idx: int) -> int:
    return VMSTATE_BIT | data_oid(vid, idx)


def ledger_oid(oid: int) -> int:
    return LEDGER_BIT | oid


def vid_of(oid: int) -> int:
    return (oid >> 32) & VID_MASK


def idx_of(oid: int) -> int:
    return oid & 0xFFFFFFFF


def is_inode(oid: int) -> bool:
    return bool(oid & VDI_BIT)


def is_data(oid: int) -> bool:
    """True for plain data objects: none of the type bits 56..63 set."""
    return not oid & _TYPE_MASK


def is_btree(oid: int) -> bool:
    return (oid & _TYPE_MASK) == VDI_BTREE_BIT


# --------------------------------------------------------------------------
# Names and vids (section 4.4)

FNV1A_64_OFFSET = 0xCBF29CE484222325
FNV1A_64_PRIME = 0x100000001B3


def fnv1a_64(data: bytes) -> int:
    h = FNV1A_64_OFFSET
    for b in data:
        h = ((h ^ b) * FNV1A_64_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def _name_bytes(name: Union[str, bytes]) -> bytes:
    return name.encode() if isinstance(name, str) else bytes(name)


def fnv1a_vid(name: Union[str, bytes]) -> int:
    """The vid sheep tries first for `name` (the slot may already be taken)."""
    return fnv1a_64(_name_bytes(name)) & VID_MASK


def attr_record(
    name: Union[str, bytes],
    key: Union[str, bytes],
    value: bytes = b"",
    *,
    tag: Union[str, bytes] = b"",
    snap_id: int = 0,
) -> bytes:
    """The ATTR_OBJ_SIZE-byte record GET_VDI_ATTR carries (ctime left 0:
    sheep fills it in)."""
    if len(value) > ATTR_VALUE_MAX:
        raise ValueError(f"attribute value of {len(value)} bytes is over {ATTR_VALUE_MAX}")
    head = (
        pad_name(name)
        + pad_name(tag, TAG_SIZE)
        + struct.pack("<QII", 0, snap_id, len(value))
        + pad_name(key, ATTR_KEY_SIZE)
    )
    return (head + bytes(value)).ljust(ATTR_OBJ_SIZE, b"\0")


def attr_hash(record: Buffer) -> int:
    """The attr_id sheep tries first: FNV-1a-64 over the whole name, tag,
    snap_id and key fields (every byte, NULs and what follows them
    included), cut to 32 bits."""
    fields = (
        bytes(record[:ATTR_CTIME_OFFSET])
        + bytes(record[ATTR_SNAP_ID_OFFSET:ATTR_VALUE_LEN_OFFSET])
        + bytes(record[ATTR_KEY_OFFSET:ATTR_VALUE_OFFSET])
    )
    return fnv1a_64(fields) & 0xFFFFFFFF


def pad_name(name: Union[str, bytes], size: int = NAME_SIZE) -> bytes:
    """NUL-pad a name or tag into its fixed field (at most size-1 bytes)."""
    raw = _name_bytes(name)
    if len(raw) >= size:
        raise ValueError(f"name of {len(raw)} bytes does not fit in {size}")
    return raw.ljust(size, b"\0")


def vdi_payload(name: Union[str, bytes], tag: Optional[Union[str, bytes]] = None) -> bytes:
    """name[256] or name[256]+tag[256], the payload of the VDI lookup ops."""
    payload = pad_name(name)
    if tag is not None:
        payload += pad_name(tag, TAG_SIZE)
    return payload


def cstr(field: Union[bytes, bytearray]) -> Optional[bytes]:
    """The bytes before the first NUL, or None if there is no NUL."""
    end = field.find(b"\0")
    return None if end < 0 else bytes(field[:end])


def bitmap_test(bitmap: Buffer, bit: int) -> bool:
    """Bit v of a vid bitmap lives in byte v>>3, bit v&7 (section 6.3)."""
    return bool(bitmap[bit >> 3] & (1 << (bit & 7)))


# --------------------------------------------------------------------------
# Erasure-code policy byte (section 9)


def ec_policy(data_strips: int, parity_strips: int) -> int:
    if data_strips not in (2, 4, 8, 16) or not 1 <= parity_strips <= 15:
        raise ValueError(f"unsupported EC scheme {data_strips}:{parity_strips}")
    return ((data_strips // 2) << 4) | parity_strips


def ec_split(policy: int) -> Tuple[int, int]:
    """(d, p) of an EC policy byte; (0, 0) for replication."""
    return ((policy >> 4) * 2, policy & 0x0F)


def is_fatal_policy(policy: int) -> bool:
    """sheep panics on a non-zero policy whose parity nibble is 0 (docs/PROTOCOL.md §9)."""
    return policy != 0 and policy & 0x0F == 0


# --------------------------------------------------------------------------
# Request header (section 2.1 and 2.2)

_REQ_COMMON = struct.Struct("<BBHIII")  # 16 bytes
_REQ_OBJ = struct.Struct("<QQBBBBII4x")  # oid cow copies policy ec rsv tgt off
_REQ_VDI = struct.Struct("<QIBBBBII8x")  # size base copies pol store bss snap type
_REQ_CLUSTER = struct.Struct("<24xI4x")  # nodes_nr at header offset 40
_UNION_ZERO = bytes(32)
assert _REQ_OBJ.size == _REQ_VDI.size == _REQ_CLUSTER.size == 32


class ObjArgs(NamedTuple):
    """`obj` union: object ops (0x01..0x05)."""

    oid: int = 0
    cow_oid: int = 0
    copies: int = 0
    copy_policy: int = 0
    ec_index: int = 0
    tgt_epoch: int = 0
    offset: int = 0

    def pack(self) -> bytes:
        return _REQ_OBJ.pack(
            self.oid,
            self.cow_oid,
            self.copies,
            self.copy_policy,
            self.ec_index,
            0,
            self.tgt_epoch,
            self.offset,
        )

    @classmethod
    def unpack(cls, raw: bytes) -> ObjArgs:
        oid, cow, copies, policy, ec_index, _rsv, tgt, off = _REQ_OBJ.unpack(raw)
        return cls(oid, cow, copies, policy, ec_index, tgt, off)


class VdiArgs(NamedTuple):
    """`vdi` union: NEW/LOCK/RELEASE/GET_VDI_INFO/DEL_VDI/GET_VDI_ATTR."""

    vdi_size: int = 0
    base_vdi_id: int = 0
    copies: int = 0
    copy_policy: int = 0
    store_policy: int = 0
    block_size_shift: int = 0
    snapid: int = 0
    type: int = 0

    def pack(self) -> bytes:
        return _REQ_VDI.pack(*self)

    @classmethod
    def unpack(cls, raw: bytes) -> VdiArgs:
        return cls(*_REQ_VDI.unpack(raw))


class ClusterArgs(NamedTuple):
    """`cluster` union: only STAT_CLUSTER's nodes_nr matters to a client."""

    nodes_nr: int = 0

    def pack(self) -> bytes:
        return _REQ_CLUSTER.pack(self.nodes_nr)

    @classmethod
    def unpack(cls, raw: bytes) -> ClusterArgs:
        return cls(*_REQ_CLUSTER.unpack(raw))


RequestArgs = Union[ObjArgs, VdiArgs, ClusterArgs]


def default_proto_ver(opcode: int) -> int:
    return INTERNAL_PROTO_VER if opcode >= INTERNAL_OPCODE_MIN else PROTO_VER


@dataclass(frozen=True)
class RequestHeader:
    opcode: int
    proto_ver: int = PROTO_VER
    flags: int = 0
    epoch: int = 0
    id: int = 0
    data_length: int = 0
    args: bytes = _UNION_ZERO  # the raw 32-byte union

    def pack(self) -> bytes:
        return (
            _REQ_COMMON.pack(
                self.proto_ver, self.opcode, self.flags, self.epoch, self.id, self.data_length
            )
            + self.args
        )

    @classmethod
    def unpack(cls, buf: Buffer) -> RequestHeader:
        if len(buf) < HEADER_SIZE:
            raise ValueError(f"request header needs {HEADER_SIZE} bytes")
        pv, op, flags, epoch, rid, dlen = _REQ_COMMON.unpack_from(buf)
        return cls(op, pv, flags, epoch, rid, dlen, bytes(buf[16:HEADER_SIZE]))

    @property
    def obj(self) -> ObjArgs:
        return ObjArgs.unpack(self.args)

    @property
    def vdi(self) -> VdiArgs:
        return VdiArgs.unpack(self.args)

    @property
    def cluster(self) -> ClusterArgs:
        return ClusterArgs.unpack(self.args)

    @property
    def has_payload(self) -> bool:
        """sheep reads data_length payload bytes only when WRITE is set."""
        return bool(self.flags & FLAG_WRITE)


def make_request(
    opcode: int,
    args: Optional[RequestArgs] = None,
    *,
    flags: int = 0,
    id: int = 0,
    data_length: int = 0,
    epoch: int = 0,
    proto_ver: Optional[int] = None,
) -> RequestHeader:
    """Build a header; proto_ver defaults to 0x02 or 0x0A by opcode."""
    if proto_ver is None:
        proto_ver = default_proto_ver(opcode)
    raw = args.pack() if args is not None else _UNION_ZERO
    return RequestHeader(opcode, proto_ver, flags, epoch, id, data_length, raw)


def pack_request(opcode: int, args: Optional[RequestArgs] = None, **kw: Any) -> bytes:
    return make_request(opcode, args, **kw).pack()


# --------------------------------------------------------------------------
# Response header (section 2.4)

_RSP_COMMON = struct.Struct("<BBHIIII")  # 20 bytes, result at 16
_RSP_VDI = struct.Struct("<4xIIBB14x")  # vdi_id@24 attr@28 copies@32 bss@33
_RSP_CLUSTER_DEFAULT = struct.Struct("<BBB25x")  # copies@20 policy@21 bss@22
_RSP_NODE_LIST = struct.Struct("<I24x")  # nr_nodes@20
_RSP_OBJ = struct.Struct("<B3xQ16x")  # copies@20 offset@24
_RSP_STAT_SHEEP = struct.Struct("<12xQQ")  # store_size@32 store_free@40
_RSP_UNION_ZERO = bytes(28)
assert _RSP_VDI.size == _RSP_CLUSTER_DEFAULT.size == _RSP_NODE_LIST.size == 28
assert _RSP_OBJ.size == _RSP_STAT_SHEEP.size == 28


class VdiResult(NamedTuple):
    vdi_id: int = 0
    attr_id: int = 0
    copies: int = 0
    block_size_shift: int = 0

    def pack(self) -> bytes:
        return _RSP_VDI.pack(*self)

    @classmethod
    def unpack(cls, raw: bytes) -> VdiResult:
        return cls(*_RSP_VDI.unpack(raw))


class ClusterDefaults(NamedTuple):
    nr_copies: int = 0
    copy_policy: int = 0
    block_size_shift: int = 0

    def pack(self) -> bytes:
        return _RSP_CLUSTER_DEFAULT.pack(*self)

    @classmethod
    def unpack(cls, raw: bytes) -> ClusterDefaults:
        return cls(*_RSP_CLUSTER_DEFAULT.unpack(raw))


class NodeListResult(NamedTuple):
    nr_nodes: int = 0

    def pack(self) -> bytes:
        return _RSP_NODE_LIST.pack(*self)

    @classmethod
    def unpack(cls, raw: bytes) -> NodeListResult:
        return cls(*_RSP_NODE_LIST.unpack(raw))


class ObjResult(NamedTuple):
    copies: int = 0
    offset: int = 0

    def pack(self) -> bytes:
        return _RSP_OBJ.pack(*self)

    @classmethod
    def unpack(cls, raw: bytes) -> ObjResult:
        return cls(*_RSP_OBJ.unpack(raw))


class SheepStat(NamedTuple):
    store_size: int = 0
    store_free: int = 0

    def pack(self) -> bytes:
        return _RSP_STAT_SHEEP.pack(*self)

    @classmethod
    def unpack(cls, raw: bytes) -> SheepStat:
        return cls(*_RSP_STAT_SHEEP.unpack(raw))


ResponseArgs = Union[VdiResult, ClusterDefaults, NodeListResult, ObjResult, SheepStat]


@dataclass(frozen=True)
class ResponseHeader:
    opcode: int
    result: int = RES_SUCCESS
    epoch: int = 0
    id: int = 0
    data_length: int = 0
    proto_ver: int = 0  # always 0 from a real sheep
    flags: int = 0
    args: bytes = _RSP_UNION_ZERO  # the raw 28-byte union

    def pack(self) -> bytes:
        return (
            _RSP_COMMON.pack(
                self.proto_ver,
                self.opcode,
                self.flags,
                self.epoch,
                self.id,
                self.data_length,
                self.result,
            )
            + self.args
        )

    @classmethod
    def unpack(cls, buf: Buffer) -> ResponseHeader:
        if len(buf) < HEADER_SIZE:
            raise ValueError(f"response header needs {HEADER_SIZE} bytes")
        pv, op, flags, epoch, rid, dlen, result = _RSP_COMMON.unpack_from(buf)
        return cls(op, result, epoch, rid, dlen, pv, flags, bytes(buf[20:HEADER_SIZE]))

    @property
    def vdi(self) -> VdiResult:
        return VdiResult.unpack(self.args)

    @property
    def cluster_defaults(self) -> ClusterDefaults:
        return ClusterDefaults.unpack(self.args)

    @property
    def node_list(self) -> NodeListResult:
        return NodeListResult.unpack(self.args)

    @property
    def obj(self) -> ObjResult:
        return ObjResult.unpack(self.args)

    @property
    def stat_sheep(self) -> SheepStat:
        return SheepStat.unpack(self.args)


def pack_response(
    opcode: int,
    result: int = RES_SUCCESS,
    *,
    epoch: int = 0,
    id: int = 0,
    data_length: int = 0,
    args: Optional[ResponseArgs] = None,
) -> bytes:
    raw = args.pack() if args is not None else _RSP_UNION_ZERO
    return _RSP_COMMON.pack(0, opcode, 0, epoch, id, data_length, result) + raw


# --------------------------------------------------------------------------
# Node record (section 8)

_NODE = struct.Struct("<24x16sH16sH4xH2xIQ")
assert _NODE.size == NODE_RECORD_SIZE


def _pack_addr(addr: str) -> bytes:
    if not addr:
        return bytes(16)
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return bytes(12) + ip.packed  # not ::ffff-mapped (section 8)
    return ip.packed


def _unpack_addr(raw: bytes) -> str:
    if not any(raw):
        return ""
    if not any(raw[:12]):
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


class NodeRecord(NamedTuple):
    addr: str
    port: int
    nr_vnodes: int = 128
    zone: int = 0
    space: int = 0
    io_addr: str = ""
    io_port: int = 0

    def pack(self) -> bytes:
        # bytes 0..23 are sheep's tree pointers on the wire: we send zeros
        return _NODE.pack(
            _pack_addr(self.addr),
            self.port,
            _pack_addr(self.io_addr),
            self.io_port,
            self.nr_vnodes,
            self.zone,
            self.space,
        )

    @classmethod
    def unpack(cls, raw: bytes) -> NodeRecord:
        addr, port, io_addr, io_port, vnodes, zone, space = _NODE.unpack(
            bytes(raw[:NODE_RECORD_SIZE])
        )
        return cls(_unpack_addr(addr), port, vnodes, zone, space, _unpack_addr(io_addr), io_port)


# --------------------------------------------------------------------------
# VDI state and locks (section 6.11)

LOCK_TYPE_NORMAL = 0
LOCK_TYPE_SHARED = 1
LOCK_STATE_UNLOCKED = 1
LOCK_STATE_LOCKED = 2
LOCK_STATE_SHARED = 3
# a shared lock's participants: the first is "modified", later ones
# "invalidated" while one is (sheep/vdi.c)
SHARED_LOCK_STATE_MODIFIED = 1
SHARED_LOCK_STATE_SHARED = 2
SHARED_LOCK_STATE_INVALIDATED = 3
NODE_ID_SIZE = 40  # address, port, io address, io port, padding
MAX_LOCK_PARTICIPANTS = 31  # SD_MAX_COPIES
# vid, copies, snapshot, deleted, copy_policy, bss, 3 pad, parent, lock
# state, owner, participant count, their states, their node ids
_VDI_STATE = struct.Struct("<IBBBBB3xII40sI124s1240s")
VDI_STATE_SIZE = _VDI_STATE.size  # 1428


def node_id(record: NodeRecord) -> bytes:
    """The node id a sheep records as a lock owner: bytes 24..63 of its record."""
    return record.pack()[24 : 24 + NODE_ID_SIZE]


class VdiState(NamedTuple):
    vid: int
    copies: int
    snapshot: bool
    deleted: bool
    copy_policy: int
    block_size_shift: int
    parent: int
    lock_state: int = LOCK_STATE_UNLOCKED
    owner: bytes = bytes(NODE_ID_SIZE)
    participants: Tuple[bytes, ...] = ()  # node ids
    participant_states: Tuple[int, ...] = ()  # SHARED_LOCK_STATE_*

    def pack(self) -> bytes:
        states = b"".join(struct.pack("<I", st) for st in self.participant_states)
        return _VDI_STATE.pack(
            self.vid,
            self.copies,
            int(self.snapshot),
            int(self.deleted),
            self.copy_policy,
            self.block_size_shift,
            self.parent,
            self.lock_state,
            self.owner,
            len(self.participants),
            states,
            b"".join(self.participants),
        )

    @classmethod
    def unpack(cls, raw: bytes) -> VdiState:
        f = _VDI_STATE.unpack(bytes(raw[:VDI_STATE_SIZE]))
        n = f[9]
        nids = tuple(f[11][i * NODE_ID_SIZE : (i + 1) * NODE_ID_SIZE] for i in range(n))
        states = struct.unpack_from(f"<{n}I", f[10])
        return cls(f[0], f[1], bool(f[2]), bool(f[3]), f[4], f[5], f[6], f[7], f[8], nids, states)


def unpack_node_list(payload: bytes, nr_nodes: int) -> List[NodeRecord]:
    return [
        NodeRecord.unpack(payload[i * NODE_RECORD_SIZE : (i + 1) * NODE_RECORD_SIZE])
        for i in range(nr_nodes)
    ]


# --------------------------------------------------------------------------
# Inode header (section 5)

_INODE_HEADER = struct.Struct("<256s256sQQQQQBBBBIIII")
INODE_HEADER_FIELDS_SIZE = _INODE_HEADER.size  # 572; the rest up to 4664 is unused
assert INODE_HEADER_FIELDS_SIZE == 572

INODE_NAME_OFFSET = 0
INODE_TAG_OFFSET = 256
INODE_CREATE_TIME_OFFSET = 512
INODE_SNAP_CTIME_OFFSET = 520
INODE_VM_CLOCK_OFFSET = 528
INODE_VDI_SIZE_OFFSET = 536
INODE_VM_STATE_SIZE_OFFSET = 544
INODE_COPY_POLICY_OFFSET = 552
INODE_STORE_POLICY_OFFSET = 553
INODE_NR_COPIES_OFFSET = 554
INODE_BSS_OFFSET = 555
INODE_SNAP_ID_OFFSET = 556
INODE_VDI_ID_OFFSET = 560
INODE_PARENT_OFFSET = 564
INODE_BTREE_COUNTER_OFFSET = 568


class InodeHeader(NamedTuple):
    name: bytes = b""
    tag: bytes = b""
    create_time: int = 0
    snap_ctime: int = 0
    vm_clock_nsec: int = 0
    vdi_size: int = 0
    vm_state_size: int = 0
    copy_policy: int = 0
    store_policy: int = 0
    nr_copies: int = 0
    block_size_shift: int = 0
    snap_id: int = 0
    vdi_id: int = 0
    parent_vdi_id: int = 0
    btree_counter: int = 0

    def pack(self) -> bytes:
        """The first 572 bytes of the inode; name and tag NUL-padded."""
        return _INODE_HEADER.pack(self.name, self.tag, *self[2:])

    @classmethod
    def unpack(cls, raw: bytes) -> InodeHeader:
        name, tag, *rest = _INODE_HEADER.unpack_from(raw)
        return cls(name.split(b"\0", 1)[0], tag.split(b"\0", 1)[0], *rest)

    @property
    def is_snapshot(self) -> bool:
        return self.snap_ctime != 0

    @property
    def object_size(self) -> int:
        return 1 << self.block_size_shift


def index_entry_offset(idx: int) -> int:
    return INDEX_OFFSET + 4 * idx


# --------------------------------------------------------------------------
# Cluster records (section 7)

_STAT_CLUSTER = struct.Struct("<QQIIBBB3xH16s")
_CLUSTER_INFO_HEAD = struct.Struct("<BBhIQHBBBB3x16s7x")
assert _STAT_CLUSTER.size == STAT_CLUSTER_RECORD_SIZE
assert _CLUSTER_INFO_HEAD.size == CLUSTER_INFO_NODES_OFFSET


class StatCluster(NamedTuple):
    """One epoch-log record as STAT_CLUSTER returns it."""

    ctime: int
    time: int
    epoch: int
    nr_nodes: int
    disable_recovery: int
    nr_copies: int
    copy_policy: int
    flags: int
    driver: bytes

    def pack(self) -> bytes:
        return _STAT_CLUSTER.pack(*self)

    @classmethod
    def unpack(cls, raw: bytes) -> StatCluster:
        rec = cls(*_STAT_CLUSTER.unpack_from(raw))
        return rec._replace(driver=rec.driver.split(b"\0", 1)[0])


class ClusterInfo(NamedTuple):
    """The fixed head of the CLUSTER_INFO reply; node records follow at 48."""

    proto_ver: int
    disable_recovery: int
    nr_nodes: int
    epoch: int
    ctime: int
    flags: int
    nr_copies: int
    copy_policy: int
    status: int
    block_size_shift: int
    default_store: bytes

    def pack(self) -> bytes:
        return _CLUSTER_INFO_HEAD.pack(*self)

    @classmethod
    def unpack(cls, raw: bytes) -> ClusterInfo:
        info = cls(*_CLUSTER_INFO_HEAD.unpack_from(raw))
        return info._replace(default_store=info.default_store.split(b"\0", 1)[0])


__all__ = [
    name
    for name in list(globals())
    if not name.startswith("_")
    and name.isupper()
    or name
    in {
        "ObjArgs",
        "VdiArgs",
        "ClusterArgs",
        "RequestHeader",
        "ResponseHeader",
        "VdiResult",
        "ClusterDefaults",
        "NodeListResult",
        "ObjResult",
        "SheepStat",
        "NodeRecord",
        "InodeHeader",
        "StatCluster",
        "ClusterInfo",
        "make_request",
        "pack_request",
        "pack_response",
        "default_proto_ver",
        "data_oid",
        "inode_oid",
        "btree_oid",
        "attr_oid",
        "vmstate_oid",
        "ledger_oid",
        "vid_of",
        "idx_of",
        "is_inode",
        "is_data",
        "is_btree",
        "fnv1a_64",
        "fnv1a_vid",
        "pad_name",
        "vdi_payload",
        "cstr",
        "bitmap_test",
        "ec_policy",
        "ec_split",
        "is_fatal_policy",
        "unpack_node_list",
        "index_entry_offset",
    }
]
