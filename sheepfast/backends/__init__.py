"""Backends: the two ways sheepfast reaches a cluster.

* ``native``: the C client through the extension (sheepfast._native);
* ``cli``: the ``dog`` (or older ``collie``) command-line tool, one process
  per operation, for hosts where the extension cannot be built.

Both implement :class:`Backend` and raise the same :mod:`sheepfast.errors`
classes, so the layers above (SheepdogImage, the glance_store driver, the
``sheepfast`` command) never need to know which one runs.
"""

from __future__ import annotations

import os
from typing import Optional, Protocol, Sequence, Union, runtime_checkable

from sheepfast.types import VdiInfo

__all__ = ["Backend", "BackendImage", "BACKEND_ENV", "KINDS", "open_backend", "native_available"]

#: Environment switch for the default backend: auto | native | cli.
BACKEND_ENV = "SHEEPFAST_BACKEND"
KINDS = ("auto", "native", "cli")


@runtime_checkable
class BackendImage(Protocol):
    """An open VDI. Offsets and lengths are bytes; ranges must lie inside it."""

    name: str

    @property
    def size(self) -> int: ...
    @property
    def object_size(self) -> int: ...
    def read(self, offset: int, length: int) -> bytes: ...
    def readinto(self, buffer, offset: int) -> int: ...
    def write(self, data, offset: int) -> int: ...
    def resize(self, new_size: int) -> None: ...
    # VDI attributes (Sheepdog's key/value pairs): AttributeNotFound if unset
    def metadata_get(self, key: Union[str, bytes]) -> bytes: ...
    def metadata_set(self, key: Union[str, bytes], value: Union[str, bytes]) -> None: ...
    def metadata_remove(self, key: Union[str, bytes]) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "BackendImage": ...
    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """One cluster, reached one way. Safe to share between threads."""

    kind: str  #: "native" or "cli"
    addresses: str

    def create(
        self, name: str, size: int, *, copies: int = 0, block_size_shift: int = 0
    ) -> None: ...
    def exists(self, name: str) -> bool: ...
    def stat(self, name: str) -> VdiInfo: ...
    def delete(self, name: str) -> None: ...
    def discard(self, name: str) -> bool: ...
    def list(self) -> list[VdiInfo]: ...
    def open(self, name: str) -> BackendImage: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Backend": ...
    def __exit__(self, *exc: object) -> None: ...


# How long the cleanup after a failed call (deleting the partial VDI) may
# take on top of the call itself: what it cannot finish stays marked.
CLEANUP_TIMEOUT = 5.0


def native_available() -> bool:
    try:
        import sheepfast._native  # noqa: F401
    except ImportError:
        return False
    return True


def open_backend(
    addresses: Union[str, Sequence[str]],
    kind: Optional[str] = None,
    *,
    connect_timeout: float = 10.0,
    io_timeout: float = 60.0,
    depth: int = 16,
    dog_command: str = "dog",
) -> Backend:
    """A backend for the cluster at addresses.

    kind: "native", "cli", or "auto" (native when the extension imports,
    else cli); None reads $SHEEPFAST_BACKEND, defaulting to auto.
    """
    if not isinstance(addresses, str):
        addresses = ",".join(addresses)
    kind = (kind or os.environ.get(BACKEND_ENV) or "auto").lower()
    if kind not in KINDS:
        from sheepfast.errors import InvalidArgument

        raise InvalidArgument(f"backend must be one of {', '.join(KINDS)} (got {kind!r})")
    if kind == "auto":
        kind = "native" if native_available() else "cli"
    if kind == "native":
        from sheepfast.backends.native import NativeBackend

        return NativeBackend(
            addresses, connect_timeout=connect_timeout, io_timeout=io_timeout, depth=depth
        )
    from sheepfast.backends.dog import DogBackend

    return DogBackend(addresses, dog_command=dog_command, timeout=io_timeout)
