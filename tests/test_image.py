"""SheepdogImage: the removed Glance driver's image API over a backend, its
streaming upload, and the name and address checks under it.

Cluster tests run on FakeSheep and, when given, a real cluster (``target``),
through the native and the command-line backend (``kind``).
"""

from __future__ import annotations

import io
import os
import signal
import threading
import tracemalloc

import pytest
from glance_support import (  # noqa: F401  (fixtures)
    Boom,
    FailingSource,
    MiB,
    dog_command,
    image_bytes,
    kind,
    split_address,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import sheepfast
from sheepfast.address import check_host, check_name
from sheepfast.backends import open_backend
from sheepfast.image import FIRST_PIECE, SheepdogImage, SizeMismatch, _chunks


@pytest.fixture
def backend(target, kind):
    if kind == "cli":
        from sheepfast.backends.dog import DogBackend

        be = DogBackend(target.address, dog_command=dog_command(target), timeout=30)
    else:
        be = open_backend(target.address, "native", io_timeout=30)
    yield be
    be.close()


def image(backend, name, chunk_size=MiB):
    host, port = split_address(backend.addresses)
    return SheepdogImage(host, port, name, chunk_size, backend=backend)


# ---------------------------------------------------------------- the old API


def test_old_constructor_opens_its_own_backend(target, new_name):
    """SheepdogImage(addr, port, name, chunk_size), no backend: the removed
    driver's signature and methods."""
    host, port = split_address(target.address)
    name = new_name()
    img = SheepdogImage(host, str(port), name, 4 * MiB)  # the old Store passed str ports too
    assert img.exist() is False
    img.create(3 * MiB)
    try:
        assert img.exist() is True
        assert img.get_size() == 3 * MiB
        img.write(b"hello world", 10, 5)  # only `count` bytes
        assert img.read(10, 11) == b"hello" + bytes(6)
        img.resize(5 * MiB)
        assert img.get_size() == 5 * MiB
        assert img.read(5 * MiB - 2, 100) == bytes(2)  # up to count: short at the end
        assert img.read(5 * MiB, 10) == b""
        img.delete()
        assert img.exist() is False
    finally:
        img.close()


def test_image_api(backend, new_name):
    name = new_name()
    img = image(backend, name)
    img.create(2 * MiB + 5)
    data = image_bytes(2 * MiB + 5)
    img.write(data, 0, len(data))
    assert img.read(0, len(data)) == data
    assert img.read(MiB, 3) == data[MiB : MiB + 3]
    buf = bytearray(10)
    assert img.readinto(buf, len(data) - 4) == 4
    assert bytes(buf[:4]) == data[-4:]
    assert img.size == img.get_size() == len(data)
    with pytest.raises(sheepfast.VdiExists):
        img.create(MiB)  # atomic: sheep refuses the name
    with pytest.raises(sheepfast.InvalidArgument):
        img.write(b"abc", 0, 4)  # more than given
    with pytest.raises(sheepfast.OutOfRange):
        img.write(b"abc", len(data) - 1)  # past the end
    img.delete()
    with pytest.raises(sheepfast.VdiNotFound):
        img.delete()
    with pytest.raises(sheepfast.VdiNotFound):
        img.get_size()
    with pytest.raises(sheepfast.VdiNotFound):
        img.read(0, 1)


@pytest.mark.parametrize("size", ["test", None, -1, 1.5, float("nan"), True])
def test_create_refuses_sizes_that_are_not_byte_counts(backend, new_name, size):
    name = new_name()
    with pytest.raises(sheepfast.InvalidArgument):
        image(backend, name).create(size)
    assert not backend.exists(name)


def test_shared_backend_stays_open(backend, new_name):
    first, second = image(backend, new_name()), image(backend, new_name())
    first.create(MiB)
    first.close()
    second.create(MiB)  # the backend first used is still usable
    assert backend.exists(second.name)
    first.delete()
    second.delete()


def test_image_iterator_old_api(backend, kind, new_name):
    from sheepfast.glance import ImageIterator

    data = image_bytes(2 * MiB + 100)
    img = image(backend, new_name(), chunk_size=MiB)
    img.create(len(data))
    img.write(data, 0)
    pieces = list(ImageIterator(img))
    if kind == "cli":  # a read is a dog process: whole chunks from the start
        assert [len(p) for p in pieces] == [MiB, MiB, 100]
        assert b"".join(pieces) == data
        at = MiB - 5
        pieces = list(ImageIterator(img, offset=at, length=MiB + 55))
        assert [len(p) for p in pieces] == [5, MiB, 50]
        assert b"".join(pieces) == data[at : 2 * MiB + 50]
        img.delete()
        return
    # a short first piece (the first byte leaves early), each next twice as
    # large, never across a multiple of the chunk size, then whole chunks
    k = FIRST_PIECE
    ramp = [k, 2 * k, 4 * k, 8 * k]
    assert [len(p) for p in pieces] == [*ramp, MiB - sum(ramp), MiB, 100]
    assert b"".join(pieces) == data
    # a range from an unaligned offset, ending at the end of the range
    at = MiB - 3 * k - 5
    pieces = list(ImageIterator(img, offset=at, length=2 * MiB + 50 - at))
    assert [len(p) for p in pieces] == [k, 2 * k, 5, 8 * k, MiB - 8 * k, 50]
    assert b"".join(pieces) == data[at : 2 * MiB + 50]
    img.delete()


def test_image_iterator_reuses_chunks_the_caller_dropped(backend, kind, new_name):
    """A caller that lets each chunk go gets every byte right while the
    iterator cycles through a few buffers; one that keeps them gets its own."""
    from sheepfast.glance import ImageIterator

    data = image_bytes(12 * MiB + 100)
    img = image(backend, new_name(), chunk_size=MiB)
    img.create(len(data))
    img.write(data, 0)
    right, ids, at = [], set(), 0
    for chunk in ImageIterator(img):
        right.append(chunk == data[at : at + len(chunk)])
        at += len(chunk)
        if len(chunk) == MiB:
            ids.add(id(chunk))
    assert all(right) and at == len(data) and len(right) == (13 if kind == "cli" else 17)
    if kind == "native":
        assert len(ids) <= 3  # three whole-chunk buffers take turns
    kept = list(ImageIterator(img))
    assert b"".join(kept) == data and len({id(c) for c in kept}) == len(kept)
    img.delete()


def test_image_iterator_stops_on_a_short_image():
    """If the image ends before the length promised, the iterator fails
    instead of asking for the same bytes forever."""
    from glance_store import exceptions

    from sheepfast.glance import ImageIterator

    class Shrunk:
        name, chunk_size = "img", 4

        def __init__(self):
            self.reads = 0

        def read(self, offset, count):
            self.reads += 1
            return b"abc" if offset == 0 else b""

        def get_size(self):
            return 10

    img = Shrunk()
    it = iter(ImageIterator(img))
    assert next(it) == b"abc"
    with pytest.raises(exceptions.BackendException, match="ended at byte 3"):
        next(it)
    assert img.reads == 2


def test_readers_share_threads_and_work_in_a_forked_child(target, new_name):
    """Downloads take their read-ahead threads from one pool instead of
    starting one each; a WSGI worker forked from a process that already
    downloaded has none of those threads and must start its own."""
    from sheepfast.glance import ImageIterator

    data = image_bytes(3 * MiB + 7)
    host, port = split_address(target.address)
    img = SheepdogImage(host, port, new_name(), MiB)
    img.create(len(data))
    img.write(data, 0)
    assert b"".join(ImageIterator(img)) == data
    readers = {t for t in threading.enumerate() if t.name.startswith("sheepfast-read")}
    assert readers
    for _ in range(5):
        assert b"".join(ImageIterator(img)) == data
    assert {t for t in threading.enumerate() if t.name.startswith("sheepfast-read")} == readers
    pid = os.fork()
    if pid == 0:  # the child: any failure, including a hang, is its exit status
        signal.alarm(20)
        try:
            # its own connections: the parent's pooled sockets stay the parent's
            mine = SheepdogImage(host, port, img.name, MiB)
            ok = b"".join(ImageIterator(mine)) == data
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    img.delete()
    img.close()


# ---------------------------------------------------------------- names and addresses


@pytest.mark.parametrize(
    "name",
    [
        "6bd59e6e-c410-11e5-ab67-0a73f1fda51b",
        "a",
        "a:b:c",
        "x" * 255,
        "é" * 127,
        "with/slash",
        "[v]",
    ],
)
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-rf",
        "--help",
        "a b",
        "tab\t",
        "new\nline",
        "nul\x00",
        "x" * 256,
        "é" * 128,
        "\udcff",
        b"bytes",
        None,
        7,
        "zero\u200bwidth\u2028sep",
    ],
)
def test_bad_names(name):
    with pytest.raises(sheepfast.InvalidArgument):
        check_name(name)


