"""Partial uploads: the upload mark, find_incomplete / reclaim_incomplete and
`sheepfast reclaim`.

Tests taking ``target`` run on FakeSheep and, when one is configured, on a
real cluster; there they only ever delete VDIs they created (reclaiming for
real runs on a FakeSheep of the test's own, where every VDI is the test's).
No test waits for a heartbeat to age: marks are written with old
timestamps, or ages are measured against a later ``now``.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import dog_command  # noqa: F401  (the backend fixture is in conftest)

import sheepfast
from sheepfast import errors, incomplete
from sheepfast.backends import open_backend
from sheepfast.backends.dog import DogBackend
from sheepfast.image import SheepdogImage, parse_address
from sheepfast.incomplete import (
    MARK_KEY,
    Mark,
    UploadMark,
    find_incomplete,
    parse_age,
    reclaim_incomplete,
)
from sheepfast.testing import FakeSheep
from sheepfast.testing import wire as w

MiB = 1 << 20
HOUR = 3600.0
ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(sheepfast.__file__)))
ENV.pop("SHEEPFAST_CLUSTER", None)
COMMAND = [sys.executable, "-m", "sheepfast"]


def image_for(backend, name, chunk=MiB):
    host, port = parse_address(backend.addresses.split(",")[0])
    return SheepdogImage(host, port, name, chunk, backend=backend)


def read_mark(cluster, name):
    with cluster.open(name) as vdi:
        return Mark.decode(vdi.metadata_get(MARK_KEY))


def has_mark(cluster, name):
    try:
        read_mark(cluster, name)
    except errors.AttributeNotFound:
        return False
    return True


def put_mark(cluster, name, *, age, host="elsewhere.invalid", pid=4242, vid=None):
    """Marks VDI name as if an upload on host had last beaten `age` s ago."""
    info = cluster.stat(name)
    now = time.time()
    mark = Mark(
        now - age - 600,
        now - age,
        host,
        pid,
        None,
        info.vid if vid is None else vid,
        int(info.create_time),
    )
    with cluster.open(name) as vdi:
        vdi.metadata_set(MARK_KEY, mark.encode())
    return mark


def dead_pid():
    """The pid of a process that has exited."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


@pytest.fixture
def own_fake():
    """A FakeSheep holding only this test's VDIs: reclaim may run for real."""
    with FakeSheep() as sheep:
        yield sheep
        assert sheep.hazards == []


# ------------------------------------------------------------------ the mark


def test_mark_encodes_and_decodes():
    mark = Mark(1700000000.125, 1700000030.5, "host-a", 1234, 98765, 0xABCDEF, 1699999999)
    raw = mark.encode()
    assert json.loads(raw)["host"] == "host-a"  # plain JSON: dog vdi getattr shows it
    assert Mark.decode(raw) == mark
    assert Mark.decode(Mark(1, 2, "h", 3, None, 4, 5).encode()).pid_start is None


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "unknown format"),
        (b'{"format": 99}', "unknown format"),
        (b'{"format": 1, "started": 1}', "lacks or garbles"),
        (
            b'{"format": 1, "started": "x", "heartbeat": 1, "host": "h", "pid": 1, '
            b'"pid_start": null, "vid": 1, "vdi_ctime": 1}',
            "lacks or garbles",
        ),
        (
            b'{"format": 1, "started": 1, "heartbeat": 1, "host": "h", "pid": 0, '
            b'"pid_start": null, "vid": 1, "vdi_ctime": 1}',
            "pid 0",
        ),
    ],
)
def test_garbled_marks_are_refused(raw, why):
    with pytest.raises(ValueError, match=why):
        Mark.decode(raw)


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("2d", 172800),
        ("3600", 3600),
        ("1.5h", 5400),
        (" 2H ", 7200),
    ],
)
def test_parse_age(text, seconds):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "5x", "-1h", "1 hour", "1h30m"])
def test_parse_age_refuses(text):
    with pytest.raises(errors.InvalidArgument, match="bad age"):
        parse_age(text)


def test_ages_below_two_heartbeats_are_refused(cluster):
    with pytest.raises(errors.InvalidArgument, match="at least 60"):
        find_incomplete(cluster, 59)
    with pytest.raises(errors.InvalidArgument, match="seconds"):
        reclaim_incomplete(cluster, "1h")


def test_writer_alive_only_for_a_live_process_here():
    here = socket.gethostname()
    assert Mark(
        0, 0, here, os.getpid(), incomplete._process_start(os.getpid()), 1, 1
    ).writer_alive()
    assert not Mark(0, 0, here, dead_pid(), None, 1, 1).writer_alive()
    assert not Mark(0, 0, "elsewhere.invalid", os.getpid(), None, 1, 1).writer_alive()
    # the pid is alive, but started at another time: the kernel reused it
    assert not Mark(0, 0, here, os.getpid(), 1, 1, 1).writer_alive()


