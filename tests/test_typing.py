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


    def boot_volume(addr: str, image: str, volume: str, size: int) -> tuple[int, int]:
        # what a Cinder- or Nova-like driver does with the snapshot/clone API
        with sheepfast.connect(addr) as cluster:
            snaps: list[VdiInfo] = cluster.snapshots(image)
            tag = snaps[-1].tag if snaps else cluster.snapshot(image, "base").tag
            vol = cluster.clone(image, tag, volume, size=size)
            parent: sheepfast.ParentInfo | None = vol.parent
            assert parent is not None and vol.is_clone
            with cluster.open(volume, lock="exclusive") as v:
                v.write(b"boot", 0)
                v.discard(v.object_size, v.object_size)
                v.flatten()
                keys = [key for key, _ in v.metadata_list()]
                locks: list[sheepfast.LockInfo] = cluster.locks()
                assert v.locked == "exclusive" and len(keys) >= 0 and len(locks) >= 0
            with cluster.open(image, snapshot=parent.snap_id) as snap:
                snap.read(0, 4)
            cluster.rollback(image, tag)
            cluster.delete(image, snapshot=tag)
            return vol.size, len(cluster.children(image))
""")

BAD_USER_CODE = textwrap.dedent("""
    import sheepfast

    def wrong(addr: str) -> None:
        with sheepfast.connect(addr) as cluster:
            cluster.open("x", lock="forever")
            cluster.clone("x", None, "y")
""")


def _mypy(tmp_path, code: str) -> subprocess.CompletedProcess:
    pytest.importorskip("mypy")
    user = tmp_path / "user.py"
    user.write_text(code)
    return subprocess.run(
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


def test_user_code_typechecks(tmp_path):
    done = _mypy(tmp_path, USER_CODE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_misuse_of_the_snapshot_api_is_caught(tmp_path):
    done = _mypy(tmp_path, BAD_USER_CODE)
    assert done.returncode == 1
    assert 'Argument "lock" to "open"' in done.stdout  # "forever" is not a lock kind
    assert 'Argument 2 to "clone"' in done.stdout  # clone needs a snapshot, not None