@pytest.mark.parametrize("host", ["-oProxyCommand=x", "", "a..b", "host name", "a" * 64])
def test_bad_hosts(host):
    with pytest.raises(sheepfast.InvalidArgument):
        check_host(host)


# ---------------------------------------------------------------- chunking (no cluster)


def _run_chunks(source, chunk, slots=2):
    """_chunks with a token pool like the pipeline's; returns the chunks
    (copied) and the most tokens out at once."""
    free = [None] * slots
    out, held = [], []

    def take():
        if not free:  # the writer would hand the oldest back
            free.append(held.pop(0))
        return free.pop()

    for token, data in _chunks(source, chunk, take):
        out.append(bytes(data))
        held.append(token)
        assert len(held) <= slots
    return out


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=5000),
    chunk=st.integers(1, 700),
    pieces=st.lists(st.integers(1, 1500), min_size=1, max_size=8),
    how=st.sampled_from(["read", "iter", "readinto"]),
)
def test_chunks_cut_any_stream_into_whole_chunks(data, chunk, pieces, how):
    class Reader:
        def __init__(self):
            self.pos, self.i = 0, 0

        def _next(self, n):
            step = min(n, pieces[self.i % len(pieces)])
            self.i += 1
            out = data[self.pos : self.pos + step]
            self.pos += len(out)
            return out

        def read(self, n):
            return self._next(n)

    class IntoReader(Reader):
        def readinto(self, b):
            out = self._next(len(b))
            b[: len(out)] = out
            return len(out)

    if how == "read":
        source = Reader()
    elif how == "readinto":
        source = IntoReader()
    else:
        cuts, pos, i = [], 0, 0
        while pos < len(data):
            cuts.append(data[pos : pos + pieces[i % len(pieces)]])
            pos += pieces[i % len(pieces)]
            i += 1
        source = iter(cuts)
    out = _run_chunks(source, chunk)
    assert b"".join(out) == data
    assert all(len(c) == chunk for c in out[:-1])
    assert all(0 < len(c) <= chunk for c in out)


