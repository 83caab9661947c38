"""Hostile files and queries: sizes that overflow, steps near 2**64, declared sizes
that would drive huge allocations, and footers that are too long or too deep.

Each case names the exact error class and text; the ones that used to crash the
process or allocate gigabytes run in a child process with an address-space limit.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tests.conftest import INTEROP, REPO, CliRun
from tests.helpers import with_footer
from tet import kernels, native
from tet.layout import ENTRY_DTYPE, FLAG_FOOTER, DatasetRecord, encode_header

Cli = Callable[..., CliRun]
U64_MAX = 2**64 - 1
SAMPLE = (INTEROP / "sample.tet").read_bytes()
# `make asan` preloads the ASan runtime: it reserves terabytes of address space, so a
# child cannot run under RLIMIT_AS, and its shadow memory and quarantine inflate RSS
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
NO_AS_LIMIT = "under ASan (make asan) RLIMIT_AS cannot be applied: ASan reserves its shadow"


def crafted(shape: Sequence[int], chunk: Sequence[int], rows: Sequence[tuple[Any, ...]],
            *, dtype: int = 1, payload: bytes = b"", budget_bytes: int = 0) -> bytes:
    """One dataset ``x`` and its index rows (chunk_index, offset into the payload area,
    raw_byte_len, stored_byte_len, codec), followed by `payload`."""
    record = DatasetRecord("x", dtype, tuple(shape), tuple(chunk))
    entries = np.zeros(len(rows), ENTRY_DTYPE)
    start = len(encode_header([record], entries, flags=0))
    for i, (coords, off, raw, stored, codec) in enumerate(rows):
        entries[i]["chunk_index"][: len(coords)] = coords
        entries[i]["payload_offset"] = start + off
        entries[i]["raw_byte_len"], entries[i]["stored_byte_len"] = raw, stored
        entries[i]["codec"] = codec
    return encode_header([record], entries, flags=0, budget_bytes=budget_bytes) + payload


def child(code: str, *, limit_as: int = 2 << 30, timeout: float = 120) -> dict[str, Any]:
    """Run `code` in a fresh interpreter under RLIMIT_AS (not under ASan); it prints one
    JSON line.  Under ASan the peak RSS it reports is 0 (not comparable)."""
    limit = 0 if UNDER_ASAN else limit_as
    prelude = textwrap.dedent(f"""\
        import json, resource, sys
        if {limit}:
            resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
        sys.path.insert(0, {str(REPO)!r})
        import tet

        def peak():  # VmHWM: this image's own peak (ru_maxrss counts the forking parent's)
            if {UNDER_ASAN}:
                return 0
            with open("/proc/self/status") as fh:
                line = next(x for x in fh if x.startswith("VmHWM:"))
            return int(line.split()[1]) * 1024

        def outcome(fn):
            try:
                fn()
                return {{"ok": True, "peak": peak()}}
            except BaseException as exc:
                return {{"cls": type(exc).__name__, "msg": str(exc),
                         "tet": isinstance(exc, tet.TetError), "peak": peak()}}
        """)
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TET_THREADS": "2"})
    assert proc.returncode == 0, f"child died ({proc.returncode}): {proc.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------------
# item 1: a shape whose product wraps 64 bits, with a 0-length row


CRASH = crafted([2**32, 2**32], [2**32, 2**32], [((0, 0), 0, 0, 0, 0)], payload=b"\0" * 16)
CRASH_TEXT = ("dataset record 0 ('x'): shape [4294967296, 4294967296] has "
              "18446744073709551616 elements, which does not fit 63 bits")


def test_crash_file_is_248_bytes_and_refused_at_open(tmp_path: Path) -> None:
    assert len(CRASH) == 248
    path = tmp_path / "crash.tet"
    path.write_bytes(CRASH)
    with pytest.raises(tet.CatalogError) as info:
        tet.open(path)
    assert str(info.value) == CRASH_TEXT


@pytest.mark.parametrize("argv", [
    ["info"], ["verify", "--deep"],
    ["query", '{"dataset": "x", "mean": []}', "-x", "-q", "-t"],
    ["query", '{"dataset": "x", "max": [0], "selection": [{"stop": 9}, {"stop": 9}]}',
     "-x", "-q", "-t"],
])
def test_crash_file_through_the_cli(tmp_path: Path, argv: list[str]) -> None:
    """In a child process: the file used to end the CLI with "Bus error" / SIGSEGV."""
    path = tmp_path / "crash.tet"
    path.write_bytes(CRASH)
    proc = subprocess.run([sys.executable, "-m", "tet.cli.main", *argv, str(path)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 1, proc.stderr
    if argv[0] == "verify":
        assert CRASH_TEXT in proc.stdout
    else:
        assert proc.stderr.strip().splitlines() == [f"error: {CRASH_TEXT}"]


def test_wrapping_geometry_refused_by_the_kernels_themselves(tmp_path: Path) -> None:
    """The C box check refuses geometry whose sizes overflow, whatever Python checked."""
    buf = np.frombuffer(CRASH, np.uint8)
    table = kernels.TileTable(buf, len(CRASH), (2**32, 2**32), (2**32, 2**32), 1, 4,
                              np.array([232], np.uint64), np.zeros(1, np.uint64),
                              np.zeros(1, np.uint64), np.zeros(1, np.uint32))
    text = ("dataset geometry shape [4294967296, 4294967296], chunk_shape [4294967296, "
            "4294967296] (4-byte elements): its sizes do not fit 63 bits")
    with pytest.raises(tet.CatalogError) as info:
        table.read((0, 0), (2, 3), (1, 1), np.empty((2, 3), np.float32))
    assert str(info.value) == f"read failed: {text}"
    with pytest.raises(tet.CatalogError) as info:
        table.touch((0, 0), (2, 3), (1, 1))
    assert str(info.value) == text
    with pytest.raises(tet.CatalogError) as info:
        table.fold((0, 0), (2, 3), (1, 1), reduce=[0, 1], what=kernels.FOLD_MOMENTS)
    assert str(info.value) == f"read failed: {text}"
    assert native.lib.TET_ERR_OVERFLOW == 11


@pytest.mark.parametrize(("shape", "dtype", "message"), [
    ([2**31, 2**31], 2,  # 2**62 f64 = 2**65 bytes
     "shape [2147483648, 2147483648] of f64 is 4611686018427387904 x 8 = "
     "36893488147419103232 bytes, which does not fit 63 bits"),
    ([0, U64_MAX], 1,  # refused even with a zero extent beside it
     "shape [0, 18446744073709551615] has an extent of 18446744073709551615 on axis 1, "
     "which does not fit 63 bits"),
], ids=["element_bytes", "extent"])
def test_sizes_over_63_bits_refused_at_open(tmp_path: Path, shape: list[int],
                                            dtype: int, message: str) -> None:
    path = tmp_path / "big.tet"
    path.write_bytes(crafted(shape, [1, 1], [], dtype=dtype))
    with pytest.raises(tet.CatalogError) as info:
        tet.open(path)
    assert str(info.value) == f"dataset record 0 ('x'): {message}"


def test_unknown_dtype_checks_only_the_element_count(tmp_path: Path) -> None:
    path = tmp_path / "tag.tet"
    path.write_bytes(crafted([2**31, 2**31], [1, 1], [], dtype=77))
    with tet.open(path) as f:  # the parser does not reject unknown tags (layout.md §3.2)
        assert f["x"].shape == (2**31, 2**31)
    path.write_bytes(crafted([2**32, 2**31], [1, 1], [], dtype=77))
    with pytest.raises(tet.CatalogError, match="which does not fit 63 bits"):
        tet.open(path)


# ---------------------------------------------------------------------------
# item 3: steps near 2**64


@pytest.fixture(params=["raw", "zstd"])
def one_value(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    a = np.arange(70, dtype=np.float64).reshape(10, 7)
    a[4, 2] = 1.2345
    return tet.write_dataset(tmp_path / "v.tet", "x", a, chunk_shape=(3, 4), codec=request.param)


@pytest.mark.parametrize("step", [U64_MAX, U64_MAX - 1, 2**63, 2**63 + 1, 10, 6])
def test_huge_step_selects_the_start(one_value: Path, step: int) -> None:
    sel = [{"start": 4, "step": step}, {"start": 2, "step": step}]
    with tet.open(one_value) as f:
        got = f.read_numpy("x", sel)
        assert got.shape == (1, 1) and got[0, 0] == 1.2345
        assert f.mean("x", selection=sel) == 1.2345
        assert f.median("x", selection=sel) == 1.2345
        assert f.max("x", selection=sel) == 1.2345
        ex = f.query({"dataset": "x", "sum": [0], "selection": sel})["execution"]
        assert ex["operation_reduced_sum"] == [1.2345]
        plan = f.plan_only({"dataset": "x", "mean": [], "selection": sel})
        assert plan["read_plan"]["chunk_count"] == 1
        assert plan["read_plan"]["logical_selection_shape"] == [1, 1]


def test_huge_step_that_still_selects_two(one_value: Path) -> None:
    sel = [{"start": 1, "step": 3}, {"start": 0, "stop": 7, "step": U64_MAX}]
    with tet.open(one_value) as f:
        got = f.read_numpy("x", sel)
        want = np.arange(70, dtype=np.float64).reshape(10, 7)
        want[4, 2] = 1.2345
        np.testing.assert_array_equal(got, want[1::3, ::U64_MAX])
        assert f.median("x", selection=sel) == float(np.median(want[1::3, :1]))


def test_python_steps_beyond_u64(one_value: Path) -> None:
    with tet.open(one_value) as f:
        got = f["x"][4 :: 2**70, 2 :: 2**200]
    assert got.shape == (1, 1) and got[0, 0] == 1.2345


# ---------------------------------------------------------------------------
# item 4: memory from declared sizes goes through the budget first


def test_max_axis0_accumulators_refused_before_allocating(tmp_path: Path) -> None:
    """240 bytes declaring a [2, 65_536_000] dataset: max over axis 0 would fold into
    65_536_000 accumulators (13 GB) before the (absent) payload failed the read."""
    data = crafted([2, 65_536_000], [1, 65_536_000], [((0, 0), 0, 8, 8, 0)],
                   payload=b"\0" * 8, budget_bytes=1 << 30)
    assert len(data) == 240
    path = tmp_path / "acc.tet"
    path.write_bytes(data)
    got = child(f"""
        f = tet.open({str(path)!r})
        print(json.dumps(outcome(lambda: f.max("x", axis=0))))
        """)
    assert got["cls"] == "MemoryBudgetError"
    assert got["msg"] == (
        "a fold into 65536000 output cells (65536000 accumulators of 200 bytes) needs "
        "13107200000 bytes, over the memory budget of 1073741824 bytes; reduce fewer cells "
        "(a smaller selection or more reduced axes) or raise the budget "
        "(execution.memory_budget_bytes)")
    assert got["peak"] < 600 << 20


def test_default_budget_refuses_absurd_accumulators(tmp_path: Path) -> None:
    """With no budget in the file: 2**40 cells need 220 TB, over any RAM-derived budget."""
    path = tmp_path / "acc.tet"
    path.write_bytes(crafted([2, 2**40], [1, 2**40], [((0, 0), 0, 8, 8, 0)],
                             dtype=5, payload=b"\0" * 8))
    with tet.open(path) as f:
        with pytest.raises(tet.MemoryBudgetError) as info:
            f.max("x", axis=0)
        with pytest.raises(tet.MemoryBudgetError) as hist:
            f.histogram("x", 4, axes=[0])
        with pytest.raises(tet.MemoryBudgetError) as preview:
            f.query_execute({"dataset": "x"}, preview=2**40)
    assert str(info.value).startswith(
        "a fold into 1099511627776 output cells (1099511627776 accumulators of 200 bytes) "
        "needs 219902325555200 bytes, over the memory budget of ")
    assert str(hist.value).startswith(
        "the bin edges of a histogram into 1099511627776 cells of 4 bins needs "
        "131941395333120 bytes, over the memory budget of ")
    assert str(preview.value).startswith(
        "a preview of 1099511627776 values (about 64 bytes each in the response) needs "
        "70368744177664 bytes, over the memory budget of ")


def test_budget_errors_name_the_query_budget(tmp_path: Path) -> None:
    path = tet.write_dataset(tmp_path / "m.tet", "x", np.ones((4, 50_000), np.float32),
                             chunk_shape=(4, 50_000))
    doc = {"dataset": "x", "mean": [0], "execution": {"memory_budget_bytes": 1000}}
    with tet.open(path) as f:
        got = f.query(doc)["execution"]  # 10 MB of accumulators: inside the working floor
        assert got["operation_reduced_mean"] == [1.0] * 50_000
        doc["selection"] = [{}, {}]
        big = tet.write_dataset(tmp_path / "b.tet", "x", np.ones((2, 400_000), np.uint8),
                                chunk_shape=(2, 400_000))
    with tet.open(big) as g, pytest.raises(tet.MemoryBudgetError) as info:
        g.query(doc)
    assert str(info.value) == (
        "a fold into 400000 output cells (400000 accumulators of 200 bytes) needs 80000000 "
        "bytes, over the memory budget of 1000 bytes; reduce fewer cells (a smaller selection "
        "or more reduced axes) or raise the budget (execution.memory_budget_bytes)")


def test_zstd_scratch_sized_from_the_tile_not_raw_byte_len(tmp_path: Path) -> None:
    """A zstd row declaring 3 GiB for a 48-byte tile fails its tile check before a
    scratch buffer is sized (it used to malloc raw_byte_len first)."""
    path = tmp_path / "z.tet"
    frame = b"\x28\xb5\x2f\xfd" + b"\0" * 12
    path.write_bytes(crafted([3, 4], [3, 4], [((0, 0), 0, 3 << 30, 16, 1)], payload=frame))
    got = child(f"""
        f = tet.open({str(path)!r})
        print(json.dumps(outcome(lambda: f.read_numpy("x"))))
        """, limit_as=1 << 30)
    assert got["cls"] == "ChunkError"
    assert got["msg"] == ("read failed: dataset_id=0 chunk_index=[0, 0]: tile has 12 values "
                          "but raw_byte_len implies 805306368")
    with tet.open(path) as f, pytest.raises(tet.ChunkError) as info:
        f.mean("x")
    assert str(info.value) == ("read failed: chunk_index=[0, 0]: tile has 12 values but "
                               "raw_byte_len implies 805306368")


def test_zstd_scratch_threads_fit_the_budget(tmp_path: Path) -> None:
    """Each worker decodes into one tile's scratch: a tile over the budget is refused
    (naming both sizes) instead of allocated."""
    a = np.arange(4 * 5_000_000, dtype=np.float32).reshape(4, 5_000_000)
    path = tet.write_dataset(tmp_path / "z.tet", "x", a, chunk_shape=(4, 5_000_000),
                             codec="zstd")
    doc: dict[str, Any] = {"dataset": "x", "max": [], "execution": {"memory_budget_bytes": 1}}
    with tet.open(path) as f:
        with pytest.raises(tet.MemoryBudgetError) as info:
            f.query(doc)
        doc["execution"]["memory_budget_bytes"] = 81_000_000
        assert f.query(doc)["execution"]["operation_max"] == float(a.max())
        with pytest.raises(tet.MemoryBudgetError) as read:
            f.read_numpy("x", [{"stop": 1}, {"stop": 1}], memory_budget_bytes=4)
    assert str(info.value) == (
        "a fold into 1 output cells (1 accumulators of 200 bytes, 8 ordered parts) with a "
        "zstd decode scratch of one 80000000-byte tile needs 80001600 bytes, over the memory "
        "budget of 1 bytes; raise the budget (execution.memory_budget_bytes in a query, "
        "memory_budget_bytes= for read_numpy)")
    assert str(read.value) == (
        "decoding this selection with a zstd decode scratch of one 80000000-byte tile needs "
        "80000000 bytes, over the memory budget of 4 bytes; raise the budget "
        "(execution.memory_budget_bytes in a query, memory_budget_bytes= for read_numpy)")


def test_tile_table_goes_through_the_budget(tmp_path: Path) -> None:
    """A dataset declaring 2**40 tiles with one row is refused as before; one declaring
    2.9 million tiles beside as many rows builds an 81 MB table only within the budget."""
    n = 2_900_000
    rows = [((i,), i, 1, 1, 0) for i in range(3)]
    data = bytearray(crafted([n], [1], rows, dtype=5, payload=bytes(3), budget_bytes=1000))
    path = tmp_path / "t.tet"
    path.write_bytes(bytes(data))
    with tet.open(path) as f, pytest.raises(tet.CatalogError,
                                            match="declares 2900000 tiles but the chunk index"):
        f.read_numpy("x")
    # the table is sized before the rows are checked against it
    from tet.query import plan
    with tet.open(path) as f:
        saved = plan.DENSE_SLACK
        plan.DENSE_SLACK = 2**40
        try:
            with pytest.raises(tet.MemoryBudgetError) as info:
                f.read_numpy("x")
        finally:
            plan.DENSE_SLACK = saved
    assert str(info.value) == (
        "the tile table of dataset 'x' (2900000 tiles) needs 81200000 bytes, over the memory "
        "budget of 1000 bytes; raise the budget (execution.memory_budget_bytes in a query, "
        "memory_budget_bytes= for read_numpy)")


@pytest.mark.skipif(UNDER_ASAN, reason=NO_AS_LIMIT)
def test_read_over_address_space_is_a_budget_error(tmp_path: Path) -> None:
    """Within the budget but over what the process may map: still a TetError."""
    path = tmp_path / "big.tet"
    path.write_bytes(crafted([2**20, 2**9], [1, 2**9], [((0, 0), 0, 2048, 2048, 0)],
                             payload=bytes(2048), budget_bytes=2**32 - 1))
    got = child(f"""
        f = tet.open({str(path)!r})
        print(json.dumps(outcome(lambda: f.read_numpy("x"))))
        """, limit_as=1 << 30)
    assert got["cls"] == "MemoryBudgetError"
    assert got["msg"].startswith(
        "reading 'x' [1048576, 512] (float32) needs 2147483648 bytes, within the memory "
        "budget of 4294967295 bytes, but the system could not allocate them (")


# ---------------------------------------------------------------------------
# item 6: footers too long or too deep


def test_two_gib_footer_fails_fast_and_repairs(tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "long.tet"
    with open(path, "wb") as fh:  # sparse: 2 GiB of hole, then the tail
        b = bytearray(SAMPLE)
        struct.pack_into("<I", b, 12, FLAG_FOOTER)
        fh.write(b)
        fh.seek(len(SAMPLE) + 2**31)
        fh.write(struct.pack("<QI4s", 2**31, 1, b"THST"))
    text = ("invalid one-chunk write spec: footer JSON of 2147483648 bytes exceeds "
            "footer_json_bytes limit (65536) (footer at 368)")
    got = child(f"""
        print(json.dumps(outcome(lambda: tet.open({str(path)!r}))))
        """, limit_as=4 << 30)  # room to map the file, not to read or parse its footer
    assert (got["cls"], got["msg"]) == ("CatalogError", text)
    assert got["peak"] < 300 << 20
    r = cli("verify", path, "--json")
    report = json.loads(r.out)
    assert [f["detail"] for f in report["findings"] if f["check"] == "parse"] == [text]
    assert [x["code"] for x in report["recommendations"]] == ["footer_invalid"]
    r = cli("repair", path, "--apply", "footer_invalid")
    assert r.rc == 0, r.err
    assert path.stat().st_size == len(SAMPLE)
    with tet.open(path) as f:
        assert f.read_numpy("temperature").shape == (2, 3)


def _nested(depth: int) -> bytes:
    return b'{"history":[],"metadata":{"file":{"tool":' + b"[" * depth + b"]" * depth + b"}}}"


def test_deep_footer_json_is_a_catalog_error(tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "deep.tet"
    path.write_bytes(with_footer(SAMPLE, _nested(20_000)))
    with pytest.raises(tet.CatalogError) as info:
        tet.open(path)
    text = ("invalid one-chunk write spec: footer JSON parse: nesting depth 20003 exceeds "
            "maximum 64 (footer at 368)")
    assert str(info.value) == text
    r = cli("info", path)
    assert (r.rc, r.err) == (1, f"error: {text}\n")
    r = cli("verify", path, "--json")
    report = json.loads(r.out)
    assert [x["code"] for x in report["recommendations"]] == ["footer_invalid"]
    assert cli("repair", path, "--apply", "footer_invalid").rc == 0
    assert path.stat().st_size == len(SAMPLE)


def test_footer_depth_limit_is_the_query_limit(tmp_path: Path) -> None:
    path = tmp_path / "d.tet"
    path.write_bytes(with_footer(SAMPLE, _nested(61)))  # 3 + 61 = 64: allowed
    with tet.open(path) as f:
        assert f.metadata["file"]["tool"] == json.loads(b"[" * 61 + b"]" * 61)
    path.write_bytes(with_footer(SAMPLE, _nested(62)))
    with pytest.raises(tet.CatalogError, match="nesting depth 65 exceeds maximum 64"):
        tet.open(path)


def test_deep_metadata_spill_is_a_catalog_error(tmp_path: Path) -> None:
    spill = b'{"file":{"tool":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    stub = json.dumps({"history": [], "metadata_ref": {"offset": len(SAMPLE),
                                                       "len": len(spill)}}).encode()
    path = tmp_path / "spill.tet"
    path.write_bytes(with_footer(SAMPLE, stub, spill=spill))
    with pytest.raises(tet.CatalogError) as info:
        tet.open(path)
    assert str(info.value) == ("invalid one-chunk write spec: metadata_ref JSON parse: "
                               "nesting depth 5002 exceeds maximum 64")


def test_footer_numbers_past_the_int_digit_limit(tmp_path: Path) -> None:
    """Python refuses to parse integers of more than 4300 digits with a ValueError."""
    doc = b'{"history":[],"metadata":{"x":' + b"7" * 5000 + b"}}"
    path = tmp_path / "digits.tet"
    path.write_bytes(with_footer(SAMPLE, doc))
    with pytest.raises(tet.CatalogError, match=r"^invalid one-chunk write spec: footer JSON "
                                               r"parse: Exceeds the limit \(4300 digits\)"):
        tet.open(path)


# ---------------------------------------------------------------------------
# tier C over budget: the per-cell reorder and covariance stay out of RAM


def test_spilled_partial_median_and_covariance(tmp_path: Path, private_cache: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With the working floor lowered, a spilled selection is reordered into a second
    temp file for partial medians, and covariance runs over blocks of observations;
    the answers are NumPy's and no temp file is left."""
    from tet.query import materialize

    monkeypatch.setattr(materialize, "WORK_FLOOR", 0)
    rng = np.random.default_rng(7)
    a = rng.normal(size=(37, 6, 5)).astype(np.float32)
    path = tet.write_dataset(tmp_path / "c.tet", "a", a, chunk_shape=(8, 4, 5), codec="zstd")
    ex = {"memory_budget_bytes": 512}
    with tet.open(path) as f:
        for axes in ([0], [1], [0, 2], [2]):
            got = f.query({"dataset": "a", "median": axes, "execution": ex})["execution"]
            assert got["memory_strategy"] == "temp_spill_materialize"
            want = np.median(a.astype(np.float64), axis=tuple(axes))
            np.testing.assert_allclose(got["operation_reduced_median"], want.ravel(), rtol=1e-12)
    m = a[:, :, 1].astype(np.float64)
    path = tet.write_dataset(tmp_path / "m.tet", "m", m, chunk_shape=(8, 4))
    with tet.open(path) as f:
        for obs in (0, 1):
            cov = f.query({"dataset": "m", "covariance": obs,
                           "execution": ex})["execution"]["operation_covariance"]
            cor = f.query({"dataset": "m", "correlation": {"axis": obs},
                           "execution": ex})["execution"]["operation_correlation"]
            np.testing.assert_allclose(cov, np.cov(m, rowvar=obs == 1, bias=True).ravel(),
                                       rtol=1e-10, atol=1e-14)
            np.testing.assert_allclose(cor, np.corrcoef(m, rowvar=obs == 1).ravel(),
                                       rtol=1e-10, atol=1e-14)
    leftovers = [p for p in private_cache.rglob("*") if p.is_file()
                 and "spill" in p.name]
    assert leftovers == []
