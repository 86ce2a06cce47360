"""FakeSheep's in-memory cluster state: objects, inodes, vid bitmaps, refcounts.

No sockets here. Every public method takes the store lock, so the server's
worker threads may call them concurrently. Behaviour follows
docs/PROTOCOL.md; where a real sheep's behaviour is unknown the choice is
marked "FakeSheep choice".
"""

from __future__ import annotations

import re
import sys
import threading
import time
from array import array
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from . import wire as w

_FLAT_INDEX_END = w.INDEX_OFFSET + w.INDEX_SIZE
_NOT_FULL_BYTE = re.compile(rb"[^\xff]")  # C-speed scan of the vid bitmap


def _u32s(raw: bytes) -> array[int]:
    """Little-endian u32 words of raw as an array (raw length % 4 == 0)."""
    words = array("I")
    assert words.itemsize == 4
    words.frombytes(raw)
    if sys.byteorder == "big":
        words.byteswap()
    return words


class SparseObject:
    """A fixed-size object that stores only the prefix up to its last written byte.

    Reads past the stored prefix return zeros, so a 12 MiB inode costs
    4664 + 4*entries bytes and an all-zero CREATE costs nothing.
    """

    __slots__ = ("size", "buf")

    def __init__(self, size: int, buf: Optional[bytearray] = None):
        self.size = size
        self.buf = buf if buf is not None else bytearray()

    def read_parts(self, offset: int, length: int) -> Tuple[bytes, int]:
        """(a copy of the stored bytes in range, number of zero bytes after it)."""
        stored = len(self.buf)
        if offset >= stored or length <= 0:
            return b"", max(length, 0)
        end = min(offset + length, stored)
        return bytes(memoryview(self.buf)[offset:end]), length - (end - offset)

    def read(self, offset: int, length: int) -> bytes:
        data, pad = self.read_parts(offset, length)
        return data + bytes(pad) if pad else data

    def write(self, offset: int, data: w.Buffer) -> None:
        end = offset + len(data)
        if end > len(self.buf):
            if offset > len(self.buf):
                self.buf.extend(bytes(offset - len(self.buf)))
            self.buf[offset:] = data
        else:
            self.buf[offset:end] = data

    def zero(self, offset: int, length: int) -> None:
        stored = len(self.buf)
        if offset >= stored:
            return
        if offset + length >= stored:
            del self.buf[offset:]  # trailing zeros need no storage
        else:
            self.buf[offset : offset + length] = bytes(length)

    def u32(self, offset: int) -> int:
        return int.from_bytes(self.read(offset, 4), "little")

    def u32s(self, offset: int, count: int) -> array[int]:
        return _u32s(self.read(offset, 4 * count))


@dataclass
class VdiInfo:
    """A snapshot of one VDI's inode, for test assertions."""

    vid: int
    name: bytes
    tag: bytes
    size: int
    snapshot: bool
    snap_id: int
    parent: int
    copies: int
    copy_policy: int
    store_policy: int
    block_size_shift: int
    create_time: int
    snap_ctime: int
    deleted: bool
    # flat VDIs: non-zero data_vdi_id entries; hyper VDIs: the depth-1 B-tree leaves
    entries: Dict[int, int] = field(default_factory=dict)

    @property
    def object_size(self) -> int:
        return 1 << self.block_size_shift


def _now_ctime() -> int:
    """sheep's timestamp format: (seconds << 32) | nanoseconds (section 5)."""
    sec, nsec = divmod(time.time_ns(), 1_000_000_000)
    return (sec << 32) | nsec


