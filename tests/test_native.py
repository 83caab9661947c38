"""The C extension against the Python side: how it is built, and the facts both restate."""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tet import dtypes, kernels, layout, native, simd
from tet.native import ffi, lib
from tet.writer import CODECS

REPO = Path(__file__).resolve().parents[1]
# `make asan` preloads the ASan runtime, whose shadow memory cannot live under RLIMIT_AS
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


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
    assert simd.simd_levels()[0] == "scalar"
    assert set(simd.simd_levels()) <= {"scalar", "avx2", "neon"}
    with simd.using_simd("scalar"):
        assert simd.simd_level() == "scalar"


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


# A worker thread that cannot be started.  The child gets a 1 GiB RLIMIT_STACK (glibc
# gives every new thread a stack of that size), sets up on the calling thread alone (no
# stack of a joined thread lingers), then takes an address space limit that leaves room
# for `room` such stacks, so pthread_create fails with EAGAIN at once (room 0) or once
# one worker is already running (room 1); every call below wants 4 threads.  Python's
# own threads (the writer's I/O thread) get small stacks and keep starting.
_THREAD_CHILD = """
import json, os, resource, sys, threading
import numpy as np
import tet
from tet import kernels, kernels_integrity

threading.stack_size(1 << 20)

def vm():
    with open("/proc/self/status") as fh:
        return next(int(x.split()[1]) * 1024 for x in fh if x.startswith("VmSize:"))

path, room, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.environ["TET_THREADS"] = "1"
a = np.arange(2048 * 1024, dtype=np.float32).reshape(2048, 1024)  # 8 MiB: a threaded read
tet.write_dataset(path, "x", a, chunk_shape=(256, 1024))
f = tet.open(path)
data = np.frombuffer(open(path, "rb").read(), np.uint8)
cases = {
    "read": lambda: f.read_numpy("x"),
    "fold": lambda: f.mean("x"),
    "encode": lambda: kernels.encode(a, np.array([[0, 0], [512, 0], [1024, 0], [1536, 0]]),
                                     np.array([[512, 1024]] * 4), codec=0, level=0),
    "write": lambda: tet.write_dataset(path + ".2", "x", a, chunk_shape=(256, 1024)),
    "spans": lambda: kernels_integrity.crc32c_spans(data, len(data),
                                                    np.arange(8, dtype=np.uint64) * 64,
                                                    np.full(8, 64, np.uint64)),
}
resource.setrlimit(resource.RLIMIT_AS, (vm() + room * (1 << 30) + (512 << 20),) * 2)
os.environ["TET_THREADS"] = threads
out = {}
for name, fn in cases.items():
    try:
        fn()
        out[name] = "ok"
    except Exception as exc:
        out[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def _thread_child(tmp_path: Path, room: int, threads: str) -> dict[str, str]:
    def big_stacks() -> None:
        resource.setrlimit(resource.RLIMIT_STACK, (1 << 30, _HARD_STACK))

    args = [str(tmp_path / "t.tet"), str(room), threads]
    proc = subprocess.run([sys.executable, "-c", _THREAD_CHILD, *args], preexec_fn=big_stacks,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, str] = json.loads(proc.stdout.splitlines()[-1])
    return out


_HARD_STACK = resource.getrlimit(resource.RLIMIT_STACK)[1]
NO_THREAD = (f"could not start a worker thread: {os.strerror(errno.EAGAIN)} "
             f"(errno {errno.EAGAIN}); TET_THREADS=1 runs on the calling thread alone")


@pytest.mark.skipif(UNDER_ASAN, reason="RLIMIT_AS cannot be applied under ASan (make asan)")
@pytest.mark.skipif(not Path("/proc/self/status").exists() or sys.platform != "linux",
                    reason="glibc thread stacks sized by RLIMIT_STACK and /proc: Linux only")
@pytest.mark.skipif(_HARD_STACK != resource.RLIM_INFINITY and _HARD_STACK < 1 << 30,
                    reason="the hard RLIMIT_STACK is below the 1 GiB this test needs")
@pytest.mark.parametrize("room", [0, 1])
def test_a_worker_thread_that_cannot_start_fails_the_call(tmp_path: Path, room: int) -> None:
    out = _thread_child(tmp_path, room, "4")
    assert out == {
        "read": f"TetError: read failed: {NO_THREAD}",
        "fold": f"TetError: read failed: {NO_THREAD}",
        "encode": f"TetError: write failed: {NO_THREAD}",
        "write": f"TetError: write failed: {NO_THREAD}",
        "spans": f"TetError: checksum failed: {NO_THREAD}",
    }
    # the advice holds: on the calling thread alone, under the same limits, all succeed
    assert set(_thread_child(tmp_path, 0, "1").values()) == {"ok"}


def test_every_entry_point_that_does_work_returns_a_status() -> None:
    queries = {"tet_simd_get", "tet_simd_supported", "tet_encode_capacity",
               "tet_zstd_error_name", "tet_select_key", "tet_select_value"}
    functions = {n: ffi.typeof(getattr(lib, n)).result.cname for n in dir(lib)
                 if callable(getattr(lib, n))}
    working = {n for n in functions if n not in queries and not n.startswith("tet_guard_")}
    assert {"tet_read_box", "tet_fold_box", "tet_encode", "tet_box_touch"} <= working
    assert {n: functions[n] for n in working} == dict.fromkeys(working, "tet_status")


def test_acc_dtype_matches_tet_acc_field_by_field() -> None:
    assert native.layout_mismatch("tet_acc", kernels.ACC_DTYPE) is None
    for name in kernels.ACC_DTYPE.names or ():
        assert kernels.ACC_DTYPE.fields is not None
        assert kernels.ACC_DTYPE.fields[name][1] == ffi.offsetof("tet_acc", name)


def test_layout_mismatch_names_what_differs() -> None:
    descr = kernels.ACC_DTYPE.descr
    swapped = np.dtype([descr[1], descr[0], *descr[2:]])
    assert native.layout_mismatch("tet_acc", swapped) == (
        f"tet_acc has fields {list(kernels.ACC_DTYPE.names or ())}, the NumPy dtype "
        f"{list(swapped.names or ())}")
    retyped = np.dtype([*descr[:-1], ("null_count", "<f8")])
    assert native.layout_mismatch("tet_acc", retyped) == (
        "tet_acc.null_count is uint64 at byte 192 in C, float64 at byte 192 in NumPy")
    packed = np.dtype([("status", "<i4"), ("chunk", "<i8"), ("detail", "<u8")])  # no padding
    assert native.layout_mismatch("tet_report", packed) == (
        "tet_report.chunk is int64 at byte 8 in C, int64 at byte 4 in NumPy")
    padded = np.dtype({"names": ["status", "chunk", "detail"], "formats": ["<i4", "<i8", "<u8"],
                       "offsets": [0, 8, 16], "itemsize": 32})
    assert native.layout_mismatch("tet_report", padded) == (
        "tet_report is 24 bytes in C, 32 in NumPy")
