"""A short load run through the real Glance API: a few concurrent uploads
(chunked with no size, and with Content-Length) and downloads, with Glance
under gunicorn (2 gthread workers x 4 threads) on a PostgreSQL server
started here, on an embedded FakeSheep; every byte verified (md5 of what
of what was sent against Glance's checksum, and what came back compared
with what was sent), and no VDI
left once the images are deleted. No timings are asserted: the figures
belong to `python -m benchmarks glance`.

Skipped without PostgreSQL's binaries, gunicorn or psycopg2 unless
SHEEPFAST_REQUIRE_GLANCE=1, which turns the skip into a failure (CI).
"""

from __future__ import annotations

import os
import sys
import threading

import pytest
from glance_e2e import harness, servers

from sheepfast.testing import FakeSheep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.append(REPO)  # after site-packages: an installed sheepfast still wins
from benchmarks import glance_load  # noqa: E402

MiB = 1 << 20
CLIENTS = 4


def _require(reason: str):
    if os.environ.get(harness.REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({harness.REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    python = harness.glance_python()
    if servers.pg_bindir() is None:
        _require(
            "PostgreSQL is not installed (initdb, pg_ctl, createdb); apt-get install postgresql"
        )
    why = harness.probe(
        python, "import glance.common.wsgi_app, gunicorn, psycopg2, sheepfast.glance"
    )
    if why:
        _require(
            f"Glance, gunicorn or psycopg2 is not installed for {python} ({why}); "
            f"pip install -r {harness.REQUIREMENTS.relative_to(harness.REPO)}"
        )
    base = tmp_path_factory.mktemp("glance-load")
    with FakeSheep() as sheep:
        with glance_load.deployment(base, sheep.address, ["sd"], 2, 4, None, python) as server:
            yield server, sheep
        assert sheep.hazards == [], sheep.hazards


@pytest.mark.parametrize("pattern", ["dense", "sparse"])
def test_concurrent_uploads_and_downloads(deployment, pattern):
    server, sheep = deployment
    assert len(server.worker_pids()) == 2, server.worker_pids()
    client = glance_load.Client(server.port)
    # Sizes that are not whole objects or pieces, so that the tails are exercised.
    sizes = [9 * MiB + 4097, 13 * MiB - 1, 4 * MiB, 17 * MiB + 3]
    images = [(client.create(), glance_load.Content(sizes[k], pattern, k)) for k in range(CLIENTS)]
    try:
        # Half chunked with no size, half with Content-Length, all at once.
        results: dict[int, object] = {}

        def upload(i: int) -> None:
            image_id, content = images[i]
            try:
                client.upload(image_id, "sd", content, sized=bool(i % 2))
                results[i] = client.image(image_id)
            except Exception as exc:
                results[i] = exc

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, (image_id, content) in enumerate(images):
            meta = results[i]
            assert isinstance(meta, dict), f"upload {i}: {meta}\n{server.log()}"
            assert meta["status"] == "active", meta
            assert meta["size"] == content.size, meta
            assert meta["checksum"] == content.md5(), meta
            assert meta["stores"] == "sd", meta
            info = sheep.vdi(image_id)
            assert info is not None and info.size == content.size, info

        # All downloads at once: run_round raises on any byte that differs.
        row = glance_load.run_round(client, "download", "sd", images, server.worker_pids(), [])
        assert row["bytes"] == sum(sizes), row
        assert row["clients"] == CLIENTS, row
    finally:
        for image_id, _c in images:
            client.delete(image_id)
    for image_id, _c in images:
        assert sheep.vdi(image_id) is None, f"VDI {image_id} left after DELETE"


def test_a_corrupted_download_is_caught(deployment):
    """The verification itself: a download that differs from what the round
    expects, in its bytes or its length, fails the round and says where."""
    server, _sheep = deployment
    client = glance_load.Client(server.port)
    size = 2 * MiB + 5
    content = glance_load.Content(size, "dense", 1)
    image_id = client.create()
    try:
        client.upload(image_id, "sd", content, sized=False)
        other = glance_load.Content(size, "dense", 2)
        with pytest.raises(RuntimeError, match=r"bytes differ in \[0, 1048576\)"):
            glance_load.run_round(client, "download", "sd", [(image_id, other)], [], [])
        shorter = glance_load.Content(size - 1, "dense", 1)
        with pytest.raises(RuntimeError, match="longer than"):
            glance_load.run_round(client, "download", "sd", [(image_id, shorter)], [], [])
        longer = glance_load.Content(size + 1, "dense", 1)
        with pytest.raises(RuntimeError, match=f"ended at byte {size}"):
            glance_load.run_round(client, "download", "sd", [(image_id, longer)], [], [])
        # and the upload side: Glance's checksum against the md5 sent
        assert client.image(image_id)["checksum"] == content.md5() != other.md5()
    finally:
        client.delete(image_id)