# ------------------------------------------------------- marking an upload


class CheckingSource:
    """A file-like source that, half way through, looks at the VDI's mark
    through a connection of its own."""

    def __init__(self, address, name, data):
        self.address, self.name, self.data = address, name, data
        self.pos = 0
        self.seen = None

    def read(self, n):
        if self.seen is None and self.pos >= len(self.data) // 2:
            with sheepfast.connect(self.address) as cluster:
                self.seen = read_mark(cluster, self.name)
        piece = self.data[self.pos : self.pos + min(n, 256 << 10)]
        self.pos += len(piece)
        return piece


def test_upload_marks_the_vdi_while_writing(backend, target, new_name, cluster):
    name = new_name("sf-mark")
    data = os.urandom(3 * MiB + 5)
    backend.create(name, len(data))
    source = CheckingSource(target.address, name, data)
    with image_for(backend, name) as image:
        assert image.upload(source, len(data)) == len(data)
    seen = source.seen
    info = cluster.stat(name)
    assert seen is not None
    assert (seen.host, seen.pid) == (socket.gethostname(), os.getpid())
    assert (seen.vid, seen.vdi_ctime) == (info.vid, int(info.create_time))
    assert seen.started <= seen.heartbeat <= time.time()
    assert not has_mark(cluster, name)  # complete: the mark is gone
    with cluster.open(name) as vdi:
        assert vdi.read(0, len(data)) == data


def test_a_failed_upload_keeps_its_mark(backend, new_name, cluster):
    """upload() leaves a failed VDI for its caller to delete; until then (and
    if that delete fails, after) the mark says it is incomplete."""
    name = new_name("sf-mark")
    backend.create(name, 4 * MiB)

    def pieces():
        yield os.urandom(MiB)
        raise OSError("the client went away")

    with image_for(backend, name) as image:
        with pytest.raises(OSError, match="went away"):
            image.upload(pieces(), 4 * MiB)
    mark = read_mark(cluster, name)
    assert mark.pid == os.getpid() and mark.vid == cluster.stat(name).vid


def test_heartbeat_is_rate_limited(own_fake):
    """With the default interval an upload of many chunks writes the mark
    twice (set, remove): the heartbeat runs on time, not per chunk."""
    backend = open_backend(own_fake.address, "native")
    backend.create("many-chunks", 16 * MiB, block_size_shift=20)  # 16 chunks of 1 MiB
    own_fake.reset_request_counts()
    with image_for(backend, "many-chunks", chunk=MiB) as image:
        image.upload(io.BytesIO(os.urandom(16 * MiB)), 16 * MiB)
    backend.close()
    counts = own_fake.request_counts()
    assert counts[w.OP_GET_VDI_ATTR] == 2
    assert counts[w.OP_CREATE_AND_WRITE_OBJ] >= 16


def test_heartbeat_thread_refreshes_the_mark(cluster, new_name):
    name = new_name("sf-mark")
    cluster.create(name, MiB)
    ticks = iter(range(1000, 100000, 7))
    with cluster.open(name) as vdi:
        mark = UploadMark(vdi, interval=0.01, clock=lambda: float(next(ticks)))
        mark.start()
        try:
            assert read_mark(cluster, name).heartbeat == 1000.0
            deadline = time.monotonic() + 60  # a guard, not a measurement
            while read_mark(cluster, name).heartbeat == 1000.0:
                assert time.monotonic() < deadline, "no heartbeat arrived"
                time.sleep(0.01)
        finally:
            mark.stop()
        stopped = read_mark(cluster, name)
        assert stopped.started == 1000.0 and stopped.heartbeat > 1000.0
        mark.beat()  # after stop: nothing more is written
        assert read_mark(cluster, name) == stopped
        mark.clear()
        assert not has_mark(cluster, name)