def test_whole_chunk_pieces_are_passed_on_uncopied():
    pieces = [bytes([i]) * 8 for i in range(3)]
    seen = [data for _, data in _chunks(iter(pieces), 8, lambda: None)]
    assert all(a is b for a, b in zip(seen, pieces))


# ---------------------------------------------------------------- upload


@pytest.mark.parametrize("known", [True, False], ids=["known-size", "unknown-size"])
def test_upload(backend, new_name, known):
    data = image_bytes(3 * MiB + 77)
    img = image(backend, new_name())
    img.create(len(data) if known else 0)
    seen = []
    assert img.upload(
        io.BytesIO(data), len(data) if known else 0, consumers=[lambda c: seen.append(bytes(c))]
    ) == len(data)
    assert b"".join(seen) == data
    assert img.get_size() == len(data)
    assert img.read(0, len(data)) == data
    img.delete()


@pytest.mark.parametrize(
    "declared, actual", [(MiB, MiB + 1), (MiB + 1, MiB), (3 * MiB, MiB), (MiB, 3 * MiB)]
)
def test_upload_size_mismatch(backend, new_name, declared, actual):
    img = image(backend, new_name())
    img.create(declared)
    with pytest.raises(SizeMismatch) as info:
        img.upload(io.BytesIO(image_bytes(actual)), declared)
    assert info.value.expected == declared
    if actual < declared:
        assert info.value.actual == actual
    else:
        assert declared < info.value.actual <= actual  # stopped at the first chunk over
    assert img.get_size() == declared  # nothing was written past it
    img.delete()


