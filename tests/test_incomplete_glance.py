"""The glance_store driver's add() marks the image's VDI while it streams,
like every upload (sheepfast.incomplete), on both backends and targets."""

from __future__ import annotations

import os

import pytest
from glance_store import exceptions
from glance_support import (  # noqa: F401  (fixtures)
    Boom,
    FailingSource,
    MiB,
    kind,
    multi,
)

import sheepfast
from sheepfast import errors
from sheepfast.incomplete import MARK_KEY, Mark
from sheepfast.testing import wire


class MarkWatchingSource:
    """Reads data in pieces; half way through it reads the VDI's mark."""

    def __init__(self, address, name, data):
        self.address, self.name, self.data = address, name, data
        self.pos = 0
        self.mark = None

    def read(self, n=-1):
        if self.mark is None and self.pos >= len(self.data) // 2:
            with sheepfast.connect(self.address) as cluster, cluster.open(self.name) as vdi:
                self.mark = Mark.decode(vdi.metadata_get(MARK_KEY))
        piece = self.data[self.pos : self.pos + min(n, MiB)]
        self.pos += len(piece)
        return piece


def test_add_marks_the_image_while_it_streams(multi, new_name):
    image_id = multi.new_id(new_name)
    data = os.urandom(2 * MiB + 3)
    source = MarkWatchingSource(multi.target.address, image_id, data)
    uri, size, *_ = multi.add(image_id, source, 0)  # size unknown: the VDI grows
    assert size == len(data)
    assert source.mark is not None and source.mark.pid == os.getpid()
    with sheepfast.connect(multi.target.address) as cluster:
        assert source.mark.vid == cluster.stat(image_id).vid
        with cluster.open(image_id) as vdi:
            with pytest.raises(errors.AttributeNotFound):
                vdi.metadata_get(MARK_KEY)  # stored: unmarked
            assert vdi.read(0, vdi.size) == data
    assert uri.endswith(image_id)


def test_add_whose_cleanup_fails_leaves_the_mark(multi, new_name):
    if not multi.target.is_fake:
        pytest.skip("fault injection needs FakeSheep")
    image_id = multi.new_id(new_name)
    fake = multi.target.fake
    fake.fail_nth(1, 0x03, opcode=wire.OP_DEL_VDI)
    with pytest.raises(Boom):
        multi.add(image_id, FailingSource(os.urandom(4 * MiB), 2 * MiB), 4 * MiB)
    fake.clear_faults()
    with sheepfast.connect(multi.target.address) as cluster, cluster.open(image_id) as vdi:
        mark = Mark.decode(vdi.metadata_get(MARK_KEY))  # left behind, and findable
        assert mark.vid == vdi.vid


def test_add_whose_cleanup_works_leaves_no_vdi(multi, new_name):
    image_id = multi.new_id(new_name)
    with pytest.raises((Boom, exceptions.BackendException)):
        multi.add(image_id, FailingSource(os.urandom(4 * MiB), 2 * MiB), 4 * MiB)
    with sheepfast.connect(multi.target.address) as cluster:
        assert not cluster.exists(image_id)
