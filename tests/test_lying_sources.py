"""Sources and callers that lie: each gets a clear error, no VDI is left
behind and nothing hangs.

* upload sources that break the file protocol (read() giving None or str,
  readinto() a count outside the buffer, iterables yielding non-bytes),
  through the glance driver under both backends, and through the command;
* sources that keep the protocol in a way the upload used to misread (an
  io.RawIOBase with only read(), empty pieces inside an iterable);
* sizes and locations that are not numbers or strings;
* a VDI deleted by someone else between the lookup and the inode read that
  open (or dog, inside one read or write) does: VdiNotFound.
"""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys

import pytest
from glance_store import exceptions
from glance_store import location as glance_location
from glance_support import (  # noqa: F401  (fixtures)
    CHUNK_MIB,
    MiB,
    dog_command,
    image_bytes,
    kind,
    multi,
)
from oslo_config import cfg

import sheepfast
from sheepfast import errors
from sheepfast import glance as driver
from sheepfast.backends import dog as dog_module
from sheepfast.backends import open_backend
from sheepfast.image import SheepdogImage
from sheepfast.testing import wire as w

CHUNK = CHUNK_MIB * MiB
GOOD = CHUNK + CHUNK // 2  # a whole chunk is written before the lie


def no_vdi(target, name) -> bool:
    with sheepfast.connect(target.address) as c:
        return not c.exists(name)


# ---------------------------------------------------------------- lying sources


class ReadThenLie:
    """read(): `good` true bytes, then `lie` forever."""

    def __init__(self, data: bytes, lie):
        self._inner = io.BytesIO(data)
        self._lie = lie

    def read(self, n: int = -1):
        out = self._inner.read(n)
        return out if out else self._lie


class ReadintoThenLie(io.RawIOBase):
    """readinto(): the true bytes, then lie(len(buffer)) forever (a count
    that keeps being negative used to loop forever)."""

    def __init__(self, data: bytes, lie):
        self._inner = io.BytesIO(data)
        self._lie = lie

    def readable(self) -> bool:
        return True

    def readinto(self, b):
        n = self._inner.readinto(b)
        return n if n else self._lie(len(memoryview(b)))


LIARS = {
    "read-None": lambda data: ReadThenLie(data, None),
    "read-str": lambda data: ReadThenLie(data, "text, not bytes"),
    "read-int": lambda data: ReadThenLie(data, 42),
    "readinto-None": lambda data: ReadintoThenLie(data, lambda room: None),
    "readinto-negative": lambda data: ReadintoThenLie(data, lambda room: -1),
    "readinto-too-many": lambda data: ReadintoThenLie(data, lambda room: room + 1),
    "readinto-huge": lambda data: ReadintoThenLie(data, lambda room: 1 << 62),
    "readinto-float": lambda data: ReadintoThenLie(data, lambda room: 1.5),
    "iter-str": lambda data: iter([data, "text"]),
    "iter-None": lambda data: iter([data, None]),
    "iter-int": lambda data: iter([data, 7]),
}


CLI_LIARS = {"read-None", "readinto-negative", "iter-str"}


def native_only(multi):
    if multi.kind == "cli":
        pytest.skip("handled above the backend: run with the native backend")


@pytest.mark.parametrize("liar", sorted(LIARS))
@pytest.mark.parametrize("known", [True, False], ids=["known-size", "unknown-size"])
def test_lying_source_is_a_backend_error_and_leaves_no_vdi(multi, new_name, liar, known):
    if multi.kind == "cli" and (known or liar not in CLI_LIARS):
        pytest.skip(
            "the source is checked above the backend: one liar per way of reading "
            "is enough for cli (its own part is the cleanup)"
        )
    image_id = multi.new_id(new_name)
    data = image_bytes(GOOD)
    declared = GOOD + CHUNK if known else 0
    with pytest.raises(exceptions.BackendException, match="image source") as info:
        multi.add(image_id, LIARS[liar](data), declared)
    assert isinstance(info.value.__cause__, errors.InvalidSource)
    assert no_vdi(multi.target, image_id)


@pytest.mark.parametrize("liar", ["read-None", "readinto-negative", "iter-str"])
def test_lying_source_at_the_first_byte(multi, new_name, liar):
    """Nothing true at all: still an error, not an empty image."""
    if multi.kind == "cli" and liar != "read-None":
        pytest.skip("backend-independent variant, run with the native backend")
    image_id = multi.new_id(new_name)
    with pytest.raises(exceptions.BackendException) as info:
        multi.add(image_id, LIARS[liar](b""), 0)
    assert isinstance(info.value.__cause__, errors.InvalidSource)
    assert no_vdi(multi.target, image_id)


