"""The C core's own unit tests (src_c/tests), run as part of the suite so the
README's one test command covers them."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_c_unit_tests():
    if shutil.which("make") is None or shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("make and a C compiler are needed to build the C unit tests")
    done = subprocess.run(
        ["make", "-s", "-C", os.path.join(ROOT, "src_c"), "test"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = done.stdout.strip().splitlines()[-1:] or ["(no output)"]
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert summary[0].endswith(" 0 failed"), summary
