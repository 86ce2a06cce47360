"""Backends: the two ways sheepfast reaches a cluster.

* ``native``: the C client through the extension (sheepfast._native);
* ``cli``: the ``dog`` (or older ``collie``) command-line tool, one process
  per operation, for hosts where the extension cannot be built.

Both implement :class:`Backend` and raise the same :mod:`sheepfast.errors`
classes. What only one of them can do is declared, not probed for: each
backend's ``capabilities`` is a set of :class:`Capability` flags, and the
layers above (SheepdogImage, the glance_store driver, the ``sheepfast``
command) look there.
"""

from __future__ import annotations

import builtins
import enum
import os
import warnings
from typing import Any, Callable, Optional, Protocol, Sequence, Union, runtime_checkable

from sheepfast import defaults
from sheepfast.errors import InvalidArgument, Unsupported
from sheepfast.types import LockInfo, SnapshotRef, VdiInfo

__all__ = [
    "BACKEND_ENV",
    "MissingBackendCapabilities",
    "MissingImageCapabilities",
    "missing",
    "CLEANUP_TIMEOUT",
    "KINDS",
    "Backend",
    "BackendImage",
    "Capability",
    "RecyclingImage",
    "ThinImage",
    "ReadAheadImage",
    "UsageImage",
    "native_available",
    "native_import_error",
    "not_built_message",
    "open_backend",
    "is_zero",
    "resolve_kind",
]

#: Environment switch for the default backend: auto | native | cli.
BACKEND_ENV = "SHEEPFAST_BACKEND"
KINDS = ("auto", "native", "cli")

#: Kept here too for the callers that import it from the backends.
CLEANUP_TIMEOUT = defaults.CLEANUP_TIMEOUT


class Capability(enum.Flag):
    """What a backend can do beyond the :class:`Backend` interface."""

    #: its images are :class:`ThinImage`: with ``thin`` on, a write skips
    #: all-zero objects that are not allocated yet (right for any VDI)
    THIN_WRITES = enum.auto()
    #: its images are :class:`RecyclingImage`: ``read(..., recycle=list)``
    #: refills bytes objects a stream let go of instead of allocating
    RECYCLED_READS = enum.auto()
    #: its images keep VDI attributes (metadata_get/set/remove) with any
    #: bytes in a value (dog cannot pass a NUL in one)
    BINARY_ATTRIBUTES = enum.auto()
    #: ``routing``: each object read goes to a sheep holding the object
    ROUTING = enum.auto()
    #: ``request_size``: the bytes one object request carries can be chosen
    REQUEST_SIZE = enum.auto()
    #: ``depth``: several object requests in flight per call
    PIPELINE = enum.auto()
    #: one deadline bounds a whole call, its cleanup included (dog's
    #: timeout is per process, for as long as it moves no bytes)
    DEADLINE = enum.auto()
    #: its images are :class:`UsageImage`: ``usage()`` gives the bytes of
    #: objects stored and shared with other VDIs
    USAGE = enum.auto()
    #: ``snapshot``, ``snapshots`` and ``snapshot=`` on stat/open/delete
    SNAPSHOTS = enum.auto()
    #: ``clone`` and ``children``
    CLONES = enum.auto()
    #: ``rollback``
    ROLLBACK = enum.auto()
    #: an image's ``flatten()``
    FLATTEN = enum.auto()
    #: an image's ``discard(offset, length)`` gives whole objects back
    DISCARD = enum.auto()
    #: ``open(lock=...)`` takes sheep's lock
    LOCKS = enum.auto()
    #: ``locks()`` and ``break_lock()``
    LOCK_LIST = enum.auto()
    #: an image's ``metadata_list()``
    ATTRIBUTE_LIST = enum.auto()
    #: ``open(read_ahead=...)`` may bring the first bytes with the inode;
    #: its images are :class:`ReadAheadImage`
    READ_AHEAD = enum.auto()


