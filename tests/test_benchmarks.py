"""The benchmarks, kept working by CI without asserting on time.

* microbenchmarks of the hot paths (header encode/decode, zero detection,
  one object written and read on FakeSheep) through pytest-benchmark's
  ``benchmark`` fixture; they check results, never durations, and run fine
  under ``--benchmark-disable`` (each body then runs once);
* a smoke test that runs the harness (python -m benchmarks) end to end on
  the embedded FakeSheep with a tiny image and checks that its JSON holds
  every case, with the real dog when it is on PATH, else tests/fakedog.

Speed itself is shown by ``python -m benchmarks``, never asserted here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import uuid

import pytest

import sheepfast
from sheepfast.testing import wire

_native = pytest.importorskip("sheepfast._native", reason="the native extension is not built")

MiB = 1 << 20
OBJECT = 4 * MiB
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKEDOG = os.path.join(REPO, "tests", "fakedog", "dog")


@pytest.fixture
def bench(request):
    """Runs fn a bounded number of times under pytest-benchmark (once with
    --benchmark-disable) and returns its result. CI wants the hot paths
    exercised and their results checked, not statistics."""
    if not request.config.pluginmanager.hasplugin("benchmark"):
        pytest.skip("pytest-benchmark is not installed (it is in the test extra)")
    fixture = request.getfixturevalue("benchmark")
    fixture.group = "hot paths"

    def run(fn, *args, rounds=20, iterations=1, **kwargs):
        return fixture.pedantic(
            fn, args=args, kwargs=kwargs, rounds=rounds, iterations=iterations, warmup_rounds=1
        )

    return run


# ------------------------------------------------------------ microbenchmarks


def test_encode_request_header(bench):
    fields = dict(
        flags=wire.FLAG_WRITE, id=7, data_length=OBJECT, oid=wire.data_oid(0x7C2B25, 3), copies=2
    )
    raw = bench(_native._encode_request, wire.OP_WRITE_OBJ, iterations=1000, **fields)
    assert raw == wire.pack_request(
        wire.OP_WRITE_OBJ,
        wire.ObjArgs(oid=fields["oid"], copies=2),
        flags=wire.FLAG_WRITE,
        id=7,
        data_length=OBJECT,
    )


def test_decode_response_header(bench):
    raw = wire.pack_response(
        wire.OP_READ_OBJ,
        epoch=3,
        id=11,
        data_length=OBJECT,
        args=wire.ObjResult(copies=2, offset=0),
    )
    rsp = bench(_native._decode_response, raw, iterations=1000)
    assert (rsp["id"], rsp["data_length"], rsp["result"]) == (11, OBJECT, wire.RES_SUCCESS)


def test_is_zero_whole_object(bench):
    zeros = bytearray(OBJECT)  # the worst case: every byte has to be looked at
    assert bench(_native._is_zero, zeros, iterations=10) is True
    zeros[-1] = 1
    assert _native._is_zero(zeros) is False


@pytest.fixture
def object_vdi(fake_sheep):
    name = f"sf-bench-{uuid.uuid4().hex[:12]}"
    with sheepfast.connect(fake_sheep.address, io_timeout=30.0) as cluster:
        cluster.create(name, OBJECT)
        try:
            with cluster.open(name) as vdi:
                yield vdi
        finally:
            cluster.delete(name)


def test_write_one_object_on_fakesheep(bench, object_vdi):
    data = os.urandom(OBJECT)
    assert bench(object_vdi.write, data, 0) == OBJECT
    assert object_vdi.read(0, OBJECT) == data


def test_read_one_object_on_fakesheep(bench, object_vdi):
    data = os.urandom(OBJECT)
    object_vdi.write(data, 0)
    buf = bytearray(OBJECT)
    assert bench(object_vdi.readinto, buf, 0) == OBJECT
    assert buf == data


# ------------------------------------------------------------ the harness


def _dog_command(tmp_path) -> str:
    """The real dog when on PATH, else tests/fakedog/dog under this Python."""
    real = shutil.which("dog")
    if real:
        return real
    path = tmp_path / "dog"
    path.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(FAKEDOG)} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_harness_end_to_end_on_the_embedded_cluster(tmp_path):
    if REPO not in sys.path:
        sys.path.append(REPO)  # after site-packages: an installed sheepfast still wins
    from benchmarks import cases as cases_module

    out = tmp_path / "bench.json"
    # The same sheepfast this test imports, whatever the working directory.
    roots = [os.path.dirname(os.path.dirname(sheepfast.__file__)), REPO]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(roots))
    env.pop("SHEEPFAST_CLUSTER", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--sizes",
            "8M",
            "--repeat",
            "1",
            "--dog",
            _dog_command(tmp_path),
            "--workdir",
            str(tmp_path),
            "--json",
            str(out),
            "--plot",
            str(tmp_path / "bench.png"),
            "--quiet",
        ],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "embedded FakeSheep" in done.stdout  # says which cluster the figures are for
    assert "targets (embedded FakeSheep: indicative only)" in done.stdout

    doc = json.loads(out.read_text())
    assert doc["meta"]["cluster"]["kind"] == "embedded"
    assert doc["meta"]["sync_before_each_case"] is True  # the default: each case starts clean
    assert doc["skipped"] == {}
    measured = {(r["case"], r["pattern"]) for r in doc["summary"] if r["ok"] == r["runs"] == 1}
    want = {(c.name, p) for c in cases_module.CASES for p in ("dense", "sparse")}
    assert measured == want, sorted(want - measured)
    for row in doc["summary"]:
        assert row["median_mib_s"] > 0 and row["cpu_s_per_gib"] >= 0
        # dog's memory is sampled every 20 ms: an 8M run can finish unseen
        sampled = row["case"].startswith(("dog-", "old-", "cli-"))
        assert row["rss_mib"] > 0 or sampled, row
        if row["case"] not in ("hashes",) and not row["case"].startswith(("dog-", "old-")):
            assert "ratio_dog" in row and "ratio_old" in row, row
    # what each sheepfast upload allocated: with 75% zero objects, only the rest
    for row in doc["summary"]:
        if row["case"] in ("raw-write", "store-add", "store-add-unknown"):
            want = 8 * MiB if row["pattern"] == "dense" else OBJECT  # objects 0, 1: 1 has data
            assert row["allocated"] == row["expected_allocation"] == want, row
    assert {t["target"] for t in doc["targets"]} >= {
        "raw write >= 2.0x dog vdi write",
        "Store.get >= 5x old driver",
    }
    assert all(t["met"] is not None for t in doc["targets"])
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "bench.png").stat().st_size > 0
    # its scratch directory (the images) is gone
    assert not [p for p in os.listdir(tmp_path) if p.startswith("sheepfast-bench-")]


def test_clones_benchmark_on_the_embedded_cluster(tmp_path):
    out = tmp_path / "clones.json"
    roots = [os.path.dirname(os.path.dirname(sheepfast.__file__)), REPO]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(roots))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.clones",
            "--sizes",
            "8M,16M",
            "--data-size",
            "8M",
            "--fill",
            "8M",
            "--runs",
            "1",
            "--dog",
            _dog_command(tmp_path),
            "--json",
            str(out),
            "--plot",
            str(tmp_path / "clones.png"),
        ],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(out.read_text())
    cases = {(r["case"], r["variant"], r["size"]) for r in doc["rows"]}
    for size in (8 * MiB, 16 * MiB):
        for variant in ("Cluster.snapshot", "sheepfast snapshot", "dog vdi snapshot"):
            assert ("snapshot", variant, size) in cases
        for variant in ("Cluster.clone", "sheepfast clone", "dog vdi clone"):
            assert ("clone", variant, size) in cases
    for case, variant in (
        ("first-read", "fresh clone"),
        ("first-read", "snapshot (parent)"),
        ("first-read", "dog vdi read, fresh clone"),
        ("cow-storm", "4 KiB into a fresh clone"),
        ("cow-storm", "64 KiB into owned objects"),
        ("flatten", "Vdi.flatten"),
        ("flatten", "dog vdi read | dog vdi write"),
        ("flatten", "sheepfast read + write"),
    ):
        assert (case, variant, 8 * MiB) in cases, (case, variant)
    assert all(r["median_s"] > 0 and r["min_s"] <= r["median_s"] <= r["max_s"] for r in doc["rows"])
    storm = [r for r in doc["rows"] if r["case"] == "cow-storm"]
    assert all(r["writes"] == 2 for r in storm)  # one per object of the 8 MiB image
    # a clone's first write into an object copies all of it: 2 objects of 4 MiB
    for r in storm:
        if "fresh clone" in r["variant"]:
            assert r["copied_mib_per_s"] == pytest.approx(2 * 4 / r["median_s"])
    assert doc["fill"] == 8 * MiB and doc["copies"] >= 1 and doc["object_size"] == 4 * MiB
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "clones.png").stat().st_size > 0
    assert any("16 MiB / 8 MiB" in line for line in doc["ratios"])
    # it deletes every VDI it made, snapshots too, on a cluster that stays
    from sheepfast.testing import FakeSheep

    with FakeSheep() as sheep:
        argv = [sys.executable, "-m", "benchmarks.clones", "--cluster", sheep.address]
        argv += ["--sizes", "8M", "--data-size", "8M", "--runs", "1"]
        argv += ["--dog", _dog_command(tmp_path)]
        done = subprocess.run(argv, cwd=str(tmp_path), env=env, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        with sheepfast.connect(sheep.address) as c:
            assert c.list() == []
