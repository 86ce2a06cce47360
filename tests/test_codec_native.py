"""The C encoder/decoder (through sheepfast._native's test hooks) against
every captured header, and against the pure-Python codec FakeSheep uses."""

from __future__ import annotations

import os
import re

import pytest
from test_wire import ALL_MESSAGES, VECTOR_FILES, comment_fields, vector_messages

from sheepfast import _native, errors
from sheepfast.testing import wire as w


@pytest.mark.parametrize("filename", VECTOR_FILES)
def test_c_codec_round_trips_captured_headers(filename):
    for direction, raw, _comment in vector_messages(filename):
        if direction == "C>S":
            fields = _native._decode_request(raw)
            assert _native._encode_request(**fields) == raw
        else:
            # sf_rsp_decode reads every union view at once; re-encoding keeps
            # only the one the opcode selects, so compare field by field
            rsp = _native._decode_response(raw)
            py = w.ResponseHeader.unpack(raw)
            assert (rsp["opcode"], rsp["id"], rsp["data_length"], rsp["result"], rsp["epoch"]) == (
                py.opcode,
                py.id,
                py.data_length,
                py.result,
                py.epoch,
            )


@pytest.mark.parametrize("filename", VECTOR_FILES)
def test_c_decoder_agrees_with_capture_comments(filename):
    for direction, raw, comment in vector_messages(filename):
        f = comment_fields(comment)
        if direction == "C>S":
            r = _native._decode_request(raw)
            assert (r["proto_ver"], r["flags"], r["id"], r["data_length"]) == (
                f["pv"],
                f["flags"],
                f["id"],
                f["dlen"],
            )
            if "oid" in f:
                assert (r["oid"], r["offset"], r["copies"]) == (f["oid"], f["offset"], f["copies"])
                assert r["cow_oid"] == f.get("cow_oid", 0)
            if "vdi_size" in f:
                assert (r["vdi_size"], r["base_vdi_id"], r["snapid"], r["block_size_shift"]) == (
                    f["vdi_size"],
                    f["base_vid"],
                    f["snapid"],
                    f["bss"],
                )
        else:
            r = _native._decode_response(raw)
            assert (r["result"], r["data_length"]) == (f["result"], f["dlen"])
            if "vdi_id" in f and f["result"] == 0:
                assert (r["vdi_id"], r["copies"], r["block_size_shift"]) == (
                    f["vdi_id"],
                    f["copies"],
                    f["bss"],
                )


def test_c_encoder_builds_what_dog_sent():
    """Requests the client builds from scratch equal dog's bytes."""
    wanted = {
        # write_fresh_small.txt: CREATE_AND_WRITE of 512 bytes at 1 MiB
        "02010100000000000000000000020000000000008f587f000000000000000000"
        "02000000000000000000100000000000": dict(
            opcode=0x01,
            flags=0x01,
            data_length=512,
            oid=0x007F588F00000000,
            copies=2,
            offset=0x100000,
        ),
        # the 4-byte index update that follows it
        "02030100000000000000000004000000000000008f587f800000000000000000"
        "02000000000000003812000000000000": dict(
            opcode=0x03, flags=0x01, data_length=4, oid=0x807F588F00000000, copies=2, offset=4664
        ),
    }
    for hexed, fields in wanted.items():
        opcode = fields.pop("opcode")
        assert _native._encode_request(opcode, **fields).hex() == hexed


def test_internal_opcodes_get_protocol_version_0x0a():
    assert _native._encode_request(0x82)[0] == 0x0A  # GET_NODE_LIST
    assert _native._encode_request(0x15)[0] == 0x02  # READ_VDIS
    assert _native._encode_request(0xC9)[0] == 0x0A  # READ_DEL_VDIS


def test_all_captured_messages_seen():
    assert len(ALL_MESSAGES) > 300