@runtime_checkable
class BackendImage(Protocol):
    """An open VDI. Offsets and lengths are bytes; ranges must lie inside it."""

    @property
    def name(self) -> str: ...
    @property
    def info(self) -> VdiInfo: ...
    @property
    def size(self) -> int: ...
    @property
    def object_size(self) -> int: ...
    def read(self, offset: int, length: int) -> bytes: ...
    def readinto(self, buffer: Any, offset: int) -> int: ...
    def write(self, data: Any, offset: int) -> int: ...
    def resize(self, new_size: int) -> None: ...
    # VDI attributes (Sheepdog's key/value pairs): AttributeNotFound if unset
    def metadata_get(self, key: Union[str, bytes]) -> bytes: ...
    def metadata_set(self, key: Union[str, bytes], value: Union[str, bytes]) -> None: ...
    def metadata_remove(self, key: Union[str, bytes]) -> None: ...
    # Unsupported where the backend lacks ATTRIBUTE_LIST, DISCARD, FLATTEN
    def metadata_list(self) -> list[tuple[str, bytes]]: ...
    def discard(self, offset: int, length: int) -> None: ...
    def flatten(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> BackendImage: ...
    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class ThinImage(BackendImage, Protocol):
    """An image of a backend with Capability.THIN_WRITES."""

    thin: bool


@runtime_checkable
class RecyclingImage(BackendImage, Protocol):
    """An image of a backend with Capability.RECYCLED_READS."""

    def read(self, offset: int, length: int, *, recycle: Optional[list[bytes]] = None) -> bytes: ...


@runtime_checkable
class ReadAheadImage(BackendImage, Protocol):
    """An image of a backend with Capability.READ_AHEAD."""

    @property
    def read_ahead_held(self) -> int: ...  # bytes the first read may take from memory


@runtime_checkable
class UsageImage(BackendImage, Protocol):
    """An image of a backend with Capability.USAGE."""

    def usage(self) -> tuple[int, int]: ...


@runtime_checkable
class Backend(Protocol):
    """One cluster, reached one way. Safe to share between threads."""

    kind: str  #: "native" or "cli"
    addresses: str
    capabilities: Capability

    def create(
        self, name: str, size: int, *, copies: int = 0, block_size_shift: int = 0
    ) -> None: ...
    def exists(self, name: str, *, snapshot: SnapshotRef = None) -> bool: ...
    def stat(self, name: str, *, snapshot: SnapshotRef = None) -> VdiInfo: ...
    def delete(self, name: str, *, snapshot: SnapshotRef = None) -> None: ...
    def discard(self, name: str) -> bool: ...
    def list(self) -> list[VdiInfo]: ...
    # read_ahead: a hint (see sheepfast.Cluster.open); a backend may ignore it.
    def open(
        self,
        name: str,
        *,
        snapshot: SnapshotRef = None,
        lock: Optional[str] = None,
        read_ahead: int = 0,
    ) -> BackendImage: ...
    def open_listed(self, info: VdiInfo) -> BackendImage: ...
    # What the backend's capabilities do not include raises Unsupported.
    def snapshot(self, name: str, tag: Optional[str] = None) -> VdiInfo: ...
    def snapshots(self, name: str) -> builtins.list[VdiInfo]: ...
    def rollback(self, name: str, snapshot: Union[str, bytes, int]) -> VdiInfo: ...
    def clone(
        self,
        name: str,
        snapshot: Union[str, bytes, int],
        new_name: str,
        *,
        size: Optional[int] = None,
    ) -> VdiInfo: ...
    def children(self, name: str, *, snapshot: SnapshotRef = None) -> builtins.list[VdiInfo]: ...
    def locks(self) -> builtins.list[LockInfo]: ...
    def break_lock(self, name: str, *, snapshot: SnapshotRef = None) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Backend: ...
    def __exit__(self, *exc: object) -> None: ...


def missing(kind: str, capability: Capability, what: str) -> Unsupported:
    """The error for what a backend cannot do."""
    return Unsupported(f"the {kind} backend cannot {what} (it lacks Capability.{capability.name})")


class MissingBackendCapabilities:
    """Base of a backend that lacks some capabilities: each of these methods
    raises Unsupported naming the capability, until the backend defines it."""

    kind: str

    def _missing(self, capability: Capability, what: str) -> Unsupported:
        return missing(self.kind, capability, what)

    def snapshot(self, name: str, tag: Optional[str] = None) -> VdiInfo:
        raise self._missing(Capability.SNAPSHOTS, "take snapshots")

    def snapshots(self, name: str) -> builtins.list[VdiInfo]:
        raise self._missing(Capability.SNAPSHOTS, "list snapshots")

    def rollback(self, name: str, snapshot: Union[str, bytes, int]) -> VdiInfo:
        raise self._missing(Capability.ROLLBACK, "roll back to a snapshot")

    def clone(
        self,
        name: str,
        snapshot: Union[str, bytes, int],
        new_name: str,
        *,
        size: Optional[int] = None,
    ) -> VdiInfo:
        raise self._missing(Capability.CLONES, "clone snapshots")

    def children(self, name: str, *, snapshot: SnapshotRef = None) -> builtins.list[VdiInfo]:
        raise self._missing(Capability.CLONES, "list clones")

    def locks(self) -> builtins.list[LockInfo]:
        raise self._missing(Capability.LOCK_LIST, "list locks")

    def break_lock(self, name: str, *, snapshot: SnapshotRef = None) -> None:
        raise self._missing(Capability.LOCK_LIST, "release locks")


class MissingImageCapabilities:
    """The same for an image of such a backend."""

    kind: str

    def metadata_list(self) -> builtins.list[tuple[str, bytes]]:
        raise missing(self.kind, Capability.ATTRIBUTE_LIST, "list attributes")

    def discard(self, offset: int, length: int) -> None:
        raise missing(self.kind, Capability.DISCARD, "discard objects")

    def flatten(self) -> None:
        raise missing(self.kind, Capability.FLATTEN, "flatten a clone")


_UNPROBED: Any = object()
_native_error: Optional[ImportError] = _UNPROBED
_warned_not_built = False


def native_import_error() -> Optional[ImportError]:
    """Why the extension does not import, or None when it does."""
    global _native_error
    if _native_error is _UNPROBED:
        try:
            import sheepfast._native  # noqa: F401
        except ImportError as exc:
            _native_error = exc
        else:
            _native_error = None
    return _native_error


def native_available() -> bool:
    return native_import_error() is None


def _is_zero_py(view: memoryview) -> bool:
    step = 1 << 20
    zeros = memoryview(bytes(min(step, len(view))))
    for start in range(0, len(view), step):
        part = view[start : start + step]
        if part != zeros[: len(part)]:
            return False
    return True


_zero_scan: Optional[Callable[[memoryview], bool]] = None


def is_zero(data: Any) -> bool:
    """True if the buffer holds only zero bytes (a C scan when the extension
    is built)."""
    global _zero_scan
    if _zero_scan is None:
        if native_available():
            from sheepfast._native import _is_zero

            _zero_scan = _is_zero
        else:
            _zero_scan = _is_zero_py
    return bool(_zero_scan(memoryview(data).cast("B")))


def not_built_message(exc: Optional[BaseException] = None) -> str:
    """What to tell someone whose sheepfast has no extension, and how to build it."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    why = f" ({exc})" if exc is not None else ""
    return (
        f"sheepfast's native extension (sheepfast._native) is not built in {package}{why}. "
        "Install the package, which builds it: 'python -m pip install .' "
        "('python -m pip install -e .' for a source checkout you edit), "
        "or run from outside the source tree to use an installed copy"
    )


def resolve_kind(kind: Optional[str] = None, dog_command: Union[str, Sequence[str]] = "dog") -> str:
    """ "native" or "cli" for kind ("auto", "native", "cli"; None reads
    $SHEEPFAST_BACKEND, defaulting to auto), or InvalidArgument saying why
    the one asked for cannot run here (the extension is not built, dog is
    not found). auto without the extension takes dog, warning once
    that the extension is not built (set the backend to cli to choose dog
    on purpose)."""
    global _warned_not_built
    chosen = (kind or os.environ.get(BACKEND_ENV) or "auto").lower()
    if chosen not in KINDS:
        raise InvalidArgument(f"backend must be one of {', '.join(KINDS)} (got {chosen!r})")
    missing = native_import_error()
    if chosen == "native" and missing is not None:
        raise InvalidArgument(f"the native backend was asked for, but {not_built_message(missing)}")
    if chosen == "native" or (chosen == "auto" and missing is None):
        return "native"
    from sheepfast.backends.dog import find_dog

    try:
        find_dog(dog_command)
    except InvalidArgument as exc:
        if chosen == "cli":
            raise
        raise InvalidArgument(
            f"{not_built_message(missing)}; and the fallback, the dog backend, "
            f"cannot run either: {exc}"
        ) from None
    if chosen == "auto" and not _warned_not_built:
        _warned_not_built = True
        warnings.warn(
            f"{not_built_message(missing)}. Using the dog command instead "
            f"(set {BACKEND_ENV}=cli to choose it on purpose)",
            RuntimeWarning,
            stacklevel=3,
        )
    return "cli"


def open_backend(
    addresses: Union[str, Sequence[str]],
    kind: Optional[str] = None,
    *,
    connect_timeout: float = defaults.DEFAULT_CONNECT_TIMEOUT,
    io_timeout: float = defaults.DEFAULT_IO_TIMEOUT,
    depth: int = defaults.DEFAULT_DEPTH,
    routing: Optional[bool] = None,
    request_size: Optional[int] = None,
    dog_command: Union[str, Sequence[str]] = "dog",
) -> Backend:
    """A backend for the cluster at addresses.

    kind: "native", "cli", or "auto" (see resolve_kind). depth: at most
    this many object requests in flight per call (dog runs one at a time,
    which is within any depth). routing, request_size: None for the
    backend's own way; a value the backend cannot honour (routing=True or
    a request_size with dog, which has neither) is Unsupported rather than
    ignored. connect_timeout is the native backend's; dog applies its own.
    """
    if not isinstance(addresses, str):
        addresses = ",".join(addresses)
    if resolve_kind(kind, dog_command) == "native":
        from sheepfast.backends.native import NativeBackend

        return NativeBackend(
            addresses,
            connect_timeout=connect_timeout,
            io_timeout=io_timeout,
            depth=depth,
            routing=True if routing is None else routing,
            request_size=defaults.DEFAULT_REQUEST_SIZE if request_size is None else request_size,
        )
    if routing:
        raise Unsupported(
            "the dog backend cannot route reads to the sheep holding each object "
            "(leave routing unset, or use the native backend)"
        )
    if request_size is not None:
        raise Unsupported(
            "the dog backend cannot choose the size of object requests "
            "(leave request_size unset, or use the native backend)"
        )
    from sheepfast.backends.dog import DogBackend

    return DogBackend(addresses, dog_command=dog_command, timeout=io_timeout)
