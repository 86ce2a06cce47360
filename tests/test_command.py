"""The sheepfast command, driven as an operator would: a subprocess with
real files, pipes and signals, against FakeSheep (and a real cluster when one
is configured)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

import sheepfast
from sheepfast import cli
from sheepfast.sizes import SizeError, format_size, parse_size
from sheepfast.testing import wire as w

MiB = 1 << 20


# The command must run the same sheepfast the tests import (installed, or the
# source tree with its built extension), whatever the working directory.
ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(sheepfast.__file__)))
ENV.pop("SHEEPFAST_CLUSTER", None)
COMMAND = [sys.executable, "-m", "sheepfast"]


def run(target, *args, input=None, check=True, timeout=120):
    done = subprocess.run(
        [*COMMAND, "--cluster", target.address, *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        cwd="/",
        env=ENV,
    )
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


@pytest.mark.parametrize(
    "args,message",
    [
        (("get", "sf-no-such-vdi", "-"), "not found"),
        (("rm", "sf-no-such-vdi"), "not found"),
        (("info", "sf-no-such-vdi"), "not found"),
        (("put", "/nonexistent/file", "x"), "no such file"),
    ],
)
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
    done = subprocess.run(
        [*COMMAND, "--cluster", "127.0.0.1:1", "ls"],
        capture_output=True,
        cwd="/",
        env=ENV,
        timeout=60,
    )
    assert done.returncode == 1
    assert b"cannot connect" in done.stderr and b"Traceback" not in done.stderr


def test_no_cluster_given_means_the_local_sheep(monkeypatch):
    seen = []

    def fake_open(address, kind=None, **kw):
        seen.append(address)
        raise sheepfast.SheepfastError("stop here")

    monkeypatch.delenv("SHEEPFAST_CLUSTER", raising=False)
    monkeypatch.setattr(cli, "open_backend", fake_open)
    assert cli.main(["ls"]) == 1
    monkeypatch.setenv("SHEEPFAST_CLUSTER", "10.0.0.1:7001")
    assert cli.main(["ls"]) == 1
    assert cli.main(["ls", "--cluster", "10.0.0.2:7002"]) == 1
    assert seen == ["127.0.0.1:7000", "10.0.0.1:7001", "10.0.0.2:7002"]


def test_embedded_cluster():
    done = subprocess.run(
        [*COMMAND, "--embedded", "ls", "--json"], capture_output=True, cwd="/", env=ENV, timeout=60
    )
    assert done.returncode == 0 and json.loads(done.stdout) == []


def test_ctrl_c_during_put_leaves_no_vdi(target, new_name):
    name = new_name()
    # A shell starts background jobs with SIGINT ignored, and Python installs
    # no KeyboardInterrupt handler where it is: give the child the default.
    proc = subprocess.Popen(
        [*COMMAND, "--cluster", target.address, "put", "-", name],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
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


@pytest.mark.parametrize("columns", [0, 40, 120])
def test_progress_bar_only_on_a_terminal(target, new_name, image_file, columns):
    path, _ = image_file
    name = new_name()
    leader, follower = pty.openpty()
    rows = 24 if columns else 0  # a pty that reports no size at all
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen(
        [*COMMAND, "--cluster", target.address, "put", str(path), name],
        stderr=follower,
        cwd="/",
        env=ENV,
    )
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
    assert "100%" in shown
    if columns != 40:  # a narrow pane gets the line cut short
        assert "ETA" in shown
        assert re.search(r"\d+\.\d [KMG]iB/s", shown), shown
    # one bar, its last line drawn once, then the summary
    assert shown.count("100%") == 1 and shown.count("\n") == 2, shown
    width = columns or 80
    drawn = [line for line in re.split(r"[\r\n]", shown) if line]
    assert max(len(line) for line in drawn[:-1]) <= width, drawn  # never wraps
    quiet = run(target, "-q", "get", name, "-")
    assert quiet.stderr == b""


def test_get_matches_dog_read(target, new_name, image_file, dog):
    path, data = image_file
    name = new_name()
    run(target, "put", str(path), name)
    assert run(target, "get", name, "-").stdout == dog("vdi", "read", name)


# ------------------------------------------------- put --force never loses the old image


def _vdis(target):
    with sheepfast.connect(target.address) as cluster:
        return {v.name for v in cluster.list()}


@pytest.fixture
def old_image(target, new_name, tmp_path):
    """A VDI holding b"old!", and a 5 MiB file meant to replace it."""
    name = new_name()
    old = tmp_path / "old"
    old.write_bytes(b"old!")
    run(target, "put", str(old), name)
    new = tmp_path / "new"
    data = os.urandom(5 * MiB)
    new.write_bytes(data)
    return name, new, data


def _assert_old_intact(target, name):
    assert run(target, "get", name, "-").stdout == b"old!"
    assert not [v for v in _vdis(target) if v.startswith(name + ".put-")]  # no temporary left


@pytest.mark.parametrize(
    "bad",
    [
        ["--copies", "99"],
        ["--copies", "x"],
        ["--object-size", "3M"],
        ["--object-size", "4MB"],
        ["--timeout", "0"],
    ],
)
def test_force_with_bad_options_keeps_the_old_image(target, old_image, bad):
    name, new, _ = old_image
    done = run(target, "put", "--force", str(new), name, *bad, check=False)
    assert done.returncode == 2 and b"Traceback" not in done.stderr
    assert bad[0].encode() in done.stderr
    _assert_old_intact(target, name)


def test_force_with_unreadable_source_keeps_the_old_image(target, old_image, tmp_path):
    name, _, _ = old_image
    done = run(target, "put", "--force", str(tmp_path / "missing"), name, check=False)
    assert done.returncode == 1 and b"no such file" in done.stderr
    done = run(target, "put", "--force", str(tmp_path), name, check=False)
    assert done.returncode == 1 and b"is a directory" in done.stderr.lower()
    _assert_old_intact(target, name)


def test_force_replaces_and_leaves_no_temporary(target, old_image):
    name, new, data = old_image
    run(target, "put", str(new), name, "--force")
    got = run(target, "get", name, "-").stdout
    assert len(got) == len(data) and got == data
    assert not [v for v in _vdis(target) if v.startswith(name + ".put-")]


def test_force_when_the_cluster_fails_during_upload_keeps_the_old_image(target, old_image):
    if not target.is_fake:
        pytest.skip("faults are injected into FakeSheep")
    name, new, _ = old_image
    target.fake.fail_nth(2, w.RES_EIO, opcode=w.OP_CREATE_AND_WRITE_OBJ)
    done = run(target, "put", "--force", str(new), name, check=False)
    assert done.returncode == 1 and b"Traceback" not in done.stderr, done.stderr
    target.fake.clear_faults()
    _assert_old_intact(target, name)


def test_force_when_the_connection_is_lost_keeps_the_old_image(target, old_image):
    if not target.is_fake:
        pytest.skip("faults are injected into FakeSheep")
    name, new, _ = old_image
    target.fake.stop_node_nth(2, opcode=w.OP_CREATE_AND_WRITE_OBJ)
    try:
        done = run(target, "put", "--force", "--timeout", "5", str(new), name, check=False)
    finally:
        target.fake.clear_faults()
        target.fake.start_node(0)
    assert done.returncode == 1 and b"Traceback" not in done.stderr, done.stderr
    # the temporary upload went with the node; its mark lets reclaim find it
    left = [v for v in _vdis(target) if v.startswith(name + ".put-")]
    target.names.extend(left)
    assert all(f"partial VDI {v} could not be deleted" in done.stderr.decode() for v in left)
    for v in left:
        run(target, "rm", v)
    _assert_old_intact(target, name)


class _Source:
    """A source that gives `good` bytes, then raises `fail` (or ends)."""

    def __init__(self, good, fail=None):
        self.left, self.fail = good, fail

    def readinto(self, buffer):
        if self.left == 0:
            if self.fail is not None:
                raise self.fail
            return 0
        n = min(len(buffer), self.left, MiB)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _put_in_process(target, monkeypatch, name, source, size, *extra):
    """main(["put", ...]) with the bytes from source declared as size."""
    monkeypatch.setattr(cli, "_open_source", lambda path: (source, size, False))
    monkeypatch.setattr(cli, "_source", lambda src, size: src)
    return cli.main(["--cluster", target.address, "put", "--force", "x", name, *extra])


def test_force_with_short_input_keeps_the_old_image(target, old_image, monkeypatch, capsys):
    name, _, _ = old_image
    assert _put_in_process(target, monkeypatch, name, _Source(3 * MiB), 5 * MiB) == 1
    assert "shorter than the 5242880 bytes declared" in capsys.readouterr().err
    _assert_old_intact(target, name)


def test_force_interrupted_during_upload_keeps_the_old_image(
    target, old_image, monkeypatch, capsys
):
    name, _, _ = old_image
    source = _Source(2 * MiB, KeyboardInterrupt())
    assert _put_in_process(target, monkeypatch, name, source, None) == 130
    assert "interrupted" in capsys.readouterr().err
    _assert_old_intact(target, name)


@pytest.mark.parametrize("fail", [KeyboardInterrupt(), sheepfast.SheepfastError("lost")])
def test_force_failing_after_the_old_is_gone_names_the_complete_temporary(
    target, old_image, monkeypatch, capsys, fail
):
    name, new, data = old_image

    def chunks(self, offset=0, length=None, chunk_size=None):
        raise fail

    monkeypatch.setattr(cli.SheepdogImage, "chunks", chunks)
    code = cli.main(["--cluster", target.address, "put", "--force", str(new), name])
    assert code == (130 if isinstance(fail, KeyboardInterrupt) else 1)
    err = capsys.readouterr().err
    temps = [v for v in _vdis(target) if v.startswith(name + ".put-")]
    assert len(temps) == 1
    target.names.append(temps[0])
    assert f"the new image is complete in VDI {temps[0]}" in err
    assert name not in _vdis(target)  # the half-copied one was deleted, not left looking whole
    monkeypatch.undo()
    got = run(target, "get", temps[0], "-").stdout
    assert got == data
    # what the message says to do finishes the job
    run(target, "put", "--force", "-", name, input=got)
    run(target, "rm", temps[0])
    assert run(target, "get", name, "-").stdout == data


# ------------------------------------------------------------- get writes beside FILE


def test_get_refuses_to_overwrite_without_force(target, old_image, tmp_path):
    name, _, _ = old_image
    out = tmp_path / "out"
    out.write_bytes(b"precious")
    done = run(target, "get", name, str(out), check=False)
    assert done.returncode == 1 and b"--force" in done.stderr
    assert out.read_bytes() == b"precious"
    run(target, "get", name, str(out), "--force")
    assert out.read_bytes() == b"old!"
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".part")]


def test_get_to_a_device_writes_in_place(target, old_image):
    name, _, _ = old_image
    run(target, "get", name, "/dev/null")


@pytest.mark.parametrize("fail", [KeyboardInterrupt(), sheepfast.SheepfastError("lost")])
@pytest.mark.parametrize("existing", [False, True])
def test_failed_get_leaves_no_partial_file(
    target, new_name, tmp_path, monkeypatch, capsys, fail, existing
):
    name = new_name()
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 * MiB))
    run(target, "put", "--object-size", "1M", str(src), name)
    real = cli.SheepdogImage.chunks

    def chunks(self, *a, **kw):
        it = real(self, *a, **kw)
        yield next(it)
        raise fail

    monkeypatch.setattr(cli.SheepdogImage, "chunks", chunks)
    monkeypatch.setattr(cli, "CHUNK", MiB)
    out = tmp_path / "dst" / "out"
    out.parent.mkdir()
    if existing:
        out.write_bytes(b"before")
    args = ["--cluster", target.address, "get", name, str(out)] + (["--force"] if existing else [])
    code = cli.main(args)
    assert code == (130 if isinstance(fail, KeyboardInterrupt) else 1)
    assert os.listdir(out.parent) == (["out"] if existing else [])
    if existing:
        assert out.read_bytes() == b"before"


# -------------------------------------------------------------- options, exit codes


def test_options_after_the_command(target, new_name, tmp_path):
    name = new_name()
    small = tmp_path / "small"
    small.write_bytes(b"abc")
    done = subprocess.run(
        [
            *COMMAND,
            "put",
            str(small),
            name,
            "--quiet",
            "--cluster",
            target.address,
            "--timeout",
            "30",
        ],
        capture_output=True,
        cwd="/",
        env=ENV,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    done = subprocess.run(
        [*COMMAND, "ls", "--json", "--cluster", target.address],
        capture_output=True,
        cwd="/",
        env=ENV,
        timeout=60,
    )
    assert name in [v["name"] for v in json.loads(done.stdout)]
    # given both before and after: the later one counts, as with any option
    done = subprocess.run(
        [*COMMAND, "--cluster", "127.0.0.1:1", "info", name, "--cluster", target.address],
        capture_output=True,
        cwd="/",
        env=ENV,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_cluster_and_embedded_conflict():
    done = subprocess.run(
        [*COMMAND, "ls", "--embedded", "--cluster", "127.0.0.1:1"],
        capture_output=True,
        cwd="/",
        env=ENV,
        timeout=60,
    )
    assert done.returncode == 2 and b"do not go together" in done.stderr


def test_timeout_applies_to_a_peer_that_never_answers():
    import socket

    with socket.socket() as quiet:
        quiet.bind(("127.0.0.1", 0))
        quiet.listen(8)  # connections are accepted by the kernel, never answered
        address = f"127.0.0.1:{quiet.getsockname()[1]}"
        start = time.monotonic()
        done = subprocess.run(
            [*COMMAND, "--backend", "native", "--timeout", "1", "ls", "--cluster", address],
            capture_output=True,
            cwd="/",
            env=ENV,
            timeout=60,
        )
        took = time.monotonic() - start
    assert done.returncode == 1 and b"Traceback" not in done.stderr, done.stderr
    assert took < 15, took


def test_rm_several_names_reports_each_failure(target, new_name, tmp_path):
    small = tmp_path / "small"
    small.write_bytes(b"abc")
    a, b = new_name(), new_name()
    run(target, "put", str(small), a)
    run(target, "put", str(small), b)
    done = run(target, "rm", a, "sf-no-such-vdi", b, check=False)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert err.count("error") == 1 and "sf-no-such-vdi" in err
    assert a not in _vdis(target) and b not in _vdis(target)


@pytest.mark.parametrize(
    "args",
    [
        ["put", "/dev/null", "x", "--copies", "32"],
        ["put", "/dev/null", "x", "--object-size", "1.5G"],
        ["put", "/dev/null", "-x"],
        ["get", "bad name", "-"],
        ["rm"],
        ["--timeout", "-1", "ls"],
        ["bench"],
    ],
)
def test_usage_errors_exit_2(args):
    done = subprocess.run(
        [*COMMAND, "--cluster", "127.0.0.1:1", *args],
        capture_output=True,
        cwd="/",
        env=ENV,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert b"Traceback" not in done.stderr and b"usage:" in done.stderr


def test_closed_pipe_exits_quietly_as_dog_does(target, new_name, tmp_path):
    """dog dies of SIGPIPE, silently; a shell reports 128 + 13."""
    name = new_name()
    src = tmp_path / "src"
    src.write_bytes(os.urandom(32 * MiB))  # more than the pipe holds: head leaves first
    run(target, "put", str(src), name)
    command = " ".join([*COMMAND, "--cluster", target.address, "get", name, "-"])
    done = subprocess.run(
        ["bash", "-c", f'{command} | head -c 10 >/dev/null; echo "${{PIPESTATUS[0]}}" >&2'],
        capture_output=True,
        cwd="/",
        env=ENV,
        timeout=60,
    )
    assert done.stderr == b"141\n"


def test_bench_is_not_offered_and_never_imports_from_cwd(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "__init__.py").write_text("raise SystemExit(99)\n")
    (tmp_path / "benchmarks" / "__main__.py").write_text("raise SystemExit(99)\n")
    done = subprocess.run(
        [*COMMAND, "bench"], capture_output=True, cwd=tmp_path, env=ENV, timeout=60
    )
    assert done.returncode == 2 and b"invalid choice" in done.stderr
    helped = subprocess.run(
        [*COMMAND, "--help"], capture_output=True, cwd=tmp_path, env=ENV, timeout=60
    )
    assert b"python -m benchmarks" in helped.stdout


def test_help_is_plain_text():
    for args in (["--help"], ["put", "--help"], ["get", "--help"], ["rm", "--help"]):
        done = subprocess.run([*COMMAND, *args], capture_output=True, cwd="/", env=ENV, timeout=60)
        text = done.stdout.decode()
        assert done.returncode == 0 and "usage: sheepfast" in text
        assert "``" not in text and ":class:" not in text and "::" not in text


def test_missing_extension_and_dog_is_said_plainly(monkeypatch, capsys):
    import sheepfast.backends
    import sheepfast.backends.dog

    hidden = ImportError("hidden by the test")
    monkeypatch.setattr(sheepfast.backends, "native_import_error", lambda: hidden)
    monkeypatch.setattr(sheepfast.backends.dog.shutil, "which", lambda name: None)
    assert cli.main(["--cluster", "127.0.0.1:1", "ls"]) == 1
    err = capsys.readouterr().err
    assert "extension (sheepfast._native) is not built" in err and "pip install" in err
    assert "not found on PATH" in err
    assert "PATH=" not in err and len(err.splitlines()) == 1
    assert cli.main(["--cluster", "127.0.0.1:1", "--backend", "native", "ls"]) == 1
    assert "not built" in capsys.readouterr().err


# ------------------------------------------------------------------- sizes and vids


@pytest.mark.parametrize(
    "text,size",
    [
        ("1048576", 1048576),
        ("512k", 512 << 10),
        ("512K", 512 << 10),
        ("4M", 4 << 20),
        ("4MiB", 4 << 20),
        ("1.5G", 3 << 29),
        ("1.5GiB", 3 << 29),
        ("2T", 2 << 40),
        (" 7 ", 7),
        ("100B", 100),
        (".5k", 512),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text,message",
    [
        ("4MB", "ambiguous"),
        ("1GB", "ambiguous"),
        ("0.3k", "whole number"),
        ("", "bad size"),
        ("-1", "bad size"),
        ("4X", "bad size"),
        ("4iB", "bad size"),
        ("1e6", "bad size"),
    ],
)
def test_parse_size_refuses(text, message):
    with pytest.raises(SizeError, match=message):
        parse_size(text, "--what")
    with pytest.raises(SizeError, match="--what"):
        parse_size(text, "--what")


def test_format_size():
    assert [format_size(n) for n in (0, 1023, 1024, 3 << 29, 5 << 40)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 GiB",
        "5.0 TiB",
    ]


def test_vid_is_written_the_same_way_in_the_table_and_json(target, old_image):
    name, _, _ = old_image
    listed = {v["name"]: v for v in json.loads(run(target, "ls", "--json").stdout)}
    mine = listed[name]
    assert mine["vid_hex"] == f"{mine['vid']:x}"
    row = [
        line.split()
        for line in run(target, "ls").stdout.decode().splitlines()
        if line.startswith(name + " ")
    ][0]
    assert mine["vid_hex"] in row
    info = json.loads(run(target, "info", name, "--json").stdout)
    assert info["vid_hex"] == mine["vid_hex"]


def test_ctrl_c_during_put_force_keeps_the_old_image(target, old_image):
    name, _, _ = old_image
    proc = subprocess.Popen(
        [*COMMAND, "--cluster", target.address, "put", "--force", "-", name],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    proc.stdin.write(os.urandom(8 * MiB))
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while not [v for v in _vdis(target) if v.startswith(name + ".put-")]:  # upload started
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"Traceback" not in err, err
    _assert_old_intact(target, name)


def test_temporary_name_fits_even_for_a_longest_name():
    from sheepfast.image import NAME_MAX, check_name

    for name in ("a" * NAME_MAX, "é" * (NAME_MAX // 2), "img"):
        temp = check_name(cli._temp_name(name))
        assert len(temp.encode()) <= NAME_MAX and ".put-" in temp and temp != name
    assert cli._temp_name("img") != cli._temp_name("img")


def test_get_into_a_missing_directory_says_so(target, old_image, tmp_path):
    name, _, _ = old_image
    done = run(target, "get", name, str(tmp_path / "nowhere" / "out"), check=False)
    assert done.returncode == 1
    assert f"no such directory: {tmp_path / 'nowhere'}".encode() in done.stderr
