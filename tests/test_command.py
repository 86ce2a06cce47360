"""The sheepfast command, driven as an operator would: a subprocess with
real files, pipes and signals, against FakeSheep (and a real cluster when one
is configured)."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import time

import pytest

import sheepfast

MiB = 1 << 20


# The command must run the same sheepfast the tests import (installed, or the
# source tree with its built extension), whatever the working directory.
ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(sheepfast.__file__)))
ENV.pop("SHEEPFAST_CLUSTER", None)
COMMAND = [sys.executable, "-m", "sheepfast"]


def run(target, *args, input=None, check=True, timeout=120):
    done = subprocess.run([*COMMAND, "--cluster", target.address, *args], input=input,
                          capture_output=True, timeout=timeout, cwd="/", env=ENV)
    if check:
        assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done


@pytest.fixture
def image_file(tmp_path):
    """30 MiB of data, a 20 MiB hole, then 1000 bytes: 50 MiB + 1000."""
    path = tmp_path / "image.raw"
    data = os.urandom(30 * MiB) + bytes(20 * MiB) + os.urandom(1000)
    path.write_bytes(data)
    return path, data


def test_put_get_roundtrip_and_sparse_file(target, new_name, image_file, tmp_path):
    path, data = image_file
    name = new_name()
    put = run(target, "put", str(path), name)
    assert put.stderr.decode().strip() == f"{name}: {len(data)} bytes"  # no progress bar: not a tty
    out = tmp_path / "out.raw"
    run(target, "get", name, str(out))
    assert out.read_bytes() == data
    # the all-zero region became a hole in the regular file
    assert os.stat(out).st_blocks * 512 < len(data) - 12 * MiB  # 32..48 MiB is a hole


def test_put_from_stdin_unknown_size_and_get_to_stdout(target, new_name, image_file):
    _, data = image_file
    name = new_name()
    run(target, "put", "-", name, input=data)
    got = run(target, "get", name, "-").stdout
    assert got == data
    info = json.loads(run(target, "info", name, "--json").stdout)
    assert info["size"] == len(data)  # exactly the bytes that arrived


def test_ls_info_rm(target, new_name, image_file):
    path, data = image_file
    name = new_name()
    run(target, "put", "--object-size", "1M", "--copies", "1", str(path), name)
    listed = json.loads(run(target, "ls", "--json").stdout)
    mine = [v for v in listed if v["name"] == name]
    assert len(mine) == 1 and mine[0]["size"] == len(data) and not mine[0]["snapshot"]
    assert name in run(target, "ls").stdout.decode()
    info = json.loads(run(target, "info", name, "--json").stdout)
    assert (info["object_size"], info["copies"]) == (MiB, 1)
    assert info["used"] == 31 * MiB  # 30 data objects + the one with the tail; holes skipped
    text = run(target, "info", name).stdout.decode()
    assert "used" in text and f"{info['vid']:x}" in text
    run(target, "rm", name)
    assert name not in run(target, "ls").stdout.decode()


def test_no_thin_writes_zero_objects(target, new_name, tmp_path):
    path = tmp_path / "zeros"
    path.write_bytes(bytes(8 * MiB))
    thin, thick = new_name(), new_name()
    run(target, "put", "--object-size", "1M", str(path), thin)
    run(target, "put", "--object-size", "1M", "--no-thin", str(path), thick)
    used = lambda n: json.loads(run(target, "info", n, "--json").stdout)["used"]  # noqa: E731
    assert used(thin) == 0 and used(thick) == 8 * MiB


@pytest.mark.parametrize("args,message", [
    (("get", "sf-no-such-vdi", "-"), "not found"),
    (("rm", "sf-no-such-vdi"), "not found"),
    (("info", "sf-no-such-vdi"), "not found"),
    (("put", "/nonexistent/file", "x"), "no such file"),
    (("put", "--object-size", "3M", "/dev/null", "x"), "power of two"),
])
def test_errors_are_one_line(target, args, message):
    done = run(target, *args, check=False)
    err = done.stderr.decode()
    assert done.returncode != 0
    assert message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1


def test_existing_vdi_needs_force(target, new_name, tmp_path):
    name = new_name()
    small = tmp_path / "small"
    small.write_bytes(b"one")
    run(target, "put", str(small), name)
    done = run(target, "put", str(small), name, check=False)
    assert done.returncode == 1 and b"--force" in done.stderr
    small.write_bytes(b"two!")
    run(target, "put", "--force", str(small), name)
    assert run(target, "get", name, "-").stdout == b"two!"


def test_unreachable_cluster(tmp_path):
    done = subprocess.run([*COMMAND, "--cluster", "127.0.0.1:1", "ls"],
                          capture_output=True, cwd="/", env=ENV, timeout=60)
    assert done.returncode == 1
    assert b"cannot connect" in done.stderr and b"Traceback" not in done.stderr


def test_no_cluster_given():
    done = subprocess.run([*COMMAND, "ls"], capture_output=True, cwd="/", env=ENV, timeout=60)
    assert done.returncode == 2 and b"--cluster" in done.stderr


def test_embedded_cluster():
    done = subprocess.run([*COMMAND, "--embedded", "ls", "--json"],
                          capture_output=True, cwd="/", env=ENV, timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout) == []


def test_ctrl_c_during_put_leaves_no_vdi(target, new_name):
    name = new_name()
    # A shell starts background jobs with SIGINT ignored, and Python installs
    # no KeyboardInterrupt handler where it is: give the child the default.
    proc = subprocess.Popen([*COMMAND, "--cluster", target.address, "put", "-", name],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/", env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.stdin.write(os.urandom(8 * MiB))  # more than nothing, less than the end
    proc.stdin.flush()
    with sheepfast.connect(target.address) as cluster:
        deadline = time.monotonic() + 30
        while not cluster.exists(name):  # the upload has started
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert b"interrupted" in err and b"Traceback" not in err
        assert not cluster.exists(name)


def test_progress_bar_only_on_a_terminal(target, new_name, image_file):
    path, _ = image_file
    name = new_name()
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*COMMAND, "--cluster", target.address, "put", str(path), name],
                            stderr=follower, cwd="/", env=ENV)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the pty closes with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=60)
    os.close(leader)
    shown = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "ETA" in shown and "100%" in shown
    assert re.search(r"\d+\.\d [KMG]iB/s", shown), shown
    quiet = run(target, "-q", "get", name, "-")
    assert quiet.stderr == b""


def test_get_matches_dog_read(target, new_name, image_file, dog):
    path, data = image_file
    name = new_name()
    run(target, "put", str(path), name)
    assert run(target, "get", name, "-").stdout == dog("vdi", "read", name)
