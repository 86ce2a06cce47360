"""What the harness measures: the cases, and what each one times.

Each case runs in a fresh child process (benchmarks.runner) so that its peak
RSS and CPU time are its own. A *write* case puts one image into a fresh VDI
(created beforehand, untimed, unless the upload itself creates it, as
Store.add and the old driver do); the *read* case of the same pair then reads
that VDI back, and the harness deletes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Case:
    name: str
    direction: str  #: "write" or "read" (or "cpu" for the reference)
    needs: str  #: "native", "store", "cli", "old", "dog" or "none"
    timed: str  #: what the timed region covers, for the report
    writer: Optional[str] = None  #: read cases: the case that fills their VDI
    unknown_size: bool = False
    sheepfast: bool = False  #: one of sheepfast's own paths (vs a reference)


CASES = [
    Case(
        "raw-write",
        "write",
        "native",
        sheepfast=True,
        timed="Cluster.open + one Vdi.write of the whole image from a preallocated "
        "buffer + close (VDI created before, untimed)",
    ),
    Case(
        "raw-read",
        "read",
        "native",
        writer="raw-write",
        sheepfast=True,
        timed="Cluster.open + one Vdi.readinto of the whole image into a "
        "preallocated buffer + close",
    ),
    Case(
        "store-add",
        "write",
        "store",
        sheepfast=True,
        timed="Store.add(id, source, size, 'sha512', verifier=None), the source "
        "read()-only as Glance passes it (--add-source): creates the VDI, "
        "md5 + sha512 over every byte",
    ),
    Case(
        "store-add-unknown",
        "write",
        "store",
        unknown_size=True,
        sheepfast=True,
        timed="the same with image_size=0 (size unknown until the stream ends)",
    ),
    Case(
        "store-get",
        "read",
        "store",
        writer="store-add",
        sheepfast=True,
        timed="Store.get(location) (glance_store.multi_backend.get) and full "
        "iteration of its chunks",
    ),
    Case(
        "cli-write",
        "write",
        "cli",
        sheepfast=True,
        timed="DogBackend: open + write in 64 MiB chunks from a preallocated "
        "buffer + close (VDI created before, untimed)",
    ),
    Case(
        "cli-read",
        "read",
        "cli",
        writer="cli-write",
        sheepfast=True,
        timed="DogBackend: open + readinto a reused 64 MiB buffer chunk by chunk + close",
    ),
    Case(
        "old-add",
        "write",
        "old",
        timed="the removed driver's add: list -r, create, one 'dog vdi write' "
        "process per 64 MiB chunk via processutils, md5 + sha512",
    ),
    Case(
        "old-add-unknown",
        "write",
        "old",
        unknown_size=True,
        timed="the same with image_size=0: create 0, then resize + write per chunk",
    ),
    Case(
        "old-get",
        "read",
        "old",
        writer="old-add",
        timed="the removed driver's get: list -r twice, then one 'dog vdi read' "
        "process per 64 MiB chunk, and iteration of the chunks",
    ),
    Case(
        "dog-write",
        "write",
        "dog",
        timed="'dog vdi write NAME < image' (VDI created before by 'dog vdi create', untimed)",
    ),
    Case("dog-read", "read", "dog", writer="dog-write", timed="'dog vdi read NAME > /dev/null'"),
    Case(
        "hashes",
        "cpu",
        "none",
        timed="md5 + sha512 over the image in a preallocated buffer, 64 MiB at "
        "a time: the hashing cost Store.add cannot avoid",
    ),
]

BY_NAME = {c.name: c for c in CASES}
NAMES = [c.name for c in CASES]


def reference(case: Case, against: str) -> Optional[str]:
    """The case a ratio compares with: against "dog" or "old"."""
    if case.direction not in ("write", "read"):
        return None
    if against == "dog":
        return "dog-write" if case.direction == "write" else "dog-read"
    if case.direction == "read":
        return "old-get"
    return "old-add-unknown" if case.unknown_size else "old-add"
