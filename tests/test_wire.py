"""The pure-Python wire codec (sheepfast.testing.wire) against captured headers.

Every header in tests/vectors is decoded and re-encoded byte for byte, and the
decoded fields are checked against the independent decoder that wrote the
vectors' comment lines.
"""

import os
import re
import struct

import pytest

from sheepfast.testing import wire as w

VECTOR_DIR = os.path.join(os.path.dirname(__file__), "vectors")
VECTOR_FILES = sorted(
    f
    for f in os.listdir(VECTOR_DIR)
    if f.endswith(".txt") and f not in ("README.txt", "dog_list_raw_outputs.txt")
)


def vector_messages(filename):
    """(direction, header bytes, decoded comment) for every message."""
    comment = ""
    with open(os.path.join(VECTOR_DIR, filename)) as f:
        for line in f:
            if line.startswith("#   "):
                comment = line[4:].strip()
            elif line.startswith(("C>S ", "S>C ")):
                direction, header, _length, _payload = line.split()
                yield direction, bytes.fromhex(header), comment
                comment = ""


ALL_MESSAGES = [(f, d, h, c) for f in VECTOR_FILES for d, h, c in vector_messages(f)]


def comment_fields(comment):
    """key=value pairs of a decoded comment line, numbers parsed."""
    fields = {}
    for key, value in re.findall(r"(\w+)=('[^']*'|\S+)", comment):
        if key == "u":  # raw union bytes
            continue
        if value.startswith("'"):
            fields[key] = value[1:-1]
        elif key in ("oid", "cow_oid", "base_vid", "vdi_id"):
            fields[key] = int(value, 16)
        elif re.fullmatch(r"0x[0-9a-f]+|\d+", value):
            fields[key] = int(value, 0)
    return fields


def test_vectors_are_present():
    assert len(VECTOR_FILES) >= 30
    assert len(ALL_MESSAGES) > 300


@pytest.mark.parametrize("filename", VECTOR_FILES)
def test_every_captured_header_round_trips(filename):
    for direction, raw, _comment in vector_messages(filename):
        cls = w.RequestHeader if direction == "C>S" else w.ResponseHeader
        assert cls.unpack(raw).pack() == raw


@pytest.mark.parametrize("filename", VECTOR_FILES)
def test_decoded_fields_match_the_capture_comments(filename):
    checked = 0
    for direction, raw, comment in vector_messages(filename):
        f = comment_fields(comment)
        if direction == "C>S":
            req = w.RequestHeader.unpack(raw)
            assert (req.proto_ver, req.flags, req.epoch, req.id, req.data_length) == (
                f["pv"],
                f["flags"],
                f["epoch"],
                f["id"],
                f["dlen"],
            )
            if req.opcode in w.OBJ_OPCODES:
                a = req.obj
                assert (a.oid, a.copies, a.copy_policy, a.offset) == (
                    f["oid"],
                    f["copies"],
                    f["copy_policy"],
                    f["offset"],
                )
                assert a.cow_oid == f.get("cow_oid", 0)
            elif req.opcode in w.VDI_OPCODES:
                a = req.vdi
                assert a == w.VdiArgs(
                    f["vdi_size"],
                    f["base_vid"],
                    f["copies"],
                    f["copy_policy"],
                    f["store_policy"],
                    f["bss"],
                    f["snapid"],
                    f["type"],
                )
        else:
            rsp = w.ResponseHeader.unpack(raw)
            assert (rsp.proto_ver, rsp.flags, rsp.epoch, rsp.id, rsp.data_length, rsp.result) == (
                f["pv"],
                f["flags"],
                f["epoch"],
                f["id"],
                f["dlen"],
                f["result"],
            )
            if "vdi_id" in f:
                assert rsp.vdi == w.VdiResult(f["vdi_id"], f["attr_id"], f["copies"], f["bss"])
        checked += 1
    assert checked


