"""Files with very many tiles: capped `read_plan.chunks` lists, `tet info` that builds
only the rows it prints and streams its JSON, `iter_chunks`, blockwise index checks, and
a 10^7-tile file (a 1.04 GB chunk index) on which `mean` and `tet info` finish with
bounded memory (peak RSS of a child process; speed is never asserted)."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
import tet.cli.info as info_mod
import tet.layout
import tet.query.plan
from tests.conftest import REPO, UPSTREAM
from tests.tiles import INDEX_OFFSET, payload_offset, values_block, write_u8_tiles
from tet.query.response import MAX_CHUNKS

SAMPLE = UPSTREAM / "tet" / "sample.tet"
LARGE = UPSTREAM / "tet" / "large.tet"
PLAN_KEYS = ["chunk_touch_policy", "chunk_count", "total_stored_bytes", "chunks",
             "dataset_shape", "chunk_shape", "selection_box_start",
             "selection_box_stop_exclusive", "selection_step", "logical_selection_shape",
             "logical_f32_element_count", "logical_element_count"]
CAPPED_KEYS = [*PLAN_KEYS[:4], "chunks_truncated", "chunks_omitted", *PLAN_KEYS[4:]]


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    """A 2-d f64 dataset of 7 x 5 tiles (ragged edges) and a second dataset after it."""
    w = tet.TetWriter.create(tmp_path / "grid.tet")
    w.write_dataset("a", np.arange(20 * 14, dtype=np.float64).reshape(20, 14),
                    chunk_shape=(3, 3))
    w.write_dataset("b", np.ones(5, np.int16), chunk_shape=(2,))
    w.commit()
    return tmp_path / "grid.tet"


# -- read_plan.chunks ------------------------------------------------------------------


def test_plan_under_the_cap_has_exactly_the_reference_fields(grid: Path) -> None:
    with tet.open(grid) as f:
        plan = f.plan_only({"dataset": "a"})["read_plan"]
        assert list(plan) == PLAN_KEYS
        assert plan["chunk_count"] == 35 == len(plan["chunks"])
        assert f.plan_only({"dataset": "a"}, max_chunks=35)["read_plan"] == plan
        assert f.plan_only({"dataset": "a"}, max_chunks=None)["read_plan"] == plan
        rows = {tuple(r["chunk_index"][:2]): r for r in f.summary()["chunks"]
                if r["dataset_id"] == 0}
    # every tile in grid order, with its own index row
    assert [c["chunk_index"] for c in plan["chunks"]] == [[i, j] for i in range(7)
                                                          for j in range(5)]
    for c in plan["chunks"]:
        row = rows[tuple(c["chunk_index"])]
        assert (c["payload_offset"], c["stored_byte_len"], c["raw_byte_len"], c["codec"]) == (
            row["payload_offset"], row["stored_byte_len"], row["raw_byte_len"], row["codec"])
    assert plan["total_stored_bytes"] == 20 * 14 * 8


@pytest.mark.parametrize("cap", [0, 1, 4, 34])
def test_capped_plan_lists_the_first_tiles_and_counts_the_rest(grid: Path, cap: int) -> None:
    sel = [{"start": 1, "stop": 19, "step": 4}, {"start": 2, "stop": 14}]
    with tet.open(grid) as f:
        full = f.plan_only({"dataset": "a", "selection": sel}, max_chunks=None)["read_plan"]
        capped = f.plan_only({"dataset": "a", "selection": sel}, max_chunks=cap)["read_plan"]
    count = full["chunk_count"]
    assert count == 5 * 5  # rows 1, 5, 9, 13, 17 fall in 5 tile rows; columns 2.. in all 5
    if cap >= count:
        assert capped == full
        return
    assert list(capped) == CAPPED_KEYS
    assert capped["chunks"] == full["chunks"][:cap]
    assert capped["chunks_truncated"] is True
    assert capped["chunks_omitted"] == count - cap
    assert {k: v for k, v in capped.items() if k not in ("chunks", "chunks_truncated",
                                                          "chunks_omitted")} == \
        {k: v for k, v in full.items() if k != "chunks"}


def test_executed_responses_use_the_default_cap(tmp_path: Path) -> None:
    n = MAX_CHUNKS + 904
    path = write_u8_tiles(tmp_path / "many.tet", n)
    want = values_block(0, n).astype(np.float64)
    with tet.open(path) as f:
        r = f.query({"dataset": "u8", "mean": []})
        assert r["execution"]["operation_mean"] == pytest.approx(want.mean(), rel=1e-12)
        plan = r["read_plan"]
        assert (plan["chunk_count"], len(plan["chunks"]), plan["chunks_omitted"]) == (
            n, 4096, 904)
        assert plan["chunks"][-1]["chunk_index"] == [4095]
        assert plan["total_stored_bytes"] == n
        result = f.execute({"dataset": "u8", "sum": []}, max_chunks=3)
        assert result.scalar == want.sum()
        assert result.plan is not None and len(result.plan["chunks"]) == 3
        assert result.plan["chunks_omitted"] == n - 3
        assert len(f.query({"dataset": "u8", "max": []}, max_chunks=None)
                   ["read_plan"]["chunks"]) == n
        assert f.mean("u8") == pytest.approx(want.mean(), rel=1e-12)


@pytest.mark.parametrize("bad", [-1, True, 1.5, "3"])
def test_max_chunks_must_be_a_count(grid: Path, bad: Any) -> None:
    text = f"max_chunks must be a non-negative integer or None, got {bad!r}"
    with tet.open(grid) as f, pytest.raises(tet.TetError, match=f"^{re.escape(text)}$"):
        f.query({"dataset": "a", "mean": []}, max_chunks=bad)


def test_cli_formats_with_a_capped_list(cli: Any, grid: Path) -> None:
    q = '{"dataset": "a", "mean": []}'
    full = json.loads(cli("query", q, "-t", grid, "-x", "--max-chunks", "2").out)
    assert list(full["read_plan"]) == CAPPED_KEYS
    assert (len(full["read_plan"]["chunks"]), full["read_plan"]["chunks_omitted"]) == (2, 33)
    line = json.loads(cli("query", q, "-t", grid, "-x", "--max-chunks", "2",
                          "--format", "json").out)
    assert line == full
    for fmt in ("plan", "stats"):
        doc = json.loads(cli("query", q, "-t", grid, "--max-chunks", "2", "--format", fmt).out)
        assert doc["read_plan"] == {
            "chunk_touch_policy": full["read_plan"]["chunk_touch_policy"], "chunk_count": 35,
            "total_stored_bytes": 2240, "chunks_truncated": True, "chunks_omitted": 33,
            "logical_selection_shape": [20, 14], "logical_f32_element_count": 280}
        under = json.loads(cli("query", q, "-t", grid, "--format", fmt).out)
        assert "chunks_truncated" not in under["read_plan"]
    table = cli("query", q, "-t", grid, "-x", "--max-chunks", "2", "--format", "table").out
    assert ("  chunk_count         35\n"
            "  chunks_listed       2 (--max-chunks N lists more)\n"
            "  total_stored_bytes  2240\n") in table
    assert "chunks_listed" not in cli("query", q, "-t", grid, "--format", "table").out
    assert cli("query", q, "-t", grid, "--max-chunks", "-1").rc == 2
    quiet = cli("query", q, "-t", grid, "-x", "-q", "--max-chunks", "0").out
    assert quiet.startswith("dataset=a status=ok op=mean mean=139.5 elements=280 ")


def test_qhist_run_takes_max_chunks(cli: Any, grid: Path) -> None:
    assert cli("query", '{"dataset": "a"}', "-t", grid, "-q").rc == 0
    doc = json.loads(cli("qhist", "run", "1", "--max-chunks", "1").out)
    assert doc["read_plan"]["chunks_omitted"] == 34


def test_plan_coords_are_built_for_the_listed_tiles_only(grid: Path) -> None:
    with tet.open(grid) as f:
        plan = f.plan("a")
    assert plan.coords(3).tolist() == [[0, 0], [0, 1], [0, 2]]
    assert plan.coords().shape == (35, 2)
    assert plan.coords(0).shape == (0, 2)


# -- the index: blockwise copy and checks, the tile table --------------------------------


def _patch_row(path: Path, row: int, field: str, value: int) -> None:
    """Set one field of chunk index row `row` of a file from `write_u8_tiles`."""
    at = {"payload_offset": 72, "raw_byte_len": 80, "stored_byte_len": 88, "codec": 96}[field]
    with path.open("r+b") as fh:
        fh.seek(INDEX_OFFSET + 32 + 104 * row + at)
        fh.write(struct.pack("<I" if field == "codec" else "<Q", value))


@pytest.mark.parametrize("block", [1, 3, 1 << 16])
def test_index_checks_keep_their_order_across_blocks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """Codec first, then raw/stored, then bounds, each naming its first bad row, however
    the rows are split into blocks."""
    monkeypatch.setattr(tet.layout, "ROW_BLOCK", block)
    path = write_u8_tiles(tmp_path / "t.tet", 50)
    with tet.open(path) as f:
        assert np.array_equal(f.read_numpy("u8"), values_block(0, 50))
        assert f.summary()["chunks"] == list(f.iter_chunks())
    _patch_row(path, 40, "payload_offset", 1 << 40)
    _patch_row(path, 30, "raw_byte_len", 2)
    _patch_row(path, 7, "stored_byte_len", 3)
    _patch_row(path, 20, "raw_byte_len", 3)
    with pytest.raises(tet.CatalogError) as err:
        tet.open(path)
    assert str(err.value) == ("raw/stored length mismatch for codec=0: raw=1, stored=3 "
                              "at chunk index row 7")
    _patch_row(path, 45, "codec", 7)
    _patch_row(path, 46, "codec", 9)
    with pytest.raises(tet.CatalogError) as err:
        tet.open(path)
    assert str(err.value) == ("unsupported codec 7 (supported: 0 = raw, 1 = zstd) "
                              "at chunk index row 45")
    path = write_u8_tiles(tmp_path / "t.tet", 50)
    _patch_row(path, 41, "payload_offset", 1 << 40)
    _patch_row(path, 40, "payload_offset", 1 << 41)
    with pytest.raises(tet.CatalogError) as err:
        tet.open(path)
    assert str(err.value) == (f"chunk payload [{1 << 41}, {(1 << 41) + 1}) out of bounds for "
                              f"file length {path.stat().st_size} (chunk index row 40; "
                              f"payload region ends at {path.stat().st_size})")


@pytest.mark.parametrize("block", [1, 1 << 16])
def test_rows_of_a_dataset_in_any_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         block: int) -> None:
    """The tile table takes the columns as they are when a dataset has one row per tile,
    in grid order, in one run of the index (checked 16 x ROW_BLOCK rows at a time), and
    gathers otherwise: interleaved datasets, rows out of grid order, duplicates (the
    first wins) and rows outside the grid (ignored) all read the same values."""
    monkeypatch.setattr(tet.query.plan, "ROW_BLOCK", block)
    a = np.arange(10 * 8, dtype=np.int32).reshape(10, 8)
    b = np.arange(10, dtype=np.uint16) * 3
    path = tmp_path / "two.tet"
    with tet.TetWriter.create(path) as w:
        w.write_dataset("a", a, chunk_shape=(2, 2))  # 5 x 4 = 20 tiles
        w.write_dataset("b", b, chunk_shape=(3,))
    with tet.open(path) as f:
        entries = f.catalog.entries.copy()
        at = f.catalog.chunk_index_offset + 32
    raw = path.read_bytes()

    (json_len,) = struct.unpack_from("<Q", raw, len(raw) - 16)
    json_at = len(raw) - 16 - json_len
    footer = json.loads(raw[json_at:len(raw) - 16])

    def rewrite(rows: np.ndarray[Any, Any]) -> Path:
        """The file with these index rows: lengths in the headers and offsets (of the
        payloads and of the footer's out-of-line regions) follow."""
        grow = 104 * (len(rows) - len(entries))
        rows = rows.copy()
        rows["payload_offset"] += np.uint64(grow)
        head = bytearray(raw[:at])
        struct.pack_into("<Q", head, 24, 32 + 104 * len(rows))
        struct.pack_into("<Q", head, at - 24, len(rows))
        moved = {k: {**v, "offset": v["offset"] + grow} if k.endswith("_ref") else v
                 for k, v in footer.items()}
        text = json.dumps(moved, separators=(",", ":")).encode()
        out = tmp_path / "re.tet"
        out.write_bytes(bytes(head) + rows.tobytes() + raw[at + entries.nbytes:json_at]
                        + text + struct.pack("<QI4s", len(text), 1, b"THST"))
        return out

    order = np.random.default_rng(5).permutation(len(entries))
    swapped = entries.copy()
    swapped[[15, 16]] = entries[[16, 15]]  # one run, one row per tile, not in grid order
    ghost = entries[[0]].copy()
    ghost["chunk_index"][0, 0] = 99  # outside a's grid
    dup = entries[[1]].copy()  # a second row for a's tile (0, 1) that points at tile (0, 0)
    dup["payload_offset"] = entries["payload_offset"][0]
    layouts = [entries,
               entries[order],                                        # shuffled
               swapped,
               np.concatenate([entries[:20], ghost, entries[20:]]),   # one run, a row outside
               np.concatenate([entries[:2], ghost, entries[3:], entries[2:3]]),  # a row last
               np.concatenate([entries, dup])]                        # a duplicate after
    for rows in layouts:
        with tet.open(rewrite(rows)) as f:
            assert np.array_equal(f.read_numpy("a"), a)
            assert np.array_equal(f.read_numpy("b"), b)
            assert f.plan_only({"dataset": "a"})["read_plan"]["chunk_count"] == 20
    lost = entries.copy()
    lost["chunk_index"][19, 0] = 99  # one run, 20 rows, but tile (4, 3) has none
    with tet.open(rewrite(lost)) as f:
        assert np.array_equal(f.read_numpy("a", {"start": [0, 0], "stop": [8, 8]}), a[:8])
        with pytest.raises(tet.TetError, match=r"no row for dataset_id=0 chunk_index=\[4, 3\]"):
            f.read_numpy("a")


# -- iter_chunks and summary -----------------------------------------------------------


def _reference_rows(entries: np.ndarray[Any, Any]) -> list[dict[str, Any]]:
    """layout.md §7 chunk rows, one element at a time."""
    return [{"dataset_id": int(e["dataset_id"]), "chunk_index": [int(v) for v in e["chunk_index"]],
             "payload_offset": int(e["payload_offset"]), "raw_byte_len": int(e["raw_byte_len"]),
             "stored_byte_len": int(e["stored_byte_len"]), "codec": int(e["codec"])}
            for e in entries]


def test_iter_chunks_pages_the_summary_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tet.layout, "ROW_BLOCK", 5)
    with tet.open(LARGE) as f:
        rows = f.summary()["chunks"]
        assert json.dumps(rows) == json.dumps(_reference_rows(f.catalog.entries))
        assert len(rows) == 144
        for start, stop in [(0, None), (0, 0), (3, 17), (140, 1000), (144, None), (200, 3)]:
            assert list(f.iter_chunks(start, stop)) == rows[start:stop]
        with pytest.raises(ValueError, match="non-negative"):
            next(f.iter_chunks(-1))
        with pytest.raises(TypeError):
            next(f.iter_chunks(0, 2.5))  # type: ignore[arg-type]
        lazy = f.iter_chunks()
    assert next(lazy) == rows[0]  # the rows were copied out of the mapping at open
    assert f.catalog.summary(rows=False) == {**f.summary(), "chunks": []}


