"""setuptools hook: what pyproject.toml cannot say.

- `cffi_modules`: the extension is built by `build_ffi.py`.
- The wheel is tagged ``cp311-abi3``: cffi builds ``_native.abi3.so`` against the stable
  ABI, so one wheel serves every CPython from 3.11 on.
- `build_ext` refuses, with one line saying what to install, when no C compiler is found,
  and drops the run-time library path some Pythons (pyenv, conda) put into every
  extension's link line, so an installed ``tet`` never points into the build machine.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext


def _no_rpath(command: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in command:
        if skip:
            skip = False
            continue
        if arg in ("-rpath", "-R"):
            skip = True
            continue
        if arg.startswith(("-Wl,-rpath", "-Wl,-R", "-Wl,--enable-new-dtags")):
            continue
        out.append(arg)
    return out


class BuildExt(build_ext):
    def build_extensions(self) -> None:
        compiler: Any = self.compiler
        cc = getattr(compiler, "compiler_so", None)
        if cc and shutil.which(cc[0]) is None:
            sys.exit(f"tet build: no C compiler found ({cc[0]!r} is not on PATH); install "
                     "one (Debian/Ubuntu: apt install gcc; Fedora: dnf install gcc; macOS: "
                     "xcode-select --install) or install a prebuilt tet wheel")
        if getattr(compiler, "linker_so", None):
            compiler.linker_so = _no_rpath(list(compiler.linker_so))
        super().build_extensions()


setup(cffi_modules=["build_ffi.py:ffibuilder"], cmdclass={"build_ext": BuildExt},
      options={"bdist_wheel": {"py_limited_api": "cp311"}})
