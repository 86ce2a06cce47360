"""Shared pieces of the glance driver tests: a glance_store set up the way
Glance sets it up (single- or multi-store, through glance_store's own
loaders), the backend kinds, and image sources that watch how they are read.

Test modules import the fixtures from here (``from glance_support import
...``); pytest sees them once imported into the module.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

MiB = 1 << 20
FAKEDOG = Path(__file__).resolve().parent / "fakedog" / "dog"
NO_FAKEDOG = "tests/fakedog/dog not present yet"

glance_store = pytest.importorskip("glance_store")
from glance_store import backend as single_backend  # noqa: E402
from glance_store import location as glance_location  # noqa: E402
from glance_store import multi_backend  # noqa: E402
from oslo_config import cfg  # noqa: E402


def dog_command(target) -> Optional[str]:
    """The dog the cli backend runs for target: the stand-in for FakeSheep,
    the real one (from PATH) for a real cluster; None when missing."""
    if target.is_fake:
        return str(FAKEDOG) if FAKEDOG.exists() and os.access(FAKEDOG, os.X_OK) else None
    return shutil.which("dog")


@pytest.fixture(params=["native", "cli"])
def kind(request, target):
    """The backend kind under test; the cli one skips without a dog."""
    if request.param == "cli" and dog_command(target) is None:
        pytest.skip(NO_FAKEDOG if target.is_fake else "dog is not on PATH")
    return request.param


def split_address(address: str) -> tuple:
    first = address.split(",")[0]
    host, _, port = first.rpartition(":")
    return host.strip("[]"), int(port)


#: Small objects and chunks, so a few MiB make several chunks.
OBJECT_MIB = 1
CHUNK_MIB = 1


@dataclass
class Glance:
    """One glance_store configuration, used through its module functions."""

    mode: str  # "single" or "multi"
    conf: Any
    target: Any
    kind: str
    backend: str = "sheep"  # the store identifier in multi-store mode
    names: list = field(default_factory=list)

    @property
    def store(self):
        if self.mode == "single":
            return single_backend.get_store_from_scheme("sheepdog")
        return multi_backend.get_store_from_store_identifier(self.backend)

    def new_id(self, new_name) -> str:
        name = new_name("sf-glance")
        self.names.append(name)
        return name

    def add(self, image_id, data, size, hashing_algo="sha512", verifier=None):
        """(uri, size, md5, multihash, metadata), through the module functions."""
        if self.mode == "single":
            return single_backend.add_to_backend_with_multihash(
                self.conf, image_id, data, size, hashing_algo, scheme="sheepdog", verifier=verifier
            )
        return multi_backend.add_with_multihash(
            self.conf, image_id, data, size, self.backend, hashing_algo, verifier=verifier
        )

    def get(self, uri, offset=0, chunk_size=None):
        if self.mode == "single":
            return single_backend.get_from_backend(uri, offset=offset, chunk_size=chunk_size)
        return multi_backend.get(uri, self.backend, offset=offset, chunk_size=chunk_size)

    def get_size(self, uri):
        if self.mode == "single":
            return single_backend.get_size_from_backend(uri)
        return multi_backend.get_size_from_uri_and_backend(uri, self.backend)

    def delete(self, uri):
        if self.mode == "single":
            return single_backend.delete_from_backend(uri)
        return multi_backend.delete(uri, self.backend)

    def read_all(self, uri, **kw) -> bytes:
        it, size = self.get(uri, **kw)
        data = b"".join(it)
        assert len(data) == size
        return data


def require_entry_points() -> None:
    """glance_store loads drivers by entry point only: without sheepfast's
    package metadata on the path there is nothing to test."""
    from importlib.metadata import entry_points

    if not any(ep.name == "sheepdog" for ep in entry_points(group="glance_store.drivers")):
        pytest.fail(
            "no glance_store.drivers entry point 'sheepdog': install sheepfast "
            "(pip install . or pip install -e .) before running these tests"
        )


def _isolate_glance_store(monkeypatch, conf):
    """glance_store keeps its scheme maps and CONF in module globals."""
    require_entry_points()
    monkeypatch.setattr(glance_location, "SCHEME_TO_CLS_MAP", {})
    monkeypatch.setattr(glance_location, "SCHEME_TO_CLS_BACKEND_MAP", {})
    monkeypatch.setattr(single_backend, "CONF", conf)
    monkeypatch.setattr(multi_backend, "CONF", conf)


def make_single(monkeypatch, target, kind, **options) -> Glance:
    """[glance_store] stores = sheepdog, loaded by glance_store.backend."""
    conf = cfg.ConfigOpts()
    conf(args=[])
    _isolate_glance_store(monkeypatch, conf)
    single_backend.register_opts(conf)
    host, port = split_address(target.address)
    settings = dict(
        stores=["sheepdog"],
        sheepdog_store_address=host,
        sheepdog_store_port=port,
        sheepdog_store_chunk_size=CHUNK_MIB,
        sheepdog_store_object_size=OBJECT_MIB,
        sheepdog_store_backend=kind,
        sheepdog_store_io_timeout=30.0,
    )
    if kind == "cli":
        settings["sheepdog_store_dog_command"] = dog_command(target)
    settings.update(options)
    for name, value in settings.items():
        conf.set_override(name, value, group="glance_store")
    assert single_backend.create_stores(conf) == 1
    return Glance("single", conf, target, kind)


def make_multi(monkeypatch, tmp_path, target, kind, **options) -> Glance:
    """enabled_backends = sheep:sheepdog (next to a file store), from a config
    file, options shared through [backend_defaults], loaded by
    glance_store.multi_backend."""
    host, port = split_address(target.address)
    defaults = dict(
        sheepdog_store_address=host,
        sheepdog_store_chunk_size=CHUNK_MIB,
        sheepdog_store_object_size=OBJECT_MIB,
        sheepdog_store_io_timeout=30.0,
    )
    own = dict(sheepdog_store_port=port, sheepdog_store_backend=kind)
    if kind == "cli":
        own["sheepdog_store_dog_command"] = dog_command(target)
    own.update(options)

    def lines(values):
        for name, value in values.items():
            if isinstance(value, (list, tuple)):
                value = ",".join(value)
            yield f"{name} = {value}"

    (tmp_path / "files").mkdir(exist_ok=True)
    conf_file = tmp_path / "glance-api.conf"
    conf_file.write_text(
        "\n".join(
            [
                "[DEFAULT]",
                "enabled_backends = sheep:sheepdog, files:file",
                "[glance_store]",
                "default_backend = sheep",
                "[backend_defaults]",
                *lines(defaults),
                "[sheep]",
                "store_description = Sheepdog",
                *lines(own),
                "[files]",
                f"filesystem_store_datadir = {tmp_path / 'files'}",
            ]
        )
        + "\n"
    )
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.DictOpt("enabled_backends"))
    conf(args=["--config-file", str(conf_file)])
    _isolate_glance_store(monkeypatch, conf)
    multi_backend.register_store_opts(conf)
    multi_backend.create_multi_stores(conf)
    registered = glance_location.SCHEME_TO_CLS_BACKEND_MAP["sheepdog"]["sheep"]
    assert registered["store_entry"] == "sheepdog"
    return Glance("multi", conf, target, kind)


@pytest.fixture(params=["single", "multi"])
def glance(request, monkeypatch, tmp_path, target, kind):
    """The driver under glance_store, in both modes."""
    if request.param == "single":
        g = make_single(monkeypatch, target, kind)
    else:
        g = make_multi(monkeypatch, tmp_path, target, kind)
    yield g
    target.names.extend(g.names)


@pytest.fixture
def multi(monkeypatch, tmp_path, target, kind):
    """The driver in multi-store mode (what current Glance runs)."""
    g = make_multi(monkeypatch, tmp_path, target, kind)
    yield g
    target.names.extend(g.names)


# ---------------------------------------------------------------- sources


def image_bytes(
    size: int, zero_objects=(), object_size: int = OBJECT_MIB * MiB, seed: int = 1
) -> bytes:
    """Incompressible bytes with the given objects all zero."""
    import random

    data = bytearray(random.Random(seed).randbytes(size))
    for i in zero_objects:
        start = i * object_size
        data[start : start + object_size] = bytes(len(data[start : start + object_size]))
    return bytes(data)


class ReadOnlySource:
    """A file with read() only, as Glance's request readers are; gives at
    most `step` bytes per call."""

    def __init__(self, data: bytes, step: int = 100_000):
        self._data = memoryview(data)
        self._pos = 0
        self._step = step

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = len(self._data)
        n = min(n, self._step)
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += len(out)
        return out


def make_source(kind: str, data: bytes):
    if kind == "readinto":
        return io.BytesIO(data)
    if kind == "read":
        return ReadOnlySource(data)
    if kind == "iter":
        return iter([data[i : i + 300_000] for i in range(0, len(data), 300_000)])
    raise ValueError(kind)


class Boom(Exception):
    """What a failing image source raises."""


class FailingSource:
    """Gives `good` bytes, then raises Boom (a client that went away, or
    Glance's size limit)."""

    def __init__(self, data: bytes, good: int):
        self._inner = io.BytesIO(data)
        self._left = good

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            raise Boom("the client went away")
        out = self._inner.read(min(n, self._left))
        self._left -= len(out)
        return out


class Piece(bytearray):
    """A bytes-like piece whose lifetime the source can watch."""


class WatchedSource:
    """Gives `size` bytes in fresh pieces of `step` bytes through read() and
    records how many pieces are alive at once (kept by the driver)."""

    def __init__(self, size: int, step: int):
        self._left = size
        self._step = step
        self._lock = threading.Lock()
        self.alive = 0
        self.max_alive = 0
        self.pieces = 0

    def _gone(self):
        with self._lock:
            self.alive -= 1

    def read(self, n: int = -1) -> Piece:
        n = min(n if n and n > 0 else self._step, self._step, self._left)
        if n <= 0:
            return Piece()
        piece = Piece(os.urandom(16) * (n // 16) + bytes(n % 16))
        with self._lock:
            self.alive += 1
            self.pieces += 1
            self.max_alive = max(self.max_alive, self.alive)
        weakref.finalize(piece, self._gone)
        self._left -= n
        return piece


class BufferWatchingSource(io.RawIOBase):
    """readinto() over data, remembering which buffers it was asked to fill."""

    def __init__(self, data: bytes):
        self._inner = io.BytesIO(data)
        self.buffers: set = set()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        view = memoryview(b)
        self.buffers.add(id(view.obj))
        return self._inner.readinto(view)


class RecordingVerifier:
    """Stands in for Glance's signature verifier: keeps a copy of each
    update, since the driver hands over views of reused buffers."""

    def __init__(self):
        self.chunks: list = []

    def update(self, data) -> None:
        self.chunks.append(bytes(data))


# ---------------------------------------------------------------- benchmark


def bench(address: Optional[str] = None, size_mib: int = 512, chunk_mib: int = 64) -> dict:
    """MiB/s of Store.add (through glance_store.multi_backend, sha512
    multihash, md5 checksum) for a known and an unknown size, next to raw
    Vdi.write of the same bytes from memory in chunk-sized calls."""
    import tempfile
    import time
    import uuid

    import sheepfast
    from sheepfast.testing import FakeSheep

    fake = FakeSheep().start() if address is None else None
    address = fake.address if fake else address
    size = size_mib * MiB
    data = os.urandom(size)
    rates = {}
    try:
        with sheepfast.connect(address) as cluster:
            name = f"sf-bench-{uuid.uuid4().hex[:8]}"
            cluster.create(name, size)
            try:
                with cluster.open(name) as vdi:
                    view = memoryview(data)
                    started = time.perf_counter()
                    for off in range(0, size, chunk_mib * MiB):
                        vdi.write(view[off : off + chunk_mib * MiB], off)
                    rates["raw Vdi.write"] = size_mib / (time.perf_counter() - started)
            finally:
                cluster.delete(name)
        host, port = split_address(address)
        with tempfile.TemporaryDirectory() as tmp:
            conf_file = Path(tmp) / "glance-api.conf"
            conf_file.write_text(
                "[DEFAULT]\nenabled_backends = sheep:sheepdog\n"
                "[glance_store]\ndefault_backend = sheep\n"
                f"[sheep]\nsheepdog_store_address = {host}\nsheepdog_store_port = {port}\n"
                f"sheepdog_store_chunk_size = {chunk_mib}\nsheepdog_store_backend = native\n"
            )
            conf = cfg.ConfigOpts()
            conf.register_opt(cfg.DictOpt("enabled_backends"))
            conf(args=["--config-file", str(conf_file)])
            multi_backend.CONF = conf
            multi_backend.register_store_opts(conf)
            multi_backend.create_multi_stores(conf)
            for label, declared in (("Store.add known size", size), ("Store.add unknown size", 0)):
                image_id = f"sf-bench-{uuid.uuid4().hex[:8]}"
                started = time.perf_counter()
                uri = multi_backend.add_with_multihash(
                    conf, image_id, io.BytesIO(data), declared, "sheep", "sha512"
                )[0]
                rates[label] = size_mib / (time.perf_counter() - started)
                multi_backend.delete(uri, "sheep")
    finally:
        if fake:
            fake.stop()
    return rates


if __name__ == "__main__":
    import argparse
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tree, as pytest

    parser = argparse.ArgumentParser(description="Store.add throughput vs raw Vdi.write")
    parser.add_argument("--cluster", help="host:port of a real cluster (default: FakeSheep)")
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--chunk-mib", type=int, default=64)
    args = parser.parse_args()
    where = args.cluster or "FakeSheep"
    for label, rate in bench(args.cluster, args.size_mib, args.chunk_mib).items():
        print(f"{where:>16}  {label:<24} {rate:8.0f} MiB/s")