# -- tet info -------------------------------------------------------------------------


@pytest.fixture
def rich(tmp_path: Path) -> Path:
    """Three datasets with metadata, non-ASCII names and values, a footer; 9 + 1 + 3 tiles."""
    w = tet.TetWriter.create(tmp_path / "rich.tet")
    w.write_dataset("températures", np.arange(9 * 4, dtype=np.float32).reshape(9, 4),
                    chunk_shape=(1, 4), attrs={"units": "°C"}, dim_names=["t", "x"],
                    coords={"x": ["a", "b", "c", "d"]})
    w.write_dataset("pressure", np.ones(4, np.int16), attrs={"units": "hPa"})
    w.write_dataset('odd "chunks": [] name', np.zeros(3, np.uint64), chunk_shape=(1,))
    w.push_history_event("derive", "src.tet", params={"method": "zscore"})
    w.commit()
    return tmp_path / "rich.tet"


def _expected_json(path: Path, dataset: str | None, grep: str | None,
                   kept: list[int] | None) -> str:
    """`tet info --json` the simple way: the whole summary in memory, then json.dumps."""
    with tet.open(path) as f:
        s = f.summary()
        file_len = f.catalog.file_len
    terms = [f"{k}~{v}" for k, v in (("dataset", dataset), ("grep", grep)) if v is not None]
    if kept is not None:
        names = {s["datasets"][i]["name"] for i in kept}
        s["chunks"] = [dict(c, dataset_id=kept.index(c["dataset_id"])) for c in s["chunks"]
                       if c["dataset_id"] in kept]
        s["datasets"] = [s["datasets"][i] for i in kept]
        if "datasets" in s["metadata"]:
            s["metadata"]["datasets"] = {k: v for k, v in s["metadata"]["datasets"].items()
                                         if k in names}
    doc = {"path": str(path), "file_len": file_len, "filter": " ".join(terms) or None,
           "summary": s}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("block", [1, 2, 1 << 16])