def test_successful_put_leaves_no_mark(target, new_name, tmp_path, cluster):
    name = new_name("sf-mark")
    path = tmp_path / "img"
    path.write_bytes(os.urandom(5 * MiB + 1))
    done = subprocess.run(
        [*COMMAND, "--cluster", target.address, "put", str(path), name],
        capture_output=True,
        cwd="/",
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert not has_mark(cluster, name)
    assert cluster.stat(name).size == 5 * MiB + 1


def test_killed_put_leaves_a_vdi_that_can_be_found(target, new_name, cluster):
    """A worker killed mid-upload: the VDI stays, marked, its heartbeat
    frozen. Found once the heartbeat is old enough, and not before."""
    name = new_name("sf-killed")
    proc = subprocess.Popen(
        [*COMMAND, "--cluster", target.address, "put", "-", name],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        env=ENV,
    )
    proc.stdin.write(os.urandom(6 * MiB))  # some data, and no end of it
    proc.stdin.flush()
    deadline = time.monotonic() + 60  # a guard, not a measurement
    while not (cluster.exists(name) and has_mark(cluster, name)):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=60)
    proc.stdin.close()
    proc.stderr.close()
    mark = read_mark(cluster, name)
    assert mark.pid == proc.pid and mark.host == socket.gethostname()
    assert name not in {e.name for e in find_incomplete(cluster, HOUR)}  # still fresh
    later = find_incomplete(cluster, HOUR, now=time.time() + 2 * HOUR)
    found = [e for e in later if e.name == name]
    assert len(found) == 1
    assert found[0].vid == cluster.stat(name).vid and found[0].age > HOUR
    dry = reclaim_incomplete(cluster, HOUR, dry_run=True, now=time.time() + 2 * HOUR)
    assert name in {e.name for e in dry.deleted} and cluster.exists(name)


# ----------------------------------------------------------- find and reclaim


def make_population(cluster, new_name):
    """One VDI of each kind; returns {kind: name}."""
    names = {
        kind: new_name(f"sf-pop-{kind}")
        for kind in (
            "complete",
            "fresh",
            "stale",
            "stale_dead_here",
            "stale_live_here",
            "leftover",
            "garbled",
        )
    }
    for name in names.values():
        cluster.create(name, MiB)
    here = socket.gethostname()
    put_mark(cluster, names["fresh"], age=10)
    put_mark(cluster, names["stale"], age=2 * HOUR)
    put_mark(cluster, names["stale_dead_here"], age=2 * HOUR, host=here, pid=dead_pid())
    put_mark(cluster, names["stale_live_here"], age=2 * HOUR, host=here, pid=os.getpid())
    # a mark left by an earlier VDI of this name: another vid
    put_mark(cluster, names["leftover"], age=2 * HOUR, vid=cluster.stat(names["leftover"]).vid + 1)
    with cluster.open(names["garbled"]) as vdi:
        vdi.metadata_set(MARK_KEY, "not a mark")
    return names


def test_find_selects_exactly_the_stale_incomplete_vdis(target, cluster, new_name):
    names = make_population(cluster, new_name)
    mine = set(names.values())
    found = {e.name: e for e in find_incomplete(cluster, HOUR) if e.name in mine}
    assert set(found) == {names["stale"], names["stale_dead_here"]}
    assert found[names["stale"]].mark.host == "elsewhere.invalid"
    assert 2 * HOUR <= found[names["stale"]].age < 2 * HOUR + 600
    # the fresh one only once its heartbeat is older than asked for
    later = {e.name for e in find_incomplete(cluster, HOUR, now=time.time() + 2 * HOUR)}
    assert later & mine == {names["stale"], names["stale_dead_here"], names["fresh"]}
    dry = reclaim_incomplete(cluster, HOUR, dry_run=True)
    assert {e.name for e in dry.deleted} & mine == set(found) and not dry.failed
    assert all(cluster.exists(n) for n in mine)  # a dry run deletes nothing


def test_find_works_through_the_dog_backend(target, cluster, new_name):
    name = new_name("sf-pop")
    cluster.create(name, MiB)
    put_mark(cluster, name, age=2 * HOUR)
    with DogBackend(target.address, dog_command=dog_command(target), timeout=60) as cli:
        found = [e for e in find_incomplete(cli, HOUR) if e.name == name]
    assert len(found) == 1 and found[0].vid == cluster.stat(name).vid


def test_reclaim_deletes_exactly_the_stale_ones(own_fake):
    made = []
    with sheepfast.connect(own_fake.address) as cluster:
        names = make_population(cluster, lambda prefix: made.append(prefix) or prefix)
        report = reclaim_incomplete(cluster, HOUR)
        assert {e.name for e in report.deleted} == {names["stale"], names["stale_dead_here"]}
        assert not report.failed
        left = {i.name for i in cluster.list()}
        assert left == set(names.values()) - {names["stale"], names["stale_dead_here"]}
        assert reclaim_incomplete(cluster, HOUR).deleted == []  # nothing more to do


