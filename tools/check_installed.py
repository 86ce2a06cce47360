#!/usr/bin/env python3
"""Quick checks of an installed sheepfast, as a registry user gets it.

    python tools/check_installed.py

cibuildwheel runs it on every wheel it builds (pyproject's test-command) and
tests/test_package.py runs each check against the installed package:

* versions: the distribution's metadata, sheepfast.__version__ and the C
  core's sf_version() are one version;
* exports: the extension's dynamic symbol table defines PyInit__native alone;
* stripped: the extension has no symbol table (release builds; a sanitizer
  build or SHEEPFAST_STRIP=0 keeps symbols and is reported, not failed);
* round trip: a VDI created, written, read back and deleted on FakeSheep.

Each check returns None when it passed or a string saying what is wrong; it
raises Skip when it cannot run here (nm missing). Exit status 1 if any failed.
Run it from outside the source tree, so that the installed package is imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata
from typing import Callable, Optional

DISTRIBUTION = "sheepfast"
INIT_SYMBOL = "PyInit__native"
#: runtimes a sanitizer build links against: such a build keeps its symbols
SANITIZER_RUNTIMES = ("libasan", "libubsan", "libtsan", "libmsan")


class Skip(Exception):
    """The check cannot run on this machine."""


def extension_path() -> str:
    import sheepfast._native

    path = sheepfast._native.__file__
    assert path is not None
    return path


def nm(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("nm")
    if tool is None:
        raise Skip("nm (binutils) is not installed")
    return subprocess.run([tool, *args], capture_output=True, text=True)


def check_versions() -> Optional[str]:
    import sheepfast
    import sheepfast._native

    found = {
        "distribution metadata": metadata.version(DISTRIBUTION),
        "sheepfast.__version__": sheepfast.__version__,
        "sheepfast._native.version() (the C core)": sheepfast._native.version(),
    }
    if len(set(found.values())) == 1:
        return None
    return "versions differ: " + ", ".join(f"{k} {v!r}" for k, v in found.items())


def check_exports() -> Optional[str]:
    path = extension_path()
    done = nm("-D", "--defined-only", path)
    if done.returncode != 0:
        return f"nm -D --defined-only {path} failed: {done.stderr.strip()}"
    # lines are "value type name"; versioned libraries may add "@VERSION"
    names = sorted({line.split()[-1] for line in done.stdout.splitlines() if line.strip()})
    if names == [INIT_SYMBOL]:
        return None
    extra = [n for n in names if n != INIT_SYMBOL]
    return f"{path} exports {len(extra)} symbols besides {INIT_SYMBOL}: {', '.join(extra[:30])}"


def symbols_kept_on_purpose(path: str) -> Optional[str]:
    """Why this build keeps its symbols, or None for a release build."""
    if os.environ.get("SHEEPFAST_STRIP") == "0":
        return "SHEEPFAST_STRIP=0 is set"
    ldd = shutil.which("ldd")
    if ldd is not None:
        linked = subprocess.run([ldd, path], capture_output=True, text=True).stdout
        if any(runtime in linked for runtime in SANITIZER_RUNTIMES):
            return "a sanitizer build"
    return None


def check_stripped() -> Optional[str]:
    path = extension_path()
    done = nm(path)
    # GNU nm says "no symbols" (exit 0 or 1 by version) for a stripped file
    if "no symbols" in done.stderr:
        return None
    if done.returncode != 0:
        return f"nm {path} failed: {done.stderr.strip()}"
    why = symbols_kept_on_purpose(path)
    if why is not None:
        raise Skip(f"symbols kept: {why}")
    count = len(done.stdout.splitlines())
    return (
        f"{path} is not stripped ({count} symbols): rebuild it, setup.py links with -s "
        "unless SHEEPFAST_STRIP=0 or SHEEPFAST_CFLAGS asks for a sanitizer"
    )


def check_round_trip() -> Optional[str]:
    import sheepfast
    from sheepfast.testing import FakeSheep

    data = os.urandom(1 << 20)
    offset = (4 << 20) - 4096  # across the first object boundary
    with FakeSheep() as sheep, sheepfast.connect(sheep.address) as cluster:
        cluster.create("check-installed", 16 << 20)
        try:
            with cluster.open("check-installed") as vdi:
                vdi.write(data, offset)
                back = vdi.read(offset, len(data))
        finally:
            cluster.delete("check-installed")
        left = [v.name for v in cluster.list()]
    if back != data:
        return f"read back {len(back)} bytes that differ from the {len(data)} written"
    if left:
        return f"VDIs left after the delete: {left}"
    return None


CHECKS: dict[str, Callable[[], Optional[str]]] = {
    "versions": check_versions,
    "exports": check_exports,
    "stripped": check_stripped,
    "round trip": check_round_trip,
}


def main() -> int:
    outcomes = {"ok": 0, "FAIL": 0, "skip": 0}
    for name, check in CHECKS.items():
        try:
            problem = check()
        except Skip as why:
            outcome, detail = "skip", f": {why}"
        else:
            outcome, detail = ("ok", "") if problem is None else ("FAIL", f": {problem}")
        outcomes[outcome] += 1
        print(f"{outcome:5} {name}{detail}")
    print(f"{outcomes['ok']} passed, {outcomes['FAIL']} failed, {outcomes['skip']} skipped")
    return 1 if outcomes["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
