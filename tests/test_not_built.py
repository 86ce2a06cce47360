"""The package without its extension (a source checkout nobody built):
it says so, and how to build it, instead of falling back in silence."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import sheepfast

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.dirname(sheepfast.__file__)

# Run before the test's code: sheepfast._native cannot be imported.
HIDE = textwrap.dedent(
    """
    import sys

    class Hide:
        def find_spec(self, name, path=None, target=None):
            if name == "sheepfast._native":
                raise ImportError("hidden by the test")

    sys.meta_path.insert(0, Hide())
    """
)


def _run(code: str, path: str, cwd: str = HERE) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=path)
    env.pop("SHEEPFAST_BACKEND", None)
    return subprocess.run(
        [sys.executable, "-c", HIDE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )


@pytest.fixture
def dog_path(tmp_path):
    """A PATH whose only dog lists no VDIs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dog = bin_dir / "dog"
    dog.write_text("#!/bin/sh\nexit 0\n")
    dog.chmod(0o755)
    return f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"


def test_cluster_stays_a_class_and_says_how_to_build(dog_path):
    done = _run(
        """
        import sheepfast
        assert isinstance(sheepfast.Cluster, type) and isinstance(sheepfast.Vdi, type)
        assert not isinstance(object(), sheepfast.Cluster)
        try:
            sheepfast.connect("127.0.0.1:1")
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("connect() worked without the extension")
        """,
        dog_path,
    )
    assert done.returncode == 0, done.stderr
    said = done.stdout
    assert "not built" in said and "pip install" in said and "hidden by the test" in said
    assert "setup.py" not in said, "not the deprecated setup.py build_ext"


def test_auto_falls_back_to_dog_with_one_warning(dog_path):
    done = _run(
        """
        import warnings
        from sheepfast.backends import open_backend
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                assert open_backend("127.0.0.1:1").kind == "cli"
        assert len(caught) == 1, [str(w.message) for w in caught]
        print(caught[0].message)
        """,
        dog_path,
    )
    assert done.returncode == 0, done.stderr
    assert "not built" in done.stdout and "pip install" in done.stdout
    assert "SHEEPFAST_BACKEND=cli" in done.stdout


def test_without_dog_either_the_error_says_both_and_not_the_path(tmp_path):
    path = os.pathsep.join([str(tmp_path / f"nothing-here-{i}") for i in range(3)])
    done = _run(
        """
        from sheepfast import errors
        from sheepfast.backends import open_backend
        try:
            open_backend("127.0.0.1:1")
        except errors.InvalidArgument as exc:
            print(exc)
        """,
        path,
    )
    assert done.returncode == 0, done.stderr
    said = done.stdout
    assert "not built" in said and "pip install" in said and "'dog'" in said
    assert "nothing-here" not in said, "the error does not print PATH"


def test_native_asked_for_but_not_built(dog_path):
    done = _run(
        """
        from sheepfast import errors
        from sheepfast.backends import open_backend
        try:
            open_backend("127.0.0.1:1", "native")
        except errors.InvalidArgument as exc:
            print(exc)
        """,
        dog_path,
    )
    assert done.returncode == 0, done.stderr
    assert "native backend was asked for" in done.stdout and "pip install" in done.stdout


def test_python_m_sheepfast_from_an_unbuilt_source_tree(tmp_path, dog_path):
    """The day-one trip: `python -m sheepfast ls` in a fresh checkout (-S:
    without site-packages, where an editable install's finder would bring
    in the built extension of this tree)."""
    checkout = tmp_path / "checkout"
    shutil.copytree(
        PACKAGE,
        checkout / "sheepfast",
        ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "*.c"),
    )
    env = dict(os.environ, PATH=dog_path)
    env.pop("SHEEPFAST_BACKEND", None)
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-S", "-m", "sheepfast", "--cluster", "127.0.0.1:1", "ls"],
        capture_output=True,
        text=True,
        cwd=checkout,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # said once, by the command (which picks the backend itself), not in silence
    assert done.stderr.count("not built") == 1, done.stderr
    assert "dog" in done.stderr