def test_reclaim_keeps_going_past_a_failed_delete(own_fake):
    with sheepfast.connect(own_fake.address) as cluster:
        for name in ("a-stale", "b-stale"):
            cluster.create(name, MiB)
            put_mark(cluster, name, age=2 * HOUR)
        own_fake.fail_nth(1, w.RES_EIO, opcode=w.OP_DEL_VDI)
        report = reclaim_incomplete(cluster, HOUR)
        assert [e.name for e, _ in report.failed] == ["a-stale"]
        assert isinstance(report.failed[0][1], errors.ServerError)
        assert [e.name for e in report.deleted] == ["b-stale"]
        assert cluster.exists("a-stale") and has_mark(cluster, "a-stale")


def test_a_failed_upload_whose_delete_fails_is_reclaimable(own_fake, monkeypatch):
    """The streaming upload raises, the caller's delete of the VDI fails
    (FakeSheep's fault knobs): the marked VDI stays, and is reclaimed once
    its writer is gone (seen from another host here: this process lives)."""
    backend = open_backend(own_fake.address, "native")
    backend.create("partial", 8 * MiB)

    def pieces():
        yield os.urandom(2 * MiB)
        own_fake.fail_nth(1, w.RES_EIO, opcode=w.OP_DEL_VDI)
        raise OSError("the worker died")

    with image_for(backend, "partial") as image:
        with pytest.raises(OSError):
            image.upload(pieces(), 8 * MiB)
        with pytest.raises(errors.ServerError):
            image.delete()
    backend.close()
    with sheepfast.connect(own_fake.address) as cluster:
        assert has_mark(cluster, "partial")
        later = time.time() + 2 * HOUR
        assert find_incomplete(cluster, HOUR, now=later) == []  # its writer is alive here
        monkeypatch.setattr(incomplete, "_this_host", lambda: "another-host")
        assert [e.name for e in reclaim_incomplete(cluster, HOUR, now=later).deleted] == ["partial"]
        assert not cluster.exists("partial")


# ---------------------------------------------------------------- the command


def reclaim(address, *args, timeout=120):
    return subprocess.run(
        [*COMMAND, "--cluster", address, "reclaim", *args],
        capture_output=True,
        cwd="/",
        env=ENV,
        timeout=timeout,
    )


def test_command_dry_run_lists_and_keeps(target, cluster, new_name):
    names = make_population(cluster, new_name)
    done = reclaim(target.address, "--older-than", "1h", "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = {
        line.split()[2]: line
        for line in done.stdout.decode().splitlines()
        if line.startswith("would delete")
    }
    mine = set(names.values())
    assert set(lines) & mine == {names["stale"], names["stale_dead_here"]}
    assert "writer elsewhere.invalid pid 4242" in lines[names["stale"]]
    assert "heartbeat 2.0h ago" in lines[names["stale"]]
    assert all(cluster.exists(n) for n in mine)


def test_command_deletes_and_reports(own_fake):
    with sheepfast.connect(own_fake.address) as cluster:
        names = make_population(cluster, lambda prefix: prefix)
        done = reclaim(own_fake.address, "--older-than", "1h", "--json")
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)
        assert {r["name"] for r in rows} == {names["stale"], names["stale_dead_here"]}
        assert all(r["action"] == "deleted" and r["error"] is None for r in rows)
        assert not cluster.exists(names["stale"]) and cluster.exists(names["fresh"])
        done = reclaim(own_fake.address, "--older-than", "1h")
        assert done.returncode == 0 and done.stdout == b""
        assert b"no incomplete VDIs with a heartbeat older than 1h" in done.stderr


def test_command_exit_status_when_a_delete_fails(own_fake):
    with sheepfast.connect(own_fake.address) as cluster:
        cluster.create("stuck", MiB)
        put_mark(cluster, "stuck", age=3 * HOUR)
        own_fake.fail_nth(1, w.RES_EIO, opcode=w.OP_DEL_VDI)
        done = reclaim(own_fake.address, "--older-than", "2h")
        assert done.returncode == 1
        out = done.stdout.decode()
        assert out.startswith("failed") and "stuck" in out and "EIO" in out
        assert b"Traceback" not in done.stderr
        assert cluster.exists("stuck")


@pytest.mark.parametrize(
    "age, message",
    [
        ("10s", "at least 60s"),
        ("soon", "bad age"),
    ],
)
def test_command_refuses_bad_ages(own_fake, age, message):
    done = reclaim(own_fake.address, "--older-than", age)
    assert done.returncode == 2
    assert message in done.stderr.decode() and b"Traceback" not in done.stderr


def test_command_needs_an_age(own_fake):
    done = reclaim(own_fake.address)
    assert done.returncode == 2 and b"--older-than" in done.stderr
