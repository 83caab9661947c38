"""CFFI builder: compiles ``csrc/`` into ``tet._native`` (API mode, out of line).

zstd comes from the system runtime library ``libzstd.so.1``.  When its header
or its development symlink is missing (a fresh Debian machine has neither),
the build declares the functions itself and links the runtime file by name,
so it never needs root or a package manager.

Warnings never fail a user's install: ``-Werror`` is added only when ``TET_WERROR=1``
(the Makefile sets it, so ``make build``, ``make test`` and CI builds stay strict).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
CSRC = HERE / "csrc"
# Every C file of csrc/ is one translation unit of the extension (`make cwarn` compiles the
# same set), so adding or splitting a file needs no list to be kept in step.
SOURCES = sorted(p.name for p in CSRC.glob("*.c"))
WARNINGS = ["-Wall", "-Wextra", *(["-Werror"] if os.environ.get("TET_WERROR") == "1" else [])]


def _cdef_text() -> str:
    text = (CSRC / "tet.h").read_text()
    return text.split("/* cdef-begin */", 1)[1].split("/* cdef-end */", 1)[0]


def _include_dirs() -> list[str]:
    dirs = [d for d in os.environ.get("CPATH", "").split(os.pathsep) if d]
    return [*dirs, "/usr/local/include", "/usr/include"]


def _library_dirs() -> list[str]:
    machine = platform.machine()
    return [
        f"/usr/lib/{machine}-linux-gnu",
        f"/lib/{machine}-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
        "/opt/homebrew/lib",
    ]


def _zstd_flags() -> tuple[list[str], list[str], list[str]]:
    """(defines, libraries, extra link args) for the zstd we can find."""
    has_header = any((Path(d) / "zstd.h").exists() for d in _include_dirs())
    defines = [] if has_header else ["-DTET_NO_ZSTD_H"]
    for d in _library_dirs():
        if (Path(d) / "libzstd.so").exists() or (Path(d) / "libzstd.dylib").exists():
            return defines, ["zstd"], []
    for d in _library_dirs():
        if (Path(d) / "libzstd.so.1").exists():
            return defines, [], ["-l:libzstd.so.1", f"-L{d}"]
    sys.exit("tet build: libzstd.so.1 (the zstd runtime library) was not found")


def make_builder(*, absolute: bool = False, extra_compile: list[str] | None = None,
                 extra_link: list[str] | None = None) -> FFI:
    """The builder; setuptools wants paths relative to the project, a direct
    `python build_ffi.py` (which compiles in build/cffi) wants absolute ones.
    `extra_compile` / `extra_link` add flags (tools/build_asan.py: sanitizers)."""
    where = (lambda p: str(p)) if absolute else os.path.relpath
    defines, libraries, link_args = _zstd_flags()
    ffi = FFI()
    ffi.cdef(_cdef_text())
    ffi.set_source(
        "tet._native",
        '#include "tet.h"',
        sources=[where(CSRC / s) for s in SOURCES],
        include_dirs=[where(CSRC)],
        libraries=[*libraries, "pthread", "m"],
        extra_compile_args=["-std=c99", "-O3", "-pthread", *WARNINGS, *defines,
                            *(extra_compile or [])],
        extra_link_args=["-pthread", *link_args, *(extra_link or [])],
    )
    return ffi


ffibuilder = make_builder()

if __name__ == "__main__":  # an in-place build without pip: tet/_native*.so
    built = make_builder(absolute=True).compile(tmpdir=str(HERE / "build" / "cffi"))
    target = HERE / "tet" / Path(built).name
    target.write_bytes(Path(built).read_bytes())
    print(f"built {target.relative_to(HERE)}")