def test_annotated_example_from_the_protocol_notes():
    raw = bytes.fromhex(
        "02010100000000000000000000020000000000008f587f00"
        "000000000000000002000000000000000000100000000000"
    )
    req = w.RequestHeader.unpack(raw)
    assert req.opcode == w.OP_CREATE_AND_WRITE_OBJ
    assert req.flags == w.FLAG_WRITE and req.has_payload
    assert req.data_length == 512
    assert req.obj == w.ObjArgs(oid=0x007F588F00000000, copies=2, offset=0x100000)
    rsp = w.ResponseHeader.unpack(
        bytes.fromhex(
            "0014000001000000000000000000000000000000000000008f587f00000000000216" + "00" * 14
        )
    )
    assert rsp.opcode == w.OP_GET_VDI_INFO and rsp.epoch == 1
    assert rsp.vdi == w.VdiResult(0x7F588F, 0, 2, 22)


def test_request_builders_pick_the_protocol_version():
    assert w.make_request(w.OP_READ_OBJ).proto_ver == 0x02
    assert w.make_request(w.OP_GET_NODE_LIST).proto_ver == 0x0A
    assert w.make_request(w.OP_READ_DEL_VDIS).proto_ver == 0x0A
    raw = w.pack_request(w.OP_READ_VDIS, data_length=w.VDI_BITMAP_SIZE, id=7)
    assert raw == bytes.fromhex("02150000000000000700000000002000") + bytes(32)
    raw = w.pack_request(w.OP_STAT_CLUSTER, w.ClusterArgs(nodes_nr=3), data_length=48)
    assert struct.unpack_from("<I", raw, 40) == (3,)


def test_union_field_offsets():
    raw = w.pack_request(
        w.OP_WRITE_OBJ,
        w.ObjArgs(
            oid=0x1122334455667788,
            cow_oid=0x99,
            copies=3,
            copy_policy=0x11,
            ec_index=4,
            tgt_epoch=5,
            offset=0xABCDEF,
        ),
    )
    assert struct.unpack_from("<QQBBBBII", raw, 16) == (
        0x1122334455667788,
        0x99,
        3,
        0x11,
        4,
        0,
        5,
        0xABCDEF,
    )
    raw = w.pack_request(
        w.OP_NEW_VDI,
        w.VdiArgs(
            vdi_size=1 << 40,
            base_vdi_id=0x7F588F,
            copies=2,
            copy_policy=0x22,
            store_policy=1,
            block_size_shift=20,
            snapid=1,
            type=1,
        ),
    )
    assert struct.unpack_from("<QIBBBBII", raw, 16) == (1 << 40, 0x7F588F, 2, 0x22, 1, 20, 1, 1)
    assert raw[40:] == bytes(8)
    rsp = w.pack_response(w.OP_GET_CLUSTER_DEFAULT, args=w.ClusterDefaults(2, 0x11, 22))
    assert rsp[20:23] == bytes([2, 0x11, 22])
    rsp = w.pack_response(w.OP_STAT_SHEEP, args=w.SheepStat(10, 5))
    assert struct.unpack_from("<QQ", rsp, 32) == (10, 5)
    rsp = w.pack_response(
        w.OP_GET_NODE_LIST, 0, epoch=9, id=3, data_length=240, args=w.NodeListResult(3)
    )
    assert rsp.hex() == "008200000900000003000000f00000000000000003000000" + "00" * 24


def test_headers_reject_short_buffers():
    with pytest.raises(ValueError):
        w.RequestHeader.unpack(bytes(47))
    with pytest.raises(ValueError):
        w.ResponseHeader.unpack(bytes(10))


@pytest.mark.parametrize(
    "name,vid",
    [
        ("probe-a", 0x7F588F),
        ("probe-c", 0x7F5BF5),
        ("probe-x", 0x7F4944),
        ("base", 0x54C278),
        ("probe-p2", 0x324D7A),
        ("probe-z20", 0x7E5DE8),
        ("probe-zero", 0x3ACCD6),
        ("probe-hv", 0x76EF66),
        ("probe-ec", 0x57B2E0),
        ("probe-ec42", 0x4551CA),
        ("probe-c2", 0x68F325),
        ("probe-odd", 0x28DE41),
        ("probe-sp ace", 0x9FCAD0),
        ("probe-back\\slash", 0x7B5C6E),
        ("probe-x:y", 0x89FB39),
    ],
)
def test_fnv1a_vid_matches_vids_allocated_by_sheep(name, vid):
    assert w.fnv1a_vid(name) == vid
    assert w.fnv1a_vid(name.encode()) == vid


