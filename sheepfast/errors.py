"""One exception hierarchy for every sheepfast backend.

The C core reports a category (``SF_E_*``), an errno and a Sheepdog result
code; :func:`from_status` turns those into the classes below through the two
tables at the end of this module. The command-line backend raises the same
classes, so callers never need to know which backend ran.

Classes named after built-in exceptions (``ConnectionError``,
``TimeoutError``) also derive from the built-in, so ``except TimeoutError``
catches them whichever one the caller imported.
"""

from __future__ import annotations

import builtins
import errno as _errno

__all__ = [
    "SheepfastError",
    "SheepdogError",
    "InvalidArgument",
    "OutOfRange",
    "InvalidSource",
    "Unsupported",
    "ConnectionError",
    "TimeoutError",
    "ProtocolError",
    "ServerError",
    "ObjectNotFound",
    "AttributeNotFound",
    "VdiNotFound",
    "SnapshotNotFound",
    "VdiExists",
    "InvalidParameters",
    "SystemError_",
    "VdiLocked",
    "VdiSpaceFull",
    "VersionMismatch",
    "NoSpace",
    "ReadOnly",
    "ClusterNotReady",
    "RESULT_NAMES",
    "from_status",
    "server_error",
]


class SheepfastError(Exception):
    """Base of every error sheepfast raises."""


#: The name DESIGN.md and the old Glance driver use for the same base class.
SheepdogError = SheepfastError


class InvalidArgument(SheepfastError, ValueError):
    """The caller's arguments were refused before anything was sent."""


class OutOfRange(InvalidArgument):
    """An offset or length lies outside the VDI."""


class InvalidSource(InvalidArgument):
    """An upload source broke the file protocol: read() gave None or a str,
    readinto() a count outside 0..len(buffer), an iterable a non-bytes piece.
    Nothing it gave is trusted (the upload stops)."""


class Unsupported(SheepfastError, NotImplementedError):
    """A valid request that this client deliberately does not implement."""


class ConnectionError(SheepfastError, builtins.ConnectionError):  # noqa: A001
    """Connecting to, or talking with, the cluster failed."""


class TimeoutError(SheepfastError, builtins.TimeoutError):  # noqa: A001
    """The cluster made no progress within the configured timeout."""


class ProtocolError(SheepfastError):
    """The peer sent something the Sheepdog protocol does not allow."""


class ServerError(SheepfastError):
    """Sheep answered with a non-zero result code (``.result``)."""

    def __init__(self, message: str, result: int = 0):
        super().__init__(message)
        self.result = result

    @property
    def result_name(self) -> str:
        return RESULT_NAMES.get(self.result, "UNKNOWN_RESULT")


class ObjectNotFound(ServerError):
    """NO_OBJ: the object does not exist."""


class AttributeNotFound(ObjectNotFound, KeyError):
    """The VDI has no attribute (metadata key) of that name. A KeyError, as
    a missing key of a mapping is; sheep answers NO_OBJ for it."""

    def __str__(self) -> str:
        return Exception.__str__(self)  # the message, not KeyError's repr of it


class VdiNotFound(ServerError, LookupError):
    """NO_VDI: no VDI has that name."""


class SnapshotNotFound(VdiNotFound):
    """NO_TAG: the VDI exists but has no snapshot with that tag or id."""


class VdiExists(ServerError):
    """VDI_EXIST: a VDI with that name already exists."""


class InvalidParameters(ServerError):
    """INVALID_PARMS: sheep refused the request's parameters."""


class SystemError_(ServerError):
    """SYSTEM_ERROR: sheep failed internally (e.g. too few zones for EC)."""


class VdiLocked(ServerError):
    """VDI_LOCKED: another client holds the VDI's lock."""


class VdiSpaceFull(ServerError):
    """FULL_VDI: the cluster has no free VDI ids left."""


class VersionMismatch(ServerError):
    """VER_MISMATCH: sheep does not speak this protocol version."""


class NoSpace(ServerError):
    """NO_SPACE: the cluster's disks are full."""


class ReadOnly(ServerError):
    """READONLY: the VDI is a snapshot and cannot be written."""


class ClusterNotReady(ServerError):
    """The gateway cannot serve requests now (not formatted, joining, halted,
    shutting down); another gateway or a later retry may."""