def test_streamed_json_is_the_json_of_the_whole_summary(
        cli: Any, rich: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    monkeypatch.setattr(info_mod, "ROW_BLOCK", block)
    cases: list[tuple[Path, list[str], str | None, str | None, list[int] | None]] = [
        (SAMPLE, [], None, None, None), (LARGE, [], None, None, None),
        (rich, [], None, None, None),
        (rich, ["--dataset", "PRESS"], "PRESS", None, [1]),
        (rich, ["--grep", "°c"], None, "°c", [0]),
        (rich, ["--grep", "e", "--dataset", "odd"], "odd", "e", [2]),
        (rich, ["--dataset", "nothing"], "nothing", None, []),
    ]
    for path, flags, dataset, grep, kept in cases:
        r = cli("info", path, "--json", *flags)
        assert (r.rc, r.err) == (0, ""), flags
        assert r.out == _expected_json(path, dataset, grep, kept), (path, flags)


def test_streamed_json_of_odd_catalogs(cli: Any, tmp_path: Path) -> None:
    empty = tmp_path / "e.tet"
    empty.write_bytes(b"TETR" + struct.pack("<IIIQQ", 1, 0, 0, 32, 0))
    assert cli("info", empty, "--json").out == _expected_json(empty, None, None, None)
    buf = bytearray(SAMPLE.read_bytes())
    struct.pack_into("<Q", buf, 0xF0, 5)  # second row: dataset_id 5 (verify reports it)
    bad = tmp_path / "bad.tet"
    bad.write_bytes(bytes(buf))
    assert cli("info", bad, "--json").out == _expected_json(bad, None, None, None)
    assert cli("info", bad, "--json", "--dataset", "temp").out == _expected_json(
        bad, "temp", None, [0])
    out = cli("info", bad, "--chunks").out
    assert out.endswith(  # an unknown dataset: all 8 coordinates, as before
        "     1  #5            0,1,0,0,0,0,0,0           8           8    raw  360\n")
    assert "chunks: 2\n" in out


def test_info_builds_no_summary_rows(cli: Any, rich: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts come from the index array; chunk rows are built only where printed."""
    real = tet.layout.Catalog.summary

    def summary(self: tet.layout.Catalog, *, rows: bool = True) -> dict[str, Any]:
        assert not rows, "tet info built every chunk row"
        return real(self, rows=rows)

    monkeypatch.setattr(tet.layout.Catalog, "summary", summary)
    monkeypatch.setattr(info_mod, "chunk_rows", None)  # only the JSON template used it
    out = cli("info", rich, "--all").out
    assert "datasets: 3  chunks: 13\n" in out
    assert "    0  températures          f32    9×4               1×4           9\n" in out
    assert cli("info", rich, "-q").out.endswith(" datasets=3 chunks=13 history=1\n")
    assert cli("info", rich, "-q", "--grep", "pa").out.endswith(" datasets=1 chunks=1 history=1\n")
    row = json.loads(cli("info", rich, "--json").out)["summary"]["chunks"][12]
    assert (row["dataset_id"], row["chunk_index"], row["raw_byte_len"]) == (2, [2] + [0] * 7, 8)


@pytest.mark.parametrize("block", [1, 4, 1 << 16])
def test_chunk_table_rows_and_limits(cli: Any, rich: Path, monkeypatch: pytest.MonkeyPatch,
                                     block: int) -> None:
    monkeypatch.setattr(info_mod, "ROW_BLOCK", block)
    with tet.open(rich) as f:
        rows = f.summary()["chunks"]
    names = ["températures", "pressure", 'odd "chunks": [] name']
    coords = [",".join(str(x) for x in r["chunk_index"][:2 if r["dataset_id"] == 0 else 1])
              for r in rows]

    def line(i: int, r: int) -> str:
        row = rows[r]
        return (f"  {i:>4}  {names[row['dataset_id']]:<12}  {coords[r]:<8}  "
                f"{row['raw_byte_len']:>10}  {row['stored_byte_len']:>10}    raw  "
                f"{row['payload_offset']}")

    def table(*flags: str) -> list[str]:
        out = cli("info", rich, "--chunks", *flags).out
        return out.split("\n\nchunks:\n", 1)[1].rstrip("\n").split("\n")

    head = "     #  dataset       coords           raw      stored  codec  offset"
    assert table() == [head, *[line(i, i) for i in range(13)]]
    assert table("-n", "0") == table()
    assert table("-n", "13") == table()
    assert table("-n", "5") == ["  (showing 5 of 13; use -n 0 for all)", head,
                                *[line(i, i) for i in range(5)]]
    # filters renumber: only the kept datasets' rows, numbered from 0
    assert table("--grep", "ODD", "-n", "2") == ["  (showing 2 of 3; use -n 0 for all)", head,
                                                 line(0, 10), line(1, 11)]
    assert table("--dataset", "r", "-n", "0")[1:] == [line(i, r) for i, r in
                                                      enumerate(range(10))]
    # the rows a view yields: exactly the ones asked for
    with tet.open(rich) as f:
        v = info_mod.view(f.catalog, "temp", None)
        got = [(len(b), ids.tolist()) for b, ids in v.rows.blocks(2)]
    assert sum(n for n, _ in got) == 2 and all(ids == [0] * n for n, ids in got)


# -- a 10^7-tile file -----------------------------------------------------------------

BIG = 10**7
BIG_INDEX = 32 + 104 * BIG  # 1.04 GB
RSS_BOUND = 2 * BIG_INDEX  # the index copy plus the tile table and plan, with headroom
HANG_GUARD = 900  # seconds: a hang is a failure; nothing here is timed

# The child reports its own high-water RSS: VmHWM belongs to its address space, whereas
# ru_maxrss survives exec and would carry the peak of this test process.
_CHILD = """\
import sys
kind, args = sys.argv[1], sys.argv[2:]
if kind == "cli":
    from tet.cli.main import main
    rc = main(args)
else:
    exec(args[0])
    rc = 0
sys.stdout.flush()
with open("/proc/self/status") as fh:
    hwm = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
sys.stderr.write(f"\\npeak_rss_kb={hwm}\\n")
sys.exit(rc)
"""


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Built once per session (a few seconds) and deleted afterwards."""
    if not Path("/proc/self/status").exists():
        pytest.skip("peak RSS of a child is read from /proc/self/status (Linux only)")
    where = tmp_path_factory.mktemp("tiles")
    need = BIG_INDEX + BIG + (1 << 30)  # the file, and 1 GiB left for everything else
    free = shutil.disk_usage(where).free
    if free < need:
        pytest.skip(f"the 10^7-tile file needs {need} bytes free in {where}; {free} are")
    path = write_u8_tiles(where / "big.tet", BIG)
    yield path
    path.unlink()


@pytest.fixture(scope="module")
def big_values() -> np.ndarray[Any, Any]:
    return values_block(0, BIG).astype(np.float64)


def _child(kind: str, *args: str, stdout: Any = subprocess.PIPE) -> tuple[str, int]:
    """Run tet in a fresh interpreter; (stdout, its peak RSS in bytes)."""
    env = {**os.environ, "TET_NO_PROGRESS": "1", "TET_NO_QUERY_HISTORY": "1"}
    p = subprocess.run([sys.executable, "-c", _CHILD, kind, *args], stdout=stdout,
                       stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
                       timeout=HANG_GUARD, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    peak = int(p.stderr.rsplit("peak_rss_kb=", 1)[1]) * 1024
    return p.stdout or "", peak


def test_big_mean_through_python(big: Path, big_values: np.ndarray[Any, Any]) -> None:
    out, peak = _child("py", f"""
import json, tet
with tet.open({str(big)!r}) as f:
    r = f.query({{"dataset": "u8", "mean": []}})
    print(json.dumps([f.mean("u8"), r["execution"]["operation_mean"], r["read_plan"]]))
""")
    helper, wire, plan = json.loads(out)
    assert helper == wire == pytest.approx(big_values.mean(), rel=1e-12)
    assert (plan["chunk_count"], len(plan["chunks"]), plan["chunks_omitted"]) == (
        BIG, MAX_CHUNKS, BIG - MAX_CHUNKS)
    assert peak < RSS_BOUND, f"peak RSS {peak} bytes"


def test_big_mean_through_the_cli(big: Path, big_values: np.ndarray[Any, Any]) -> None:
    out, peak = _child("cli", "query", '{"dataset": "u8", "mean": []}', "-t", str(big), "-x")
    r = json.loads(out)
    assert r["execution"]["operation_mean"] == pytest.approx(big_values.mean(), rel=1e-12)
    assert r["read_plan"]["chunks_omitted"] == BIG - MAX_CHUNKS
    assert r["read_plan"]["chunks"][-1]["chunk_index"] == [MAX_CHUNKS - 1]
    assert peak < RSS_BOUND, f"peak RSS {peak} bytes"


def test_big_info_and_its_chunk_table(big: Path) -> None:
    out, peak = _child("cli", "info", str(big))
    assert f"datasets: 1  chunks: {BIG}\n" in out
    assert out.endswith(f"    0  u8                    u8     {BIG:<16}  1             {BIG}\n")
    assert peak < RSS_BOUND, f"peak RSS {peak} bytes"
    out, peak = _child("cli", "info", str(big), "--chunks")
    assert f"  (showing 32 of {BIG}; use -n 0 for all)\n" in out
    assert out.endswith(f"    31  u8            31                 1           1    raw  "
                        f"{payload_offset(BIG) + 31}\n")
    assert peak < RSS_BOUND, f"peak RSS {peak} bytes"


def test_big_info_json_streams(big: Path, cli: Any, tmp_path: Path) -> None:
    """The whole summary JSON (about 3 GB) through a pipe, read here in pieces."""
    small = cli("info", write_u8_tiles(tmp_path / "three.tet", 3), "--json").out
    env = {**os.environ, "TET_NO_PROGRESS": "1"}
    p = subprocess.Popen([sys.executable, "-c", _CHILD, "cli", "info", str(big), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env)
    head, tail, lines, size = b"", b"", 0, 0
    assert p.stdout is not None and p.stderr is not None
    try:
        while piece := p.stdout.read(1 << 20):
            head = head or piece[:4096]
            tail = (tail + piece)[-4096:]
            lines += piece.count(b"\n")
            size += len(piece)
        err = p.stderr.read().decode()
        assert p.wait(timeout=HANG_GUARD) == 0, err[-2000:]
    finally:
        p.kill()
        p.wait()
    assert head.startswith(b'{\n  "path": ') and b'\n    "chunks": [\n      {\n' in head
    assert tail.endswith(b'\n        "codec": 0\n      }\n    ],\n    "file_execution": {\n'
                         b'      "memory_budget_percent_bps": 0,\n      "memory_budget_bytes": 0\n'
                         b'    },\n    "history": [],\n    "metadata": {}\n  }\n}\n')
    assert f'"payload_offset": {payload_offset(BIG) + BIG - 1},'.encode() in tail
    assert lines == small.count("\n") + 17 * (BIG - 3)  # 17 lines a row
    assert size > 200 * BIG
    peak = int(err.rsplit("peak_rss_kb=", 1)[1]) * 1024
    assert peak < RSS_BOUND, f"peak RSS {peak} bytes"