def test_fnv1a_reference_values():
    assert w.fnv1a_64(b"") == 0xCBF29CE484222325
    assert w.fnv1a_64(b"a") == 0xAF63DC4C8601EC8C


def test_oid_helpers():
    assert w.data_oid(0x7F588F, 1) == 0x007F588F00000001
    assert w.inode_oid(0x7F588F) == 0x807F588F00000000
    assert w.vid_of(0x807F588F00000000) == 0x7F588F
    assert w.vid_of(0x007F5BF500000002) == 0x7F5BF5
    assert w.idx_of(0x007F588F0000000A) == 10
    assert w.is_inode(w.inode_oid(5)) and not w.is_inode(w.data_oid(5, 0))
    assert w.is_data(w.data_oid(5, 7)) and not w.is_data(w.inode_oid(5))
    assert w.btree_oid(5, 2) == (1 << 60) | (5 << 32) | 2 and w.is_btree(w.btree_oid(5, 2))
    assert w.ledger_oid(w.data_oid(5, 1)) == (1 << 59) | (5 << 32) | 1
    assert w.attr_oid(5, 3) == (1 << 61) | (5 << 32) | 3
    assert w.vmstate_oid(5, 3) == (1 << 62) | (5 << 32) | 3


def test_sizes():
    assert w.INODE_SIZE == 12587576
    assert w.INODE_HEADER_SIZE == 4664
    assert w.GREF_OFFSET == 4198968
    assert w.MAX_OBJECTS_FLAT == 2**20
    assert w.NODE_RECORD_SIZE == 80
    assert w.NODE_LIST_BUFFER_SIZE == 491520
    assert w.VDI_BITMAP_SIZE == 2097152
    assert w.CLUSTER_OP_MAX_DATA == 130976
    assert w.EMPTY_BTREE_ROOT == bytes.fromhex("7462010000000000")


def test_inode_header_layout():
    hdr = w.InodeHeader(
        name=b"probe-a",
        tag=b"snap1",
        create_time=1,
        snap_ctime=2,
        vm_clock_nsec=3,
        vdi_size=4,
        vm_state_size=5,
        copy_policy=6,
        store_policy=7,
        nr_copies=8,
        block_size_shift=9,
        snap_id=10,
        vdi_id=11,
        parent_vdi_id=12,
        btree_counter=13,
    )
    raw = hdr.pack()
    assert len(raw) == 572
    assert raw[:8] == b"probe-a\0" and raw[256:262] == b"snap1\0"
    offsets = {
        w.INODE_CREATE_TIME_OFFSET: ("<Q", 1),
        w.INODE_SNAP_CTIME_OFFSET: ("<Q", 2),
        w.INODE_VM_CLOCK_OFFSET: ("<Q", 3),
        w.INODE_VDI_SIZE_OFFSET: ("<Q", 4),
        w.INODE_VM_STATE_SIZE_OFFSET: ("<Q", 5),
        w.INODE_COPY_POLICY_OFFSET: ("B", 6),
        w.INODE_STORE_POLICY_OFFSET: ("B", 7),
        w.INODE_NR_COPIES_OFFSET: ("B", 8),
        w.INODE_BSS_OFFSET: ("B", 9),
        w.INODE_SNAP_ID_OFFSET: ("<I", 10),
        w.INODE_VDI_ID_OFFSET: ("<I", 11),
        w.INODE_PARENT_OFFSET: ("<I", 12),
        w.INODE_BTREE_COUNTER_OFFSET: ("<I", 13),
    }
    for offset, (fmt, value) in offsets.items():
        assert struct.unpack_from(fmt, raw, offset) == (value,), offset
    assert w.InodeHeader.unpack(raw) == hdr
    assert w.index_entry_offset(2) == 4672


