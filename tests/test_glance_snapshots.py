"""sheepdog_store_snapshot_images: the glance_store driver snapshots each
image it stores, names the snapshot in the location's metadata, keeps the
location parseable by the parsers that exist, and deletes images that have
a snapshot and clones. Both backends, single- and multi-store, FakeSheep and
(when given) a real cluster; and the consumer example in examples/.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from glance_store import exceptions
from glance_support import (  # noqa: F401  (fixtures)
    MiB,
    glance,
    kind,
    make_single,
    split_address,
)

import sheepfast
from sheepfast.defaults import GLANCE_SNAPSHOT_KEY, GLANCE_SNAPSHOT_TAG
from sheepfast.testing import wire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def removed_glance_store_parse(uri):
    """What the removed glance_store driver's StoreLocation.parse_uri read."""
    pieces = uri[len("sheepdog://") :].split(":")
    if len(pieces) == 3:
        return pieces[0], int(pieces[1]), pieces[2]
    return None, None, pieces[0]


def removed_cinder_parse(uri):
    """What Cinder's removed sheepdog driver read in _is_cloneable."""
    ip, port, name = uri[len("sheepdog://") :].split(":", 2)
    return ip, int(port), name


@pytest.fixture
def snapshotting(monkeypatch, target, kind):
    return make_single(monkeypatch, target, kind, sheepdog_store_snapshot_images=True)


def test_off_by_default_no_snapshot(glance, new_name):
    image_id = glance.new_id(new_name)
    uri, size, _md5, _hash, metadata = glance.add(image_id, io.BytesIO(b"x" * MiB), MiB)
    assert GLANCE_SNAPSHOT_KEY not in metadata
    with sheepfast.connect(glance.target.address) as c:
        assert c.snapshots(image_id) == []
    glance.delete(uri)
    with pytest.raises(exceptions.NotFound):
        glance.delete(uri)


def test_each_image_is_snapshotted_and_the_location_stays_old(snapshotting, new_name):
    g = snapshotting
    image_id = g.new_id(new_name)
    data = os.urandom(3 * MiB)
    uri, size, _md5, _hash, metadata = g.add(image_id, io.BytesIO(data), len(data))
    assert metadata[GLANCE_SNAPSHOT_KEY] == GLANCE_SNAPSHOT_TAG
    host, port = split_address(g.target.address)
    assert removed_glance_store_parse(uri) == (host, port, image_id)
    assert removed_cinder_parse(uri) == (host, port, image_id)
    with sheepfast.connect(g.target.address) as c:
        (snap,) = c.snapshots(image_id)
        assert snap.tag == GLANCE_SNAPSHOT_TAG
        with c.open(image_id, snapshot=GLANCE_SNAPSHOT_TAG) as s:
            assert s.read(0, len(data)) == data
    assert g.read_all(uri) == data  # get reads the working VDI as before


def test_delete_with_a_snapshot_and_clones(snapshotting, new_name):
    g = snapshotting
    image_id, volume = g.new_id(new_name), new_name("sf-volume")
    data = os.urandom(8 * MiB)
    uri, *_ = g.add(image_id, io.BytesIO(data), len(data))
    with sheepfast.connect(g.target.address) as c:
        snap = c.stat(image_id, snapshot=GLANCE_SNAPSHOT_TAG)
        c.clone(image_id, GLANCE_SNAPSHOT_TAG, volume)
        g.delete(uri)
        assert not c.exists(image_id)
        assert not c.exists(image_id, snapshot=GLANCE_SNAPSHOT_TAG)
        with pytest.raises(exceptions.NotFound):
            g.delete(uri)
        with c.open(volume) as v:
            assert v.read(0, len(data)) == data  # the clone keeps its data
        c.delete(volume)
    if g.target.is_fake:  # nothing of the image's is left once the last clone is gone
        left = {oid for oid in g.target.fake.store.data_object_ids() if (oid >> 32) == snap.vid}
        assert left == set()


def test_an_image_stored_without_snapshot_is_deleted_all_the_same(
    monkeypatch, target, kind, new_name
):
    plain = make_single(monkeypatch, target, kind)
    image_id = plain.new_id(new_name)
    uri, *_ = plain.add(image_id, io.BytesIO(b"y" * MiB), MiB)
    snapshotting = make_single(monkeypatch, target, kind, sheepdog_store_snapshot_images=True)
    snapshotting.delete(uri)  # no snapshot to delete: fine
    with sheepfast.connect(target.address) as c:
        assert not c.exists(image_id)


def test_a_snapshot_that_fails_leaves_nothing(snapshotting, new_name):
    g = snapshotting
    if not g.target.is_fake:
        pytest.skip("needs FakeSheep's fault injection")
    image_id = g.new_id(new_name)
    # the VDI's creation is the first NEW_VDI, the snapshot the second
    g.target.fake.fail_nth(2, wire.RES_NO_SPACE, wire.OP_NEW_VDI)
    with pytest.raises(exceptions.StorageFull):
        g.add(image_id, io.BytesIO(b"z" * MiB), MiB)
    with sheepfast.connect(g.target.address) as c:
        assert not c.exists(image_id)
        assert c.snapshots(image_id) == []


def test_the_consumer_example_clones_an_image_and_leaves_it_unchanged():
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "clone_from_glance.py"), "--size-mib", "8"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(sheepfast.__file__))),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"'{GLANCE_SNAPSHOT_KEY}': '{GLANCE_SNAPSHOT_TAG}'" in out
    assert "image unchanged: True" in out
    assert "image deleted: True; volume still reads the image's bytes: True" in out
