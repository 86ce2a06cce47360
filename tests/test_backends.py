"""The backend contract: NativeBackend and DogBackend behave alike.

Every contract test runs for each backend ("native", "cli") on each target
of conftest's ``target`` fixture:

* fake: the session FakeSheep; the CLI backend drives tests/fakedog/dog;
* real: the cluster in SHEEPFAST_TEST_CLUSTER; the CLI backend drives the
  real ``dog`` found on PATH (skipped, saying why, when there is none).

Then come CLI-only tests (timeouts, a missing dog, argument safety, gateway
fail-over, collie, IPv6, dog's failures mapped to exception classes) and
tests of the ``dog vdi list -r`` parser and of the stderr mapping against
lines captured from the real dog 1.0.
"""

from __future__ import annotations

import array
import json
import os
import re
import shlex
import shutil
import socket
import stat as stat_module
import subprocess
import sys
import threading
import time
import uuid

import pytest

from sheepfast import errors
from sheepfast.backends import (
    Backend,
    BackendImage,
    Capability,
    RecyclingImage,
    ThinImage,
    UsageImage,
    native_available,
    open_backend,
)
from sheepfast.backends import dog as dog_module
from sheepfast.backends.dog import DogBackend, parse_addresses, parse_vdi_list
from sheepfast.defaults import DEFAULT_REQUEST_SIZE
from sheepfast.testing import FakeSheep
from sheepfast.testing import wire as w

MiB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))
FAKEDOG = os.path.join(HERE, "fakedog", "dog")
VECTORS = os.path.join(HERE, "vectors")
NO_REAL_DOG = "the real dog is not on PATH (needed for the CLI backend on a real cluster)"


# ---------------------------------------------------------------- fixtures


def _script(directory, name: str, body: str) -> str:
    path = os.path.join(str(directory), name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, os.stat(path).st_mode | stat_module.S_IXUSR | stat_module.S_IXGRP)
    return path


@pytest.fixture(scope="session")
def fakedog_dir(tmp_path_factory):
    """A directory with `dog` and `collie` running tests/fakedog/dog under
    this interpreter (the stand-in loads wire.py from the source tree)."""
    directory = tmp_path_factory.mktemp("fakedog")
    run = f'exec {shlex.quote(sys.executable)} {shlex.quote(FAKEDOG)} "$@"'
    for tool in ("dog", "collie"):
        _script(directory, tool, run)
    return str(directory)


def make_backend(kind: str, target, fakedog_dir: str, **options):
    if kind == "native":
        if not native_available():
            pytest.skip("the native extension is not built")
        return open_backend(target.address, "native", io_timeout=30.0)
    if target.is_fake:
        command = os.path.join(fakedog_dir, "dog")
    else:
        command = shutil.which("dog")
        if command is None:
            pytest.skip(NO_REAL_DOG)
    options.setdefault("timeout", 60.0)
    return DogBackend(target.address, dog_command=command, **options)


@pytest.fixture(params=["native", "cli"])
def backend(request, target, fakedog_dir):
    with make_backend(request.param, target, fakedog_dir) as b:
        yield b


#: For tests of the CLI backend alone (fakedog on FakeSheep, dog on a cluster).
cli_only = pytest.mark.parametrize("backend", ["cli"], indirect=True)


