"""Builds sheepfast._native from sheepfast/*.pyx and the C core in src_c/.

All metadata, the version included, lives in pyproject.toml; the C core gets
the version as SF_VERSION_STRING from here (src_c/Makefile passes it for the
C unit tests).

Environment:
  SHEEPFAST_CFLAGS / SHEEPFAST_LDFLAGS  extra compiler / linker flags, so an
      instrumented build is one line (see tools/sanitize)
  SHEEPFAST_STRIP=0|1  strip the extension at link time; default 1, but 0
      when SHEEPFAST_CFLAGS asks for a sanitizer (its reports need symbols)

On Linux the extension exports PyInit__native alone: the C core's public
functions carry visibility("default") for C users of sheepfast.h, and a
linker version script keeps them out of the module's dynamic symbol table.
"""

import glob
import os
import shlex
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODULE = "sheepfast._native"

extra_compile = ["-std=c99", "-D_GNU_SOURCE", "-fvisibility=hidden", "-Wall", "-Wextra"]
extra_compile += shlex.split(os.environ.get("SHEEPFAST_CFLAGS", ""))
extra_link = shlex.split(os.environ.get("SHEEPFAST_LDFLAGS", ""))


def strip_wanted() -> bool:
    setting = os.environ.get("SHEEPFAST_STRIP")
    if setting is None:
        return not any(flag.startswith("-fsanitize") for flag in extra_compile)
    if setting not in ("0", "1"):
        sys.exit(f"setup.py: SHEEPFAST_STRIP must be 0 or 1, not {setting!r}")
    return setting == "1"


class BuildNative(build_ext):
    """Passes the package version to C and limits the exported symbols."""

    def build_extension(self, ext: Extension) -> None:
        version = self.distribution.get_version()
        ext.define_macros.append(("SF_VERSION_STRING", f'"{version}"'))
        if sys.platform.startswith("linux"):
            os.makedirs(self.build_temp, exist_ok=True)
            script = os.path.join(self.build_temp, "_native.exports")
            init = "PyInit_" + ext.name.rpartition(".")[2]
            with open(script, "w") as f:
                f.write(f"{{ global: {init}; local: *; }};\n")
            ext.extra_link_args.append("-Wl,--version-script=" + script)
        super().build_extension(ext)


native = Extension(
    MODULE,
    sources=["sheepfast/_native.pyx"] + sorted(glob.glob("src_c/sf_*.c")),
    include_dirs=["src_c"],
    depends=glob.glob("src_c/*.h") + ["sheepfast/c_sheepfast.pxd", "pyproject.toml"],
    extra_compile_args=extra_compile,
    extra_link_args=extra_link + ["-pthread"] + (["-s"] if strip_wanted() else []),
)

setup(
    ext_modules=cythonize([native], compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildNative},
)
