"""Where the tests find a cluster.

Every test that takes the ``target`` fixture runs against the embedded
FakeSheep, and also against a real Sheepdog cluster when one is given:

* ``SHEEPFAST_TEST_CLUSTER=host:port[,host:port...]``: a cluster that is
  already running;
* ``SHEEPFAST_TEST_SHEEP=1`` with ``sheep`` and ``dog`` on PATH: a throwaway
  3-node cluster started for the session (sheepfast.testing.localsheep).

Without either, the "real" variants are skipped and say why.
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Optional

import pytest

import sheepfast
from sheepfast.backends import native_available, open_backend
from sheepfast.backends.dog import DogBackend
from sheepfast.testing import FakeSheep

REAL_CLUSTER_ENV = "SHEEPFAST_TEST_CLUSTER"
LOCAL_SHEEP_ENV = "SHEEPFAST_TEST_SHEEP"

NO_REAL_CLUSTER = (
    f"no real Sheepdog cluster: set {REAL_CLUSTER_ENV}=host:port, or "
    f"{LOCAL_SHEEP_ENV}=1 with sheep and dog on PATH"
)


@dataclass
class Target:
    """A cluster the tests can talk to."""

    kind: str  # "fake" or "real"
    address: str
    fake: Optional[FakeSheep] = None
    local: object = None  # LocalSheep when the session started one
    names: list = field(default_factory=list)

    @property
    def is_fake(self) -> bool:
        return self.fake is not None

    def dog_args(self) -> list[str]:
        """-a/-p for dog, aimed at the first gateway."""
        host, _, port = self.address.split(",")[0].rpartition(":")
        return ["-a", host.strip("[]"), "-p", port]


@pytest.fixture(scope="session")
def fake_sheep():
    with FakeSheep() as sheep:
        yield sheep


@pytest.fixture(scope="session")
def real_address():
    """Address of a real cluster, or None."""
    if os.environ.get(REAL_CLUSTER_ENV):
        yield os.environ[REAL_CLUSTER_ENV]
        return
    if os.environ.get(LOCAL_SHEEP_ENV) == "1":
        from sheepfast.testing.localsheep import LocalSheep, available

        if not available():
            pytest.fail(f"{LOCAL_SHEEP_ENV}=1 but sheep/dog are not on PATH")
        with LocalSheep(nodes=3, copies=2) as local:
            yield local.address
        return
    yield None


_counter = itertools.count()


@pytest.fixture(params=["fake", "real"])
def target(request, fake_sheep, real_address):
    if request.param == "fake":
        fake_sheep.clear_faults()
        t = Target("fake", fake_sheep.address, fake=fake_sheep)
    else:
        if real_address is None:
            pytest.skip(NO_REAL_CLUSTER)
        t = Target("real", real_address)
    yield t
    if t.is_fake:
        fake_sheep.clear_faults()
        # Nothing the client sent may be something that crashes a real sheep.
        assert fake_sheep.hazards == [], fake_sheep.hazards
    # Leave no VDI behind on a shared cluster: snapshots neither.
    if t.names:
        with sheepfast.connect(t.address) as cluster:
            for name in t.names:
                try:
                    cluster.delete(name)
                except sheepfast.VdiNotFound:
                    pass
            names = set(t.names)
            for info in cluster.list():
                if info.snapshot and info.name in names:
                    try:
                        cluster.delete(info.name, snapshot=info.snap_id)
                    except sheepfast.VdiNotFound:
                        pass


@pytest.fixture
def cluster(target):
    with sheepfast.connect(target.address, io_timeout=30.0) as c:
        yield c


@pytest.fixture
def new_name(target):
    """Returns a function giving a fresh VDI name that is deleted afterwards."""

    def make(prefix: str = "sf-test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}-{next(_counter)}"
        target.names.append(name)
        return name

    return make


@pytest.fixture
def dog(target):
    """Runs the real dog against the real target (skips elsewhere)."""
    import subprocess

    if target.is_fake:
        pytest.skip("dog interoperability needs a real cluster")
    if shutil.which("dog") is None:
        pytest.skip("dog is not on PATH")

    def run(*args: str, input: bytes | None = None) -> bytes:
        done = subprocess.run(
            ["dog", *args, *target.dog_args()], input=input, capture_output=True, timeout=120
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout

    return run


FAKEDOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakedog", "dog")


def dog_command(target) -> str:
    """The dog the CLI backend runs: the stand-in on FakeSheep, the real one
    on a real cluster (skipped without it)."""
    if target.is_fake:
        return FAKEDOG
    found = shutil.which("dog")
    if found is None:
        pytest.skip("dog is not on PATH (needed for the CLI backend on a real cluster)")
    return found


@pytest.fixture(params=["native", "cli"])
def backend(request, target):
    if request.param == "native":
        if not native_available():
            pytest.skip("the native extension is not built")
        be = open_backend(target.address, "native", io_timeout=30)
    else:
        be = DogBackend(target.address, dog_command=dog_command(target), timeout=60)
    yield be
    be.close()
