"""sheepfast: Glance images on a Sheepdog cluster, fast.

import sheepfast
with sheepfast.connect("127.0.0.1:7000") as cluster:
    cluster.create("img", 1 << 30)
    with cluster.open("img") as vdi:
        vdi.write(b"hello", 0)
        assert vdi.read(0, 5) == b"hello"
"""

from __future__ import annotations

from typing import Optional

from sheepfast.errors import (
    AttributeNotFound,
    ClusterNotReady,
    ConnectionError,
    InvalidArgument,
    InvalidParameters,
    InvalidSource,
    NoSpace,
    ObjectNotFound,
    OutOfRange,
    ProtocolError,
    ReadOnly,
    ServerError,
    SheepdogError,
    SheepfastError,
    SnapshotNotFound,
    TimeoutError,
    Unsupported,
    VdiExists,
    VdiLocked,
    VdiNotFound,
    VdiSpaceFull,
    VersionMismatch,
)
from sheepfast.incomplete import find_incomplete, reclaim_incomplete
from sheepfast.types import ClusterDefaults, VdiInfo


def _installed_version() -> str:
    """The version's one home is pyproject.toml, read through the installed metadata."""
    from importlib import metadata

    try:
        return metadata.version(__name__)
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


__version__ = _installed_version()

try:
    # DEFAULT_REQUEST_SIZE: bytes per object request, below the 512 KiB from
    # which sheep 1.0's malloc maps (and the kernel zeroes) a fresh buffer
    from sheepfast._native import DEFAULT_REQUEST_SIZE, Cluster, Vdi, deadline
except ImportError as exc:  # pragma: no cover - exercised only without a build
    _import_error = exc
    DEFAULT_REQUEST_SIZE = None  # type: ignore[assignment]  # the extension's

    def _missing(*args, **kwargs):
        raise ImportError(
            f"sheepfast's native extension is not built in {__path__[0]}: install the "
            "package ('pip install .') and run it from outside the source tree, or build "
            "it in place ('python setup.py build_ext --inplace')"
        ) from _import_error

    Cluster = Vdi = deadline = _missing  # type: ignore[assignment,misc]


def connect(
    addresses: str = "127.0.0.1:7000",
    *,
    connect_timeout: float = 10.0,
    io_timeout: float = 60.0,
    depth: int = 16,
    routing: bool = True,
    request_size: Optional[int] = None,
) -> "Cluster":
    """Connects to a Sheepdog cluster.

    addresses: "host:port", several separated by commas, IPv6 as "[addr]:port";
    the port defaults to 7000. depth: object requests kept in flight per call.
    routing: send each object read to a sheep holding the object (learned
    from the cluster's node list), which saves the cluster a hop; False keeps
    all traffic on the given addresses. request_size: the most bytes one object
    request carries (a multiple of 4 KiB; the object size or more sends whole
    objects); the default, DEFAULT_REQUEST_SIZE, stays below the 512 KiB above
    which sheep maps, zeroes and faults in a fresh buffer for every request.
    """
    return Cluster(
        addresses,
        connect_timeout=connect_timeout,
        io_timeout=io_timeout,
        depth=depth,
        routing=routing,
        request_size=DEFAULT_REQUEST_SIZE if request_size is None else request_size,
    )


__all__ = [
    "AttributeNotFound",
    "DEFAULT_REQUEST_SIZE",
    "Cluster",
    "ClusterDefaults",
    "deadline",
    "ClusterNotReady",
    "ConnectionError",
    "InvalidArgument",
    "InvalidParameters",
    "InvalidSource",
    "NoSpace",
    "ObjectNotFound",
    "OutOfRange",
    "ProtocolError",
    "ReadOnly",
    "ServerError",
    "SheepdogError",
    "SheepfastError",
    "SnapshotNotFound",
    "TimeoutError",
    "Unsupported",
    "Vdi",
    "VdiExists",
    "VdiInfo",
    "VdiLocked",
    "VdiNotFound",
    "VdiSpaceFull",
    "VersionMismatch",
    "connect",
    "find_incomplete",
    "reclaim_incomplete",
]
