"""Builds abi's Cython kernels (OpenMP, -O3, -march=native when the compiler takes it)."""
import glob
import os
import subprocess
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup


def _compiler_accepts(flag: str) -> bool:
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as fh:
            fh.write("int main(void) { return 0; }\n")
        try:
            return subprocess.run([cc, flag, src, "-o", os.path.join(tmp, "probe")],
                                  capture_output=True).returncode == 0
        except OSError:
            return False


def _flags():
    compile_args = ["-O3", "-ffast-math" if os.environ.get("ABI_FAST_MATH") else "-fno-math-errno"]
    link_args = []
    # ABI_PORTABLE=1 builds for any x86-64 / aarch64 (e.g. when building a wheel to ship)
    if not os.environ.get("ABI_PORTABLE") and _compiler_accepts("-march=native"):
        compile_args.append("-march=native")
    if sys.platform != "darwin" and _compiler_accepts("-fopenmp"):
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
    return compile_args, link_args


def _extensions():
    compile_args, link_args = _flags()
    exts = []
    for pyx in sorted(glob.glob("abi/**/*.pyx", recursive=True)):
        name = pyx[:-4].replace(os.sep, ".")
        exts.append(Extension(
            name, [pyx], include_dirs=[numpy.get_include(), os.path.dirname(pyx)],   # + iq_tables.h
            extra_compile_args=compile_args, extra_link_args=link_args,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        ))
    return cythonize(exts, language_level=3, compiler_directives={
        "boundscheck": False, "wraparound": False, "cdivision": True,
        "initializedcheck": False, "nonecheck": False,
    })


setup(ext_modules=_extensions())
