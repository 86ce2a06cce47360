"""A short load run through the real Glance API: a few concurrent uploads
(chunked with no size, and with Content-Length) and downloads, with Glance
under gunicorn (2 gthread workers x 4 threads, examples/gunicorn.conf.py)
and again under uWSGI (2 processes x 4 threads, examples/uwsgi.ini) on a
PostgreSQL server started here, on an embedded FakeSheep; every byte
verified (md5 of what was sent against Glance's checksum, and what came
back compared with what was sent), and no VDI left once the images are
deleted. No timings are asserted: the figures
belong to `python -m benchmarks glance`.

Skipped without PostgreSQL's binaries, gunicorn or psycopg2 unless
SHEEPFAST_REQUIRE_GLANCE=1, which turns the skip into a failure (CI). The
uWSGI runs are skipped when uwsgi is not installed beside Glance's Python,
whatever SHEEPFAST_REQUIRE_GLANCE says: no requirements file names it.
"""

from __future__ import annotations

import os
import sys
import threading

import pytest
from glance_e2e import harness, servers

import sheepfast
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


def _glance_python() -> str:
    """The Python that has Glance, gunicorn and psycopg2, or a skip (a
    failure under SHEEPFAST_REQUIRE_GLANCE=1)."""
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
    return python


@pytest.fixture(scope="module", params=sorted(servers.SERVERS))
def deployment(request, tmp_path_factory):
    python = _glance_python()
    if request.param == "uwsgi":
        why = servers.UwsgiGlance.missing(python)
        if why:
            pytest.skip(f"uWSGI is not installed: {why}")
    base = tmp_path_factory.mktemp(f"glance-load-{request.param}")
    with FakeSheep() as sheep:
        with glance_load.deployment(
            base, sheep.address, ["sd"], 2, 4, None, python, server=request.param
        ) as server:
            yield server, sheep
        assert sheep.hazards == [], sheep.hazards


@pytest.mark.parametrize("pattern", ["dense", "sparse"])
def test_concurrent_uploads_and_downloads(deployment, pattern):
    server, sheep = deployment
    assert len(server.worker_pids()) == 2, server.worker_pids()
    if isinstance(server, servers.UwsgiGlance):  # started from examples/uwsgi.ini
        log = server.log(tail=1 << 30)
        assert f"configuration from {server.INI}" in log
        assert log.count("spawned uWSGI worker") == 2 and "cores: 4)" in log, log[:4000]
    else:
        assert "Using worker: gthread" in server.log()  # from examples/gunicorn.conf.py
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


def test_repeated_rounds_are_merged_into_medians_and_ranges():
    def row(store, run, mib_s, p50):
        return dict(
            size=256 * MiB,
            pattern="dense",
            case="download",
            clients=4,
            store=store,
            run=run,
            mib_s=mib_s,
            p50_s=p50,
            p99_s=2 * p50,
            ttfb_p50_s=0.01,
            ttfb_p99_s=0.02,
            api_cpu_s_per_gib=1.0,
            api_peak_rss_mib=100.0 + run,
            sheep_cpu_s_per_gib=None,
        )

    rows = [row("sd", 0, 100, 1.0), row("sd", 1, 300, 3.0), row("sd", 2, 200, 2.0)]
    rows += [row("file", 0, 50, 1.0), row("file", 1, 150, 1.0)]
    merged = glance_load.merge(rows)
    sd = merged[(256 * MiB, "dense", "download", 4, "sd")]
    assert (sd["runs"], sd["mib_s"], sd["mib_s_min"], sd["mib_s_max"]) == (3, 200, 100, 300)
    assert sd["p50_s"] == 2.0 and sd["api_peak_rss_mib"] == 101.0
    assert sd["sheep_cpu_s_per_gib"] is None
    line = glance_load.table(rows, ["sd", "file"]).splitlines()[-1]
    # medians, their ranges, the ratio of the medians, sd's p99/p50
    assert "| 200 (100-300) | 100 (50-150) | 2.00 |" in line and "| 2.00 |" in line, line


def test_a_killed_benchmark_stops_the_servers_it_started(tmp_path):
    """kill(1) on `python -m benchmarks glance` must not leave PostgreSQL or
    Glance running: it unwinds as Ctrl-C does and exits 143."""
    import glob
    import signal
    import subprocess
    import time

    _glance_python()  # Glance, gunicorn and psycopg2 are there, or a skip

    def ours() -> set[str]:
        return set(glob.glob("/tmp/sheepfast-glance-load-*"))

    def holders(paths: set[str]) -> list[str]:
        found = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace")
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if any(p in argv or cwd.startswith(p) for p in paths):
                found.append(f"{entry}: {argv.replace(chr(0), ' ')[:100]}")
        return found

    # The sheepfast this test imports (an installed one, in CI), whatever the
    # working directory; benchmarks/ from the checkout.
    roots = [os.path.dirname(os.path.dirname(sheepfast.__file__)), REPO]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(roots))
    before = ours()
    log = tmp_path / "bench.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks",
                "glance",
                "--sizes",
                "4M",
                "--clients",
                "1",
                "--stores",
                "sd,file",
                "--patterns",
                "dense",
                "--repeat",
                "50",
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while b"MiB/s" not in log.read_bytes():  # Glance is up and serving
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        started = ours() - before
        assert len(started) == 1, started
        assert holders(started), "found none of the servers the benchmark started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert holders(started) == []
    assert not any(os.path.exists(p) for p in started)