def upload_threads():
    return [t for t in threading.enumerate() if t.name.startswith("sheepfast-upload")]


def test_upload_errors_stop_the_threads(backend, new_name):
    img = image(backend, new_name())
    img.create(0)
    with pytest.raises(Boom):
        img.upload(FailingSource(image_bytes(3 * MiB), MiB + 5), 0)

    def refuse(chunk):
        raise ValueError("no")

    with pytest.raises(ValueError):
        img.upload(io.BytesIO(image_bytes(3 * MiB)), 0, consumers=[refuse])
    assert upload_threads() == []
    img.delete()


def test_upload_skips_zero_chunks_without_native_thin(backend, target, new_name):
    """The cli backend cannot skip zeros itself; upload leaves all-zero
    chunks of the new VDI unwritten (the native backend does it per object)."""
    img = image(backend, new_name())
    img.create(0, block_size_shift=20)  # 1 MiB objects: chunks of one object
    data = image_bytes(4 * MiB, zero_objects=(1, 2))
    img.upload(io.BytesIO(data), 0)
    with sheepfast.connect(target.address) as c, c.open(img.name) as vdi:
        assert vdi.usage()[0] == 2 * MiB
        assert vdi.read(0, vdi.size) == data
    img.delete()


def test_upload_memory_is_a_few_chunks(target, new_name):
    """64 chunks of zeros (stored as nothing, thanks to thin provisioning)
    through a read()-only source that allocates every piece: Python memory
    peaks at a few chunks, not the image."""
    if not target.is_fake:
        pytest.skip("measures this process only")
    be = open_backend(target.address, "native")
    img = image(be, new_name(), chunk_size=MiB)
    img.create(0, block_size_shift=20)  # 1 MiB objects, so 1 MiB chunks

    class Zeros:
        left = 64 * MiB

        def read(self, n):
            n = min(n, self.left, 256 * 1024)
            self.left -= n
            return bytes(n)

    tracemalloc.start()
    try:
        img.upload(Zeros(), 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert img.get_size() == 64 * MiB
    assert peak < 3 * MiB, peak  # two chunk buffers, and a piece being read
    img.delete()
    be.close()


def test_chunk_buffers_are_zeroed_writable_and_faulted_in_huge_pages():
    import mmap as mmap_module
    import resource

    from sheepfast.image import _chunk_buffer

    small = _chunk_buffer(4096)
    assert isinstance(small, bytearray) and small == bytes(4096)
    size = 32 * MiB
    buf = _chunk_buffer(size)
    view = memoryview(buf)
    assert len(view) == size and not view.readonly
    assert view[:4096] == bytes(4096) and view[-4096:] == bytes(4096)
    if hasattr(mmap_module, "MADV_HUGEPAGE") and isinstance(buf, mmap_module.mmap):
        data = b"\x5a" * size
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        view[:] = data
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        assert view[12345] == 0x5A
        # 8192 faults in 4 KiB pages; far fewer where huge pages are on (not
        # guaranteed: "never" mode or no free huge page is a fallback)
        assert faults <= 8192 + 64
    view.release()
