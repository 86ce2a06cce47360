"""Test support for sheepfast: an embedded, protocol-faithful Sheepdog server.

    from sheepfast.testing import FakeSheep

    with FakeSheep(nodes=3) as sheep:
        connect_to(sheep.address)

`sheepfast.testing.wire` is a pure-Python codec for the same protocol; its
public names are re-exported here for convenience. Standard library only.
"""

from . import wire
from ._store import VdiInfo
from .fakesheep import FakeSheep, RequestLogEntry
from .wire import *  # noqa: F401,F403  (constants, headers, oid helpers)

__all__ = ["FakeSheep", "RequestLogEntry", "VdiInfo", "wire", *wire.__all__]
