"""The native backend: sheepfast's C client through the extension."""

from __future__ import annotations

from typing import Optional, Union

from sheepfast import defaults, errors
from sheepfast._native import Cluster, Vdi, deadline
from sheepfast.backends import Capability
from sheepfast.types import LockInfo, SnapshotRef, VdiInfo

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
        | Capability.SNAPSHOTS
        | Capability.CLONES
        | Capability.ROLLBACK
        | Capability.FLATTEN
        | Capability.DISCARD
        | Capability.LOCKS
        | Capability.LOCK_LIST
        | Capability.ATTRIBUTE_LIST
        | Capability.READ_AHEAD
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

    def exists(self, name: str, *, snapshot: SnapshotRef = None) -> bool:
        return self.cluster.exists(name, snapshot=snapshot)

    def stat(self, name: str, *, snapshot: SnapshotRef = None) -> VdiInfo:
        return self.cluster.stat(name, snapshot=snapshot)

    def delete(self, name: str, *, snapshot: SnapshotRef = None) -> None:
        self.cluster.delete(name, snapshot=snapshot)

    def snapshot(self, name: str, tag: Optional[str] = None) -> VdiInfo:
        return self.cluster.snapshot(name, tag)

    def snapshots(self, name: str) -> list[VdiInfo]:
        return self.cluster.snapshots(name)

    def rollback(self, name: str, snapshot: Union[str, bytes, int]) -> VdiInfo:
        return self.cluster.rollback(name, snapshot)

    def clone(
        self,
        name: str,
        snapshot: Union[str, bytes, int],
        new_name: str,
        *,
        size: Optional[int] = None,
    ) -> VdiInfo:
        return self.cluster.clone(name, snapshot, new_name, size=size)

    def children(self, name: str, *, snapshot: SnapshotRef = None) -> list[VdiInfo]:
        return self.cluster.children(name, snapshot=snapshot)

    def locks(self) -> list[LockInfo]:
        return self.cluster.locks()

    def break_lock(self, name: str, *, snapshot: SnapshotRef = None) -> None:
        self.cluster.break_lock(name, snapshot=snapshot)

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

    def open(
        self,
        name: str,
        *,
        snapshot: SnapshotRef = None,
        lock: Optional[str] = None,
        read_ahead: int = 0,
    ) -> Vdi:
        if lock is not None and lock not in ("exclusive", "shared"):
            raise errors.InvalidArgument(f"lock must be exclusive or shared (got {lock!r})")
        return self.cluster.open(
            name,
            snapshot=snapshot,
            lock=lock,  # type: ignore[arg-type]
            read_ahead=read_ahead,
        )

    def open_listed(self, info: VdiInfo) -> Vdi:
        """A handle on a VDI that list() just returned (opening by name is one
        lookup here, so it simply opens it again; a snapshot by its snap_id)."""
        return self.cluster.open(info.name, snapshot=info.snap_id if info.snapshot else None)

    def close(self) -> None:
        self.cluster.close()

    def __enter__(self) -> NativeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<NativeBackend {self.addresses!r}>"
