"""VDI attributes (Sheepdog's key/value pairs): Vdi.metadata_get/set/remove.

The contract tests run for both backends (native, cli) on each target of
conftest's ``target`` fixture: FakeSheep (the CLI backend then drives
tests/fakedog/dog) and, when one is configured, a real cluster (the real
dog). The wire tests send GET_VDI_ATTR by hand to check what the client and
FakeSheep rely on, on both targets too.
"""

from __future__ import annotations

import socket
import uuid

import pytest
from conftest import FAKEDOG, dog_command  # noqa: F401  (FAKEDOG: used below)

import sheepfast
from sheepfast import errors
from sheepfast.backends import Capability, native_available
from sheepfast.backends import dog as dog_module
from sheepfast.backends.dog import DogBackend, parse_addresses
from sheepfast.testing import wire as w

MiB = 1 << 20
KEY_MAX = 255
VALUE_MAX = 65536


@pytest.fixture
def vdi(backend, new_name):
    name = new_name("sf-attr")
    backend.create(name, MiB)
    with backend.open(name) as handle:
        yield handle


def test_limits_are_sheeps_in_both_backends():
    from sheepfast import _native

    assert (_native.ATTR_KEY_MAX, _native.ATTR_VALUE_MAX) == (KEY_MAX, VALUE_MAX)
    assert (dog_module.MAX_ATTR_KEY_BYTES, dog_module.MAX_ATTR_VALUE_BYTES) == (KEY_MAX, VALUE_MAX)
    # the record FakeSheep and fakedog build has room for exactly these
    assert w.ATTR_KEY_SIZE == KEY_MAX + 1 and w.ATTR_VALUE_MAX == VALUE_MAX


def test_round_trip_replace_and_remove(vdi):
    vdi.metadata_set("owner", "glance")
    vdi.metadata_set(b"size-hint", b"1073741824")
    assert vdi.metadata_get("owner") == b"glance"
    assert vdi.metadata_get("size-hint") == b"1073741824"  # str and bytes keys are one key
    vdi.metadata_set("owner", "nova")  # replaced, not added
    assert vdi.metadata_get(b"owner") == b"nova"
    vdi.metadata_set("empty", "")
    assert vdi.metadata_get("empty") == b""
    vdi.metadata_set("unicode", "caf\u00e9 \u2713")
    assert vdi.metadata_get("unicode") == "caf\u00e9 \u2713".encode()
    vdi.metadata_set("-looks-like-an-option", "-so does this")
    assert vdi.metadata_get("-looks-like-an-option") == b"-so does this"
    vdi.metadata_remove("owner")
    with pytest.raises(errors.AttributeNotFound):
        vdi.metadata_get("owner")
    assert vdi.metadata_get("size-hint") == b"1073741824"  # the others stay
    vdi.metadata_set("owner", "again")  # and it can come back
    assert vdi.metadata_get("owner") == b"again"


def test_longest_key_and_value(vdi):
    key = "k" * KEY_MAX
    value = bytes(range(1, 256)) * (VALUE_MAX // 255) + b"x" * (VALUE_MAX % 255)
    assert len(value) == VALUE_MAX and b"\0" not in value
    vdi.metadata_set(key, value)
    assert vdi.metadata_get(key) == value
    # a key one byte shorter is another key
    with pytest.raises(errors.AttributeNotFound):
        vdi.metadata_get(key[:-1])


def test_missing_key_is_a_key_error(vdi):
    with pytest.raises(KeyError) as info:
        vdi.metadata_get("never-set")
    exc = info.value
    assert isinstance(exc, errors.AttributeNotFound)
    assert isinstance(exc, errors.ObjectNotFound) and isinstance(exc, sheepfast.SheepfastError)
    assert "never-set" in str(exc) and not str(exc).startswith('"')  # the message, not a repr
    with pytest.raises(errors.AttributeNotFound):
        vdi.metadata_remove("never-set")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("", "v", "key is empty"),
        ("k" * (KEY_MAX + 1), "v", "longer than 255 bytes"),
        (b"a\0b", "v", "NUL"),
        ("k", b"v" * (VALUE_MAX + 1), "65536-byte limit"),
    ],
)
def test_limits_are_checked_before_sending(vdi, key, value, message):
    with pytest.raises(errors.InvalidArgument, match=message):
        vdi.metadata_set(key, value)
    if value == "v":
        for call in (vdi.metadata_get, vdi.metadata_remove):
            with pytest.raises(errors.InvalidArgument, match=message):
                call(key)


