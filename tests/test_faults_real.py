"""Faults on real sheep: no wrong byte after any of them.

A throwaway 3-sheep cluster (copies 2) of this module's own
(sheepfast.testing.localsheep, started when ``SHEEPFAST_TEST_SHEEP=1`` with
``sheep`` and ``dog`` on PATH; skipped otherwise) has one sheep killed
(SIGKILL) or frozen (SIGSTOP, then SIGCONT) in the middle of a raw write, a
glance_store ``Store.add`` of known and of unknown size, a ``Store.get`` and
a raw read, with only the first sheep configured or all three.

What must hold afterwards (DESIGN.md, "Success means stored"):

* a call that reported success stored every byte: ``dog vdi read`` through
  a surviving sheep gives the right bytes while the killed sheep is still
  down, and again once it is back and recovery finished; sheepfast reads
  them back too; a read that reported success returned the right bytes;
* a ``Store.add`` that failed left no VDI behind (``dog vdi list``).

Every scenario runs ``SHEEPFAST_FAULT_RUNS`` times (default 1). Set
``SHEEPFAST_FAULT_RECORD=path`` to append one JSON line per run (outcome,
how long the call took, when the fault hit, every symptom and the sheep log
lines around it) for a report, and ``SHEEPFAST_FAULT_SHEEP_LOG=debug`` to
have sheep log every request (the lines naming a wrong object are recorded).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Optional

import pytest

import sheepfast
from sheepfast.incomplete import MARK_KEY

MiB = 1 << 20
LOCAL_SHEEP_ENV = "SHEEPFAST_TEST_SHEEP"
RUNS_ENV = "SHEEPFAST_FAULT_RUNS"
RECORD_ENV = "SHEEPFAST_FAULT_RECORD"
LOG_LEVEL_ENV = "SHEEPFAST_FAULT_SHEEP_LOG"  # e.g. "debug": sheep logs every request

if os.environ.get(LOCAL_SHEEP_ENV) != "1":
    pytest.skip(
        f"fault injection needs sheep processes of its own: set {LOCAL_SHEEP_ENV}=1 "
        "with sheep and dog on PATH",
        allow_module_level=True,
    )


def _runs() -> int:
    text = os.environ.get(RUNS_ENV, "1")
    if not text.isdigit() or int(text) < 1:
        raise pytest.UsageError(
            f"{RUNS_ENV} must be a whole number of runs, 1 or more (got {text!r})"
        )
    return int(text)


RUNS = _runs()

NODES = 3
COPIES = 2
OBJECT_SIZE = 4 * MiB  # the cluster's default object size
IMAGE_SIZE = 256 * MiB  # 64 objects: a run takes seconds
PIECE = 32 * MiB  # raw calls and the driver's chunks
ZERO_OBJECTS = (0, 9, 10, 37, 63)  # all-zero objects (thin: never written by the driver)
GATEWAY = 0  # the sheep configured first
OTHER = 2  # a sheep the client was not told about
KILL_IO_TIMEOUT = 20.0  # a killed sheep resets its sockets: no wait involved
PAUSE_IO_TIMEOUT = 5.0  # a frozen sheep answers nothing: the timeout decides
PAUSE_GUARD = 6 * PAUSE_IO_TIMEOUT  # a frozen sheep is let go after this, whatever happens
CALL_BOUND = 60.0  # no run may take longer than this (a hang fails it)
CLUSTER_BOUND = 120.0  # leaving, joining, recovering (a loaded machine is slow)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sheep():
    from sheepfast.testing.localsheep import LocalSheep, available

    if not available():
        pytest.fail(f"{LOCAL_SHEEP_ENV}=1 but sheep/dog are not on PATH")
    local = LocalSheep(nodes=NODES, copies=COPIES, log_level=os.environ.get(LOG_LEVEL_ENV) or None)
    try:
        yield local  # started (afresh) by each test's healthy fixture
    finally:
        local.stop()


@pytest.fixture(scope="module")
def image() -> bytes:
    """Random bytes with some all-zero objects, among them the first and the last."""
    data = bytearray(os.urandom(IMAGE_SIZE))
    for index in ZERO_OBJECTS:
        data[index * OBJECT_SIZE : (index + 1) * OBJECT_SIZE] = bytes(OBJECT_SIZE)
    return bytes(data)


@pytest.fixture(scope="module")
def image_digests(image) -> dict:
    return {"md5": hashlib.md5(image).hexdigest(), "sha256": hashlib.sha256(image).hexdigest()}


@pytest.fixture
def healthy(sheep):
    """A fresh cluster for every test: each run adds two epochs and leaves
    objects behind, and sheep recovery retries what it cannot find through
    every older epoch, so on a reused cluster each rejoin recovered more
    slowly (minutes after a few dozen runs). Yields a list for the names of
    the VDIs the test makes; the cluster goes with them."""
    sheep.restart_cluster()
    names: list = []
    yield names


# ---------------------------------------------------------------- faults


class Fault:
    """Kills or freezes one sheep once, from a thread of its own, ``delay``
    seconds after it is armed; remembers when, relative to the call."""

    def __init__(self, sheep, victim: int, kind: str):
        self.sheep = sheep
        self.victim = victim
        self.kind = kind  # "kill" or "pause"
        self.call_started = 0.0
        self.hit_at: Optional[float] = None  # seconds into the call
        self._armed = False
        self._done = threading.Event()
        self._lock = threading.Lock()

    def arm(self, delay: float = 0.0) -> None:
        with self._lock:
            if self._armed:
                return
            self._armed = True
        threading.Thread(target=self._fire, args=(delay,), daemon=True).start()

    def _fire(self, delay: float) -> None:
        time.sleep(delay)
        if self.kind == "kill":
            self.sheep.stop_node(self.victim)
        else:
            self.sheep.pause_node(self.victim)
        self.hit_at = time.monotonic() - self.call_started
        self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    @property
    def armed(self) -> bool:
        return self._armed


class TriggeringSource(io.RawIOBase):
    """The image as a file, arming the fault once ``fraction`` of it was
    read (the driver reads one chunk ahead of what it writes)."""

    def __init__(self, data: bytes, fault: Fault, fraction: float = 0.5):
        self._data = memoryview(data)
        self._pos = 0
        self._fault = fault
        self._trigger = int(len(data) * fraction)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        view = memoryview(b).cast("B")
        n = min(len(view), len(self._data) - self._pos)
        view[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        if self._pos >= self._trigger:
            self._fault.arm()
        return n


def _pieces(size: int):
    return [(off, min(PIECE, size - off)) for off in range(0, size, PIECE)]


class PieceTimer:
    """Raw calls go piece by piece; the fault is armed at the start of the
    third piece, to hit at a random point inside it (the first two pieces
    tell how long one takes)."""

    TRIGGER_PIECE = 2

    def __init__(self, fault: Fault, rng: random.Random):
        self._fault = fault
        self._rng = rng
        self._durations: list = []
        self._started = 0.0
        self.delay = None

    def before(self, index: int) -> None:
        if index == self.TRIGGER_PIECE:
            mean = sum(self._durations) / len(self._durations)
            self.delay = self._rng.uniform(0.1, 0.9) * mean
            self._fault.arm(self.delay)
        self._started = time.monotonic()

    def after(self) -> None:
        self._durations.append(time.monotonic() - self._started)


# ---------------------------------------------------------------- operations


@dataclass
class Call:
    """What the call under test did."""

    name: str  # the VDI
    ok: bool = False
    error: str = ""
    elapsed: float = 0.0
    returned: Optional[str] = None  # sha256 of what a read returned
    checksum: Optional[str] = None  # md5 Store.add reported
    size: Optional[int] = None  # bytes Store.add reported
    detail: str = ""


def _addresses(sheep, gateways: str) -> list:
    return sheep.addresses[:1] if gateways == "one" else list(sheep.addresses)


def _glance(monkeypatch, tmp_path, sheep, gateways: str, io_timeout: float):
    from glance_support import make_multi

    extra = [] if gateways == "one" else sheep.addresses[1:]
    target = SimpleNamespace(address=sheep.address, is_fake=False)
    return make_multi(
        monkeypatch,
        tmp_path,
        target,
        "native",
        sheepdog_store_chunk_size=PIECE // MiB,
        sheepdog_store_object_size=OBJECT_SIZE // MiB,
        sheepdog_store_io_timeout=io_timeout,
        sheepdog_store_connect_timeout=io_timeout,
        sheepdog_store_extra_addresses=extra,
    )


def _store_plainly(sheep, name: str, data: bytes) -> None:
    """Writes the image with no fault (for the read scenarios)."""
    with sheepfast.connect(",".join(sheep.addresses), io_timeout=30) as cluster:
        cluster.create(name, len(data))
        with cluster.open(name) as vdi:
            vdi.write(data, 0)


def op_raw_write(ctx) -> Call:
    call = Call(ctx.name)
    timer = PieceTimer(ctx.fault, ctx.rng)
    view = memoryview(ctx.image)
    with sheepfast.connect(
        ",".join(ctx.addresses), io_timeout=ctx.io_timeout, connect_timeout=ctx.io_timeout
    ) as cluster:
        cluster.create(ctx.name, len(ctx.image))
        ctx.names.append(ctx.name)
        with cluster.open(ctx.name) as vdi:
            ctx.start()
            for index, (off, n) in enumerate(_pieces(len(view))):
                timer.before(index)
                vdi.write(view[off : off + n], off)
                timer.after()
    call.detail = (
        f"fault {timer.delay:.3f} s into piece {PieceTimer.TRIGGER_PIECE}"
        if timer.delay is not None
        else ""
    )
    return call


def op_raw_read(ctx) -> Call:
    call = Call(ctx.name)
    _store_plainly(ctx.sheep, ctx.name, ctx.image)
    ctx.names.append(ctx.name)
    timer = PieceTimer(ctx.fault, ctx.rng)
    digest = hashlib.sha256()
    with sheepfast.connect(
        ",".join(ctx.addresses), io_timeout=ctx.io_timeout, connect_timeout=ctx.io_timeout
    ) as cluster:
        with cluster.open(ctx.name) as vdi:
            ctx.start()
            for index, (off, n) in enumerate(_pieces(len(ctx.image))):
                timer.before(index)
                got = vdi.read(off, n)
                timer.after()
                ctx.check_piece(call, off, got)
                digest.update(got)
    call.returned = digest.hexdigest()
    return call


def _op_add(ctx, declared: int) -> Call:
    call = Call(ctx.name)
    glance = ctx.glance()
    ctx.names.append(ctx.name)
    source = TriggeringSource(ctx.image, ctx.fault)
    ctx.start()
    _uri, size, md5, _multihash, _meta = glance.add(ctx.name, source, declared)
    call.size, call.checksum = size, md5
    return call


def op_add_known(ctx) -> Call:
    return _op_add(ctx, len(ctx.image))


def op_add_unknown(ctx) -> Call:
    return _op_add(ctx, 0)


def op_get(ctx) -> Call:
    call = Call(ctx.name)
    _store_plainly(ctx.sheep, ctx.name, ctx.image)
    ctx.names.append(ctx.name)
    glance = ctx.glance()
    uri = f"sheepdog://{ctx.sheep.address}:{ctx.name}"
    digest = hashlib.sha256()
    ctx.start()
    chunks, size = glance.get(uri)
    assert size == len(ctx.image)
    off = 0
    for chunk in chunks:
        ctx.check_piece(call, off, chunk)
        digest.update(chunk)
        off += len(chunk)
        if off >= len(ctx.image) * 0.4:
            ctx.fault.arm()
    call.returned = digest.hexdigest()
    return call


OPS: dict = {
    "raw-write": op_raw_write,
    "add-known": op_add_known,
    "add-unknown": op_add_unknown,
    "get": op_get,
    "raw-read": op_raw_read,
}
WRITES = {"raw-write", "add-known", "add-unknown"}
ADDS = {"add-known", "add-unknown"}
GLANCE_OPS = ADDS | {"get"}


# ---------------------------------------------------------------- a run


@dataclass
class Run:
    """One run of a scenario, as recorded for the report."""

    scenario: str
    run: int
    fault: str
    victim: int
    gateways: str
    io_timeout: float
    outcome: str = ""  # "ok" or the error
    elapsed: float = 0.0  # the call, seconds
    fault_at: Optional[float] = None  # seconds into the call; None: never hit
    fault_during_call: bool = False
    detail: str = ""
    wrong_while_down: list = field(default_factory=list)
    wrong_after: list = field(default_factory=list)
    wrong_returned: list = field(default_factory=list)
    wrong_sheepfast: str = ""
    orphan: bool = False
    orphan_marked: bool = False  # it carries the upload mark: `sheepfast reclaim` finds it
    vdi_listed: Optional[bool] = None
    problems: list = field(default_factory=list)
    log: dict = field(default_factory=dict)
    oid_log: dict = field(default_factory=dict)  # wrong object -> sheep -> lines naming it
    phases: dict = field(default_factory=dict)  # seconds each step of the run took


class Context:
    def __init__(self, sheep, image, names, addresses, io_timeout, fault, rng, glance_factory):
        self.sheep = sheep
        self.image = image
        self.names = names
        self.addresses = addresses
        self.io_timeout = io_timeout
        self.fault = fault
        self.rng = rng
        self.glance = glance_factory
        self.name = f"sf-fault-{uuid.uuid4().hex[:12]}"
        self.started = None
        self.returned_mismatches: list = []

    def start(self) -> None:
        self.started = self.fault.call_started = time.monotonic()

    def check_piece(self, call: Call, off: int, got) -> None:
        """A read returned these bytes at off: are they the image's?"""
        want = memoryview(self.image)[off : off + len(got)]
        if bytes(got) != want:
            from sheepfast.testing.localsheep import ObjectMismatch

            for start in range(0, len(got), OBJECT_SIZE):
                a = bytes(want[start : start + OBJECT_SIZE])
                b = bytes(memoryview(got)[start : start + OBJECT_SIZE])
                if a != b:
                    self.returned_mismatches.append(
                        str(ObjectMismatch.of((off + start) // OBJECT_SIZE, a, b))
                    )


_LOG_INTERESTING = re.compile(
    r"\b(ERROR|WARN|EMERG|ALERT|CRIT)\b|old epoch|"
    r"epoch|recovered|left|joined|fail",
    re.I,
)


_LOG_NOISE = ("recovery progress", "check_host_env", "Connection refused")


def _interesting(lines: list, limit: int = 40) -> list:
    """Warnings, errors and epoch changes; a dead sheep's refused connections
    only counted (there are hundreds)."""
    picked = [
        line
        for line in lines
        if _LOG_INTERESTING.search(line) and not any(n in line for n in _LOG_NOISE)
    ]
    refused = sum("Connection refused" in line for line in lines)
    if refused:
        picked.append(f"({refused} lines: connect_to ... Connection refused)")
    return picked[:limit]


def _record(run: Run) -> None:
    path = os.environ.get(RECORD_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(asdict(run)) + "\n")


def run_scenario(
    sheep,
    image,
    digests,
    names,
    *,
    op: str,
    fault_kind: str,
    victim: int,
    gateways: str,
    run_index: int,
    glance_factory,
) -> Run:
    io_timeout = KILL_IO_TIMEOUT if fault_kind == "kill" else PAUSE_IO_TIMEOUT
    scenario = f"{fault_kind}-{'gateway' if victim == GATEWAY else 'other'}-{op}-{gateways}"
    record = Run(scenario, run_index, fault_kind, victim, gateways, io_timeout)
    rng = random.Random(f"{scenario}/{run_index}/{time.time_ns()}")
    fault = Fault(sheep, victim, fault_kind)
    # The store is set up here, before the call: importing and configuring
    # glance_store on the call's thread once took longer than CALL_BOUND.
    glance = glance_factory(gateways, io_timeout) if op in GLANCE_OPS else None
    ctx = Context(
        sheep, image, names, _addresses(sheep, gateways), io_timeout, fault, rng, lambda: glance
    )
    marks = sheep.log_marks()
    survivors = [i for i in range(NODES) if i != victim]
    reader = survivors[0]

    outcome: dict = {}
    # Set when the call is over. Not Thread.join: after a Store.add failed
    # under a fault, join was seen to wait on a thread that no longer ran.
    returned = threading.Event()

    def body() -> None:
        try:
            outcome["call"] = OPS[op](ctx)
        except BaseException as exc:  # the outcome is judged below
            outcome["error"] = exc
            outcome["trace"] = traceback.format_exc(limit=4)
        finally:
            outcome["ended"] = time.monotonic()
            returned.set()

    threading.Thread(target=body, daemon=True).start()
    deadline = time.monotonic() + CALL_BOUND
    if fault_kind == "pause":
        # Frozen until the call returns, or for PAUSE_GUARD at most.
        while not returned.is_set() and time.monotonic() < deadline:
            if (
                fault.hit_at is not None
                and time.monotonic() - fault.call_started - fault.hit_at >= PAUSE_GUARD
            ):
                record.detail = f"still running {PAUSE_GUARD:.0f} s after the freeze: let go"
                break
            returned.wait(0.1)
        if fault.armed:
            fault.wait(CLUSTER_BOUND)
            sheep.resume_node(victim)
    returned.wait(max(0.0, deadline - time.monotonic()))
    if fault.armed:
        fault.wait(CLUSTER_BOUND)
    record.fault_at = None if fault.hit_at is None else round(fault.hit_at, 3)
    if not returned.is_set():
        record.problems.append(f"the call did not return within {CALL_BOUND:.0f} s")
        record.detail = _thread_stacks()
        record.outcome = "hung"
        _finish(record, sheep, marks)
        return record

    if ctx.started is not None:
        record.elapsed = round(outcome["ended"] - ctx.started, 3)
    record.fault_during_call = fault.hit_at is not None and fault.hit_at <= record.elapsed
    call: Optional[Call] = outcome.get("call")
    if call is not None:
        record.outcome = "ok"
        record.detail = " ".join(filter(None, (record.detail, call.detail)))
    else:
        exc = outcome["error"]
        record.outcome = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
        record.detail = " ".join(filter(None, (record.detail, outcome["trace"])))
    record.wrong_returned = list(ctx.returned_mismatches)

    try:
        clock = time.monotonic()

        def phase(name: str) -> None:
            nonlocal clock
            now = time.monotonic()
            record.phases[name] = round(now - clock, 2)
            clock = now

        if fault_kind == "kill" and fault.hit_at is not None:
            # The cluster must have noticed before "while down" means anything.
            sheep.wait_for_nodes(survivors, timeout=CLUSTER_BOUND)
        phase("noticed")

        expected_there = op not in ADDS or call is not None
        listed = ctx.name in sheep.vdi_names(node=reader)
        record.vdi_listed = listed
        if op in ADDS and call is None and listed:
            record.orphan = True  # judged once the cluster is whole again (below)
        if call is not None and op in ADDS:
            if call.size != len(image) or call.checksum != digests["md5"]:
                record.problems.append(
                    f"add reported {call.size} bytes, md5 {call.checksum}; "
                    f"the image has {len(image)}, md5 {digests['md5']}"
                )
        if call is not None and op not in WRITES:
            if call.returned != digests["sha256"] or ctx.returned_mismatches:
                record.problems.append(
                    "the read reported success but returned wrong bytes: "
                    + "; ".join(ctx.returned_mismatches[:8])
                )

        must_be_right = call is not None or op not in WRITES
        if must_be_right and expected_there:
            if fault_kind == "kill":
                down = sheep.compare_vdi(ctx.name, image, via=reader, object_size=OBJECT_SIZE)
                if not down.ok:
                    record.wrong_while_down = [str(down)]
                    record.problems.append(f"while sheep {victim} was down: {down}")
                    _diagnose(record, sheep, down, image, marks)
        phase("read while down")
        if fault_kind == "kill":
            sheep.start_node(victim)
        elif fault.armed and not sheep.running(victim):
            sheep.resume_node(victim)
        sheep.wait_for_nodes(range(NODES), timeout=CLUSTER_BOUND)
        sheep.wait_for_recovery(timeout=CLUSTER_BOUND)
        phase("back and recovered")
        if record.orphan:
            # A cleanup that could not finish (a frozen sheep blocks every
            # cluster operation) must leave the VDI marked for reclaiming.
            with sheepfast.connect(",".join(sheep.addresses), io_timeout=30) as cluster:
                with cluster.open(ctx.name) as vdi:
                    try:
                        vdi.metadata_get(MARK_KEY)
                        record.orphan_marked = True
                    except sheepfast.errors.AttributeNotFound:
                        pass
            if not record.orphan_marked:
                record.problems.append(
                    f"the failed add left VDI {ctx.name} without its upload mark"
                )
        if must_be_right and expected_there:
            after = sheep.compare_vdi(ctx.name, image, via=victim, object_size=OBJECT_SIZE)
            if not after.ok:
                record.wrong_after = [str(after)]
                record.problems.append(f"after sheep {victim} was back and recovered: {after}")
                _diagnose(record, sheep, after, image, marks)
            with sheepfast.connect(",".join(sheep.addresses), io_timeout=30) as cluster:
                with cluster.open(ctx.name) as vdi:
                    back = hashlib.sha256(vdi.read(0, len(image))).hexdigest()
            if back != digests["sha256"]:
                record.wrong_sheepfast = back
                record.problems.append("sheepfast read back other bytes after recovery")
        phase("read after")
        # Nothing but what the test made, and a failed add not even that.
        allowed = {ctx.name} if (op not in ADDS or call is not None) else set()
        unexpected = sheep.vdi_names() - allowed
        if unexpected and not record.orphan:
            record.problems.append(
                f"dog vdi list shows VDIs the test did not expect "
                f"after recovery: {sorted(unexpected)}"
            )
    except Exception as exc:
        record.problems.append(f"the checks themselves failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        _finish(record, sheep, marks)
    return record


def _diagnose(record: Run, sheep, comparison, image: bytes, marks) -> None:
    """For each wrong object: what every sheep holds of it on disk, and the
    log lines that name it."""
    from sheepfast.testing.localsheep import ObjectMismatch

    vid = _vid(sheep, comparison.name)
    logs = sheep.log_since(marks)
    for mismatch in comparison.bad_objects[:4]:
        oid = (vid << 32) | mismatch.index
        want = image[mismatch.index * OBJECT_SIZE : (mismatch.index + 1) * OBJECT_SIZE]
        copies = sheep.object_files(oid)
        record.problems.append(f"  object {mismatch.index} (oid {oid:016x}) on disk:")
        for node in range(NODES):
            if node not in copies:
                record.problems.append(f"    sheep {node}: no copy")
            elif copies[node] == want:
                record.problems.append(f"    sheep {node}: right")
            else:
                record.problems.append(
                    f"    sheep {node}: {ObjectMismatch.of(mismatch.index, want, copies[node])}"
                )
        named = {
            str(node): [line for line in lines if f"{oid:016x}" in line][:30]
            for node, lines in logs.items()
        }
        record.oid_log[f"{oid:016x}"] = named


def _vid(sheep, name: str) -> int:
    with sheepfast.connect(",".join(sheep.addresses), io_timeout=30) as cluster:
        for info in cluster.list():
            if info.name == name and not info.snapshot:
                return info.vid
    raise AssertionError(f"VDI {name} is not listed")


def _thread_stacks() -> str:
    """Where every thread of ours is, for a call that hung."""
    import faulthandler
    import tempfile

    with tempfile.TemporaryFile("w+") as f:
        faulthandler.dump_traceback(f, all_threads=True)
        f.seek(0)
        return f.read()


def _finish(record: Run, sheep, marks) -> None:
    logs = sheep.log_since(marks)
    record.log = {str(i): _interesting(lines) for i, lines in logs.items()}
    _record(record)


def _explain(record: Run) -> str:
    lines = [
        f"{record.scenario} run {record.run}: {record.outcome} after {record.elapsed} s "
        f"(io_timeout {record.io_timeout} s; fault at {record.fault_at} s)"
    ]
    lines += record.problems
    for node, log in record.log.items():
        if log:
            lines.append(f"--- sheep {node}")
            lines += log[:12]
    return "\n".join(lines)


# ---------------------------------------------------------------- scenarios

#: Scenarios that fail for a reason the client cannot mend yet, with the
#: symptom (xfail). Empty: the lost writes of sheep 1.0's recovery race and
#: the frozen-sheep timeouts are handled (README, "Faults").
KNOWN_BUG: dict = {}


def _params(fault_kind: str, ops, victims, gateway_sets):
    # Round by round, so that a run cut short has seen every scenario.
    for run in range(RUNS):
        for op in ops:
            for victim in victims:
                for gateways in gateway_sets:
                    who = "gateway" if victim == GATEWAY else "other"
                    key = f"{fault_kind}-{who}-{op}-{gateways}"
                    marks = (
                        [pytest.mark.xfail(strict=False, reason=KNOWN_BUG[key])]
                        if key in KNOWN_BUG
                        else []
                    )
                    yield pytest.param(op, victim, gateways, run, marks=marks, id=f"{key}-{run}")


@pytest.fixture
def glance_factory(monkeypatch, tmp_path, sheep):
    def make(gateways: str, io_timeout: float):
        return _glance(monkeypatch, tmp_path, sheep, gateways, io_timeout)

    return make


@pytest.mark.parametrize(
    "op, victim, gateways, run", list(_params("kill", OPS, (OTHER, GATEWAY), ("one", "all")))
)
def test_kill_a_sheep(
    sheep, image, image_digests, healthy, glance_factory, op, victim, gateways, run
):
    record = run_scenario(
        sheep,
        image,
        image_digests,
        healthy,
        op=op,
        fault_kind="kill",
        victim=victim,
        gateways=gateways,
        run_index=run,
        glance_factory=glance_factory,
    )
    assert record.fault_at is not None, "the fault never hit: " + _explain(record)
    assert not record.problems, _explain(record)


@pytest.mark.parametrize(
    "op, victim, gateways, run",
    list(_params("pause", ("add-known",), (OTHER, GATEWAY), ("one", "all"))),
)
def test_freeze_a_sheep(
    sheep, image, image_digests, healthy, glance_factory, op, victim, gateways, run
):
    record = run_scenario(
        sheep,
        image,
        image_digests,
        healthy,
        op=op,
        fault_kind="pause",
        victim=victim,
        gateways=gateways,
        run_index=run,
        glance_factory=glance_factory,
    )
    assert record.fault_at is not None, "the fault never hit: " + _explain(record)
    assert not record.problems, _explain(record)


def test_the_checker_sees_wrong_bytes(sheep, healthy):
    """The read-back check itself: a byte changed, and an object's tail
    zeroed, are both found and located (else the suite could pass on
    anything)."""
    data = bytearray(os.urandom(4 * OBJECT_SIZE))
    name = f"sf-fault-check-{uuid.uuid4().hex[:8]}"
    _store_plainly(sheep, name, bytes(data))
    healthy.append(name)
    assert sheep.compare_vdi(name, data, via=1, object_size=OBJECT_SIZE).ok
    wrong = bytearray(data)
    wrong[OBJECT_SIZE + 12345] ^= 0xFF
    wrong[3 * OBJECT_SIZE + 896 * 1024 :] = bytes(OBJECT_SIZE - 896 * 1024)
    result = sheep.compare_vdi(name, wrong, via=2, object_size=OBJECT_SIZE)
    assert not result.ok
    assert [(m.index, m.right_prefix) for m in result.bad_objects] == [(1, 12345), (3, 896 * 1024)]
    assert sheep.vdi_names() == {name}
