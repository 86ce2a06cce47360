"""The package as a registry and its users get it.

* the installed extension (tools/check_installed.py, the checks cibuildwheel
  runs on every wheel): one version, PyInit__native the only export, stripped,
  a round trip on FakeSheep;
* the sdist carries what its test suite needs (every tracked file but .ci/
  and .gitignore), nothing that .gitignore ignores, and metadata a registry
  accepts;
* the Python versions agree wherever they are written.
"""

from __future__ import annotations

import email.parser
import importlib.util
import shutil
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent

if sys.version_info >= (3, 11):
    import tomllib
else:  # mypy and build bring tomli on 3.10
    tomllib = pytest.importorskip("tomli")

#: tracked files that an sdist does not need
NOT_IN_SDIST = {".ci/run", ".gitignore"}
#: what the suite reads from the tree, checked even where git is absent
REQUIRED_IN_SDIST = [
    "README.md",
    "CHANGELOG.md",
    "LICENSE",
    "MANIFEST.in",
    "pyproject.toml",
    "setup.py",
    "src_c/Makefile",
    "src_c/sheepfast.h",
    "src_c/tests/test_main.c",
    "sheepfast/_native.pyx",
    "sheepfast/_native.pyi",
    "sheepfast/c_sheepfast.pxd",
    "sheepfast/py.typed",
    "tests/conftest.py",
    "tests/glance_support.py",
    "tests/fakedog/dog",
    "tests/glance_e2e/harness.py",
    "tests/glance_e2e/requirements.txt",
    "tests/glance_e2e/constraints.txt",
    "tests/vectors/README.txt",
    "examples/glance-api.conf",
    "examples/glance-api-paste.ini",
    "benchmarks/__main__.py",
    "tools/sanitize",
    "tools/check_installed.py",
]
#: run by the suite or by hand, so they keep their execute bits
EXECUTABLES = ["tests/fakedog/dog", "tools/sanitize", "tools/check_installed.py"]


def load_check_installed() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_installed", ROOT / "tools" / "check_installed.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CHECK_INSTALLED = load_check_installed()


@pytest.mark.parametrize("name", list(CHECK_INSTALLED.CHECKS))
def test_installed(name: str) -> None:
    try:
        problem = CHECK_INSTALLED.CHECKS[name]()
    except CHECK_INSTALLED.Skip as why:
        pytest.skip(str(why))
    assert problem is None, problem


def pyproject() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def build_requirements_met() -> bool:
    """Whether this interpreter has pyproject's build requirements, so the
    sdist can be built without a fresh isolated environment."""
    from packaging.requirements import Requirement

    for line in pyproject()["build-system"]["requires"]:
        requirement = Requirement(line)
        try:
            have = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(have, prereleases=True):
            return False
    return True


#: left out of the copy the sdist is built from: builds, caches, environments
NOT_COPIED = shutil.ignore_patterns(
    ".git", "*.egg-info", "build", "dist", ".venv", "__pycache__", "*.so", "*.o",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
)  # fmt: skip


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tarfile.TarFile]:
    """The sdist of a copy of the tree: setuptools also packs whatever an old
    sheepfast.egg-info/SOURCES.txt lists, which would hide a MANIFEST.in gap."""
    pytest.importorskip("build")
    tree = tmp_path_factory.mktemp("tree") / "sheepfast"
    shutil.copytree(ROOT, tree, ignore=NOT_COPIED, symlinks=True)
    out = tmp_path_factory.mktemp("sdist")
    argv = [sys.executable, "-m", "build", "--sdist", "--outdir", str(out)]
    if build_requirements_met():
        argv.append("--no-isolation")  # seconds instead of an install of setuptools and Cython
    done = subprocess.run(argv + [str(tree)], capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    (path,) = out.glob("*.tar.gz")
    with tarfile.open(path) as tar:
        yield tar


def members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """Files of the sdist by their path in the tree (the top directory cut off)."""
    return {m.name.split("/", 1)[1]: m for m in tar.getmembers() if m.isfile() and "/" in m.name}


def git_files() -> list[str] | None:
    if shutil.which("git") is None:
        return None
    done = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True
    )
    if done.returncode != 0:  # not a checkout (an unpacked sdist)
        return None
    return [f for f in done.stdout.split("\0") if f and (ROOT / f).exists()]