RESULT_NAMES = {
    0x00: "SUCCESS",
    0x01: "UNKNOWN",
    0x02: "NO_OBJ",
    0x03: "EIO",
    0x04: "VDI_EXIST",
    0x05: "INVALID_PARMS",
    0x06: "SYSTEM_ERROR",
    0x07: "VDI_LOCKED",
    0x08: "NO_VDI",
    0x09: "NO_BASE_VDI",
    0x0A: "VDI_READ",
    0x0B: "VDI_WRITE",
    0x0C: "BASE_VDI_READ",
    0x0D: "BASE_VDI_WRITE",
    0x0E: "NO_TAG",
    0x0F: "STARTUP",
    0x10: "VDI_NOT_LOCKED",
    0x11: "SHUTDOWN",
    0x12: "NO_MEM",
    0x13: "FULL_VDI",
    0x14: "VER_MISMATCH",
    0x15: "NO_SPACE",
    0x16: "WAIT_FOR_FORMAT",
    0x17: "WAIT_FOR_JOIN",
    0x18: "JOIN_FAILED",
    0x19: "HALT",
    0x1A: "READONLY",
    0x1D: "INODE_INVALIDATED",
    0x81: "OLD_NODE_VER",
    0x82: "NEW_NODE_VER",
    0x83: "NOT_FORMATTED",
    0x84: "INVALID_CTIME",
    0x85: "INVALID_EPOCH",
    0x86: "NETWORK_ERROR",
    0x88: "BUFFER_SMALL",
    0x8B: "NO_SUPPORT",
    0x8C: "NODE_IN_RECOVERY",
    0x8D: "KILLED",
    0x8F: "AGAIN",
    0x91: "CLUSTER_ERROR",
    0x95: "COLLECTING_CINFO",
}

# Sheepdog result code -> class. Codes not listed are a plain ServerError.
_RESULT_CLASSES: dict[int, type[ServerError]] = {
    0x02: ObjectNotFound,
    0x04: VdiExists,
    0x05: InvalidParameters,
    0x06: SystemError_,
    0x07: VdiLocked,
    0x08: VdiNotFound,
    0x0E: SnapshotNotFound,
    0x0F: ClusterNotReady,
    0x11: ClusterNotReady,
    0x13: VdiSpaceFull,
    0x14: VersionMismatch,
    0x15: NoSpace,
    0x16: ClusterNotReady,
    0x17: ClusterNotReady,
    0x19: ClusterNotReady,
    0x1A: ReadOnly,
    0x83: ClusterNotReady,
    0x8D: ClusterNotReady,
}

# C core category (sf_errcat in src_c/sheepfast.h) -> class.
SF_E_INVALID, SF_E_NOMEM, SF_E_RESOLVE, SF_E_CONNECT, SF_E_IO = 1, 2, 3, 4, 5
SF_E_TIMEOUT, SF_E_PROTOCOL, SF_E_SERVER, SF_E_UNSUPPORTED, SF_E_RANGE = 6, 7, 8, 9, 10

_CATEGORY_CLASSES: dict[int, type[SheepfastError]] = {
    SF_E_INVALID: InvalidArgument,
    SF_E_RESOLVE: ConnectionError,
    SF_E_CONNECT: ConnectionError,
    SF_E_IO: ConnectionError,
    SF_E_TIMEOUT: TimeoutError,
    SF_E_PROTOCOL: ProtocolError,
    SF_E_UNSUPPORTED: Unsupported,
    SF_E_RANGE: OutOfRange,
}


def server_error(result: int, message: str) -> ServerError:
    """The exception for a Sheepdog result code."""
    return _RESULT_CLASSES.get(result, ServerError)(message, result)


def from_status(category: int, errnum: int, result: int, message: str) -> Exception:
    """The exception for a failed C call (see sf_error in sheepfast.h)."""
    if category == SF_E_SERVER:
        return server_error(result, message)
    if category == SF_E_NOMEM:
        return MemoryError(message)
    cls = _CATEGORY_CLASSES.get(category, SheepfastError)
    exc = cls(message)
    if isinstance(exc, OSError):
        # Built with one argument so str() is the full message, not
        # "[Errno N] ..."; errno is still there for callers that look.
        exc.errno = errnum or _errno.EIO
    return exc