def test_wrong_types(vdi):
    with pytest.raises(TypeError, match="key"):
        vdi.metadata_set(7, "v")
    with pytest.raises(TypeError, match="value"):
        vdi.metadata_set("k", 7)


def test_binary_values(vdi, backend):
    value = b"\0\x01\xff binary \0"
    if backend.kind == "cli":
        # dog takes the value as an argument: no NUL can get through
        with pytest.raises(errors.InvalidArgument, match="NUL"):
            vdi.metadata_set("bin", value)
        return
    vdi.metadata_set("bin", value)
    assert vdi.metadata_get("bin") == value


def test_each_backend_reads_what_the_other_wrote(target, new_name):
    if not native_available():
        pytest.skip("the native extension is not built")
    name = new_name("sf-attr")
    with sheepfast.connect(target.address) as cluster:
        cluster.create(name, MiB)
        cli = DogBackend(target.address, dog_command=dog_command(target), timeout=60)
        with cluster.open(name) as native_vdi, cli.open(name) as cli_vdi:
            native_vdi.metadata_set("from-native", "n")
            cli_vdi.metadata_set("from-cli", "c")
            assert cli_vdi.metadata_get("from-native") == b"n"
            assert native_vdi.metadata_get("from-cli") == b"c"
            cli_vdi.metadata_remove("from-native")
            with pytest.raises(errors.AttributeNotFound):
                native_vdi.metadata_get("from-native")


def test_attributes_outlive_the_vdi_and_follow_its_name(backend, new_name):
    """sheep keeps attributes by VDI name and never removes them: after a
    delete the name has none to look up, and a new VDI of the same name sees
    the old ones again. (The upload mark records its VDI's vid for this.)"""
    name = new_name("sf-attr")
    backend.create(name, MiB)
    with backend.open(name) as handle:
        handle.metadata_set("k", "old")
        first_vid = handle.vid
    backend.delete(name)
    with pytest.raises(errors.VdiNotFound):
        backend.open(name)
    backend.create(name, MiB)
    with backend.open(name) as handle:
        assert handle.vid != first_vid
        assert handle.metadata_get("k") == b"old"


def test_attribute_of_a_deleted_vdi(backend, new_name):
    name = new_name("sf-attr")
    backend.create(name, MiB)
    with backend.open(name) as handle:
        backend.delete(name)
        with pytest.raises(errors.VdiNotFound):
            handle.metadata_set("k", "v")
        with pytest.raises(errors.VdiNotFound):
            handle.metadata_get("k")


def test_closed_handle(vdi):
    vdi.close()
    with pytest.raises(errors.InvalidArgument, match="closed"):
        vdi.metadata_get("k")


# ------------------------------------------------------------------ the wire


class Raw:
    """GET_VDI_ATTR by hand (sheepfast.testing.wire over a socket)."""

    def __init__(self, address):
        self.sock = socket.create_connection(parse_addresses(address)[0], timeout=30)

    def close(self):
        self.sock.close()

    def call(self, opcode, args=None, *, flags=0, payload=b"", data_length=None):
        if data_length is None:
            data_length = len(payload)
        self.sock.sendall(
            w.pack_request(opcode, args, flags=flags, data_length=data_length) + payload
        )
        rsp = w.ResponseHeader.unpack(self._recv(w.HEADER_SIZE))
        return rsp, self._recv(rsp.data_length)

    def _recv(self, size):
        buf = bytearray()
        while len(buf) < size:
            chunk = self.sock.recv(size - len(buf))
            assert chunk, "sheep closed the connection"
            buf += chunk
        return bytes(buf)

    def attr(self, name, key, value=b"", flags=0):
        return self.call(
            w.OP_GET_VDI_ATTR,
            w.VdiArgs(),
            flags=w.FLAG_WRITE | flags,
            payload=w.attr_record(name, key, value),
        )[0]


@pytest.fixture
def raw(target):
    sheep = Raw(target.address)
    yield sheep
    sheep.close()