@pytest.mark.parametrize(
    "policy,ok",
    [
        (0, True),
        (0x11, True),
        (0x22, True),
        (0x42, True),
        (0x10, False),
        (0x20, False),
        (0x31, False),
    ],
)
def test_copy_policy_check(policy, ok):
    assert (_native._check_copy_policy(policy) is None) == ok


def test_zero_detection():
    assert _native._is_zero(b"")
    assert _native._is_zero(bytes(1 << 20))
    for pos in (0, 1, 15, 16, 17, 4095, (1 << 20) - 1):
        buf = bytearray(1 << 20)
        buf[pos] = 1
        assert not _native._is_zero(buf), pos


# Each defined once, in sheepfast.h; the binding exports it under this name
# (the timeouts in seconds).
HEADER_CONSTANTS = {
    "DEFAULT_PORT": ("SF_DEFAULT_PORT", 1),
    "DEFAULT_CONNECT_TIMEOUT": ("SF_DEFAULT_CONNECT_TIMEOUT_MS", 1000),
    "DEFAULT_IO_TIMEOUT": ("SF_DEFAULT_IO_TIMEOUT_MS", 1000),
    "DEFAULT_DEPTH": ("SF_DEFAULT_DEPTH", 1),
    "MAX_DEPTH": ("SF_MAX_DEPTH", 1),
    "NAME_MAX": ("SF_NAME_MAX", 1),
    "MAX_COPIES": ("SF_MAX_COPIES", 1),
    "DEFAULT_BLOCK_SIZE_SHIFT": ("SF_DEFAULT_BLOCK_SIZE_SHIFT", 1),
    "MIN_BLOCK_SIZE_SHIFT": ("SF_MIN_BLOCK_SIZE_SHIFT", 1),
    "MAX_BLOCK_SIZE_SHIFT": ("SF_MAX_BLOCK_SIZE_SHIFT", 1),
    "DEFAULT_REQUEST_SIZE": ("SF_DEFAULT_REQUEST_SIZE", 1),
    "ATTR_KEY_MAX": ("SF_ATTR_KEY_MAX", 1),
    "ATTR_VALUE_MAX": ("SF_ATTR_VALUE_MAX", 1),
}
HEADER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src_c", "sheepfast.h"
)


def _header_defines() -> dict[str, int]:
    """The integer #defines of sheepfast.h, evaluated ("(448u * 1024u)")."""
    with open(HEADER) as f:
        text = f.read()
    found = {}
    for name, value in re.findall(r"^#define (SF_\w+) ([^/\n]+)", text, re.M):
        expr = re.sub(r"(\d+)u\b", r"\1", value.strip())
        if re.fullmatch(r"[\d\s()*+<-]+", expr):
            found[name] = eval(expr)  # digits and operators only
    return found


@pytest.mark.skipif(not os.path.exists(HEADER), reason="needs the C sources (src_c/)")
def test_the_binding_exports_the_headers_defaults_and_limits():
    defines = _header_defines()
    for exported, (define, scale) in HEADER_CONSTANTS.items():
        assert getattr(_native, exported) == defines[define] / scale, exported
    assert isinstance(_native.DEFAULT_IO_TIMEOUT, float)
    assert isinstance(_native.DEFAULT_PORT, int)


@pytest.mark.parametrize(
    "option,value,why",
    [
        ("depth", _native.MAX_DEPTH + 1, f"depth must be 1..{_native.MAX_DEPTH}"),
        ("depth", -1, "depth must not be negative"),
        ("depth", 0, "depth must be positive"),
        ("request_size", 4097, "request_size must be a multiple of 4096"),
        ("io_timeout", 0, "io_timeout must be a positive number"),
        ("connect_timeout", float("nan"), "connect_timeout must be a positive number"),
    ],
)
def test_out_of_range_cluster_options_are_refused_not_clamped(option, value, why):
    # refused before anything is sent: nothing listens on port 1
    with pytest.raises(errors.InvalidArgument, match=why):
        _native.Cluster("127.0.0.1:1", **{option: value})
