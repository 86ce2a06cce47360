"""SheepdogImage: the removed Glance Sheepdog driver's image API, over a backend.

    image = SheepdogImage("127.0.0.1", 7000, "img", 64 << 20)
    image.create(size); image.write(data, 0, len(data)); image.read(0, 5)
    image.get_size(); image.exist(); image.resize(new_size); image.delete()

The old class ran ``collie vdi ...`` once per call. This one works over a
:class:`sheepfast.backends.Backend`: pass ``backend=`` to share one cluster
connection (and its pool) between images, or leave it out and the image opens
its own from ``addr``/``port`` on first use. The VDI is opened once and the
handle kept until :meth:`close` (or :meth:`delete`).

:meth:`SheepdogImage.upload` streams a file into a freshly created VDI with
the reading (and the caller's per-chunk work: hashing) overlapping the
network writes; the glance_store driver's ``add`` is built on it.

Everything here raises :mod:`sheepfast.errors` classes; translating them
into glance_store exceptions is the driver's job (sheepfast.glance).
"""

from __future__ import annotations

import concurrent.futures
import functools
import io
import math
import mmap
import operator
import os
import queue
import threading
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, Union, cast

from sheepfast.address import (
    DEFAULT_PORT,
    NAME_MAX,
    check_host,
    check_name,
    check_port,
    format_address,
    parse_address,
)
from sheepfast.address import whole_number as _whole
from sheepfast.backends import (
    Backend,
    BackendImage,
    Capability,
    ReadAheadImage,
    RecyclingImage,
    ThinImage,
    is_zero,
)
from sheepfast.errors import InvalidArgument, InvalidSource, OutOfRange, SheepfastError
from sheepfast.incomplete import UploadMark

__all__ = [
    "SheepdogImage",
    "SizeMismatch",
    "check_size",
    "ChunkReader",
    "read_chunks",
    "readinto_full",
    # sheepfast.address's, importable from here as before
    "DEFAULT_PORT",
    "NAME_MAX",
    "check_host",
    "check_name",
    "check_port",
    "format_address",
    "is_zero",
    "parse_address",
]

READ_PIECE = 1 << 20  #: the most one read() of an upload source is asked for
#: The first piece read_chunks yields: small, so that the first byte leaves
#: after one short request instead of a whole chunk's. Each next piece is
#: twice as large, up to the chunk size.
FIRST_PIECE = 64 << 10
#: Threads that read ahead for ChunkReaders, shared by all of them: starting
#: a thread per download put its start-up in front of every first byte.
#: More downloads at once than this only queue their read-aheads.
READ_AHEAD_THREADS = 64

_read_ahead_lock = threading.Lock()
_read_ahead: Optional[concurrent.futures.ThreadPoolExecutor] = None


def _read_ahead_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _read_ahead
    with _read_ahead_lock:
        if _read_ahead is None:
            _read_ahead = concurrent.futures.ThreadPoolExecutor(
                max_workers=READ_AHEAD_THREADS, thread_name_prefix="sheepfast-read"
            )
        return _read_ahead


def _forget_read_ahead_pool() -> None:
    # A forked child (a WSGI server's worker) inherits the pool but not its
    # threads; it would wait forever on threads it believes idle.
    global _read_ahead, _read_ahead_lock
    _read_ahead, _read_ahead_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_read_ahead_pool)


class SizeMismatch(OutOfRange):
    """The stream held more or fewer bytes than the size declared for it."""

    def __init__(self, message: str, expected: int, actual: int):
        super().__init__(message)
        self.expected = expected
        self.actual = actual


def check_size(size: object, what: str = "size") -> int:
    """size as a non-negative int; a float is taken when it is whole (the old
    driver accepted floats), anything else is InvalidArgument."""
    if isinstance(size, float):
        if not math.isfinite(size) or not size.is_integer():
            raise InvalidArgument(f"{what} must be a whole number of bytes (got {size!r})")
        size = int(size)
    value = _whole(size, what)
    if value < 0:
        raise InvalidArgument(f"{what} must not be negative (got {value})")
    return value


