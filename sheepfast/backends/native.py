"""The native backend: sheepfast's C client through the extension."""

from __future__ import annotations

from sheepfast import defaults, errors
from sheepfast._native import Cluster, Vdi, deadline
from sheepfast.backends import Capability
from sheepfast.types import VdiInfo

__all__ = ["NativeBackend"]


class NativeBackend:
    """A Backend over sheepfast._native.Cluster (whose Vdi is already a
    BackendImage: read, readinto, write, resize, size, object_size)."""

    kind = "native"
    capabilities = (
        Capability.THIN_WRITES
        | Capability.RECYCLED_READS
        | Capability.BINARY_ATTRIBUTES
        | Capability.ROUTING
        | Capability.REQUEST_SIZE
        | Capability.PIPELINE
        | Capability.DEADLINE
        | Capability.USAGE
    )

    def __init__(
        self,
        addresses: str,
        *,
        connect_timeout: float = defaults.DEFAULT_CONNECT_TIMEOUT,
        io_timeout: float = defaults.DEFAULT_IO_TIMEOUT,
        depth: int = defaults.DEFAULT_DEPTH,
        routing: bool = True,
        request_size: int = defaults.DEFAULT_REQUEST_SIZE,
    ):
        self.addresses = addresses
        self.cluster = Cluster(
            addresses,
            connect_timeout=connect_timeout,
            io_timeout=io_timeout,
            depth=depth,
            routing=routing,
            request_size=request_size,
        )

    def create(self, name: str, size: int, *, copies: int = 0, block_size_shift: int = 0) -> None:
        self.cluster.create(name, size, copies=copies, block_size_shift=block_size_shift)

    def exists(self, name: str) -> bool:
        return self.cluster.exists(name)

    def stat(self, name: str) -> VdiInfo:
        return self.cluster.stat(name)

    def delete(self, name: str) -> None:
        self.cluster.delete(name)

    def discard(self, name: str) -> bool:
        """Deletes a partial VDI after a failed call: True once it is gone.

        One budget (CLEANUP_TIMEOUT, or io_timeout if shorter) covers every
        attempt; a gateway that timed out is tried last by the next one, so
        the second attempt goes through another sheep."""
        with deadline(min(defaults.CLEANUP_TIMEOUT, self.cluster.io_timeout)):
            for _ in range(2):
                try:
                    self.cluster.delete(name)
                except errors.VdiNotFound:
                    return True
                except (errors.TimeoutError, errors.ConnectionError):
                    continue
                return True
        return False

    def list(self) -> list[VdiInfo]:
        return self.cluster.list()

    def open(self, name: str) -> Vdi:
        return self.cluster.open(name)

    def open_listed(self, info: VdiInfo) -> Vdi:
        """A handle on a VDI that list() just returned (opening by name is one
        lookup here, so it simply opens it again)."""
        return self.cluster.open(info.name)

    def close(self) -> None:
        self.cluster.close()

    def __enter__(self) -> NativeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<NativeBackend {self.addresses!r}>"
