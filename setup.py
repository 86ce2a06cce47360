"""Builds sheepfast._native from sheepfast/*.pyx and the C core in src_c/.

Extra compiler/linker flags come from SHEEPFAST_CFLAGS / SHEEPFAST_LDFLAGS,
so an instrumented build is one line (see tools/sanitize).
"""

import glob
import os
import shlex

from Cython.Build import cythonize
from setuptools import Extension, setup

c_sources = sorted(glob.glob("src_c/sf_*.c"))
extra_compile = ["-std=c99", "-D_GNU_SOURCE", "-fvisibility=hidden", "-Wall", "-Wextra"]
extra_compile += shlex.split(os.environ.get("SHEEPFAST_CFLAGS", ""))
extra_link = shlex.split(os.environ.get("SHEEPFAST_LDFLAGS", ""))

native = Extension(
    "sheepfast._native",
    sources=["sheepfast/_native.pyx"] + c_sources,
    include_dirs=["src_c"],
    depends=glob.glob("src_c/*.h") + ["sheepfast/c_sheepfast.pxd"],
    extra_compile_args=extra_compile,
    extra_link_args=extra_link + ["-pthread"],
)

setup(ext_modules=cythonize([native], compiler_directives={"language_level": "3"}))