def test_sdist_has_what_the_suite_needs(sdist: tarfile.TarFile) -> None:
    files = members(sdist)
    required = set(REQUIRED_IN_SDIST)
    required |= {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("*.py")}
    required |= {str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "vectors").iterdir()}
    tracked = git_files()
    if tracked is not None:
        required |= set(tracked) - NOT_IN_SDIST
    absent = sorted(required - set(files))
    assert not absent, f"{len(absent)} files missing from the sdist (MANIFEST.in): {absent[:40]}"
    not_executable = [f for f in EXECUTABLES if not files[f].mode & 0o111]
    assert not not_executable, f"lost their execute bits in the sdist: {not_executable}"


def test_sdist_has_nothing_ignored(sdist: tarfile.TarFile) -> None:
    if git_files() is None:
        pytest.skip("not a git checkout: .gitignore cannot be asked")
    own_metadata = ("PKG-INFO", "setup.cfg", "sheepfast.egg-info/")
    names = [n for n in members(sdist) if not n.startswith(own_metadata)]
    done = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--no-index", "--stdin"],
        input="\n".join(names),
        capture_output=True,
        text=True,
    )
    ignored = done.stdout.split()
    assert not ignored, f"the sdist carries files .gitignore ignores (MANIFEST.in): {ignored[:40]}"


def sdist_metadata(sdist: tarfile.TarFile) -> email.message.Message:
    (info,) = [
        m for m in sdist.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")
    ]
    f = sdist.extractfile(info)
    assert f is not None
    return email.parser.Parser().parsestr(f.read().decode())


def test_sdist_metadata(sdist: tarfile.TarFile) -> None:
    meta = sdist_metadata(sdist)
    assert meta["Version"] == pyproject()["project"]["version"]
    classifiers = meta.get_all("Classifier") or []
    assert "Environment :: OpenStack" in classifiers
    try:
        from trove_classifiers import classifiers as known
    except ImportError:
        known = None
    if known is not None:  # a registry refuses an upload with an unknown one
        unknown = sorted(set(classifiers) - set(known))
        assert not unknown, f"classifiers PyPI does not know: {unknown}"
    assert meta["Keywords"] and meta.get_all("Project-URL")
    requires = meta.get_all("Requires-Dist") or []
    glance = [r for r in requires if r.endswith('extra == "glance"')]
    unbounded = [r for r in glance if ">=" not in r]
    assert len(glance) == 3 and not unbounded, f"the glance extra needs lower bounds: {glance}"
    assert 'sheepfast[glance]; extra == "test"' in requires, requires


def test_python_versions_agree() -> None:
    """Classifiers, requires-python, the wheels built and the lint targets name one range."""
    project = pyproject()
    prefix = "Programming Language :: Python :: "
    versions = [
        c[len(prefix) :] for c in project["project"]["classifiers"] if c.startswith(prefix + "3.")
    ]
    minors = sorted(int(v.split(".")[1]) for v in versions)
    assert minors == list(range(minors[0], minors[-1] + 1)), f"a gap in {versions}"
    oldest = f"3.{minors[0]}"
    assert project["project"]["requires-python"] == f">={oldest}"
    wheels = project["tool"]["cibuildwheel"]["build"]
    assert wheels == [f"cp3{m}-*" for m in minors], (wheels, versions)
    assert project["tool"]["mypy"]["python_version"] == oldest
    assert "target-version" not in project["tool"]["ruff"], "ruff takes it from requires-python"


def test_version_has_one_home() -> None:
    """pyproject.toml holds the version; nothing else writes it down."""
    version = pyproject()["project"]["version"]
    if metadata.version("sheepfast") != version:
        pytest.skip(f"the installed sheepfast is {metadata.version('sheepfast')}, not this tree's")
    literal = f'"{version}"'
    holders = [
        str(p.relative_to(ROOT))
        for p in [
            *ROOT.glob("sheepfast/**/*.py"),
            *ROOT.glob("sheepfast/*.py[xi]"),
            *ROOT.glob("src_c/*.[ch]"),
        ]
        if literal in p.read_text()
    ]
    assert not holders, f"{literal} is written in {holders}: read it from the metadata instead"
