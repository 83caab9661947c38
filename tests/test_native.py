"""The C extension against the Python side: how it is built, and the facts both restate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tet import dtypes, kernels, layout
from tet.kernels import ffi, lib
from tet.writer import CODECS

REPO = Path(__file__).resolve().parents[1]


def _build_settings(env: dict[str, str]) -> dict[str, list[str]]:
    code = ("import json, build_ffi; "
            "print(json.dumps({'sources': build_ffi.SOURCES, 'warnings': build_ffi.WARNINGS}))")
    clean = {k: v for k, v in os.environ.items() if k != "TET_WERROR"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=True)
    out: dict[str, list[str]] = json.loads(proc.stdout)
    return out


def test_users_installs_do_not_fail_on_warnings_but_make_builds_do() -> None:
    assert _build_settings({})["warnings"] == ["-Wall", "-Wextra"]
    assert _build_settings({"TET_WERROR": "0"})["warnings"] == ["-Wall", "-Wextra"]
    assert _build_settings({"TET_WERROR": "1"})["warnings"] == ["-Wall", "-Wextra", "-Werror"]
    assert "export TET_WERROR := 1" in (REPO / "Makefile").read_text().splitlines()


def test_every_c_file_is_compiled() -> None:
    on_disk = sorted(p.name for p in (REPO / "csrc").glob("*.c"))
    assert _build_settings({})["sources"] == on_disk
    assert "dispatch.c" in on_disk and "fold.c" in on_disk


def test_simd_names_are_the_c_enum_members() -> None:
    members = ffi.typeof("tet_simd").elements
    assert members == {0: "TET_SIMD_SCALAR", 1: "TET_SIMD_AVX2", 2: "TET_SIMD_NEON"}
    assert kernels.simd_levels()[0] == "scalar"
    assert set(kernels.simd_levels()) <= {"scalar", "avx2", "neon"}
    with kernels.using_simd("scalar"):
        assert kernels.simd_level() == "scalar"


def test_dead_exports_are_gone() -> None:
    assert not hasattr(lib, "tet_simd_name")
    assert not hasattr(lib, "tet_zstd_version")


def _members(ctype: str, prefix: str) -> dict[str, int]:
    """An enum of the C API as {member name without its prefix: value}."""
    elements: dict[int, str] = ffi.typeof(ctype).elements
    assert len(elements) == len(set(elements.values()))  # no two members share a value
    return {name.removeprefix(prefix): value for value, name in elements.items()}


def test_dtype_tags_are_the_same_in_c_and_python() -> None:
    assert _members("tet_dtype", "TET_DTYPE_") == {d.name.upper(): d.tag for d in dtypes.DTYPES}
    assert sorted(d.tag for d in dtypes.DTYPES) == list(range(1, len(dtypes.DTYPES) + 1))


def test_codec_tags_are_the_same_in_c_and_python() -> None:
    assert _members("tet_codec", "TET_CODEC_") == {n.upper(): t for n, t in CODECS.items()}
    assert CODECS == {"raw": 0, "zstd": 1}
    assert kernels.TileTable.MISSING == 0xFFFFFFFF
    assert kernels.TileTable.MISSING not in CODECS.values()


def test_max_ndim_is_the_same_in_c_and_python() -> None:
    assert lib.TET_MAX_NDIM == layout.MAX_NDIM == 8
    box = ffi.new("tet_box *")
    assert len(box.start) == len(box.stop) == len(box.step) == layout.MAX_NDIM
    assert len(ffi.new("tet_transform_spec *").shape) == layout.MAX_NDIM
    assert layout.ENTRY_DTYPE["chunk_index"].shape == (layout.MAX_NDIM,)


def test_fixed_capacities_come_from_the_c_constants() -> None:
    assert len(ffi.new("tet_transform_spec *").bad) == lib.TET_TX_MAX_BAD == 256
    mask = ffi.new("tet_mask *")
    assert len(mask.value) == len(mask.bits) == kernels.MASK_MAX == lib.TET_MASK_MAX == 64
    assert kernels.MAX_THREADS == lib.TET_MAX_THREADS == 64
    assert kernels.NO_INDEX == lib.TET_NO_INDEX == 2**64 - 1
