"""Lint and format checks: ruff over the Python, clang-format over the C core,
mypy --strict over the package (sheepfast/_native.pyi stands for the .pyx).

Configuration: pyproject.toml ([tool.ruff], [tool.mypy]) and .clang-format.
A check is skipped only when its tool is missing and SHEEPFAST_REQUIRE_LINT
is not set; .ci/run sets it, so there a missing tool fails. Install the tools
with the test extra: pip install '.[test]'.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON_DIRS = ["sheepfast", "tests", "benchmarks", "examples", "tools"]
C_FILES = sorted(
    glob.glob(os.path.join(ROOT, "src_c", "*.[ch]"))
    + glob.glob(os.path.join(ROOT, "src_c", "tests", "*.[ch]"))
)
REQUIRE_ENV = "SHEEPFAST_REQUIRE_LINT"
#: lines of a tool's report quoted in a failure (the counts come first)
QUOTED_LINES = 60


class LintErrors(AssertionError):
    """The tool ran and found problems (a crash or a missing tool is no such thing)."""


def missing(tool: str) -> None:
    message = f"{tool} is not installed (pip install '.[test]')"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {message}", pytrace=False)
    pytest.skip(message)


def python_tool(module: str) -> list[str]:
    """`python -m module` with this interpreter, so the venv's copy is used."""
    if importlib.util.find_spec(module) is None:
        missing(module)
    return [sys.executable, "-m", module]


def program(name: str) -> list[str]:
    """A console script: this interpreter's scripts directory first (a venv
    run as .venv/bin/pytest is not on PATH), then PATH."""
    here = os.path.join(sysconfig.get_path("scripts"), name)
    found = here if os.access(here, os.X_OK) else shutil.which(name)
    if found is None:
        missing(name)
    return [str(found)]


def run(argv: list[str], clean: int = 0, found: int = 1) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if done.returncode not in (clean, found):
        pytest.fail(
            f"{' '.join(argv)} exited {done.returncode} (not a lint verdict):\n"
            f"{done.stdout[-4000:]}{done.stderr[-4000:]}",
            pytrace=False,
        )
    return done


def report(what: str, summary: str, text: str) -> LintErrors:
    lines = text.splitlines()
    quoted = "\n".join(lines[:QUOTED_LINES])
    more = f"\n... {len(lines) - QUOTED_LINES} more lines" if len(lines) > QUOTED_LINES else ""
    return LintErrors(f"{what}: {summary}\n{quoted}{more}")


def existing(paths: list[str]) -> list[str]:
    return [p for p in paths if os.path.exists(os.path.join(ROOT, p))]


def test_ruff_check() -> None:
    ruff = python_tool("ruff")
    done = run(ruff + ["check", "--no-cache", "--output-format", "concise", *existing(PYTHON_DIRS)])
    if done.returncode:
        stats = run(ruff + ["check", "--no-cache", "--statistics", *existing(PYTHON_DIRS)])
        raise report("ruff check", stats.stdout.strip(), done.stdout)


def test_ruff_format() -> None:
    ruff = python_tool("ruff")
    argv = ["format", "--check", "--no-cache", "--output-format", "concise"]
    done = run(ruff + argv + existing(PYTHON_DIRS))
    if done.returncode:
        files = [line for line in done.stdout.splitlines() if "would be reformatted" in line]
        raise report("ruff format --check", f"{len(files)} files to reformat", "\n".join(files))


def clang_format_config() -> str | None:
    for where in ("src_c", "."):
        path = os.path.join(ROOT, where, ".clang-format")
        if os.path.isfile(path):
            return path
    return None


def test_clang_format() -> None:
    clang_format = program("clang-format")
    assert C_FILES, f"no C sources under {os.path.join(ROOT, 'src_c')}"
    if clang_format_config() is None:
        # without one clang-format silently formats in LLVM's style
        raise LintErrors("no .clang-format in src_c/ or the top directory")
    done = run(clang_format + ["--dry-run", "--Werror", "--style=file", *C_FILES])
    if done.returncode:
        errors = [line for line in done.stderr.splitlines() if ": error: " in line]
        per_file: dict[str, int] = {}
        for line in errors:
            name = os.path.relpath(line.split(":", 1)[0], ROOT)
            per_file[name] = per_file.get(name, 0) + 1
        counts = ", ".join(f"{name} {n}" for name, n in sorted(per_file.items()))
        raise report("clang-format", f"{len(errors)} places in {counts}", "\n".join(errors))


def test_mypy_strict() -> None:
    mypy = python_tool("mypy")
    # the package as [tool.mypy] names it; --strict so the test holds even if
    # the configuration were loosened
    done = run(mypy + ["--strict", "--no-incremental"])
    if done.returncode:
        lines = done.stdout.strip().splitlines()
        raise report("mypy --strict", lines[-1] if lines else "", done.stdout)