class SheepdogImage:
    """An image stored as one Sheepdog VDI, called ``name``.

    addr, port: the cluster (used to open a backend when none is given);
    chunk_size: bytes per read by ImageIterator and per write by upload().
    backend: a shared :class:`~sheepfast.backends.Backend`; kind: which one
    to open otherwise ("auto", "native", "cli"; None reads
    $SHEEPFAST_BACKEND). thin: skip writing all-zero data (see upload).
    """

    def __init__(
        self,
        addr: str,
        port: Union[int, str],
        name: str,
        chunk_size: int,
        *,
        backend: Optional[Backend] = None,
        kind: Optional[str] = None,
        thin: bool = True,
    ):
        self.addr = addr
        self.port = check_port(port)
        self.name = check_name(name)
        self.chunk_size = _whole(chunk_size, "chunk_size")
        if self.chunk_size < 1:
            raise InvalidArgument(f"chunk_size must be positive (got {chunk_size!r})")
        self._backend = backend
        self._owns_backend = backend is None
        self._kind = kind
        self._thin = bool(thin)
        self._handle: Optional[BackendImage] = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SheepdogImage {self.name!r} on {format_address(str(self.addr), self.port)}>"

    # ------------------------------------------------------------ plumbing

    @property
    def backend(self) -> Backend:
        """The backend in use (opened on first use when none was given)."""
        with self._lock:
            if self._backend is None:
                from sheepfast.backends import open_backend

                self._backend = open_backend(
                    format_address(check_host(self.addr), self.port), self._kind
                )
            return self._backend

    def _can(self, capability: Capability) -> bool:
        return capability in self.backend.capabilities

    def open(self, *, read_ahead: int = 0) -> BackendImage:
        """The open VDI handle (a BackendImage), opened on first use;
        read_ahead as for sheepfast.Cluster.open, when this call opens it."""
        backend = self.backend
        with self._lock:
            if self._handle is None:
                handle = backend.open(self.name, read_ahead=read_ahead)
                if Capability.THIN_WRITES in backend.capabilities:
                    cast(ThinImage, handle).thin = self._thin
                self._handle = handle
            return self._handle

    def read_ahead_held(self) -> int:
        """Bytes from the start that the open brought along with the inode
        and the first read may take from memory (0 when none)."""
        handle = self._handle
        if handle is None or not self._can(Capability.READ_AHEAD):
            return 0
        return cast(ReadAheadImage, handle).read_ahead_held

    @property
    def thin(self) -> bool:
        return self._thin

    @thin.setter
    def thin(self, value: bool) -> None:
        self._thin = bool(value)
        handle = self._handle
        if handle is not None and self._can(Capability.THIN_WRITES):
            cast(ThinImage, handle).thin = self._thin

    @property
    def size(self) -> int:
        """Size of the open VDI, as its handle knows it (no round trip)."""
        return self.open().size

    def _drop_handle(self) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()

    def close(self) -> None:
        """Closes the VDI handle, and the backend if this image opened it."""
        self._drop_handle()
        if self._owns_backend:
            with self._lock:
                backend, self._backend = self._backend, None
            if backend is not None:
                backend.close()

    def __enter__(self) -> SheepdogImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ the old API

    def create(
        self, size: Union[int, float], *, copies: int = 0, block_size_shift: int = 0
    ) -> None:
        """Creates the VDI with size bytes; VdiExists if the name is taken
        (sheep checks and creates in one step: no check-then-create race)."""
        size = check_size(size)
        self.backend.create(self.name, size, copies=copies, block_size_shift=block_size_shift)

    def delete(self) -> None:
        """Deletes the VDI (VdiNotFound if there is none)."""
        self._drop_handle()
        self.backend.delete(self.name)

    def discard(self) -> bool:
        """Deletes this VDI as the cleanup of a failed upload, within a short
        budget of its own (defaults.CLEANUP_TIMEOUT); True once it is gone,
        False when it could not be deleted now (it is left for reclaiming)."""
        self._drop_handle()
        return self.backend.discard(self.name)

    def exist(self) -> bool:
        return self.backend.exists(self.name)

    def get_size(self) -> int:
        """The VDI's size, looked up by name (one request, no cluster scan)."""
        return self.backend.stat(self.name).size

    def read(self, offset: int, count: int, *, recycle: Optional[list[bytes]] = None) -> bytes:
        """Up to count bytes from offset; fewer at the end, b"" past it.

        recycle: a list kept across the reads of one stream; the native
        backend refills bytes objects in it that nothing else references
        any more instead of allocating (see sheepfast.Vdi.read).
        """
        offset = check_size(offset, "offset")
        count = check_size(count, "count")
        handle = self.open()
        size = handle.size
        if offset >= size or count == 0:
            return b""
        count = min(count, size - offset)
        if recycle is not None and self._can(Capability.RECYCLED_READS):
            return cast(RecyclingImage, handle).read(offset, count, recycle=recycle)
        return handle.read(offset, count)

    def chunks(
        self, offset: int = 0, length: Optional[int] = None, chunk_size: Optional[int] = None
    ) -> Iterator[bytes]:
        """The image from offset, length bytes (to the end when None), in
        chunk_size pieces (default self.chunk_size); see read_chunks."""
        return read_chunks(self, offset, length, chunk_size)

    def readinto(self, buffer: Any, offset: int) -> int:
        """Fills buffer from offset, up to the end of the VDI; returns the
        bytes read."""
        offset = check_size(offset, "offset")
        view = memoryview(buffer).cast("B")
        handle = self.open()
        n = max(0, min(len(view), handle.size - offset))
        if n:
            handle.readinto(view[:n], offset)
        return n

    def write(self, data: Any, offset: int, count: Optional[int] = None) -> int:
        """Writes the first count bytes of data (all of it by default) at
        offset; returns count. The range must lie inside the VDI."""
        offset = check_size(offset, "offset")
        view = memoryview(data).cast("B")
        count = len(view) if count is None else check_size(count, "count")
        if count > len(view):
            raise InvalidArgument(f"count {count} is more than the {len(view)} bytes given")
        if count == 0:
            return 0
        return self.open().write(view[:count], offset) or count

    def resize(self, size: int) -> None:
        """Grows the VDI to size bytes (sheep cannot shrink one)."""
        self.open().resize(check_size(size))

    # ------------------------------------------------------------ streaming upload

    def upload(
        self,
        source: Any,
        size: int = 0,
        *,
        consumers: Sequence[Callable[[Any], None]] = (),
        buffers: int = 2,
    ) -> int:
        """Streams source into this freshly created VDI; returns the bytes
        written.

        source: a file-like object (readinto is used when it has one, else
        read) or an iterable of bytes-like pieces; InvalidSource when it
        gives what no blocking binary file may (see _chunks). size: the bytes declared
        (the VDI must have been created with that size), or 0 for unknown:
        the VDI then grows chunk by chunk and ends exactly as long as the
        data. SizeMismatch when the data is longer or shorter than a
        declared size; nothing is ever written past it.

        consumers: callables that see every chunk, in order, each on a
        thread of its own (e.g. one per hash: hashlib releases the GIL).
        A chunk is a read-only memoryview of a buffer that is reused once
        the call returns, or the source's own piece: copy what you keep.

        The calling thread only reads. Chunks are chunk_size bytes, rounded
        up to whole objects, and at most ``buffers`` of them are held: the
        next chunk is read while the previous one is written (the native
        write releases the GIL) and passed to the consumers; a buffer is
        refilled once its write and every consumer are done with it.

        With thin on, all-zero data is not written: the native backend skips
        all-zero objects itself; for a backend without that, all-zero chunks
        are skipped here, which is right only because the VDI is new.

        On any error (the source, a consumer, a write), no further write or
        consumer call starts, the threads are joined, and the first error is
        raised; the partial VDI is left for the caller to delete.

        While it runs the VDI carries the upload mark (sheepfast.incomplete:
        set before the first write, its heartbeat refreshed every
        HEARTBEAT_INTERVAL seconds, removed once every byte is stored), so a
        VDI whose writer died can be found and reclaimed. A failed upload
        leaves the mark: if the caller cannot delete the VDI, it stays
        findable.
        """
        declared = check_size(size)
        if buffers < 1:
            raise InvalidArgument(f"buffers must be at least 1 (got {buffers})")
        handle = self.open()
        object_size = handle.object_size
        chunk = -(-self.chunk_size // object_size) * object_size
        mark = UploadMark(handle)
        mark.start()
        try:
            pipe = _Pipeline(
                handle,
                buffers,
                consumers,
                grow=declared == 0,
                skip_zero=self._thin and not self._can(Capability.THIN_WRITES),
            )
        except BaseException:
            mark.stop()
            raise
        total = 0
        try:
            for token, data in _chunks(source, chunk, pipe.take):
                n = len(data)
                if declared and total + n > declared:
                    raise SizeMismatch(
                        f"image {self.name!r} is longer than the {declared} bytes declared "
                        f"(got at least {total + n})",
                        declared,
                        total + n,
                    )
                pipe.submit(token, data, total)
                total += n
            if declared and total != declared:
                raise SizeMismatch(
                    f"image {self.name!r} is shorter than the {declared} bytes declared "
                    f"(got {total})",
                    declared,
                    total,
                )
            pipe.finish()
        except BaseException:
            pipe.abort()
            mark.stop()
            raise
        mark.clear()
        return total


# ---------------------------------------------------------------- upload internals


def read_chunks(
    image: Any, offset: int = 0, length: Optional[int] = None, chunk_size: Optional[int] = None
) -> Iterator[bytes]:
    """The one read engine (the driver's ImageIterator, ``sheepfast get``):
    image's bytes from offset, length of them (to its end when None), in
    chunk_size pieces (default image.chunk_size). image: a SheepdogImage, or
    anything with name, chunk_size, read(offset, count) and get_size().
    Nothing is read before the first next(); ChunkReader starts at once.
    """
    reader = ChunkReader(image, offset, length, chunk_size, start=False)
    try:
        yield from reader
    finally:
        reader.close()


class ChunkReader:
    """Iterates over image's bytes from offset (see read_chunks); close()
    stops it and waits for the read in flight.

    The first piece is at most FIRST_PIECE bytes, each next one at most
    twice the last, until they are chunk_size (on a backend that pipelines
    requests; on the dog backend, where a read is a process, every piece is
    chunk_size); a piece never crosses a multiple of chunk_size. A reader
    waits for one short request before its first byte, not for a whole
    chunk, and the stream is soon in whole aligned chunks. start=True sends
    that first request now, so that it travels while the caller prepares to
    take it (the driver's get, while Glance builds its response).
    The next chunk is read (the native read releases the GIL) while the
    caller handles the current one, so the cluster never waits on the caller
    and the caller never waits on a whole chunk's round trips. Chunks the
    caller let go of are refilled rather than allocated anew: fresh memory
    costs the kernel a page zeroing and fault per page. Three take turns
    (the one the caller holds, the one being read, the one it just dropped).
    A SheepfastError, never a loop, when the image turns out shorter.
    """

    def __init__(
        self,
        image: Any,
        offset: int = 0,
        length: Optional[int] = None,
        chunk_size: Optional[int] = None,
        *,
        start: bool = True,
    ):
        self._image = image
        self._pos = check_size(offset, "offset")
        self._end = image.get_size() if length is None else self._pos + check_size(length, "length")
        step = image.chunk_size if chunk_size is None else _whole(chunk_size, "chunk_size")
        if step < 1:
            raise InvalidArgument(f"chunk_size must be positive (got {chunk_size!r})")
        self._step = step
        self._plain = self._whole = image.read
        # A short first piece pays off where a request is cheap; where each
        # read is a dog process, it would only add processes.
        ramp = True
        if isinstance(image, SheepdogImage):
            self._whole = functools.partial(image.read, recycle=[])  # whole chunks take turns
            ramp = image._can(Capability.PIPELINE)
        self._want = FIRST_PIECE if ramp else step
        self._pending: Optional[concurrent.futures.Future[bytes]] = None
        self._started = False
        self._closed = False
        if start:
            self._submit()

    def _in_memory(self, upto: int) -> bool:
        """Whether the next piece, [pos, upto), is bytes the open read ahead."""
        image = self._image
        return (
            self._pos == 0
            and isinstance(image, SheepdogImage)
            and 0 < upto <= image.read_ahead_held()
        )

    def _read(self, at: int, count: int) -> bytes:
        data: bytes = (self._whole if count == self._step else self._plain)(at, count)
        return data

    def _submit(self) -> None:
        self._started = True
        pos, step = self._pos, self._step
        if pos >= self._end:
            self._pending = None
            return
        upto = min(pos + self._want, (pos // step + 1) * step, self._end)
        self._want = min(2 * self._want, step)
        if self._in_memory(upto):
            # A copy, done at once: in a thread it would wait for the GIL
            # until the caller blocks on it.
            done: concurrent.futures.Future[bytes] = concurrent.futures.Future()
            done.set_result(self._read(pos, upto - pos))
            self._pending = done
            return
        self._pending = _read_ahead_pool().submit(self._read, pos, upto - pos)

    def __iter__(self) -> ChunkReader:
        return self

    def __next__(self) -> bytes:
        if self._closed:
            raise StopIteration
        if not self._started:
            self._submit()  # start=False: the first next() starts
        pending = self._pending
        if pending is None:
            self.close()
            raise StopIteration
        try:
            data = pending.result()
            if not data:
                raise SheepfastError(
                    f"Sheepdog image {self._image.name} ended at byte {self._pos}, "
                    f"before the {self._end} expected"
                )
            self._pos += len(data)
            self._submit()
        except BaseException:
            self.close()
            raise
        return data

    def close(self) -> None:
        """Stops; returns once no read of this reader is in flight (the
        caller may close the image next)."""
        self._closed = True
        pending, self._pending = self._pending, None
        if pending is not None and not pending.cancel():
            concurrent.futures.wait([pending])


class _Chunk:
    __slots__ = ("token", "data", "offset", "pending")

    def __init__(self, token: Optional[bytearray], data: Any, offset: int, pending: int):
        self.token = token
        self.data = data
        self.offset = offset
        self.pending = pending


class _Pipeline:
    """The writer and the consumers, one thread each, fed the same chunks in
    order.

    Tokens bound the chunks in flight: the reader takes one per chunk (a
    reusable buffer, allocated on first need, or None), and it comes back
    when the last stage is done with that chunk. After a failure the stages
    keep handing tokens back without doing their work, so the reader never
    blocks; take() then raises the first error.
    """

    def __init__(
        self,
        handle: Any,
        slots: int,
        consumers: Sequence[Callable[[Any], None]],
        *,
        grow: bool,
        skip_zero: bool,
    ):
        self._handle = handle
        self._grow = grow
        self._size = handle.size if grow else 0
        self._skip_zero = skip_zero
        self._free: queue.SimpleQueue[Optional[bytearray]] = queue.SimpleQueue()
        for _ in range(slots):
            self._free.put(None)
        self._lock = threading.Lock()
        self._stop = False
        self.error: Optional[BaseException] = None
        stages: list[Callable[[_Chunk], None]] = [self._write] + [
            self._consumer(c) for c in consumers
        ]
        self._queues: list[queue.SimpleQueue[Optional[_Chunk]]] = [
            queue.SimpleQueue() for _ in stages
        ]
        self._threads = [
            threading.Thread(
                target=self._run, args=(stage, q), daemon=True, name=f"sheepfast-upload-{i}"
            )
            for i, (stage, q) in enumerate(zip(stages, self._queues))
        ]
        for thread in self._threads:
            thread.start()

    def take(self) -> Optional[bytearray]:
        """A free token: a buffer to fill, or None (allocate one if needed)."""
        if self.error is not None:
            raise self.error
        token = self._free.get()
        if self.error is not None:
            raise self.error
        return token

    def submit(self, token: Optional[bytearray], data: Any, offset: int) -> None:
        """Hands data (for offset) to every stage; token comes back after."""
        item = _Chunk(token, data, offset, len(self._queues))
        for q in self._queues:
            q.put(item)

    def _write(self, item: _Chunk) -> None:
        data = item.data
        end = item.offset + len(data)
        if self._grow and end > self._size:
            self._handle.resize(end)
            self._size = end
        if not (self._skip_zero and is_zero(data)):
            self._handle.write(data, item.offset)

    @staticmethod
    def _consumer(consume: Callable[[Any], None]) -> Callable[[_Chunk], None]:
        def stage(item: _Chunk) -> None:
            data = item.data
            consume(data.toreadonly() if isinstance(data, memoryview) else data)

        return stage

    def _run(self, stage: Callable[[_Chunk], None], q: queue.SimpleQueue[Optional[_Chunk]]) -> None:
        while True:
            item = q.get()
            if item is None:
                return
            try:
                if self.error is None and not self._stop:
                    stage(item)
            except BaseException as exc:
                with self._lock:
                    if self.error is None:
                        self.error = exc
            finally:
                with self._lock:
                    item.pending -= 1
                    last = item.pending == 0
                    if last:
                        item.data = None
                if last:
                    self._free.put(item.token)

    def _join(self) -> None:
        for q in self._queues:
            q.put(None)
        for thread in self._threads:
            thread.join()

    def finish(self) -> None:
        """Waits until every chunk went through every stage; raises the
        first error."""
        self._join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Starts no further work and waits for what is under way."""
        self._stop = True
        if any(thread.is_alive() for thread in self._threads):
            self._join()


def _chunk_buffer(size: int) -> Any:
    """A writable buffer for one upload chunk. Fresh memory is faulted in page
    by page as it is first filled; an anonymous mapping advised to use huge
    pages takes one fault per 2 MiB instead of per 4 KiB (a 32 MiB chunk:
    16 faults rather than 8192), where the system offers them."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is None or size < (4 << 20):
        return bytearray(size)
    try:
        # private: huge pages for shared anonymous memory are off by default
        buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        buf.madvise(advice)
    except (OSError, ValueError):
        return bytearray(size)
    return buf


def _checked_count(count: object, room: int, source: Any) -> int:
    """What readinto() returned, if a file may return it: a count in 0..room,
    as io.BufferedReader demands of a raw stream (None, "no data now", only
    a non-blocking stream may give, and an upload cannot wait on one)."""
    if count is None:
        raise InvalidSource(
            f"image source {_describe(source)} is non-blocking: readinto() returned None "
            "(no data now); uploads need a blocking source"
        )
    try:
        n = operator.index(count)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidSource(
            f"image source {_describe(source)}: readinto() returned {type(count).__name__} "
            f"{count!r}, not a byte count"
        ) from None
    if not 0 <= n <= room:
        raise InvalidSource(
            f"image source {_describe(source)}: readinto() returned {n} for a {room}-byte "
            f"buffer (a count must be 0..{room})"
        )
    return n


def _describe(source: Any) -> str:
    name = getattr(source, "name", None)
    return repr(name) if isinstance(name, (str, bytes, int)) else type(source).__name__


def readinto_full(readinto: Callable[[Any], Any], view: memoryview, source: Any = None) -> int:
    """Fills view by calling readinto (short reads from pipes and sockets
    included) until it is full or readinto returns 0; returns the bytes
    filled. InvalidSource if readinto returns what no file may."""
    filled, room = 0, len(view)
    while filled < room:
        n = _checked_count(readinto(view[filled:]), room - filled, source)
        if n == 0:
            break
        filled += n
    return filled


def _has_readinto(source: Any) -> bool:
    """True if source implements readinto. An io.RawIOBase subclass that
    only defines read() inherits a readinto that raises NotImplementedError
    (io.BufferedReader fails on it too); such a source is read with read()."""
    method = getattr(type(source), "readinto", None)
    if method is None:
        return getattr(source, "readinto", None) is not None  # set on the instance
    return method is not io.RawIOBase.readinto


def _piece_view(piece: Any, how: str, source: Any) -> memoryview:
    """piece, a bytes-like object that read() or iteration gave, as bytes."""
    if piece is None:
        raise InvalidSource(f"image source {_describe(source)}: {how} gave None, not bytes")
    if isinstance(piece, str):
        raise InvalidSource(
            f"image source {_describe(source)}: {how} gave str, not bytes "
            "(open the source in binary mode)"
        )
    try:
        return memoryview(piece).cast("B")
    except (TypeError, ValueError) as exc:
        raise InvalidSource(
            f"image source {_describe(source)}: {how} gave {type(piece).__name__}, "
            f"not a contiguous bytes-like object ({exc})"
        ) from None


def _chunks(
    source: Any, chunk: int, take: Callable[[], Optional[bytearray]]
) -> Iterator[Tuple[Optional[bytearray], Any]]:
    """Cuts source into chunk-byte pieces (the last may be shorter), as
    (token, data) pairs: the token goes back to the pool once data is written.

    take() is called before each chunk is filled and may block until the
    writer has a buffer free. With readinto, data goes straight into that
    buffer. Otherwise a piece from read()/iteration that covers a whole
    chunk is passed on as it is (no copy); smaller pieces are gathered into
    the buffer, so every write but the last is a whole chunk.

    What a source gives is checked as the io module checks a raw stream:
    InvalidSource for a count outside the buffer, None (a non-blocking
    source with no data: waiting would spin) or a piece that is not bytes.
    read() returning b"" is the end; an iterable ends only when exhausted
    (its empty pieces are skipped).
    """
    if _has_readinto(source):
        readinto = source.readinto
        while True:
            buf = take()
            if buf is None:
                buf = _chunk_buffer(chunk)
            view = memoryview(buf)
            filled = readinto_full(readinto, view, source)
            if filled:
                yield buf, view[:filled]
            if filled < chunk:
                return

    read = getattr(source, "read", None)
    if read is not None:

        def next_piece(want: int) -> Tuple[Any, memoryview]:
            # Bounded asks: WSGI servers decode chunked request bodies piece by
            # piece, and some (cheroot; Glance's own uwsgi reader) slow down
            # quadratically when one read spans many client chunks — a 64 MiB
            # read() of 64 KiB client chunks ran at 2 MiB/s instead of 94.
            piece = read(min(want, READ_PIECE))
            if piece is None:
                raise InvalidSource(
                    f"image source {_describe(source)} is non-blocking: read() returned None "
                    "(no data now); uploads need a blocking source"
                )
            return piece, _piece_view(piece, "read()", source)  # empty: the end
    else:
        pieces = iter(source)

        def next_piece(want: int) -> Tuple[Any, memoryview]:
            for piece in pieces:
                pv = _piece_view(piece, "iteration", source)
                if pv:
                    return piece, pv
            return b"", memoryview(b"")

    gather: Optional[bytearray] = None  # the buffer being filled from pieces
    view = memoryview(b"")
    filled = 0
    while True:
        piece, pv = next_piece(chunk - filled)
        if not pv:
            break
        pos, end = 0, len(pv)
        while pos < end:
            if gather is None and end - pos >= chunk:
                token = take()
                if pos == 0 and end == chunk and isinstance(piece, bytes):
                    yield token, piece
                else:
                    yield token, pv[pos : pos + chunk]
                pos += chunk
                continue
            if gather is None:
                gather = take()
                if gather is None:
                    gather = _chunk_buffer(chunk)
                view = memoryview(gather)
            n = min(chunk - filled, end - pos)
            view[filled : filled + n] = pv[pos : pos + n]
            filled += n
            pos += n
            if filled == chunk:
                yield gather, view
                gather, view, filled = None, memoryview(b""), 0
        del pv
    if gather is not None and filled:
        yield gather, view[:filled]
