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

from sheepfast import defaults
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
from sheepfast.types import ClusterDefaults, LockInfo, ParentInfo, VdiInfo


def _installed_version() -> str:
    """The version's one home is pyproject.toml, read through the installed metadata."""
    from importlib import metadata

    try:
        return metadata.version(__name__)
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


__version__ = _installed_version()

try:
    from sheepfast._native import Cluster, Vdi, deadline
except ImportError as exc:  # the dog backend still works; these say why they cannot
    from sheepfast.backends import not_built_message

    _import_error = exc

    class _NotBuilt:
        """Stands in for a class of the extension, which is not built: a
        class still (isinstance works, and is False), whose construction
        raises an ImportError saying how to build it."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            raise ImportError(not_built_message(_import_error)) from _import_error

    class Cluster(_NotBuilt):  # type: ignore[no-redef]
        pass

    class Vdi(_NotBuilt):  # type: ignore[no-redef]
        pass

    class deadline(_NotBuilt):  # type: ignore[no-redef]  # noqa: N801
        pass


#: bytes per object request, below the 512 KiB from which sheep 1.0's
#: malloc maps (and the kernel zeroes) a fresh buffer
DEFAULT_REQUEST_SIZE = defaults.DEFAULT_REQUEST_SIZE
#: the most bytes Cluster.open(read_ahead=...) brings with the inode
READ_AHEAD_MAX = defaults.READ_AHEAD_MAX


def connect(
    addresses: str = defaults.DEFAULT_CLUSTER,
    *,
    connect_timeout: float = defaults.DEFAULT_CONNECT_TIMEOUT,
    io_timeout: float = defaults.DEFAULT_IO_TIMEOUT,
    depth: int = defaults.DEFAULT_DEPTH,
    routing: bool = True,
    request_size: Optional[int] = None,
) -> Cluster:
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
    "READ_AHEAD_MAX",
    "Cluster",
    "ClusterDefaults",
    "deadline",
    "ClusterNotReady",
    "ConnectionError",
    "InvalidArgument",
    "InvalidParameters",
    "InvalidSource",
    "LockInfo",
    "NoSpace",
    "ObjectNotFound",
    "OutOfRange",
    "ParentInfo",
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