class Store:
    def __init__(self, *, copies: int, copy_policy: int, block_size_shift: int):
        self.lock = threading.RLock()
        self.default_copies = copies
        self.default_copy_policy = copy_policy
        self.default_bss = block_size_shift
        self.zones = 1  # running nodes; EC writes need >= d
        self.objects: Dict[int, SparseObject] = {}  # every object but inodes
        self.inodes: Dict[int, SparseObject] = {}  # vid -> inode object
        self.refs: Dict[int, int] = {}  # data oid -> live index entries
        self.in_use = bytearray(w.VDI_BITMAP_SIZE)
        self.deleted = bytearray(w.VDI_BITMAP_SIZE)
        # sheep's per-vid lock state (cluster-wide): vid -> (state, node ids,
        # each one's shared-lock state)
        self.locks: Dict[int, Tuple[int, List[bytes], List[int]]] = {}

    # ------------------------------------------------------------------
    # small helpers (caller holds the lock)

    @staticmethod
    def _set_bit(bitmap: bytearray, vid: int) -> None:
        bitmap[vid >> 3] |= 1 << (vid & 7)

    def _header(self, vid: int) -> Optional[w.InodeHeader]:
        inode = self.inodes.get(vid)
        if inode is None:
            return None
        return w.InodeHeader.unpack(inode.read(0, w.INODE_HEADER_FIELDS_SIZE))

    def _is_hyper(self, vid: int) -> bool:
        inode = self.inodes.get(vid)
        return (
            inode is not None
            and inode.read(w.INODE_STORE_POLICY_OFFSET, 1)[0] == w.STORE_POLICY_HYPER
        )

    def _object_size(self, oid: int) -> int:
        if w.is_inode(oid):
            return w.INODE_SIZE
        if w.is_data(oid):
            inode = self.inodes.get(w.vid_of(oid))
            bss = inode.read(w.INODE_BSS_OFFSET, 1)[0] if inode else 0
            # FakeSheep choice: objects of unknown vids use the cluster default
            return 1 << (bss or self.default_bss)
        if oid & w.VDI_ATTR_BIT:
            return w.ATTR_OBJ_SIZE
        return w.BTREE_NODE_SIZE  # B-tree node, vmstate, ledger: 4 MiB

    def _get(self, oid: int) -> Optional[SparseObject]:
        if w.is_inode(oid):
            vid = w.vid_of(oid)
            return self.inodes.get(vid) if oid == w.inode_oid(vid) else None
        return self.objects.get(oid)

    def _put(self, oid: int, obj: SparseObject) -> None:
        if w.is_inode(oid):
            self.inodes[w.vid_of(oid)] = obj
        else:
            self.objects[oid] = obj

    def _incref(self, oid: int) -> None:
        self.refs[oid] = self.refs.get(oid, 0) + 1

    def _decref(self, oid: int) -> None:
        count = self.refs.get(oid, 0) - 1
        if count > 0:
            self.refs[oid] = count
        else:
            # the last index entry went away: this is how sheep reclaims data
            self.refs.pop(oid, None)
            self.objects.pop(oid, None)

    def _write_checks(self, oid: int, req_policy: int) -> int:
        """READONLY for snapshot data, SYSTEM_ERROR for EC without enough zones."""
        if not w.is_data(oid):
            return w.RES_SUCCESS
        hdr = self._header(w.vid_of(oid))
        if hdr is not None and hdr.is_snapshot:
            return w.RES_READONLY
        policy = req_policy or (hdr.copy_policy if hdr else 0)
        data_strips, _parity = w.ec_split(policy)
        if data_strips > self.zones:
            return w.RES_SYSTEM_ERROR  # seen with 4:2 on 3 zones (ec42_write)
        return w.RES_SUCCESS

    def _write_inode(self, vid: int, inode: SparseObject, offset: int, data: w.Buffer) -> None:
        """Raw inode write; runs reference counting for flat index updates.

        Only writes lying entirely inside [4664, 4664+4 MiB) are index updates
        (section 5.2): header rewrites from offset 0 bypass the bookkeeping.
        """
        end = offset + len(data)
        if not (
            len(data) and w.INDEX_OFFSET <= offset and end <= _FLAT_INDEX_END
        ) or self._is_hyper(vid):
            inode.write(offset, data)
            return
        first = (offset - w.INDEX_OFFSET) // 4
        count = (end - 1 - w.INDEX_OFFSET) // 4 - first + 1
        entry_offset = w.index_entry_offset(first)
        old = inode.u32s(entry_offset, count)
        inode.write(offset, data)
        new = inode.u32s(entry_offset, count)
        for i, (before, after) in enumerate(zip(old, new), start=first):
            if before != after:
                if after:
                    self._incref(w.data_oid(after, i))
                if before:
                    self._decref(w.data_oid(before, i))

    def _index_entries(self, inode: SparseObject) -> Dict[int, int]:
        """Non-zero data_vdi_id entries of a flat inode, idx -> vid."""
        stored = min(len(inode.buf), _FLAT_INDEX_END) - w.INDEX_OFFSET
        if stored <= 0:
            return {}
        words = inode.u32s(w.INDEX_OFFSET, (stored + 3) // 4)
        return {i: vid for i, vid in enumerate(words) if vid}

    def _btree_leaves(self, inode: SparseObject) -> Tuple[Dict[int, int], List[int]]:
        """(idx -> vid, B-tree node oids) of a hyper volume; depth 1 or 2."""
        magic, depth, entries = w.BTREE_HEADER.unpack(inode.read(w.INDEX_OFFSET, 8))
        if magic != w.BTREE_MAGIC:
            return {}, []
        body = w.INDEX_OFFSET + w.BTREE_HEADER.size
        if depth == 1:
            raw = inode.read(body, entries * 8)
            return dict(w.BTREE_LEAF_ENTRY.iter_unpack(raw)), []
        leaves: Dict[int, int] = {}
        nodes = [
            oid for _max_idx, oid in w.BTREE_INDEX_ENTRY.iter_unpack(inode.read(body, entries * 16))
        ]
        for node_oid in nodes:
            node = self.objects.get(node_oid)
            if node is None:
                continue
            _magic, _depth, count = w.BTREE_HEADER.unpack(node.read(0, 8))
            leaves.update(w.BTREE_LEAF_ENTRY.iter_unpack(node.read(8, count * 8)))
        return leaves, nodes

    # ------------------------------------------------------------------
    # object operations

    def object_size(self, oid: int) -> int:
        with self.lock:
            return self._object_size(oid)

    def is_hyper(self, vid: int) -> bool:
        with self.lock:
            return self._is_hyper(vid)

    def read(self, oid: int, offset: int, length: int) -> Tuple[int, bytes, int]:
        """(result, stored bytes, zero padding) for READ_OBJ."""
        with self.lock:
            obj = self._get(oid)
            if obj is None:
                return w.RES_NO_OBJ, b"", 0
            return (w.RES_SUCCESS, *obj.read_parts(offset, length))

    def create_and_write(
        self, oid: int, offset: int, data: w.Buffer, *, cow_oid: int = 0, copy_policy: int = 0
    ) -> int:
        """CREATE_AND_WRITE_OBJ: a new object replaces any old one entirely."""
        with self.lock:
            result = self._write_checks(oid, copy_policy)
            if result:
                return result
            size = self._object_size(oid)
            if cow_oid:
                source = self._get(cow_oid)
                if source is None:
                    return w.RES_NO_OBJ  # FakeSheep choice: the COW read fails
                obj = SparseObject(size, bytearray(source.buf[:size]))
                obj.write(offset, data)
            elif offset == 0 and isinstance(data, bytearray):
                obj = SparseObject(size, data)  # adopt the received buffer
            else:
                obj = SparseObject(size)
                obj.write(offset, data)
            # (a CREATE on an inode oid replaces raw bytes: no refcounting)
            self._put(oid, obj)
            return w.RES_SUCCESS

    def write(self, oid: int, offset: int, data: w.Buffer, *, copy_policy: int = 0) -> int:
        with self.lock:
            result = self._write_checks(oid, copy_policy)
            if result:
                return result
            obj = self._get(oid)
            if obj is None:
                return w.RES_NO_OBJ
            if w.is_inode(oid):
                self._write_inode(w.vid_of(oid), obj, offset, data)
            else:
                obj.write(offset, data)
            return w.RES_SUCCESS

    def remove(self, oid: int) -> int:
        """REMOVE_OBJ: deletes the object and leaves every index alone."""
        with self.lock:
            if self._get(oid) is None:
                return w.RES_NO_OBJ
            if w.is_inode(oid):
                del self.inodes[w.vid_of(oid)]
            else:
                del self.objects[oid]
            return w.RES_SUCCESS

    def discard(self, oid: int) -> int:
        """DISCARD_OBJ: zero the owner's index entry (refcounted), then remove.

        FakeSheep choices: NO_OBJ when the object did not exist; READONLY
        for a snapshot's object; non-data oids are INVALID_PARMS.
        """
        if not w.is_data(oid):
            return w.RES_INVALID_PARMS
        with self.lock:
            vid, idx = w.vid_of(oid), w.idx_of(oid)
            hdr = self._header(vid)
            if hdr is not None and hdr.is_snapshot:
                return w.RES_READONLY
            existed = oid in self.objects
            inode = self.inodes.get(vid)
            if inode is not None and idx < w.MAX_OBJECTS_FLAT and not self._is_hyper(vid):
                entry_offset = w.index_entry_offset(idx)
                if inode.u32(entry_offset):
                    self._write_inode(vid, inode, entry_offset, bytes(4))
            self.objects.pop(oid, None)
            return w.RES_SUCCESS if existed else w.RES_NO_OBJ

    # ------------------------------------------------------------------
    # VDI operations

    def _named(self, name: bytes) -> List[w.InodeHeader]:
        """Inodes in the in-use bitmap carrying this name, by ascending vid.

        The deleted bitmap is not consulted: a zombie (DEL_VDI without index
        zeroing) still resolves by name, as on a real sheep (section 6.7).
        """
        found: List[w.InodeHeader] = []
        for vid in sorted(self.inodes):
            if w.bitmap_test(self.in_use, vid):
                hdr = self._header(vid)
                assert hdr is not None  # every vid in self.inodes has a header
                if hdr.name == name:
                    found.append(hdr)
        return found

    @staticmethod
    def _working(named: List[w.InodeHeader]) -> Optional[w.InodeHeader]:
        working = [hdr for hdr in named if not hdr.is_snapshot]
        return max(working, key=lambda h: h.create_time) if working else None

    def _lookup(
        self, name: Optional[bytes], tag: Optional[bytes], snapid: int
    ) -> Tuple[int, Optional[w.InodeHeader]]:
        """Section 6.11's table. Returns (result, InodeHeader or None)."""
        named = self._named(name) if name else []
        if not named:
            return w.RES_NO_VDI, None
        if tag is None:
            return w.RES_NO_TAG, None  # 256 tag bytes without a NUL
        if tag:
            # FakeSheep choice: any inode with this tag; snapshots first
            tagged = sorted((h for h in named if h.tag == tag), key=lambda h: not h.is_snapshot)
            return (w.RES_SUCCESS, tagged[0]) if tagged else (w.RES_NO_TAG, None)
        if snapid:
            for hdr in named:
                if hdr.is_snapshot and hdr.snap_id == snapid:
                    return w.RES_SUCCESS, hdr
            return w.RES_NO_TAG, None
        working = self._working(named)
        # FakeSheep choice: only snapshots left under this name -> NO_VDI
        return (w.RES_SUCCESS, working) if working else (w.RES_NO_VDI, None)

    def lookup(
        self, name: Optional[bytes], tag: Optional[bytes] = b"", snapid: int = 0
    ) -> Tuple[int, Optional[w.InodeHeader]]:
        with self.lock:
            return self._lookup(name, tag, snapid)

    def _first_clear(self, lo: int, hi: int) -> Optional[int]:
        """Lowest vid in [lo, hi) whose in-use bit is clear."""
        vid = lo
        while vid < hi:
            byte = self.in_use[vid >> 3]
            if byte != 0xFF:
                for bit in range(vid & 7, 8):
                    candidate = (vid & ~7) | bit
                    if candidate >= hi:
                        return None
                    if not byte & (1 << bit):
                        return candidate
            found = _NOT_FULL_BYTE.search(self.in_use, (vid >> 3) + 1)
            if found is None:
                return None
            vid = found.start() << 3
        return None

    def _alloc_vid(self, name: bytes) -> Optional[int]:
        """First clear bit at or after the name hash; skips 0 and wraps."""
        start = w.fnv1a_vid(name)
        vid = self._first_clear(max(start, 1), w.VID_MASK + 1)
        return vid if vid is not None else self._first_clear(1, start)

    def _copy_index(self, base: SparseObject, child: SparseObject, flat: bool) -> None:
        """Copy the data_vdi_id area; a flat copy takes one reference per entry."""
        stored = min(len(base.buf), _FLAT_INDEX_END)
        if stored > w.INDEX_OFFSET:
            child.write(w.INDEX_OFFSET, base.buf[w.INDEX_OFFSET : stored])
        if flat:
            for idx, vid in self._index_entries(child).items():
                self._incref(w.data_oid(vid, idx))

    def new_vdi(self, name: bytes, args: w.VdiArgs) -> Tuple[int, Optional[w.VdiResult]]:
        with self.lock:
            named = self._named(name)
            working = self._working(named)
            base = None
            if args.snapid:
                # FakeSheep choice: a snapshot needs a base and a working VDI
                if not args.base_vdi_id:
                    return w.RES_INVALID_PARMS, None
                if working is None:
                    return w.RES_NO_VDI, None
            elif working is not None:
                return w.RES_VDI_EXIST, None
            if args.base_vdi_id:
                base = self._header(args.base_vdi_id)
                if base is None:
                    return w.RES_BASE_VDI_READ, None
            vid = self._alloc_vid(name)
            if vid is None:
                return w.RES_FULL_VDI, None
            return w.RES_SUCCESS, self._create_inode(vid, name, args, base, working, named)

    def _create_inode(
        self,
        vid: int,
        name: bytes,
        args: w.VdiArgs,
        base: Optional[w.InodeHeader],
        working: Optional[w.InodeHeader],
        named: List[w.InodeHeader],
    ) -> w.VdiResult:
        now = _now_ctime()
        # as sheep does (sheep/ops.c): a request without copies takes the
        # cluster's redundancy, its copy policy included, whatever it asked
        policy = args.copy_policy if args.copies else self.default_copy_policy
        data_strips, parity = w.ec_split(policy)
        copies = data_strips + parity if policy else (args.copies or self.default_copies)
        bss = args.block_size_shift or self.default_bss
        if args.snapid:
            assert base is not None and working is not None  # new_vdi checked both
            if base.vdi_id == working.vdi_id:
                snap_id = base.snap_id + 1
            else:
                # "rebase" (rollback) is [src]-only: FakeSheep keeps one working
                # VDI per name by freezing the old one as well
                snap_id = max(h.snap_id for h in named) + 1
                self._freeze(working.vdi_id, now)
            self._freeze(base.vdi_id, now)
        else:
            # a fresh VDI or a clone starts at 1; a new working VDI of a name
            # that has snapshots (a rollback) follows the newest of them, as
            # sheep's lookup of the name hands out (section 6.14)
            snap_id = max((h.snap_id for h in named), default=0) + 1
        header = w.InodeHeader(
            name=name,
            create_time=now,
            vdi_size=args.vdi_size,
            copy_policy=policy,
            store_policy=args.store_policy,
            nr_copies=copies,
            block_size_shift=bss,
            snap_id=snap_id,
            vdi_id=vid,
            parent_vdi_id=base.vdi_id if base else 0,
        )
        inode = SparseObject(
            w.INODE_SIZE, bytearray(header.pack().ljust(w.INODE_HEADER_SIZE, b"\0"))
        )
        if base is not None:
            self._copy_index(
                self.inodes[base.vdi_id], inode, flat=base.store_policy == w.STORE_POLICY_FLAT
            )
        elif args.store_policy == w.STORE_POLICY_HYPER:
            inode.write(w.INDEX_OFFSET, w.EMPTY_BTREE_ROOT)
        self.inodes[vid] = inode
        self._set_bit(self.in_use, vid)
        return w.VdiResult(vid, 0, copies, bss)

    def _freeze(self, vid: int, now: int) -> None:
        inode = self.inodes[vid]
        if not any(inode.read(w.INODE_SNAP_CTIME_OFFSET, 8)):
            inode.write(w.INODE_SNAP_CTIME_OFFSET, now.to_bytes(8, "little"))

    def del_vdi(
        self, name: Optional[bytes], tag: Optional[bytes], snapid: int
    ) -> Tuple[int, Optional[int]]:
        """DEL_VDI: returns (result, deleted vid).

        Flat: if the client did not zero the index first, the inode is left
        as it is (a zombie that still resolves) and its objects leak. Hyper:
        sheep walks the B-tree and removes the volume's own objects itself.
        """
        with self.lock:
            result, hdr = self._lookup(name, tag, snapid)
            if result:
                return result, None
            assert hdr is not None  # success always names the inode
            vid = hdr.vdi_id
            inode = self.inodes[vid]
            self._set_bit(self.deleted, vid)
            if hdr.store_policy == w.STORE_POLICY_HYPER:
                leaves, nodes = self._btree_leaves(inode)
                for idx, owner in leaves.items():
                    if owner == vid:
                        self.objects.pop(w.data_oid(vid, idx), None)
                        self.refs.pop(w.data_oid(vid, idx), None)
                for node_oid in nodes:
                    self.objects.pop(node_oid, None)
            elif self._index_entries(inode):
                return w.RES_SUCCESS, vid  # zombie
            inode.zero(w.INODE_NAME_OFFSET, w.NAME_SIZE)
            inode.zero(w.INODE_VDI_SIZE_OFFSET, 8)
            inode.zero(w.INDEX_OFFSET, w.INDEX_SIZE)
            return w.RES_SUCCESS, vid

    def delete_working(self, name: bytes) -> int:
        """What a client's delete does to the working VDI called name: the
        flat index zeroed (objects reclaimed), then DEL_VDI. Returns the
        result code."""
        with self.lock:
            result, hdr = self._lookup(name, b"", 0)
            if result:
                return result
            assert hdr is not None  # success always names the inode
            vid = hdr.vdi_id
            inode = self.inodes[vid]
            if hdr.store_policy != w.STORE_POLICY_HYPER:
                for idx in self._index_entries(inode):
                    self._write_inode(vid, inode, w.index_entry_offset(idx), bytes(4))
            return self.del_vdi(name, b"", 0)[0]

    def vdi_attr(
        self, record: bytearray, snapid: int, *, create: bool, excl: bool, delete: bool
    ) -> Tuple[int, Optional[w.VdiResult]]:
        """GET_VDI_ATTR, as sheep 1.0 runs it: (result, reply union).

        The VDI is looked up by the record's name and tag and the header's
        snapid. Attribute objects live under the *name hash* (a snapshot
        moves the working vid, not the hash) at attr_hash(record) and the
        slots after it. Faithful quirks: CREAT without EXCL writes the first
        slot without looking (whatever was there is replaced); DEL blanks
        the stored name (the object stays, so a later lookup probes past
        it); nothing ever removes an attribute object, not even DEL_VDI.
        """
        with self.lock:
            name = w.cstr(record[: w.NAME_SIZE])
            tag = w.cstr(record[w.NAME_SIZE : w.ATTR_CTIME_OFFSET])
            result, hdr = self._lookup(name, tag, snapid)
            if result:
                return result, None
            # success means both parsed and the inode was found
            assert name is not None and hdr is not None
            name_hash = w.fnv1a_vid(name)
            # sheep stamps the record with the VDI's creation time
            record[w.ATTR_CTIME_OFFSET : w.ATTR_CTIME_OFFSET + 8] = hdr.create_time.to_bytes(
                8, "little"
            )
            key = record[w.ATTR_KEY_OFFSET : w.ATTR_VALUE_OFFSET]
            snap_id = record[w.ATTR_SNAP_ID_OFFSET : w.ATTR_VALUE_LEN_OFFSET]
            attr_id = w.attr_hash(record)
            owner = self._header(name_hash)
            copies = owner.nr_copies if owner is not None else 0
            result = w.RES_NO_OBJ
            for _ in range(1 << 32):
                oid = w.attr_oid(name_hash, attr_id)
                stored = self.objects.get(oid) if excl or not create else None
                if stored is None and (excl or not create):
                    result = w.RES_NO_OBJ
                if stored is None and create:
                    obj = SparseObject(w.ATTR_OBJ_SIZE)
                    obj.write(0, record[: w.ATTR_OBJ_SIZE])
                    self.objects[oid] = obj
                    result = w.RES_SUCCESS
                    break
                if stored is None:
                    break
                head = stored.read(0, w.ATTR_VALUE_OFFSET)
                if (
                    w.cstr(head[: w.NAME_SIZE]) == name
                    and w.cstr(head[w.NAME_SIZE : w.ATTR_CTIME_OFFSET]) == tag
                    and head[w.ATTR_SNAP_ID_OFFSET : w.ATTR_VALUE_LEN_OFFSET] == snap_id
                    and w.cstr(head[w.ATTR_KEY_OFFSET :]) == w.cstr(key)
                ):
                    if excl:
                        result = w.RES_VDI_EXIST
                    elif delete:
                        stored.write(0, b"\0")
                        result = w.RES_SUCCESS
                    elif create:
                        stored.write(0, record[: w.ATTR_OBJ_SIZE])
                        result = w.RES_SUCCESS
                    else:
                        result = w.RES_SUCCESS
                    break
                attr_id = (attr_id + 1) & 0xFFFFFFFF
            else:
                result = w.RES_FULL_VDI
            return result, w.VdiResult(name_hash, attr_id, copies, 0)

    # ------------------------------------------------------------------
    # locks, as sheep/vdi.c keeps them: by vid, owned by the sheep a request
    # reached (its node id), for a cluster formatted with -l

    def lock_vdi(self, vid: int, node: bytes, lock_type: int) -> bool:
        with self.lock:
            state, owners, states = self.locks.get(vid, (w.LOCK_STATE_UNLOCKED, [], []))
            if lock_type == w.LOCK_TYPE_NORMAL:
                if state != w.LOCK_STATE_UNLOCKED:
                    return False
                self.locks[vid] = (w.LOCK_STATE_LOCKED, [node], [])
                return True
            if lock_type != w.LOCK_TYPE_SHARED or state == w.LOCK_STATE_LOCKED:
                return False
            if node in owners or len(owners) >= w.MAX_LOCK_PARTICIPANTS:
                return False
            if not owners:
                joined = w.SHARED_LOCK_STATE_MODIFIED
            elif w.SHARED_LOCK_STATE_MODIFIED in states:
                joined = w.SHARED_LOCK_STATE_INVALIDATED
            else:
                joined = w.SHARED_LOCK_STATE_SHARED
            self.locks[vid] = (w.LOCK_STATE_SHARED, owners + [node], states + [joined])
            return True

    def unlock_vdi(self, vid: int, node: bytes, lock_type: int) -> None:
        """sheep answers success whatever this finds."""
        with self.lock:
            state, owners, states = self.locks.get(vid, (w.LOCK_STATE_UNLOCKED, [], []))
            if lock_type == w.LOCK_TYPE_NORMAL and state == w.LOCK_STATE_LOCKED:
                del self.locks[vid]  # whoever holds it
            elif lock_type == w.LOCK_TYPE_SHARED and state == w.LOCK_STATE_SHARED:
                kept = [(o, st) for o, st in zip(owners, states) if o != node]
                if kept:
                    self.locks[vid] = (
                        w.LOCK_STATE_SHARED,
                        [o for o, _ in kept],
                        [st for _, st in kept],
                    )
                else:
                    del self.locks[vid]

    def vdi_states(self) -> List[w.VdiState]:
        """GET_VDI_COPIES: every vid sheep knows (deleted ones too), by vid."""
        with self.lock:
            out = []
            for vid in sorted(self.inodes):
                hdr = self._header(vid)
                if hdr is None:
                    continue
                state, owners, states = self.locks.get(vid, (w.LOCK_STATE_UNLOCKED, [], []))
                out.append(
                    w.VdiState(
                        vid,
                        hdr.nr_copies,
                        hdr.is_snapshot,
                        w.bitmap_test(self.deleted, vid),
                        hdr.copy_policy,
                        hdr.block_size_shift,
                        hdr.parent_vdi_id,
                        state,
                        owners[0] if state == w.LOCK_STATE_LOCKED else bytes(w.NODE_ID_SIZE),
                        tuple(owners) if state == w.LOCK_STATE_SHARED else (),
                        tuple(states),
                    )
                )
            return out

    def bitmap(self, deleted: bool = False) -> bytes:
        with self.lock:
            return bytes(self.deleted if deleted else self.in_use)

    # ------------------------------------------------------------------
    # introspection for tests

    def vdi_info(self, vid: int) -> Optional[VdiInfo]:
        with self.lock:
            hdr = self._header(vid)
            if hdr is None:
                return None
            inode = self.inodes[vid]
            if hdr.store_policy == w.STORE_POLICY_HYPER:
                entries = self._btree_leaves(inode)[0]
            else:
                entries = self._index_entries(inode)
            return VdiInfo(
                vid=vid,
                name=hdr.name,
                tag=hdr.tag,
                size=hdr.vdi_size,
                snapshot=hdr.is_snapshot,
                snap_id=hdr.snap_id,
                parent=hdr.parent_vdi_id,
                copies=hdr.nr_copies,
                copy_policy=hdr.copy_policy,
                store_policy=hdr.store_policy,
                block_size_shift=hdr.block_size_shift,
                create_time=hdr.create_time,
                snap_ctime=hdr.snap_ctime,
                deleted=w.bitmap_test(self.deleted, vid),
                entries=entries,
            )

    def data_object_ids(self) -> set[int]:
        with self.lock:
            return {oid for oid in self.objects if w.is_data(oid)}

    def all_object_ids(self) -> set[int]:
        with self.lock:
            return set(self.objects) | {w.inode_oid(vid) for vid in self.inodes}

    def object_bytes(self, oid: int) -> Optional[bytes]:
        with self.lock:
            obj = self._get(oid)
            return None if obj is None else obj.read(0, obj.size)

    def refcount(self, oid: int) -> int:
        with self.lock:
            return self.refs.get(oid, 0)

    def stored_bytes(self) -> int:
        with self.lock:
            return sum(len(o.buf) for o in self.objects.values()) + sum(
                len(o.buf) for o in self.inodes.values()
            )
