"""End to end: the real Glance API keeping images on (Fake)Sheepdog.

Starts ``glance.wsgi.api:application`` under cheroot in a child process on
127.0.0.1 (sqlite database, no Keystone), configured from
examples/glance-api.conf with ``enabled_backends = sd:sheepdog`` pointed at a
FakeSheep that lives in this process. Over HTTP it uploads an image the way a
client streaming data of unknown size does (chunked, no Content-Length),
reads it back, checks size, checksum and os_hash_value, looks at the VDI in
FakeSheep, deletes the image and checks the VDI and its objects are gone.
Failed uploads (client gone, size cap, wrong declared size) must leave no VDI.

The same flow also runs against Glance's own file store, as a control: when
"file" passes and "sd" fails, the fault is in the driver, not the harness.

Needs glance, cheroot and sheepfast in the Python that runs Glance
(tests/glance_e2e/requirements.txt); skipped without them unless
SHEEPFAST_REQUIRE_GLANCE=1, which turns the skip into a failure (CI).
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import uuid

import pytest
from glance_e2e import harness

from sheepfast.testing import FakeSheep, wire

MiB = 1 << 20
OBJ = 4 * MiB  # Sheepdog's default object size
SIZE_CAP = 48 * MiB  # [DEFAULT] image_size_cap for these servers

BACKENDS = ["sd", "file"]


def _require(reason: str):
    if os.environ.get(harness.REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({harness.REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def glance_python():
    python = harness.glance_python()
    why = harness.probe(python, "import glance.common.wsgi_app, glance.cmd.manage, cheroot")
    if why:
        _require(
            f"Glance is not installed for {python} ({why}); "
            f"pip install -r {harness.REQUIREMENTS.relative_to(harness.REPO)}"
        )
    return python


class Deployment:
    """A running Glance plus a way to look into its store."""

    def __init__(self, backend, server, state_dir, sheep=None):
        self.backend = backend
        self.server = server
        self.state_dir = state_dir
        self.sheep = sheep

    def residue(self, image_id: str) -> list:
        """Whatever the store still holds for this image id."""
        if self.backend == "file":
            path = self.state_dir / "images" / image_id
            return [str(path)] if path.exists() else []
        found = []
        info = self.sheep.vdi(image_id)
        if info is not None:
            found.append(f"VDI {image_id} (vid {info.vid:#x}, {len(info.entries)} objects)")
        return found

    def data_objects(self) -> set:
        return self.sheep.object_ids() if self.sheep else set()


@pytest.fixture(scope="module", params=BACKENDS)
def glance(request, glance_python, tmp_path_factory):
    backend = request.param
    if backend == "sd":
        why = harness.probe(glance_python, "from sheepfast.glance import Store, StoreLocation")
        if why:
            _require(f"the sheepdog driver sheepfast.glance is not importable ({why})")
    base = tmp_path_factory.mktemp(f"glance-{backend}")
    extra = {
        "DEFAULT": {
            "image_size_cap": SIZE_CAP,
            # direct_url shows the store location (sheepdog://...)
            "show_image_direct_url": "True",
        }
    }
    with FakeSheep() as sheep:
        harness.write_config(
            base / "etc", base / "state", backend, sheep_address=sheep.address, extra=extra
        )
        server = harness.GlanceServer(base / "etc", base / "glance-api.log", glance_python)
        server.db_sync()
        with server.start():
            yield Deployment(backend, server, base / "state", sheep if backend == "sd" else None)
        assert sheep.hazards == [], sheep.hazards


# -- data --------------------------------------------------------------------


def _image_data() -> bytes:
    """~41 MiB: random objects, whole zero objects (which thin provisioning
    must not store), an object that is half zeros (which it must), and a
    tail that is not a whole object."""
    rng = random.Random(20261127)
    zero = bytes(OBJ)
    parts = []
    for kind in "RRZZHRZRRZ":
        if kind == "R":
            parts.append(rng.randbytes(OBJ))
        elif kind == "Z":
            parts.append(zero)
        else:
            parts.append(bytes(OBJ // 2) + rng.randbytes(OBJ // 2))
    parts.append(rng.randbytes(MiB + 12345))
    return b"".join(parts)


@pytest.fixture(scope="module")
def image_data() -> bytes:
    return _image_data()


def _pieces(data, sizes=(MiB + 7, 3 * MiB - 1, 64 * 1024, 2 * MiB + 513)):
    """The body as a client streams it: pieces of uneven sizes."""
    view = memoryview(data)
    pos, i = 0, 0
    while pos < len(view):
        n = sizes[i % len(sizes)]
        yield bytes(view[pos : pos + n])
        pos += n
        i += 1


def _nonzero_objects(data: bytes, object_size: int) -> set:
    """Indexes of the objects of `data` that hold a non-zero byte."""
    found = set()
    for idx, start in enumerate(range(0, len(data), object_size)):
        piece = data[start : start + object_size]
        if piece.count(0) != len(piece):
            found.add(idx)
    return found


def _new_image(glance: Deployment, what: str) -> str:
    image = glance.server.create_image(f"e2e-{what}-{uuid.uuid4().hex[:8]}")
    assert image["status"] == "queued", image
    return image["id"]


# -- the main flow ------------------------------------------------------------


def test_upload_unknown_size_download_delete(glance, image_data):
    server = glance.server
    size = len(image_data)
    md5 = hashlib.md5(image_data).hexdigest()
    sha512 = hashlib.sha512(image_data).hexdigest()

    image_id = _new_image(glance, "main")
    t0 = time.monotonic()
    status, body = server.upload_chunked(image_id, _pieces(image_data))
    t_up = time.monotonic() - t0
    assert status == 204, f"upload: HTTP {status}: {body[:2000]!r}\nserver log:\n{server.log()}"

    image = server.json("GET", f"/v2/images/{image_id}")
    assert image["status"] == "active", image
    assert image["size"] == size, image
    assert image["checksum"] == md5, image
    assert image["os_hash_algo"] == "sha512", image
    assert image["os_hash_value"] == sha512, image
    # Glance's format inspector saw every byte go by.
    assert image["virtual_size"] == size, image
    store = "sd" if glance.backend == "sd" else "f"
    assert image["stores"] == store, image

    stores = server.json("GET", "/v2/info/stores")["stores"]
    assert [st["id"] for st in stores] == [store], stores
    assert stores[0].get("default") == "true", stores

    if glance.backend == "sd":
        assert stores[0].get("description") == "Sheepdog cluster", stores
        sheep = glance.sheep
        host, _, port = sheep.address.rpartition(":")
        assert image["direct_url"] == f"sheepdog://{host}:{port}:{image_id}", image
        info = sheep.vdi(image_id)
        assert info is not None, f"no VDI named {image_id}; server log:\n{server.log()}"
        assert info.size == size, (info.size, size)
        wanted = _nonzero_objects(image_data, info.object_size)
        assert set(info.entries) == wanted, (
            f"objects stored {sorted(info.entries)}, non-zero objects {sorted(wanted)}: "
            "all-zero objects must not be written (thin provisioning)"
        )
        for idx in sorted(wanted):
            stored = sheep.object_data(wire.data_oid(info.vid, idx))
            chunk = image_data[idx * info.object_size : (idx + 1) * info.object_size]
            assert stored is not None and stored[: len(chunk)] == chunk, f"object {idx} differs"
        vid = info.vid
        vdi_objects = {o for o in sheep.object_ids() if wire.vid_of(o) == vid}
        assert len(vdi_objects) == len(wanted)
    else:
        assert image["direct_url"].startswith("file://"), image

    # Whole image, streamed back.
    t0 = time.monotonic()
    conn = server.connection()
    try:
        conn.request("GET", f"/v2/images/{image_id}/file", headers=harness.AUTH_HEADERS)
        resp = conn.getresponse()
        assert resp.status == 200, (resp.status, resp.read()[:2000], server.log())
        assert resp.headers.get("Content-MD5") == md5
        got = bytearray()
        while True:
            block = resp.read(4 * MiB)
            if not block:
                break
            got += block
    finally:
        conn.close()
    t_down = time.monotonic() - t0
    assert len(got) == size
    assert hashlib.sha512(got).hexdigest() == sha512
    assert got == image_data

    # A byte range across a zero object and into the half-zero one.
    first, last = 3 * OBJ - 1000, 4 * OBJ + OBJ // 2 + 999
    status, headers, part = server.request(
        "GET", f"/v2/images/{image_id}/file", headers={"Range": f"bytes={first}-{last}"}
    )
    assert status == 206, (status, part[:2000])
    assert headers.get("Content-Range") == f"bytes {first}-{last}/{size}"
    assert part == image_data[first : last + 1]

    print(
        f"\n[{glance.backend}] {size / MiB:.1f} MiB: upload {size / MiB / t_up:.0f} MiB/s, "
        f"download {size / MiB / t_down:.0f} MiB/s"
    )

    # Delete: the image, its VDI and the VDI's objects go.
    status, _h, body = server.request("DELETE", f"/v2/images/{image_id}")
    assert status == 204, (status, body[:2000], server.log())
    status, _h, _b = server.request("GET", f"/v2/images/{image_id}")
    assert status == 404
    assert glance.residue(image_id) == [], server.log()
    if glance.backend == "sd":
        left = {o for o in glance.sheep.object_ids() if wire.vid_of(o) == vid}
        assert left == set(), f"{len(left)} data objects of the deleted VDI remain"


# -- failed uploads leave nothing behind -----------------------------------------


def _assert_clean_after_failure(glance, image_id, objects_before):
    server = glance.server
    image = server.wait_status(image_id, "queued")
    assert image["status"] == "queued", image
    assert image["size"] is None and image["checksum"] is None, image
    assert glance.residue(image_id) == [], server.log()
    assert glance.data_objects() == objects_before, "data objects leaked"
    # The same image can still be uploaded: nothing squats on its name.
    small = random.Random(7).randbytes(OBJ + 4321)
    status, body = server.upload_chunked(image_id, _pieces(small))
    assert status == 204, f"re-upload: HTTP {status}: {body[:2000]!r}\nserver log:\n{server.log()}"
    image = server.json("GET", f"/v2/images/{image_id}")
    assert image["status"] == "active" and image["size"] == len(small), image
    assert image["os_hash_value"] == hashlib.sha512(small).hexdigest(), image
    status, _h, _b = server.request("DELETE", f"/v2/images/{image_id}")
    assert status == 204
    assert glance.residue(image_id) == []
    assert glance.data_objects() == objects_before


def test_client_gone_mid_upload_leaves_nothing(glance, image_data):
    image_id = _new_image(glance, "aborted")
    before = glance.data_objects()
    # 12 MiB of the body, then the connection is reset.
    glance.server.upload_aborted(image_id, _pieces(image_data[: 12 * MiB]))
    _assert_clean_after_failure(glance, image_id, before)


def test_upload_over_size_cap_leaves_nothing(glance):
    image_id = _new_image(glance, "too-big")
    before = glance.data_objects()
    rng = random.Random(11)
    data = rng.randbytes(2 * MiB) + bytes(SIZE_CAP - 2 * MiB) + rng.randbytes(MiB)
    status, body = glance.server.upload_chunked(image_id, _pieces(data))
    assert status == 413, f"HTTP {status}: {body[:2000]!r}\nserver log:\n{glance.server.log()}"
    _assert_clean_after_failure(glance, image_id, before)


def test_declared_size_smaller_than_data(glance):
    """X-Openstack-Image-Size is passed to the store as the size; here it is
    less than what the client then sends. Either the upload fails and leaves
    nothing, or it succeeds and the image is the bytes actually sent."""
    server = glance.server
    image_id = _new_image(glance, "wrong-size")
    before = glance.data_objects()
    data = random.Random(13).randbytes(2 * OBJ + 999)
    status, body = server.upload_chunked(
        image_id, _pieces(data), headers={"X-Openstack-Image-Size": str(OBJ)}
    )
    if status == 204:
        image = server.json("GET", f"/v2/images/{image_id}")
        assert image["status"] == "active" and image["size"] == len(data), image
        assert image["os_hash_value"] == hashlib.sha512(data).hexdigest(), image
        status, _h, got = server.request("GET", f"/v2/images/{image_id}/file")
        assert status == 200 and got == data
        if glance.sheep:
            assert glance.sheep.vdi(image_id).size == len(data)
        status, _h, _b = server.request("DELETE", f"/v2/images/{image_id}")
        assert status == 204
        assert glance.residue(image_id) == []
        assert glance.data_objects() == before
    else:
        assert 400 <= status < 600, (status, body)
        _assert_clean_after_failure(glance, image_id, before)
