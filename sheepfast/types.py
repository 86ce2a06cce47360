"""Plain value types shared by the backends and the layers above them."""

from __future__ import annotations

from dataclasses import dataclass


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
