"""The README's main job: an image through glance_store onto the embedded
cluster (or the real one), every check passing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import sheepfast

ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(sheepfast.__file__)))


@pytest.mark.parametrize("entry", [["-m", "sheepfast.demo"], ["-m", "sheepfast", "demo"]])
def test_demo_runs_and_checks_everything(entry):
    pytest.importorskip("glance_store")
    ENV.pop("SHEEPFAST_CLUSTER", None)
    done = subprocess.run(
        [sys.executable, *entry, "--size-mib", "24"],
        capture_output=True,
        text=True,
        cwd="/",
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "embedded FakeSheep" in out
    assert "checks   size OK  md5 OK  sha512 OK  thin OK  deleted OK" in out
    # 24 MiB = six 4 MiB objects; the demo zeroes every fourth: 0 and 4
    assert "16 MiB of objects stored for 24 MiB (8 MiB of zeros not written)" in out


def test_demo_on_the_real_cluster(target):
    pytest.importorskip("glance_store")
    if target.is_fake:
        pytest.skip("the embedded run is covered above")
    done = subprocess.run(
        [sys.executable, "-m", "sheepfast.demo", "--cluster", target.address, "--size-mib", "32"],
        capture_output=True,
        text=True,
        cwd="/",
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deleted OK" in done.stdout


def test_demo_through_the_command_with_options_after_it(target):
    pytest.importorskip("glance_store")
    if not target.is_fake:
        pytest.skip("the real cluster is covered above")
    done = subprocess.run(
        [sys.executable, "-m", "sheepfast", "demo", "--size-mib", "8", "--cluster", target.address],
        capture_output=True,
        text=True,
        cwd="/",
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"cluster  {target.address}" in done.stdout and "embedded" not in done.stdout
    assert "deleted OK" in done.stdout