def test_node_records_from_a_captured_node_list():
    line = next(
        row
        for row in open(os.path.join(VECTOR_DIR, "direct_discovery.txt"))
        if row.startswith("S>C 0082")
    )
    payload = bytes.fromhex(line.split()[3])
    nodes = w.unpack_node_list(payload, 3)
    assert [(n.addr, n.port, n.nr_vnodes, n.zone) for n in nodes] == [
        ("127.0.0.1", 7000, 128, 0),
        ("127.0.0.1", 7001, 128, 1),
        ("127.0.0.1", 7002, 128, 2),
    ]
    assert nodes[0].space == 0x13F36D2000 and nodes[0].io_addr == ""
    # our own encoding: 12 zero bytes + IPv4, port at 40 (pointers are zero)
    raw = nodes[1].pack()
    assert raw[24:40] == bytes(12) + bytes([127, 0, 0, 1]) and raw[40:42] == b"\x59\x1b"
    assert raw[24:] == payload[80 + 24 : 160]
    # (an IPv6 address with 12 leading zero bytes, like ::1, reads back as IPv4)
    assert w.NodeRecord.unpack(w.NodeRecord("fe80::1", 7000).pack()).addr == "fe80::1"


def test_stat_cluster_record_from_the_capture():
    line = next(
        row
        for row in open(os.path.join(VECTOR_DIR, "direct_discovery.txt"))
        if row.startswith("S>C 0087")
    )
    payload = bytes.fromhex(line.split()[3])
    rec = w.StatCluster.unpack(payload)
    assert (rec.epoch, rec.nr_nodes, rec.nr_copies, rec.copy_policy, rec.flags, rec.driver) == (
        1,
        0,
        2,
        0,
        w.CLUSTER_FLAG_AUTO_VNODES,
        b"plain",
    )
    assert rec.ctime >> 32 == 0x6B08E1D0
    assert rec._replace(driver=b"plain").pack() == payload


def test_cluster_info_head_layout():
    head = w.ClusterInfo(0x0A, 0, 3, 1, 0x1234, 4, 2, 0, 1, 22, b"plain").pack()
    assert len(head) == 48
    assert head[0] == 0x0A and struct.unpack_from("<h", head, 2) == (3,)
    assert head[18] == 2 and head[20] == 1 and head[21] == 22
    assert head[25:31] == b"plain\0"
    assert w.ClusterInfo.unpack(head).default_store == b"plain"


def test_names_and_payloads():
    assert w.pad_name("x") == b"x" + bytes(255)
    assert len(w.vdi_payload("a", "")) == 512
    assert w.vdi_payload("a", "t")[256:258] == b"t\0"
    assert w.pad_name("n" * 255)[-1] == 0
    with pytest.raises(ValueError):
        w.pad_name("n" * 256)
    assert w.cstr(b"abc\0def") == b"abc"
    assert w.cstr(b"x" * 256) is None


def test_ec_policy_byte():
    assert w.ec_policy(2, 1) == 0x11 and w.ec_policy(4, 2) == 0x22
    assert w.ec_policy(16, 15) == 0x8F
    assert w.ec_split(0x11) == (2, 1) and w.ec_split(0) == (0, 0)
    assert w.is_fatal_policy(0x10) and w.is_fatal_policy(0x20)
    assert not w.is_fatal_policy(0) and not w.is_fatal_policy(0x11)
    with pytest.raises(ValueError):
        w.ec_policy(3, 1)


def test_bitmap_bit_order():
    bitmap = bytearray(w.VDI_BITMAP_SIZE)
    vid = 0x7F588F
    bitmap[vid >> 3] |= 1 << (vid & 7)
    assert w.bitmap_test(bitmap, vid) and not w.bitmap_test(bitmap, vid + 1)
    assert bitmap[0xFEB11] == 0x80


def test_names_of_codes():
    assert w.OPCODE_NAMES[0x02] == "READ_OBJ" and w.OPCODE_NAMES[0xC9] == "READ_DEL_VDIS"
    assert w.RESULT_NAMES[0x1A] == "READONLY" and w.RESULT_NAMES[0x14] == "VER_MISMATCH"
