"""Defaults and limits: the one home of each in Python.

Where the C client has the value, the C constant is the source: it is taken
from the extension (sheepfast._native) when that imports. Without a build
(the dog backend) the literal next to it is used; a test checks that every
literal equals what the extension exports. Values only Python uses are
plain literals here.

Every other module imports from here: ``from sheepfast import defaults``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Optional

_native: Optional[ModuleType]
try:
    from sheepfast import _native
except ImportError:  # the dog backend works without the extension
    _native = None

__all__ = [
    "ATTR_KEY_MAX",
    "TAG_MAX",
    "ATTR_VALUE_MAX",
    "CLEANUP_TIMEOUT",
    "GLANCE_SNAPSHOT_KEY",
    "GLANCE_SNAPSHOT_TAG",
    "DEFAULT_BLOCK_SIZE_SHIFT",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CLUSTER",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DEPTH",
    "DEFAULT_HOST",
    "DEFAULT_IO_TIMEOUT",
    "DEFAULT_PORT",
    "DEFAULT_REQUEST_SIZE",
    "FROM_C",
    "MAX_BLOCK_SIZE_SHIFT",
    "MAX_COPIES",
    "MAX_DEPTH",
    "MAX_FLAT_OBJECTS",
    "MIN_BLOCK_SIZE_SHIFT",
    "NAME_MAX",
    "READ_AHEAD_MAX",
]

#: The values C owns, under the names sheepfast._native exports them, with
#: the literal used when the extension is not built.
FROM_C: dict[str, float] = {
    "DEFAULT_PORT": 7000,
    "DEFAULT_CONNECT_TIMEOUT": 10.0,  # seconds
    "DEFAULT_IO_TIMEOUT": 60.0,  # seconds without progress, per call
    "DEFAULT_DEPTH": 16,  # object requests in flight per call
    "MAX_DEPTH": 256,
    "NAME_MAX": 255,  # bytes of UTF-8; sheep keeps 256 with the terminating NUL
    "MAX_COPIES": 31,
    "DEFAULT_BLOCK_SIZE_SHIFT": 22,  # 4 MiB objects
    "MIN_BLOCK_SIZE_SHIFT": 20,
    "MAX_BLOCK_SIZE_SHIFT": 31,
    # below the 512 KiB from which sheep 1.0's malloc maps (and the kernel
    # zeroes) a fresh buffer for every request
    "DEFAULT_REQUEST_SIZE": 448 << 10,
    "ATTR_KEY_MAX": 255,  # bytes, no NUL
    "ATTR_VALUE_MAX": 65536,  # bytes
    "TAG_MAX": 255,  # bytes of a snapshot tag, no NUL
    "READ_AHEAD_MAX": 1 << 20,  # bytes Cluster.open(read_ahead=) takes: the smallest object
}


def _int(name: str) -> int:
    return int(getattr(_native, name, FROM_C[name]))


def _seconds(name: str) -> float:
    return float(getattr(_native, name, FROM_C[name]))


DEFAULT_PORT = _int("DEFAULT_PORT")
DEFAULT_CONNECT_TIMEOUT = _seconds("DEFAULT_CONNECT_TIMEOUT")
DEFAULT_IO_TIMEOUT = _seconds("DEFAULT_IO_TIMEOUT")
DEFAULT_DEPTH = _int("DEFAULT_DEPTH")
MAX_DEPTH = _int("MAX_DEPTH")
NAME_MAX = _int("NAME_MAX")
MAX_COPIES = _int("MAX_COPIES")
DEFAULT_BLOCK_SIZE_SHIFT = _int("DEFAULT_BLOCK_SIZE_SHIFT")
MIN_BLOCK_SIZE_SHIFT = _int("MIN_BLOCK_SIZE_SHIFT")
MAX_BLOCK_SIZE_SHIFT = _int("MAX_BLOCK_SIZE_SHIFT")
DEFAULT_REQUEST_SIZE = _int("DEFAULT_REQUEST_SIZE")
ATTR_KEY_MAX = _int("ATTR_KEY_MAX")
ATTR_VALUE_MAX = _int("ATTR_VALUE_MAX")
TAG_MAX = _int("TAG_MAX")
READ_AHEAD_MAX = _int("READ_AHEAD_MAX")

#: Entries in a flat (not B-tree) inode index: a VDI's size is at most this
#: many objects (Sheepdog's MAX_DATA_OBJS).
MAX_FLAT_OBJECTS = 1 << 20

#: The gateway dog, ``sheepfast.connect()`` and the command use when given none.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_CLUSTER = f"{DEFAULT_HOST}:{DEFAULT_PORT}"

#: The snapshot the glance driver takes of each image it stores (with
#: sheepdog_store_snapshot_images; the RBD store's is "snap" too), and the
#: location-metadata key that names it to consumers.
GLANCE_SNAPSHOT_TAG = "snap"
GLANCE_SNAPSHOT_KEY = "sheepdog_snapshot"

#: Seconds the cleanup after a failed call (deleting the partial VDI) may
#: take on top of the call itself; what it cannot finish stays marked.
CLEANUP_TIMEOUT = 5.0

#: Bytes per read and per write of a streamed image (the glance driver's
#: sheepdog_store_chunk_size default, 32 MiB). An upload holds two chunks
#: (one in flight, one being read and hashed): this keeps a transfer under
#: 100 MiB at full speed. The removed driver used 64 MiB.
DEFAULT_CHUNK_SIZE = 32 << 20

#: The largest piece the glance driver's get() yields (the chunk size when
#: that is smaller). A download holds three pieces (the one Glance's
#: wrappers still reference, the one being sent, the next being read);
#: pieces that stay small are also cheaper to send than whole chunks
#: (benchmarks/README.md, "Through the real Glance API").
DOWNLOAD_PIECE_MAX = 8 << 20