def test_message_names_what_the_source_did(target, new_name):
    """The error says which call gave what, for the operator to find the
    broken reader."""
    cases = [
        (
            ReadintoThenLie(b"", lambda room: -1),
            r"readinto\(\) returned -1 for a (\d+)-byte buffer \(a count must be 0\.\.\1\)",
        ),
        (ReadintoThenLie(b"", lambda room: room + 1), r"returned \d+ for a \d+-byte buffer"),
        (ReadintoThenLie(b"", lambda room: None), r"non-blocking: readinto\(\) returned None"),
        (ReadThenLie(b"", None), r"non-blocking: read\(\) returned None"),
        (ReadThenLie(b"", "x"), r"read\(\) gave str, not bytes \(open the source in binary"),
        (iter([None]), r"iteration gave None"),
    ]
    pytest.importorskip("sheepfast._native")
    with open_backend(target.address, "native", io_timeout=30.0) as backend:
        image = SheepdogImage("unused", 7000, new_name(), CHUNK, backend=backend)
        image.create(0)
        try:
            for source, message in cases:
                with pytest.raises(errors.InvalidSource, match=message):
                    image.upload(source)
            assert image.get_size() == 0  # nothing was written or grown
        finally:
            image.delete()


# ---------------------------------------------------------------- honest sources


class RawWithReadOnly(io.RawIOBase):
    """An io.RawIOBase that implements read() alone: its inherited readinto
    raises NotImplementedError (io.BufferedReader fails on it as well)."""

    def __init__(self, data: bytes, step: int = 300_000):
        self._inner = io.BytesIO(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._inner.read(min(n, self._step) if n is not None and n >= 0 else self._step)


def test_raw_io_with_only_read_is_read(multi, new_name):
    native_only(multi)
    data = image_bytes(2 * CHUNK + 99)
    image_id = multi.new_id(new_name)
    uri, size, _, _, _ = multi.add(image_id, RawWithReadOnly(data), 0)
    assert size == len(data)
    assert multi.read_all(uri) == data


def test_empty_pieces_do_not_end_an_iterable(multi, new_name):
    """Only exhaustion ends an iterable: an empty piece in the middle used to
    end an unknown-size image there, silently."""
    native_only(multi)
    data = image_bytes(CHUNK + 5000)
    pieces = [data[:1000], b"", bytearray(), data[1000:CHUNK], b"", data[CHUNK:]]
    image_id = multi.new_id(new_name)
    uri, size, _, _, _ = multi.add(image_id, iter(pieces), 0)
    assert size == len(data)
    assert multi.read_all(uri) == data


# ---------------------------------------------------------------- sizes and locations


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "12", 2.5, -3, True, [1]], ids=repr)
def test_image_size_that_is_no_byte_count_is_forbidden(multi, new_name, bad):
    if multi.kind == "cli" and bad not in (math.inf,):
        pytest.skip("refused before any backend call: one variant is enough for cli")
    image_id = multi.new_id(new_name)
    with pytest.raises(exceptions.Forbidden, match="image_size") as info:
        multi.store.add(image_id, io.BytesIO(b"xx"), bad, "sha256")
    assert repr(bad) in str(info.value)
    assert no_vdi(multi.target, image_id)


def test_get_range_that_is_no_byte_count_is_invalid(multi, new_name):
    native_only(multi)
    data = image_bytes(1000)
    uri = multi.add(multi.new_id(new_name), io.BytesIO(data), len(data))[0]
    for offset, length in [(math.nan, None), (math.inf, None), (0, math.nan), (-1, None)]:
        with pytest.raises(exceptions.Invalid):
            multi.get(uri, offset=offset, chunk_size=length)
    assert multi.read_all(uri) == data


@pytest.fixture
def loc_conf():
    conf = cfg.ConfigOpts()
    conf(args=[])
    conf.register_opts(driver.OPTIONS, group="glance_store")
    conf.set_override("sheepdog_store_address", "10.0.0.1", group="glance_store")
    return conf


@pytest.mark.parametrize(
    "uri", [123, None, b"sheepdog://10.0.0.1:7000:img", ["sheepdog://x"], 3.5], ids=repr
)
def test_non_string_uri_is_a_bad_store_uri(loc_conf, uri):
    loc = driver.StoreLocation({}, loc_conf)
    with pytest.raises(exceptions.BadStoreUri, match="a location is a str"):
        loc.parse_uri(uri)


