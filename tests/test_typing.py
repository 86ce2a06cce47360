"""A user's script type-checks against the package (mypy --strict, the .pyi
standing for the extension). The package itself: tests/test_lint.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

USER_CODE = textwrap.dedent("""
    import sheepfast
    from sheepfast import VdiInfo

    def copy(src: str, dst: str, addr: str) -> int:
        with sheepfast.connect(addr) as cluster:
            info: VdiInfo = cluster.stat(src)
            cluster.create(dst, info.size, block_size_shift=info.block_size_shift)
            buf = bytearray(info.object_size)
            with cluster.open(src) as a, cluster.open(dst) as b:
                for off in range(0, a.size, len(buf)):
                    n = a.readinto(memoryview(buf)[: min(len(buf), a.size - off)], off)
                    b.write(memoryview(buf)[:n], off)
            return len(cluster.list())
""")


def test_user_code_typechecks(tmp_path):
    pytest.importorskip("mypy")
    user = tmp_path / "user.py"
    user.write_text(USER_CODE)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--follow-imports=silent",
            str(user),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