class RawSheep:
    """Just enough protocol (sheepfast.testing.wire over a socket) for what
    the backends do not offer: snapshots, clones, EC VDIs, name lookups.
    The sequences are dog's (docs/PROTOCOL.md section 6)."""

    def __init__(self, address: str):
        self.sock = socket.create_connection(parse_addresses(address)[0], timeout=30)

    def close(self):
        self.sock.close()

    def _recv(self, size: int) -> bytes:
        buf = bytearray()
        while len(buf) < size:
            chunk = self.sock.recv(size - len(buf))
            assert chunk, "sheep closed the connection"
            buf += chunk
        return bytes(buf)

    def call(self, opcode, args=None, *, flags=0, payload=b"", data_length=None):
        length = len(payload) if data_length is None else data_length
        self.sock.sendall(w.pack_request(opcode, args, flags=flags, data_length=length) + payload)
        rsp = w.ResponseHeader.unpack(self._recv(w.HEADER_SIZE))
        return rsp, self._recv(rsp.data_length)

    def lookup(self, name, tag=b"") -> tuple[int, int]:
        rsp, _ = self.call(
            w.OP_GET_VDI_INFO, w.VdiArgs(), flags=w.FLAG_WRITE, payload=w.vdi_payload(name, tag)
        )
        return rsp.result, rsp.vdi.vdi_id

    def vid(self, name, tag=b"") -> int:
        result, vid = self.lookup(name, tag)
        assert result == w.RES_SUCCESS, w.RESULT_NAMES.get(result)
        return vid

    def header(self, vid: int) -> w.InodeHeader:
        rsp, data = self.call(
            w.OP_READ_OBJ,
            w.ObjArgs(oid=w.inode_oid(vid)),
            flags=w.FLAG_DIRECT,
            data_length=w.INODE_HEADER_SIZE,
        )
        assert rsp.result == w.RES_SUCCESS
        return w.InodeHeader.unpack(data)

    def new_vdi(
        self, name, size, *, base=0, snapshot=False, copies=0, copy_policy=0, block_size_shift=0
    ) -> int:
        args = w.VdiArgs(
            vdi_size=size,
            base_vdi_id=base,
            copies=copies,
            copy_policy=copy_policy,
            block_size_shift=block_size_shift,
            snapid=1 if snapshot else 0,
        )
        rsp, _ = self.call(w.OP_NEW_VDI, args, flags=w.FLAG_WRITE, payload=w.pad_name(name))
        assert rsp.result == w.RES_SUCCESS, w.RESULT_NAMES.get(rsp.result)
        return rsp.vdi.vdi_id

    def snapshot(self, name, tag) -> int:
        """Freezes the working VDI as snapshot `tag`; returns its vid."""
        vid = self.vid(name)
        h = self.header(vid)
        rsp, _ = self.call(
            w.OP_WRITE_OBJ,
            w.ObjArgs(
                oid=w.inode_oid(vid),
                copies=h.nr_copies,
                copy_policy=h.copy_policy,
                offset=w.INODE_TAG_OFFSET,
            ),
            flags=w.FLAG_WRITE,
            payload=w.pad_name(tag, w.TAG_SIZE),
        )
        assert rsp.result == w.RES_SUCCESS
        self.new_vdi(
            name,
            h.vdi_size,
            base=vid,
            snapshot=True,
            copies=h.nr_copies,
            copy_policy=h.copy_policy,
            block_size_shift=h.block_size_shift,
        )
        return vid

    def clone(self, source, tag, name) -> int:
        h = self.header(self.vid(source, tag))
        return self.new_vdi(
            name,
            h.vdi_size,
            base=h.vdi_id,
            copies=h.nr_copies,
            copy_policy=h.copy_policy,
            block_size_shift=h.block_size_shift,
        )

    def delete_snapshot(self, name, tag) -> None:
        """As `dog vdi delete -s TAG NAME`: zero the index, then DEL_VDI."""
        result, vid = self.lookup(name, tag)
        if result != w.RES_SUCCESS:
            return
        h = self.header(vid)
        count = -(-h.vdi_size // h.object_size)
        if count:
            rsp, _ = self.call(
                w.OP_WRITE_OBJ,
                w.ObjArgs(
                    oid=w.inode_oid(vid),
                    copies=h.nr_copies,
                    copy_policy=h.copy_policy,
                    offset=w.INDEX_OFFSET,
                ),
                flags=w.FLAG_WRITE | w.FLAG_DIRECT,
                payload=bytes(4 * count),
            )
            assert rsp.result == w.RES_SUCCESS
        rsp, _ = self.call(
            w.OP_DEL_VDI, w.VdiArgs(), flags=w.FLAG_WRITE, payload=w.vdi_payload(name, tag)
        )
        assert rsp.result == w.RES_SUCCESS


@pytest.fixture
def raw(target):
    sheep = RawSheep(target.address)
    yield sheep
    sheep.close()


@pytest.fixture
def vdi_name(backend, raw):
    """fresh_name(prefix) -> a new VDI name; fresh_name.keep(name) adopts
    one. The VDIs (and the (name, tag) snapshots listed in
    fresh_name.snapshots) are deleted afterwards through the backend under
    test, so the CLI variant never needs the extension."""
    names = []

    def fresh_name(prefix: str = "sf-backend") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        names.append(name)
        return name

    def keep(name: str) -> str:
        names.append(name)
        return name

    fresh_name.keep = keep
    fresh_name.snapshots = []
    yield fresh_name
    for name, tag in fresh_name.snapshots:
        raw.delete_snapshot(name, tag)
    for name in names:
        try:
            backend.delete(name)
        except errors.VdiNotFound:
            pass


def resolves(raw: RawSheep, name) -> bool:
    """Whether GET_VDI_INFO still finds the name (a zombie would)."""
    return raw.lookup(name)[0] == w.RES_SUCCESS


# ----------------------------------------------------------- the contract


def test_backend_satisfies_the_protocols(backend, vdi_name):
    assert isinstance(backend, Backend)
    assert backend.kind in ("native", "cli")
    name = vdi_name()
    backend.create(name, MiB)
    with backend.open(name) as image:
        assert isinstance(image, BackendImage)
        assert image.name == name


# What a capability adds to the images; what a backend lacks, its images
# do not pretend to have.
_IMAGE_PROTOCOLS = {Capability.THIN_WRITES: ThinImage, Capability.USAGE: UsageImage}


def test_capabilities_are_declared_and_kept(backend, vdi_name):
    assert isinstance(backend.capabilities, Capability)
    held = [c for c in Capability if c in backend.capabilities]
    dog_can = [Capability.SNAPSHOTS, Capability.CLONES, Capability.ROLLBACK, Capability.LOCK_LIST]
    assert held == (list(Capability) if backend.kind == "native" else dog_can)
    name = vdi_name()
    backend.create(name, MiB)
    with backend.open(name) as image:
        for capability, protocol in _IMAGE_PROTOCOLS.items():
            assert isinstance(image, protocol) == (capability in backend.capabilities)
        if Capability.RECYCLED_READS in backend.capabilities:
            assert isinstance(image, RecyclingImage)
            assert image.read(0, 4096, recycle=[]) == bytes(4096)
        if Capability.USAGE in backend.capabilities:
            assert image.usage() == (0, 0)


def test_open_backend_passes_routing_and_request_size(target, fakedog_dir):
    if not native_available():
        pytest.skip("the native extension is not built")
    with open_backend(target.address, "native", routing=False, request_size=64 << 10) as b:
        assert (b.cluster.routing, b.cluster.request_size) == (False, 64 << 10)
    with open_backend(target.address, "native") as b:
        assert (b.cluster.routing, b.cluster.request_size) == (True, DEFAULT_REQUEST_SIZE)


def test_the_dog_backend_refuses_what_it_cannot_honour(target, fakedog_dir):
    dog = os.path.join(fakedog_dir, "dog")
    with pytest.raises(errors.Unsupported, match="route"):
        open_backend(target.address, "cli", routing=True, dog_command=dog)
    with pytest.raises(errors.Unsupported, match="request"):
        open_backend(target.address, "cli", request_size=64 << 10, dog_command=dog)
    # keeping traffic on the given gateways, at most depth requests in
    # flight: dog does both already
    with open_backend(target.address, "cli", routing=False, depth=1, dog_command=dog) as b:
        assert b.kind == "cli"


def test_create_stat_exists_list_delete(backend, vdi_name, raw):
    name, other = vdi_name(), vdi_name()
    assert not backend.exists(name)
    backend.create(name, 12 * MiB + 5)
    backend.create(other, 0)  # zero-sized VDIs are valid
    info = backend.stat(name)
    assert (info.name, info.size, info.snapshot, info.tag) == (name, 12 * MiB + 5, False, "")
    assert info.vid == raw.vid(name)
    assert info.object_size == 1 << info.block_size_shift
    assert info.copies >= 1 and info.copy_policy == 0 and info.redundancy == str(info.copies)
    assert abs(info.create_time - time.time()) < 3600
    assert backend.exists(name) and backend.stat(other).size == 0
    listed = {i.name: i for i in backend.list() if i.name in (name, other)}
    assert set(listed) == {name, other}
    assert (listed[name].vid, listed[name].size) == (info.vid, info.size)
    backend.delete(name)
    assert not backend.exists(name)
    assert name not in [i.name for i in backend.list()]
    assert not resolves(raw, name)  # no zombie: the name is gone for sheep too
    assert backend.exists(other)


def test_create_with_copies(backend, vdi_name):
    name = vdi_name()
    backend.create(name, MiB, copies=1)
    assert backend.stat(name).copies == 1


def test_delete_reclaims_the_objects(backend, vdi_name, raw, target):
    name = vdi_name()
    backend.create(name, 6 * MiB, block_size_shift=20)
    with backend.open(name) as image:
        image.write(os.urandom(3 * MiB), MiB // 2)
        vid = image.vid
    if target.is_fake:
        assert {w.vid_of(oid) for oid in target.fake.object_ids()} >= {vid}
    backend.delete(name)
    assert not resolves(raw, name)  # DEL_VDI alone would leave a zombie that resolves
    if target.is_fake:  # the index was zeroed first, so sheep dropped every object
        assert not [oid for oid in target.fake.object_ids() if w.vid_of(oid) == vid]


@pytest.mark.parametrize("block_size_shift", [20, 23])
def test_round_trip_across_object_boundaries(backend, vdi_name, block_size_shift):
    name = vdi_name()
    obj = 1 << block_size_shift
    size = 3 * obj + 777
    backend.create(name, size, block_size_shift=block_size_shift)
    assert backend.stat(name).block_size_shift == block_size_shift
    data = os.urandom(obj + 4099)
    start = obj - 3  # starts 3 bytes before a boundary, ends inside the next object but one
    with backend.open(name) as image:
        assert (image.size, image.object_size) == (size, obj)
        assert image.write(data, start) == len(data)
        assert image.read(start, len(data)) == data
        # holes on either side read as zeros
        assert image.read(0, start) == bytes(start)
        tail = start + len(data)
        assert image.read(tail, size - tail) == bytes(size - tail)
        # readinto: bytearray, a memoryview slice, an array of another item size
        buf = bytearray(len(data))
        assert image.readinto(buf, start) == len(data) and buf == data
        window = bytearray(100)
        assert image.readinto(memoryview(window)[10:30], start + obj) == 20
        assert window[10:30] == data[obj : obj + 20] and window[:10] == bytes(10)
        words = array.array("I", bytes(16))
        assert image.readinto(words, start) == 16 and words.tobytes() == data[:16]
        # the last byte of the VDI, and a zero-length read at the very end
        image.write(b"\xff", size - 1)
        assert image.read(size - 1, 1) == b"\xff" and image.read(size, 0) == b""
    with backend.open(name) as again:
        assert again.read(start, len(data)) == data


def test_write_accepts_any_buffer(backend, vdi_name):
    name = vdi_name()
    backend.create(name, MiB)
    payload = os.urandom(4096)
    with backend.open(name) as image:
        for offset, buf in enumerate(
            [
                payload,
                bytearray(payload),
                memoryview(payload)[100:900],
                array.array("Q", payload[:800]),
            ]
        ):
            expected = bytes(memoryview(buf).cast("B"))
            assert image.write(buf, offset * 5000) == len(expected)
            assert image.read(offset * 5000, len(expected)) == expected
        assert image.write(b"", 7) == 0 and image.read(7, 0) == b""


def test_resize(backend, vdi_name):
    name = vdi_name()
    backend.create(name, 4 * MiB, block_size_shift=20)
    with backend.open(name) as image:
        image.resize(9 * MiB + 1)
        assert image.size == 9 * MiB + 1
        image.write(b"end", 9 * MiB - 2)  # past the old end
        assert image.read(9 * MiB - 2, 3) == b"end"
        image.resize(9 * MiB + 1)  # same size: nothing to do
        with pytest.raises(errors.InvalidArgument, match="shrink"):
            image.resize(MiB)
        with pytest.raises(errors.InvalidArgument, match="limit"):
            image.resize((1 << 20) * MiB + 1)  # past a flat index of 1 MiB objects
        assert image.size == 9 * MiB + 1
    assert backend.stat(name).size == 9 * MiB + 1


AWKWARD_NAMES = [
    "sp ace",
    "back\\slash",
    "x:y:0",
    "-x",
    "--help",
    "-a",
    "-p",
    "--",
    "-r",
    "-p 1 -a 10.0.0.1",
    "tab\tnew\nline",
    "\\ \\",
    "ünïcødé ☃",
    "a" * 255,
]


@pytest.mark.parametrize("stem", AWKWARD_NAMES, ids=repr)
def test_awkward_names(backend, vdi_name, raw, stem):
    # made unique, keeping what makes the name awkward (leading "-" included)
    name = vdi_name.keep(
        stem + "-" + uuid.uuid4().hex[:8] if len(stem) < 200 else uuid.uuid4().hex[:8] + stem[8:]
    )
    backend.create(name, 2 * MiB)
    info = backend.stat(name)
    assert info.name == name and info.vid == raw.vid(name)
    assert backend.exists(name)
    assert [i.name for i in backend.list()].count(name) == 1
    with backend.open(name) as image:
        image.write(name.encode(), 1000)
        assert image.read(1000, len(name.encode())) == name.encode()
    backend.delete(name)
    assert not backend.exists(name) and not resolves(raw, name)


def test_missing_vdi(backend, vdi_name):
    name = vdi_name()
    for call in (backend.open, backend.stat, backend.delete):
        with pytest.raises(errors.VdiNotFound) as info:
            call(name)
        assert name in str(info.value)
        assert info.value.result == 0x08 and info.value.result_name == "NO_VDI"
    assert not backend.exists(name)


def test_existing_vdi(backend, vdi_name):
    name = vdi_name()
    backend.create(name, MiB)
    with pytest.raises(errors.VdiExists) as info:
        backend.create(name, 2 * MiB)
    assert name in str(info.value) and info.value.result == 0x04
    assert backend.stat(name).size == MiB  # the first one is untouched


@pytest.mark.parametrize("offset,length", [(MiB, 1), (MiB - 1, 2), (2 * MiB, 0), (-1, 1)])
def test_out_of_range(backend, vdi_name, offset, length):
    name = vdi_name()
    backend.create(name, MiB)
    with backend.open(name) as image:
        with pytest.raises(errors.OutOfRange):
            image.read(offset, length)
        with pytest.raises(errors.OutOfRange):
            image.write(b"x" * length, offset)
        with pytest.raises(errors.OutOfRange):
            image.readinto(bytearray(length), offset)
        with pytest.raises(errors.OutOfRange):
            image.read(0, -1)
    assert backend.stat(name).size == MiB


@pytest.mark.parametrize(
    "name,why",
    [
        ("", "empty"),
        ("x" * 256, "longer than 255"),
        ("é" * 128, "longer than 255"),
        ("a\0b", "NUL"),
        (b"", "empty"),
    ],
)
def test_bad_names(backend, name, why):
    calls = (
        lambda: backend.create(name, MiB),
        lambda: backend.open(name),
        lambda: backend.stat(name),
        lambda: backend.delete(name),
        lambda: backend.exists(name),
    )
    for call in calls:
        with pytest.raises(errors.InvalidArgument, match=why):
            call()
    with pytest.raises(TypeError):
        backend.create(123, MiB)


def test_bad_create_options(backend, vdi_name):
    name = vdi_name()
    with pytest.raises(errors.InvalidArgument, match="block_size_shift"):
        backend.create(name, MiB, block_size_shift=19)
    with pytest.raises(errors.InvalidArgument, match="copies"):
        backend.create(name, MiB, copies=32)
    with pytest.raises(errors.InvalidArgument, match="limit"):
        backend.create(name, (1 << 20) * (4 * MiB) + 1, block_size_shift=22)
    # with the cluster's default object size (4 MiB on these clusters)
    with pytest.raises(errors.InvalidArgument, match="limit"):
        backend.create(name, (1 << 20) * (4 * MiB) + 1)
    with pytest.raises(errors.OutOfRange):
        backend.create(name, -1)
    assert not backend.exists(name)


def test_snapshots_and_clones(backend, vdi_name, raw):
    name, clone = vdi_name(), vdi_name()
    tag = "snap one"  # dog prints tags unescaped: a space must not confuse the parser
    backend.create(name, 3 * MiB, block_size_shift=20)
    before = os.urandom(3 * MiB)
    with backend.open(name) as image:
        image.write(before, 0)
    snap_vid = raw.snapshot(name, tag)
    vdi_name.snapshots.append((name, tag))
    raw.clone(name, tag, clone)

    working = backend.stat(name)
    assert not working.snapshot and working.vid != snap_vid and working.vid == raw.vid(name)
    listed = [i for i in backend.list() if i.name in (name, clone)]
    snaps = [i for i in listed if i.snapshot]
    assert [(i.name, i.vid, i.tag) for i in snaps] == [(name, snap_vid, tag)]
    assert snaps[0].snap_id >= 1
    assert sorted((i.name, i.vid) for i in listed if not i.snapshot) == sorted(
        [(name, working.vid), (clone, raw.vid(clone))]
    )
    # the native order: by name, a name's snapshots before its working VDI
    ours = [(i.name, i.snapshot) for i in listed if i.name == name]
    assert ours == [(name, True), (name, False)]

    # copy-on-write through the working VDI and the clone; the snapshot keeps its bytes
    with backend.open(name) as image:
        image.write(b"new" * 1000, MiB - 1500)
        assert image.read(MiB - 1500, 3000) == b"new" * 1000
        assert image.read(0, MiB - 1500) == before[: MiB - 1500]
    with backend.open(clone) as image:
        assert image.read(0, 3 * MiB) == before
        image.write(b"c", 5)
        assert image.read(0, 10) == before[:5] + b"c" + before[6:10]
    assert backend.stat(clone).snapshot is False


def test_erasure_coded_vdi(backend, vdi_name, raw):
    name = vdi_name()
    raw.new_vdi(name, 2 * MiB, copies=3, copy_policy=w.ec_policy(2, 1))
    info = backend.stat(name)
    assert (info.copies, info.copy_policy, info.redundancy) == (3, 0x11, "2:1")
    assert [i.redundancy for i in backend.list() if i.name == name] == ["2:1"]
    with backend.open(name) as image:  # (FakeSheep has one zone: too few for EC writes)
        assert image.read(MiB - 600, 1200) == bytes(1200)


def test_close(backend, vdi_name, target, fakedog_dir):
    name = vdi_name()
    backend.create(name, MiB)
    image = backend.open(name)
    image.close()
    image.close()  # twice is fine
    with pytest.raises(errors.InvalidArgument, match="closed"):
        image.read(0, 1)
    other = make_backend(backend.kind, target, fakedog_dir)
    with other:
        survivor = other.open(name)
    with pytest.raises(errors.InvalidArgument, match="closed"):
        other.stat(name)
    with survivor:  # images outlive the backend they came from
        survivor.write(b"still here", 0)
        assert survivor.read(0, 10) == b"still here"


def test_threads_share_a_backend(backend, vdi_name):
    name = vdi_name()
    backend.create(name, 8 * MiB, block_size_shift=20)
    chunks = {i: os.urandom(300_000) for i in range(6)}
    failures = []

    def put(i):
        try:
            with backend.open(name) as image:
                image.write(chunks[i], i * MiB + 17)
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=put, args=(i,)) for i in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    with backend.open(name) as image:
        for i, chunk in chunks.items():
            assert image.read(i * MiB + 17, len(chunk)) == chunk


def test_threads_writing_into_one_object(backend, vdi_name):
    # each first write into an unallocated object creates it whole: writers
    # sharing an object must not undo each other
    name = vdi_name()
    backend.create(name, 2 * MiB, block_size_shift=20)
    pieces = {i: os.urandom(999) for i in range(8)}
    with backend.open(name) as image:
        threads = [
            threading.Thread(target=image.write, args=(piece, MiB - 4000 + i * 1000))
            for i, piece in pieces.items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, piece in pieces.items():
            assert image.read(MiB - 4000 + i * 1000, 999) == piece


# ------------------------------------------------------- CLI backend only


@cli_only
def test_cli_and_native_agree(backend, target, vdi_name, raw):
    if not native_available():
        pytest.skip("the native extension is not built")
    name = vdi_name()
    backend.create(name, 5 * MiB + 3, block_size_shift=21)
    raw.snapshot(name, "t1")
    vdi_name.snapshots.append((name, "t1"))
    with open_backend(target.address, "native") as native:

        def fields(infos):
            return [
                (
                    i.name,
                    i.vid,
                    i.size,
                    i.block_size_shift,
                    i.copies,
                    i.copy_policy,
                    i.snapshot,
                    i.tag,
                    int(i.create_time),
                )
                for i in infos
                if i.name == name
            ]

        assert fields(backend.list()) == fields(native.list())
        assert fields([backend.stat(name)]) == fields([native.stat(name)])


@cli_only
def test_cli_large_transfer_streams(backend, vdi_name):
    name = vdi_name()
    size = 24 * MiB + 11
    backend.create(name, size)
    data = os.urandom(size)
    with backend.open(name) as image:
        image.write(memoryview(data), 0)
        into = bytearray(size)
        assert image.readinto(into, 0) == size
        assert into == data


@cli_only
def test_cli_hung_cluster_times_out(backend, target, fakedog_dir, vdi_name):
    if not target.is_fake:
        pytest.skip("needs FakeSheep's fault knobs")
    name = vdi_name()
    backend.create(name, MiB)
    slow = DogBackend(target.address, dog_command=os.path.join(fakedog_dir, "dog"), timeout=0.7)
    target.fake.set_delay(10.0)
    try:
        started = time.monotonic()
        for call in (lambda: slow.stat(name), lambda: slow.create(vdi_name(), MiB)):
            with pytest.raises(errors.TimeoutError, match="no progress") as info:
                call()
            assert isinstance(info.value, TimeoutError)
        assert time.monotonic() - started < 8
    finally:
        target.fake.clear_faults()


def test_cli_hung_dog_is_killed(tmp_path):
    pidfile = tmp_path / "pids"
    # a wrapper that starts a child and waits: both must die on timeout
    dog = _script(tmp_path, "dog", f"sleep 60 & echo $$ $! > {shlex.quote(str(pidfile))}; wait")
    backend = DogBackend("127.0.0.1:7000", dog_command=dog, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError):
        backend.list()
    assert time.monotonic() - started < 5
    for pid in map(int, pidfile.read_text().split()):
        assert _gone(pid), f"process {pid} outlived the timeout"


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):  # dead, waiting for a reaper that is not us
            return True
        time.sleep(0.05)
    return False


def test_cli_missing_dog(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(errors.InvalidArgument, match="'dog' not found") as info:
        DogBackend("127.0.0.1:7000")
    assert "PATH" in str(info.value)
    with pytest.raises(errors.InvalidArgument, match="not found"):
        open_backend("127.0.0.1:7000", "cli", dog_command="collie")
    with pytest.raises(errors.InvalidArgument, match="not found"):
        DogBackend("127.0.0.1:7000", dog_command=str(tmp_path / "nowhere" / "dog"))


def test_cli_dog_vanishing_later(tmp_path):
    dog = _script(tmp_path, "dog", "exit 0")
    backend = DogBackend("127.0.0.1:7000", dog_command=dog)
    os.unlink(dog)
    with pytest.raises(errors.InvalidArgument, match="cannot run"):
        backend.list()


# A dog that appends its arguments (hex, one JSON list per run) to the log
# named first, succeeds silently, and lists the name it was given.
RECORDER = r"""
import json, os, re, sys
log, args = sys.argv[1], [os.fsencode(a) for a in sys.argv[2:]]
with open(log, "a") as f:
    f.write(json.dumps([a.hex() for a in args]) + "\n")
if args[1] == b"list" and args[-2] == b"--":
    name = re.sub(rb"([\s\\])", rb"\\\1", args[-1])
    sys.stdout.buffer.write(b"= " + name + b" 0 1048576 0 0 1 abc 2  22\n")
if args[1] == b"write":
    sys.stdin.buffer.read(int(args[-1]))  # as dog: all of its input (else a failed write)
"""


@pytest.fixture
def recording_dog(tmp_path):
    """(path of a recording dog, calls() -> the argv lists it ran with)."""
    log, helper = tmp_path / "argv.jsonl", tmp_path / "record.py"
    helper.write_text(RECORDER)
    dog = _script(
        tmp_path,
        "dog",
        " ".join(
            [
                "exec",
                shlex.quote(sys.executable),
                shlex.quote(str(helper)),
                shlex.quote(str(log)),
                '"$@"',
            ]
        ),
    )

    def calls():
        lines = log.read_text().splitlines() if log.exists() else []
        return [[bytes.fromhex(a) for a in json.loads(line)] for line in lines]

    return dog, calls


@pytest.mark.parametrize(
    "name", ["-h", "--help", "-a", "-p 1", "--", "-c2", "--address=10.0.0.9", "-r", "-x y"]
)
def test_cli_names_never_become_options(recording_dog, name):
    dog, calls = recording_dog
    backend = DogBackend("10.1.2.3:7001,[::1]:7002", dog_command=dog)
    backend.create(name, MiB, copies=2, block_size_shift=21)
    backend.stat(name)
    with backend.open(name) as image:
        image.write(b"abc", 10)
        image.resize(2 * MiB)
    backend.delete(name)
    n, gateway = name.encode(), [b"-a", b"10.1.2.3", b"-p", b"7001"]
    # every option before "--", the name right after it, then only numbers
    assert calls() == [
        [b"vdi", b"create", b"-c", b"2", b"-z", b"21", *gateway, b"--", n, str(MiB).encode()],
        [b"vdi", b"list", b"-r", *gateway, b"--", n],
        [b"vdi", b"list", b"-r", *gateway, b"--", n],
        [b"vdi", b"write", *gateway, b"--", n, b"10", b"3"],
        [b"vdi", b"resize", *gateway, b"--", n, str(2 * MiB).encode()],
        [b"vdi", b"delete", *gateway, b"--", n],
    ]


def test_cli_bad_input_runs_no_process(recording_dog):
    dog, calls = recording_dog
    backend = DogBackend("127.0.0.1:7000", dog_command=dog)
    for call in (
        lambda: backend.create("", MiB),
        lambda: backend.stat("a\0"),
        lambda: backend.create("x", MiB, block_size_shift=32),
        lambda: backend.create("x", -5),
    ):
        with pytest.raises(errors.InvalidArgument):
            call()
    with backend.open("x") as image:
        with pytest.raises(errors.OutOfRange):
            image.read(MiB, 1)
        with pytest.raises(errors.InvalidArgument, match="shrink"):
            image.resize(1)
    assert [c[1] for c in calls()] == [b"list"]  # only the open


@cli_only
def test_cli_fails_over_to_the_next_gateway(backend, target, vdi_name):
    name = vdi_name()
    backend.create(name, MiB)
    dead = "127.0.0.1:1"
    via_dead = DogBackend(f"{dead},{target.address}", dog_command=backend.dog_command[0])
    assert via_dead.stat(name).size == MiB
    with via_dead.open(name) as image:
        image.write(b"over", 0)
        assert image.read(0, 4) == b"over"
    with pytest.raises(errors.ConnectionError, match="no gateway answered") as info:
        DogBackend(f"{dead},127.0.0.1:2", dog_command=backend.dog_command[0]).stat(name)
    assert isinstance(info.value, ConnectionError)
    assert "Connection refused" in str(info.value)


@cli_only
def test_cli_collie(backend, target, fakedog_dir, monkeypatch, vdi_name):
    if target.is_fake:
        monkeypatch.setenv("PATH", fakedog_dir + os.pathsep + os.environ.get("PATH", ""))
    elif shutil.which("collie") is None:
        pytest.skip("collie is not on PATH")
    collie = DogBackend(target.address, dog_command="collie")
    assert os.path.basename(collie.dog_command[0]) == "collie"
    name = vdi_name()
    collie.create(name, MiB)
    assert backend.stat(name).size == MiB and collie.exists(name)


def test_cli_ipv6(fakedog_dir):
    try:
        sheep = FakeSheep(host="::1").start()
    except OSError:
        pytest.skip("no IPv6 loopback")
    with sheep:
        backend = DogBackend(sheep.address, dog_command=os.path.join(fakedog_dir, "dog"))
        assert sheep.address.startswith("[::1]:")
        backend.create("v6", MiB)
        with backend.open("v6") as image:
            image.write(b"six", 3)
            assert image.read(0, 6) == b"\0\0\0six"
        backend.delete("v6")
        assert sheep.hazards == []


@cli_only
def test_cli_maps_server_failures(backend, target, vdi_name):
    if not target.is_fake:
        pytest.skip("needs FakeSheep's fault knobs")
    name = vdi_name()
    backend.create(name, 4 * MiB)
    image = backend.open(name)
    fake = target.fake
    fake.fail_nth(1, w.RES_NO_SPACE, opcode=w.OP_CREATE_AND_WRITE_OBJ)
    with pytest.raises(errors.NoSpace) as info:
        image.write(b"x" * 100, 0)
    assert info.value.result == 0x15 and name in str(info.value)
    fake.fail_nth(1, w.RES_SHUTDOWN, opcode=w.OP_GET_VDI_INFO)
    with pytest.raises(errors.ClusterNotReady):
        image.read(0, 10)
    fake.fail_nth(1, w.RES_EIO, opcode=w.OP_DEL_VDI)
    with pytest.raises(errors.ServerError) as info:
        backend.delete(name)  # dog exits 0 here: only its stderr tells
    assert info.value.result == 0x03
    fake.drop_nth(1, opcode=w.OP_NEW_VDI)
    with pytest.raises(errors.ConnectionError, match="failed to read a response"):
        backend.create(vdi_name(), MiB)  # not resent: the VDI may exist now


# ------------------------------------------ fakedog against the real dog

# (argv after "dog vdi", stdin): {name} is a VDI of 1 MiB made for the case,
# {missing} a name that does not exist, {port} a port nobody listens on.
DOG_CASES = [
    (["create", "--", "{name}", "1M"], None),
    (["read", "--", "{missing}", "0", "1"], None),
    (["write", "--", "{missing}", "0", "1"], b"x"),
    (["resize", "--", "{missing}", "2M"], None),
    (["delete", "--", "{missing}"], None),
    (["read", "--", "{name}", "2M", "1"], None),
    (["write", "--", "{name}", "2M", "1"], b"x"),
    (["resize", "--", "{name}", "512K"], None),
    (["resize", "--", "{name}", "5T"], None),
    (["create", "--", "{missing}", "5T"], None),
    (["create", "-z", "19", "--", "{missing}", "1M"], None),
    (["create", "-c", "0", "--", "{missing}", "1M"], None),
    (["read", "-p", "{port}", "--", "{name}", "0", "1"], None),
    (["create", "-p", "{port}", "--", "{missing}", "1M"], None),
    (["delete", "-p", "{port}", "--", "{name}"], None),
    (["list", "-r", "-p", "{port}"], None),
    (["list", "-r", "--", "{name}"], None),
    (["read", "--", "{name}", "1000", "5"], None),
]


@pytest.mark.parametrize("args,stdin", DOG_CASES, ids=[" ".join(a) for a, _ in DOG_CASES])
def test_fakedog_says_what_dog_says(args, stdin, fake_sheep, real_address, fakedog_dir):
    """Exit status, stderr and stdout of fakedog on FakeSheep equal the
    real dog's on a real cluster (names, ports, vids and times aside)."""
    real_dog = shutil.which("dog")
    if real_address is None or real_dog is None:
        pytest.skip("needs a real cluster and the real dog on PATH")
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = refused.getsockname()[1]
    results = []
    try:
        for dog, address in (
            (real_dog, real_address),
            (os.path.join(fakedog_dir, "dog"), fake_sheep.address),
        ):
            host, gateway_port = parse_addresses(address)[0]
            name, missing = f"sf-dogcase-{uuid.uuid4().hex[:8]}", f"sf-none-{uuid.uuid4().hex[:8]}"

            def run(
                *argv,
                input=None,
                dog=dog,
                host=host,
                gateway_port=gateway_port,
                name=name,
                missing=missing,
            ):
                argv = [a.format(name=name, missing=missing, port=port) for a in argv]
                # -a/-p first: a later -p (the refused port) wins, as in getopt
                done = subprocess.run(
                    [dog, "vdi", argv[0], "-a", host, "-p", str(gateway_port), *argv[1:]],
                    input=input,
                    capture_output=True,
                    timeout=60,
                )
                return done

            run("create", "--", name, "1M").check_returncode()
            run("write", "--", name, "1000", "5", input=b"hello").check_returncode()
            try:
                done = run(*args, input=stdin)
            finally:
                run("delete", "--", name)
            results.append(
                (
                    done.returncode,
                    _normalise(done.stderr, name, missing, port),
                    _normalise(done.stdout, name, missing, port) if done.returncode == 0 else b"",
                )
            )
    finally:
        refused.close()
    assert results[1] == results[0]


def _normalise(text: bytes, name: str, missing: str, port: int) -> bytes:
    text = text.replace(name.encode(), b"NAME").replace(missing.encode(), b"MISSING")
    text = text.replace(f":{port}:".encode(), b":PORT:")
    # list lines: ctime and vid differ between clusters
    return re.sub(
        rb"^([=sc] NAME \d+ \d+ \d+ \d+) \d+ [0-9a-f]+ ", rb"\1 CTIME VID ", text, flags=re.M
    )


# ------------------------------------------------- parsing and mapping


def _vector_lines() -> list[bytes]:
    with open(os.path.join(VECTORS, "dog_list_raw_outputs.txt"), "rb") as f:
        return [line for line in f if not line.startswith(b"#")]


def test_parse_captured_list_lines():
    lines = _vector_lines()
    infos = parse_vdi_list(b"".join(lines))
    assert len(infos) == len(lines) == 14
    normal, snap, after, clone, cow, ec, ec42, z20, zero, odd, space, back, colon, hyper = infos
    assert (
        normal.name,
        normal.vid,
        normal.size,
        normal.copies,
        normal.block_size_shift,
        normal.snapshot,
        normal.tag,
        normal.create_time,
    ) == ("probe-a", 0x7F588F, 67108864, 2, 22, False, "", 1795744542.0)
    # the snapshot keeps the old vid; the working VDI moved to the next one
    assert (snap.name, snap.vid, snap.snapshot, snap.snap_id, snap.tag) == (
        "probe-a",
        0x7F588F,
        True,
        1,
        "snap1",
    )
    assert (after.vid, after.snapshot, after.snap_id) == (0x7F5890, False, 0)
    assert (clone.name, clone.snapshot, clone.tag) == ("probe-c", False, "")
    assert (ec.copies, ec.copy_policy, ec.redundancy) == (3, 0x11, "2:1")
    assert (ec42.copies, ec42.copy_policy, ec42.redundancy) == (6, 0x22, "4:2")
    assert z20.object_size == MiB and (zero.size, odd.size) == (0, 1000)
    assert (space.name, back.name, colon.name) == ("probe-sp ace", "probe-back\\slash", "probe-x:y")
    assert hyper.name == "probe-hv" and cow.vid == after.vid
    for line in lines:  # one line at a time, with or without its newline
        assert len(parse_vdi_list(line)) == len(parse_vdi_list(line.rstrip(b"\n"))) == 1


def test_parse_escapes_and_tags():
    out = (
        b"= a\\\nb\\\tc\\ d\\\\e 0 5 0 0 7 1 3  20\n"  # escaped newline, tab, space, "\"
        b"s f\\\\ 3 5 0 0 7 2 2 tag with  spaces 22\n"  # tags are printed unescaped
        b"c \\\\\\  0 5 0 0 7 3 16:15  31\n"  # name "\ " and 16:15 EC
        b"= \xff\xfe 0 1 0 0 7 4 1  22\n"
    )  # not UTF-8
    a, f, c, binary = parse_vdi_list(out)
    assert a.name == "a\nb\tc d\\e" and a.block_size_shift == 20
    assert (f.name, f.tag, f.snapshot, f.snap_id) == ("f\\", "tag with  spaces", True, 3)
    assert (c.name, c.copies, c.copy_policy, c.redundancy) == ("\\ ", 31, 0x8F, "16:15")
    assert binary.name.encode("utf-8", "surrogateescape") == b"\xff\xfe"


def test_parse_pre_1_0_lines():
    # collie and dog 0.8/0.9 print no block size shift (objects were 4 MiB)
    working, snap = parse_vdi_list(
        b"= old\\ one 0 4194304 0 0 7 1a 3 \ns old 2 5 0 0 7 1b 2 before upgrade\n"
    )
    assert (working.name, working.vid, working.copies, working.tag) == ("old one", 0x1A, 3, "")
    assert working.object_size == 4 * MiB
    assert (snap.snapshot, snap.snap_id, snap.tag, snap.block_size_shift) == (
        True,
        2,
        "before upgrade",
        22,
    )


@pytest.mark.parametrize(
    "garbage",
    [
        b"= name\n",
        b"x name 0 1 0 0 7 1 2  22\n",
        b"= a b 0 1 0 0 7 1 2  22\n",
        b"= name 0 1 0 0 7 zz 2  22\n",
        b"  Name        Id    Size\n",
    ],
)
def test_parse_rejects_what_dog_does_not_print(garbage):
    with pytest.raises(errors.ProtocolError, match="unexpected line"):
        parse_vdi_list(garbage)


# stderr, exit status -> class, result. The messages were captured by running
# dog 1.0 against a real 3-node cluster (a missing VDI, an existing one, a
# refused port, ranges past the end, a shrink, oversized VDIs); the server
# failures follow the same "<what> <oid>[:] <result text>" forms.
REAL_DOG_FAILURES = [
    ("Failed to create VDI sfcli-probe: VDI exists already\n", 1, errors.VdiExists, 0x04),
    (
        "Failed to open VDI nonexist (snapshot id: 0 snapshot tag: ): No VDI found\n",
        1,
        errors.VdiNotFound,
        0x08,
    ),
    # vdi delete exits 0 even when the VDI is missing
    (
        "Failed to open VDI nonexist (snapshot id: 0 snapshot tag: ): No VDI found\n",
        0,
        errors.VdiNotFound,
        0x08,
    ),
    ("Read offset is beyond the end of the VDI\n", 1, errors.OutOfRange, None),
    ("Write offset is beyond the end of the VDI\n", 1, errors.OutOfRange, None),
    ("Shrinking VDIs is not implemented\n", 64, errors.InvalidArgument, None),
    (
        "New VDI size is too large. This volume's max size is 4398046511104\n",
        64,
        errors.InvalidArgument,
        None,
    ),
    (
        "VDI size is larger than 4.0 TB bytes, please use '-y' to create a hyper volume with "
        "size up to 16 PB bytes or use '-z' to create larger object size volume\n",
        64,
        errors.InvalidArgument,
        None,
    ),
    (
        "Object Size is larger than 2^20. Please set shift bit larger than 20\n",
        1,
        errors.SheepfastError,
        None,
    ),
    (
        "failed to connect to 127.0.0.1:7009: Connection refused\n" * 2
        + "Failed to open VDI x (snapshot id: 0 snapshot tag: ): I/O error\n",
        1,
        errors.ConnectionError,
        None,
    ),
    (
        "failed to connect to 127.0.0.1:7009: Connection refused\n" * 2
        + "Failed to get node list\n",
        2,
        errors.ConnectionError,
        None,
    ),
    (
        "failed to connect to 127.0.0.1:7009: Connection refused\n" * 2,
        2,
        errors.ConnectionError,
        None,
    ),
    ("Invalid ip address nonexistent.invalid\n", 1, errors.ConnectionError, None),
    (
        "Failed to write object 009849d000000000: Server has no space for new objects\n"
        "Failed to write VDI\n",
        1,
        errors.NoSpace,
        0x15,
    ),
    (
        "Failed to read object 009849d000000000 Object is read-only\nFailed to read VDI\n",
        1,
        errors.ReadOnly,
        0x1A,
    ),
    ("Failed to delete x: System is shutting down\n", 0, errors.ClusterNotReady, 0x11),
    ("Invalid error code 77\n", 1, errors.SheepfastError, None),
]


@pytest.mark.parametrize("stderr,status,cls,result", REAL_DOG_FAILURES)
def test_dog_messages_map_to_error_classes(stderr, status, cls, result):
    outcome = dog_module._Outcome(status, b"", 0, stderr, False)
    exc = dog_module._classify(outcome, "doing it", b"x")
    assert type(exc) is cls or (cls is errors.SheepfastError and isinstance(exc, cls))
    if result is not None:
        assert exc.result == result


def test_names_in_dog_messages_cannot_fool_the_mapping():
    # a VDI named like one of dog's messages: still "exists", not "not found"
    name = "x: No VDI found\nfailed to connect to 1.2.3.4:5: Connection refused"
    stderr = f"Failed to create VDI {name}: VDI exists already\n"
    exc = dog_module._classify(
        dog_module._Outcome(1, b"", 0, stderr, False), "creating", name.encode()
    )
    assert type(exc) is errors.VdiExists
    assert not dog_module._unreachable(dog_module._dog_lines(stderr, name.encode()))
    # and a one-letter name does not eat the message around it
    exc = dog_module._classify(
        dog_module._Outcome(
            0, b"", 0, "Failed to open VDI a (snapshot id: 0 snapshot tag: ): No VDI found\n", False
        ),
        "deleting",
        b"a",
    )
    assert type(exc) is errors.VdiNotFound and str(exc) == "VDI 'a' not found"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("127.0.0.1:7000", [("127.0.0.1", 7000)]),
        (
            "a, b:7001 ,[::1]:7002,[fe80::1],::1",
            [("a", 7000), ("b", 7001), ("::1", 7002), ("fe80::1", 7000), ("::1", 7000)],
        ),
    ],
)
def test_parse_addresses(text, expected):
    assert parse_addresses(text) == expected


@pytest.mark.parametrize("text", ["h:0", "h:99999", "h:x", "[::1", "[::1]x", "[::1]:", ":7000"])
def test_parse_bad_addresses(text):
    with pytest.raises(errors.ConnectionError, match="bad cluster address"):
        parse_addresses(text)


def test_blank_address_and_timeout_refused(tmp_path):
    dog = _script(tmp_path, "dog", "exit 0")
    with pytest.raises(errors.InvalidArgument):
        DogBackend(" ", dog_command=dog)
    with pytest.raises(errors.InvalidArgument, match="positive"):
        DogBackend("h:1", dog_command=dog, timeout=0)


def test_open_backend_selects_cli(tmp_path, monkeypatch):
    dog = _script(tmp_path, "dog", "exit 0")
    monkeypatch.setenv("SHEEPFAST_BACKEND", "cli")
    backend = open_backend(["h1:1", "h2:2"], dog_command=dog, io_timeout=5)
    assert (backend.kind, backend.addresses, backend.timeout) == ("cli", "h1:1,h2:2", 5.0)
