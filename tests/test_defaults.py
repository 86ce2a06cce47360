"""sheepfast.defaults: one home for defaults and limits, the C client's
where C has them, and both backends drawing the same lines."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from sheepfast import defaults, errors
from sheepfast.backends import native_available
from sheepfast.backends.dog import DogBackend
from sheepfast.types import VdiInfo

MiB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))

needs_native = pytest.mark.skipif(not native_available(), reason="the extension is not built")


@needs_native
@pytest.mark.parametrize("name", sorted(defaults.FROM_C))
def test_each_fallback_literal_is_the_extensions_value(name):
    from sheepfast import _native

    if not hasattr(_native, name):
        pytest.skip(f"sheepfast._native does not export {name} (yet)")
    assert getattr(_native, name) == defaults.FROM_C[name]
    assert getattr(defaults, name) == getattr(_native, name)


def test_without_the_extension_the_literals_are_used():
    """defaults imports, with the same values, where the extension is not built."""
    code = textwrap.dedent(
        """
        import sys

        class Hide:
            def find_spec(self, name, path=None, target=None):
                if name == "sheepfast._native":
                    raise ImportError("hidden by the test")

        sys.meta_path.insert(0, Hide())
        from sheepfast import defaults
        assert defaults._native is None
        for name, value in defaults.FROM_C.items():
            assert getattr(defaults, name) == value, name
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_defaults_are_what_the_docs_say():
    # what README, the glance options' help and dog's own defaults promise
    assert (defaults.DEFAULT_PORT, defaults.DEFAULT_CLUSTER) == (7000, "127.0.0.1:7000")
    assert (defaults.DEFAULT_CONNECT_TIMEOUT, defaults.DEFAULT_IO_TIMEOUT) == (10.0, 60.0)
    assert defaults.DEFAULT_DEPTH == 16 and defaults.MAX_DEPTH == 256
    assert 1 << defaults.DEFAULT_BLOCK_SIZE_SHIFT == 4 * MiB
    assert defaults.DEFAULT_REQUEST_SIZE % 4096 == 0 and defaults.DEFAULT_REQUEST_SIZE < 512 << 10


def test_the_glance_options_take_their_defaults_from_here():
    pytest.importorskip("glance_store")
    from sheepfast import glance

    opts = {opt.name: opt for opt in glance.OPTIONS}
    assert opts["sheepdog_store_port"].default == defaults.DEFAULT_PORT
    assert opts["sheepdog_store_address"].default == defaults.DEFAULT_HOST
    assert opts["sheepdog_store_connect_timeout"].default == defaults.DEFAULT_CONNECT_TIMEOUT
    assert opts["sheepdog_store_io_timeout"].default == defaults.DEFAULT_IO_TIMEOUT
    assert opts["sheepdog_store_io_depth"].default == defaults.DEFAULT_DEPTH
    assert opts["sheepdog_store_io_depth"].type.max == defaults.MAX_DEPTH
    assert opts["sheepdog_store_copies"].type.max == defaults.MAX_COPIES
    assert opts["sheepdog_store_chunk_size"].default << 20 == defaults.DEFAULT_CHUNK_SIZE
    sizes = [size for size, _ in opts["sheepdog_store_object_size"].type.choices.items()]
    shifts = range(defaults.MIN_BLOCK_SIZE_SHIFT, defaults.MAX_BLOCK_SIZE_SHIFT + 1)
    assert sizes == [0] + [1 << (s - 20) for s in shifts]


# ------------------------------------------------------------ the backends agree


@pytest.fixture
def dog_log(tmp_path):
    """A dog that succeeds at everything and logs its arguments."""
    log = tmp_path / "args"
    script = tmp_path / "dog"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit 0\n')
    script.chmod(0o755)
    return str(script), log


def _limits():
    name_max, copies = defaults.NAME_MAX, defaults.MAX_COPIES
    low, high = defaults.MIN_BLOCK_SIZE_SHIFT, defaults.MAX_BLOCK_SIZE_SHIFT
    # (create arguments at the limit, just past it)
    return [
        (("x" * name_max, {}), ("x" * (name_max + 1), {})),
        (("c", {"copies": copies}), ("c", {"copies": copies + 1})),
        (("z", {"block_size_shift": low}), ("z", {"block_size_shift": low - 1})),
        (("z", {"block_size_shift": high}), ("z", {"block_size_shift": high + 1})),
    ]


@pytest.mark.parametrize("at_limit, past_limit", _limits())
def test_the_dog_backend_draws_the_lines_of_defaults(dog_log, at_limit, past_limit):
    command, log = dog_log
    backend = DogBackend("127.0.0.1:1", dog_command=command)
    name, options = at_limit
    backend.create(name, MiB, **options)  # passed on to dog
    assert name in log.read_text()
    name, options = past_limit
    log.write_text("")
    with pytest.raises(errors.InvalidArgument):
        backend.create(name, MiB, **options)
    assert log.read_text() == "", "refused before dog runs"


@needs_native
@pytest.mark.parametrize("at_limit, past_limit", _limits())
def test_the_native_backend_draws_the_same_lines(at_limit, past_limit):
    from sheepfast.backends import open_backend
    from sheepfast.testing import FakeSheep

    with FakeSheep() as sheep, open_backend(sheep.address, "native") as backend:
        name, options = at_limit
        backend.create(name, MiB, **options)
        assert backend.exists(name)
        name, options = past_limit
        with pytest.raises(errors.InvalidArgument):
            backend.create(name, MiB, **options)


def test_the_dog_backend_refuses_attributes_past_the_limits(dog_log):
    command, log = dog_log
    backend = DogBackend("127.0.0.1:1", dog_command=command)
    info = VdiInfo("a", 1, MiB, defaults.DEFAULT_BLOCK_SIZE_SHIFT, 1, 0, 0, 0, "", 0, 0.0, False)
    with backend.open_listed(info) as image:
        image.metadata_set("k" * defaults.ATTR_KEY_MAX, "v" * 10)
        with pytest.raises(errors.InvalidArgument, match=str(defaults.ATTR_KEY_MAX)):
            image.metadata_set("k" * (defaults.ATTR_KEY_MAX + 1), "v")
        with pytest.raises(errors.InvalidArgument, match=str(defaults.ATTR_VALUE_MAX)):
            image.metadata_set("k", "v" * (defaults.ATTR_VALUE_MAX + 1))