@pytest.mark.parametrize(
    "specs, named",
    [
        ({"image": 5, "addr": "10.0.0.1", "port": 7000}, "VDI name must be a str"),
        ({"image": "img", "addr": 1234, "port": 7000}, "host must be a non-empty str"),
        ({"image": "img", "addr": "10.0.0.1", "port": "x"}, "port must be a number"),
        ({"image": "img", "addr": "10.0.0.1", "port": 7000.5}, "got 7000.5"),
        ({"image": "img", "addr": "10.0.0.1", "port": math.nan}, "got nan"),
        ({"image": "img", "addr": "10.0.0.1", "port": [7000]}, "got \\[7000\\]"),
        ({"image": "img", "addr": "10.0.0.1", "port": 0}, "1..65535"),
        ({"image": "-rf", "addr": "10.0.0.1", "port": 7000}, "starts with '-'"),
    ],
)
def test_bad_location_specs_are_bad_store_uris(loc_conf, specs, named):
    with pytest.raises(exceptions.BadStoreUri, match=named):
        driver.StoreLocation(specs, loc_conf)
    with pytest.raises(exceptions.BadStoreUri, match=named):
        glance_location.Location("sheepdog", driver.StoreLocation, loc_conf, store_specs=specs)


def test_good_location_specs_still_work(loc_conf):
    loc = driver.StoreLocation({"image": "img", "addr": "10.0.0.1", "port": "7000"}, loc_conf)
    assert (loc.addr, loc.port, loc.image) == ("10.0.0.1", 7000, "img")
    assert loc.get_uri() == "sheepdog://10.0.0.1:7000:img"


# ---------------------------------------------------------------- VDIs deleted under us


@pytest.fixture
def fake(target):
    if not target.is_fake:
        pytest.skip("placing a delete between two requests needs FakeSheep")
    return target.fake


@pytest.fixture
def backend(target, kind):
    if kind == "native":
        b = open_backend(target.address, "native", io_timeout=30.0)
    else:
        b = open_backend(target.address, "cli", dog_command=dog_command(target), io_timeout=30.0)
    with b:
        yield b


#: The request each backend's open looks the name up with: GET_VDI_INFO
#: natively, the in-use bitmap for dog's list.
LOOKUP = {"native": w.OP_GET_VDI_INFO, "cli": w.OP_READ_VDIS}


def test_vdi_deleted_while_being_opened_is_not_found(fake, backend, kind, new_name):
    name = new_name()
    backend.create(name, 3 * MiB)
    # written by another client: this one has not looked the name up yet
    with open_backend(fake.address, "native") as writer, writer.open(name) as image:
        image.write(b"data", MiB)  # an object to reclaim, as a real image has
    fake.after_nth(1, lambda: fake.delete_vdi(name), opcode=LOOKUP[kind])
    with pytest.raises(errors.VdiNotFound, match=name):
        backend.open(name)
    assert fake.internal_errors == []
    assert fake.vdi(name) is None


def test_vdi_deleted_while_being_statted_is_not_found(fake, backend, kind, new_name):
    name = new_name()
    backend.create(name, MiB)
    fake.after_nth(1, lambda: fake.delete_vdi(name), opcode=LOOKUP[kind])
    with pytest.raises(errors.VdiNotFound):
        backend.stat(name)
    assert not backend.exists(name)


def test_inode_missing_after_the_lookup_is_not_found(fake, new_name):
    """NO_OBJ for the inode of a vid sheep just named: the VDI is gone, not
    an object the caller asked for."""
    with sheepfast.connect(fake.address) as cluster:
        name = new_name()
        cluster.create(name, MiB)
        fake.fail_nth(1, w.RES_NO_OBJ, opcode=w.OP_READ_OBJ)
        with pytest.raises(sheepfast.VdiNotFound, match="no inode"):
            cluster.open(name)
        assert cluster.open(name).size == MiB  # it was only that one read


@pytest.mark.parametrize("op", ["read", "write"])
@pytest.mark.parametrize("offset", [0, MiB], ids=["at-0", "past-0"])
def test_dog_sees_the_vdi_deleted_inside_one_run(fake, target, new_name, op, offset):
    """dog looks the name up and then reads the inode in every read and
    write; a delete in between shows as a past-end refusal (offset > 0) or
    as dog moving no bytes and exiting 0 (offset 0): VdiNotFound, never
    success with nothing written."""
    backend = open_backend(target.address, "cli", dog_command=dog_command(target))
    name = new_name()
    backend.create(name, 2 * MiB)
    image = backend.open(name)
    fake.after_nth(1, lambda: fake.delete_vdi(name), opcode=w.OP_GET_VDI_INFO)
    with pytest.raises(errors.VdiNotFound, match="was deleted"):
        if op == "read":
            image.read(offset, 4096)
        else:
            image.write(b"z" * 4096, offset)
    assert fake.vdi(name) is None


