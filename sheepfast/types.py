"""Plain value types shared by the backends and the layers above them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

#: Which VDI of a name: a snapshot's tag, a snapshot's snap_id (>= 1), or
#: None for the working VDI.
SnapshotRef = Union[str, bytes, int, None]


@dataclass(frozen=True)
class ParentInfo:
    """The snapshot a VDI shares its objects with: its own earlier state
    (a working VDI after a snapshot or rollback) or another VDI's (a clone)."""

    name: str
    vid: int
    snap_id: int
    tag: str


@dataclass(frozen=True)
class VdiInfo:
    """What the inode header says about one VDI."""

    name: str
    vid: int
    size: int
    block_size_shift: int
    copies: int
    copy_policy: int
    store_policy: int
    snap_id: int
    tag: str
    parent_vid: int
    create_time: float  #: unix seconds
    snapshot: bool  #: a read-only snapshot (not the working VDI)
    #: what parent_vid names, when the listing or lookup could tell (None:
    #: no parent, or one that is gone)
    parent: Optional[ParentInfo] = None

    @property
    def is_clone(self) -> bool:
        """A clone of another VDI's snapshot (not a VDI's own later state)."""
        return self.parent is not None and self.parent.name != self.name

    @property
    def object_size(self) -> int:
        return 1 << self.block_size_shift

    @property
    def redundancy(self) -> str:
        """ "N" copies, or "D:P" for an erasure-coded VDI, as dog prints it."""
        if self.copy_policy == 0:
            return str(self.copies)
        data = (self.copy_policy >> 4) * 2
        return f"{data}:{self.copy_policy & 0x0F}"


@dataclass(frozen=True)
class ClusterDefaults:
    """What a VDI created with no options gets."""

    copies: int
    copy_policy: int
    block_size_shift: int


@dataclass(frozen=True)
class LockInfo:
    """A lock sheep holds on a VDI (only on a cluster formatted with ``-l``)."""

    name: str  #: "" when the VDI is gone
    vid: int
    tag: str
    snap_id: int
    state: str  #: "exclusive" or "shared"
    #: the sheep ("host:port") that took it: sheep records the sheep a lock
    #: request reached, not the client
    owners: tuple[str, ...]