def test_wire_attribute_object(raw, cluster, new_name):
    """What sf_attr.c relies on: the reply names the attribute object by the
    *name hash* (not the vid) and attr_id, and READ_OBJ of it returns the
    record with the value, value_len and the VDI's creation time."""
    name = new_name("sf-attr")
    vid = cluster.create(name, MiB)
    rsp = raw.attr(name, "key", b"value", w.FLAG_ATTR_CREAT)
    assert rsp.result == w.RES_SUCCESS
    assert rsp.vdi.vdi_id == w.fnv1a_vid(name)
    expected_first_slot = w.attr_hash(w.attr_record(name, "key"))
    assert rsp.vdi.attr_id == expected_first_slot
    rsp, record = raw.call(
        w.OP_READ_OBJ,
        w.ObjArgs(oid=w.attr_oid(rsp.vdi.vdi_id, rsp.vdi.attr_id)),
        data_length=w.ATTR_OBJ_SIZE,
    )
    assert rsp.result == w.RES_SUCCESS and len(record) == w.ATTR_OBJ_SIZE
    assert w.cstr(record[: w.NAME_SIZE]) == name.encode()
    assert w.cstr(record[w.ATTR_KEY_OFFSET : w.ATTR_VALUE_OFFSET]) == b"key"
    assert int.from_bytes(record[w.ATTR_VALUE_LEN_OFFSET : w.ATTR_KEY_OFFSET], "little") == 5
    assert record[w.ATTR_VALUE_OFFSET : w.ATTR_VALUE_OFFSET + 5] == b"value"
    ctime = int.from_bytes(record[w.ATTR_CTIME_OFFSET : w.ATTR_CTIME_OFFSET + 8], "little")
    assert ctime >> 32 == int(cluster.stat(name).create_time)
    assert vid  # (the vid itself appears nowhere in the object id)


def test_wire_flags(raw, cluster, new_name):
    name = new_name("sf-attr")
    cluster.create(name, MiB)
    assert raw.attr(name, "k").result == w.RES_NO_OBJ  # lookup, unset
    assert raw.attr(name, "k", b"1", w.FLAG_ATTR_CREAT | w.FLAG_ATTR_EXCL).result == 0
    assert (
        raw.attr(name, "k", b"2", w.FLAG_ATTR_CREAT | w.FLAG_ATTR_EXCL).result == w.RES_VDI_EXIST
    )  # EXCL refuses
    assert raw.attr(name, "k", b"3", w.FLAG_ATTR_CREAT).result == 0  # CREAT replaces
    with cluster.open(name) as vdi:
        assert vdi.metadata_get("k") == b"3"
    assert raw.attr(name, "k", flags=w.FLAG_ATTR_DEL).result == 0
    assert raw.attr(name, "k").result == w.RES_NO_OBJ
    assert raw.attr(name, "k", flags=w.FLAG_ATTR_DEL).result == w.RES_NO_OBJ  # not twice
    missing = f"sf-no-such-vdi-{uuid.uuid4().hex[:8]}"
    assert raw.attr(missing, "k").result == w.RES_NO_VDI


def test_fakesheep_refuses_a_short_record(fake_sheep):
    """sheep reads the record's fields at fixed offsets: a short request
    would make it read past its buffer. FakeSheep records that as a hazard
    (the client always sends the whole record)."""
    raw = Raw(fake_sheep.address)
    try:
        rsp, _ = raw.call(
            w.OP_GET_VDI_ATTR,
            w.VdiArgs(),
            flags=w.FLAG_WRITE,
            payload=w.attr_record("x", "k")[:1024],
        )
    finally:
        raw.close()
    assert rsp.result == w.RES_INVALID_PARMS
    assert any("GET_VDI_ATTR with 1024 bytes" in h for h in fake_sheep.hazards)
    fake_sheep.hazards.clear()


def test_list_attributes(vdi, backend, new_name):
    if not backend.capabilities & Capability.ATTRIBUTE_LIST:
        with pytest.raises(errors.Unsupported, match="ATTRIBUTE_LIST"):
            vdi.metadata_list()
        return
    assert vdi.metadata_list() == []
    vdi.metadata_set("b-key", b"two")
    vdi.metadata_set("a-key", b"\0one")
    vdi.metadata_set("gone", b"x")
    vdi.metadata_remove("gone")  # its record stays, its name blanked: not listed
    assert vdi.metadata_list() == [("a-key", b"\0one"), ("b-key", b"two")]
    other = new_name("sf-attr")  # another name's attributes are not ours
    backend.create(other, MiB)
    with backend.open(other) as handle:
        handle.metadata_set("a-key", b"theirs")
        assert handle.metadata_list() == [("a-key", b"theirs")]
    assert vdi.metadata_list() == [("a-key", b"\0one"), ("b-key", b"two")]
    for key, _ in vdi.metadata_list():
        vdi.metadata_remove(key)