def test_dog_finding_no_inode_is_not_found(fake, target, new_name):
    backend = open_backend(target.address, "cli", dog_command=dog_command(target))
    name = new_name()
    backend.create(name, MiB)
    image = backend.open(name)
    fake.fail_nth(1, w.RES_NO_OBJ, opcode=w.OP_READ_OBJ)
    with pytest.raises(errors.VdiNotFound, match="deleted while dog opened it"):
        image.read(0, 10)
    assert image.read(0, 10) == bytes(10)


def test_dog_inode_read_failures_map_by_their_reason():
    """The mapping itself: dog's inode-read failure with NO_OBJ is
    VdiNotFound; its other messages keep their classes."""
    gone = dog_module._Outcome(
        1,
        b"",
        0,
        "Failed to read object 8012345600000000 No object found\nFailed to read a vdi x\n",
        False,
    )
    assert type(dog_module._classify(gone, "reading", b"x")) is errors.VdiNotFound
    eio = dog_module._Outcome(
        1,
        b"",
        0,
        "Failed to read object 8012345600000000 I/O error\nFailed to read a vdi x\n",
        False,
    )
    assert type(dog_module._classify(eio, "reading", b"x")) is errors.ServerError
    data = dog_module._Outcome(
        1,
        b"",
        0,
        "Failed to read object 0012345600000000 No object found\nFailed to read VDI\n",
        False,
    )
    assert type(dog_module._classify(data, "reading", b"x")) is errors.ObjectNotFound


def test_driver_get_of_a_vdi_deleted_under_it_is_not_found(fake, multi, new_name):
    data = image_bytes(1000)
    image_id = multi.new_id(new_name)
    uri = multi.add(image_id, io.BytesIO(data), len(data))[0]
    # Another client replaces the image, so the vid the store remembers from
    # its add names a deleted inode and the get looks the name up again ...
    fake.delete_vdi(image_id)
    with open_backend(fake.address, "native") as other:
        other.create(image_id, len(data))
        with other.open(image_id) as image:
            image.write(data, 0)
    # ... and between that lookup (native: the get's open; cli: the first
    # dog read after dog's list) and the inode read, the image goes.
    fake.after_nth(1, lambda: fake.delete_vdi(image_id), opcode=w.OP_GET_VDI_INFO)
    with pytest.raises(exceptions.NotFound):
        multi.read_all(uri)


# ---------------------------------------------------------------- the command


def test_put_from_a_non_blocking_stdin_fails_and_leaves_no_vdi(target, new_name):
    """A non-blocking pipe with no data yet: readinto gives None. It used to
    be taken as the end (an empty or truncated image, exit 0)."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(sheepfast.__file__)))
    env.pop("SHEEPFAST_CLUSTER", None)
    name = new_name()
    r, wfd = os.pipe()
    try:
        os.write(wfd, b"some bytes, then nothing for now")
        os.set_blocking(r, False)
        done = subprocess.run(
            [sys.executable, "-m", "sheepfast", "--cluster", target.address, "put", "-", name],
            stdin=r,
            capture_output=True,
            timeout=120,
            cwd="/",
            env=env,
        )
    finally:
        os.close(r)
        os.close(wfd)  # the writer stayed open: the data had not ended
    assert done.returncode == 1, done.stderr
    assert b"non-blocking" in done.stderr
    assert no_vdi(target, name)


LAZY_DOG = r"""#!/bin/sh
# lists any VDI asked for; "writes" by exiting 0 without reading its input
if [ "$2" = list ]; then
    for last; do :; done
    printf '= %s 0 1048576 0 0 1 abc 2  22\n' "$last"
fi
exit 0
"""


@pytest.mark.parametrize("length", [10, 3 * MiB], ids=["fits-the-pipe", "larger"])
def test_dog_leaving_its_input_unread_is_a_failed_write(tmp_path, length):
    """A dog that exits 0 without reading what it was given has not written
    it, however small (it fits in the pipe: no EPIPE to tell)."""
    dog = tmp_path / "dog"
    dog.write_text(LAZY_DOG)
    dog.chmod(0o755)
    backend = dog_module.DogBackend("127.0.0.1:7000", dog_command=str(dog))
    with backend.open("img") as image:
        image.resize(4 * MiB)
        with pytest.raises(errors.ProtocolError, match="stopped reading its input"):
            image.write(bytes(length), 0)
