"""Hostile grids and the structures built from them: a chunk (or shape) extent of 0 is a
`CatalogError` everywhere, never a division by zero; the xarray backend and `to_dask`
check each grid against the chunk index at open and never build a graph of more than
`tet.dask.MAX_BLOCKS` blocks; a block's index rows are checked before its buffer is
allocated; `summary()` refuses a row list the memory budget cannot hold; histograms
refuse ranges whose bins would not be finite."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
import tet.dask
import tet.xarray_backend
from tests.conftest import CliRun
from tests.test_hostile import UNDER_ASAN, child, crafted
from tests.tiles import write_u8_tiles

xr = pytest.importorskip("xarray")
pytest.importorskip("dask")

Cli = Callable[..., CliRun]
F8 = 2  # wire tag of f64 (dtype=1 is f32)


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _every_reader(path: Path) -> list[tuple[str, Callable[[], Any]]]:
    return [
        ("read_numpy", lambda: tet.open(path).read_numpy("x")),
        ("mean", lambda: tet.open(path).mean("x")),
        ("export", lambda: tet.export(path, path.parent / "out.zarr")),
        ("xarray", lambda: xr.open_dataset(path, engine="tet")),
        ("xarray chunks={}", lambda: xr.open_dataset(path, engine="tet", chunks={})),
        ("to_dask", lambda: tet.to_dask(path, "x")),
    ]


ZERO_CHUNK = crafted([4], [0], [((0,), 0, 16, 16, 0)], payload=b"\0" * 16)
ZERO_SHAPE = crafted([0, 3], [1, 3], [], payload=b"")


@pytest.mark.parametrize(("data", "text"), [
    (ZERO_CHUNK, "dataset 'x' has invalid geometry on axis 0: shape 4, chunk_shape 0 "
                 "(both must be >= 1 and < 2**62)"),
    (ZERO_SHAPE, "dataset 'x' has invalid geometry on axis 0: shape 0, chunk_shape 1 "
                 "(both must be >= 1 and < 2**62)"),
])
def test_zero_extents_are_catalog_errors(tmp_path: Path, cli: Cli, data: bytes,
                                         text: str) -> None:
    path = _file(tmp_path, "z.tet", data)
    with tet.open(path) as f:  # the catalog itself parses (as the reference's does)
        assert f.datasets() == ["x"]
    for what, fn in _every_reader(path):
        with pytest.raises(tet.TetError) as info:  # export: ExportError naming the dataset
            fn()
        assert isinstance(info.value, tet.CatalogError) or what == "export"
        assert str(info.value).endswith(text), what
    r = cli("export", path, tmp_path / "cli.zarr")
    assert r.rc == 1 and "internal error" not in r.err and r.err.count("\n") == 1
    assert "invalid geometry" in r.err
    assert not (tmp_path / "cli.zarr").exists() and not (tmp_path / "out.zarr").exists()


def test_tile_counts_refuses_a_zero_chunk_extent() -> None:
    assert tet.layout.tile_counts((5, 4), (2, 4)) == (3, 1)
    with pytest.raises(tet.CatalogError) as info:
        tet.layout.tile_counts((4, 4), (2, 0), "v")
    assert str(info.value) == ("dataset 'v': invalid geometry: shape [4, 4], chunk_shape [2, 0] "
                               "(every chunk extent must be >= 1)")


# grids the chunk index cannot hold: 2**40 unit tiles with 4 rows; 128**8 tiles
HUGE_1D = crafted([2**40], [1], [((i,), 8 * i, 8, 8, 0) for i in range(4)], dtype=F8,
                  payload=b"\0" * 32)
RANK8 = crafted([128] * 8, [1] * 8, [((0,) * 8, 0, 4, 4, 0)], payload=b"\0" * 4)


@pytest.mark.parametrize(("data", "tiles", "rows"), [(HUGE_1D, 2**40, 4), (RANK8, 128**8, 1)])
def test_impossible_grids_fail_at_open_in_xarray_and_dask(tmp_path: Path, data: bytes,
                                                          tiles: int, rows: int) -> None:
    path = _file(tmp_path, "g.tet", data)
    text = f"dataset 'x' declares {tiles} tiles but the chunk index has only {rows} rows for it"
    for chunks in (None, {}):
        with pytest.raises(tet.CatalogError) as info:
            xr.open_dataset(path, engine="tet", chunks=chunks)
        assert str(info.value) == text
    with pytest.raises(tet.CatalogError) as info:
        tet.to_dask(path, "x")
    assert str(info.value) == text


@pytest.mark.skipif(UNDER_ASAN, reason="RLIMIT_AS cannot be applied under ASan")
def test_impossible_grids_in_a_child_under_an_address_space_limit(tmp_path: Path) -> None:
    """Before: MemoryError at open (2**40 unit chunks) and 4 GiB spent on .load()."""
    huge = _file(tmp_path, "h.tet", HUGE_1D)
    rank8 = _file(tmp_path, "r.tet", RANK8)
    got = child(f"""
        import xarray as xr
        out = [outcome(lambda: xr.open_dataset({str(huge)!r}, engine="tet", chunks={{}})),
               outcome(lambda: xr.open_dataset({str(rank8)!r}, engine="tet",
                                               chunks={{}}).load())]
        print(json.dumps(out))
        """, limit_as=3 << 30)
    assert [(r["cls"], r["tet"]) for r in got] == [("CatalogError", True)] * 2  # type: ignore[index]
    assert max(r["peak"] for r in got) < 1 << 30  # type: ignore[index]


def test_many_small_chunks_are_grouped_into_bounded_blocks(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    a = np.arange(60 * 64, dtype=np.float32).reshape(60, 64)
    path = tmp_path / "m.tet"
    tet.write_dataset(path, "v", a, chunk_shape=(1, 1), dim_names=["y", "x"])  # 3840 tiles
    assert tet.dask.MAX_BLOCKS == 4096
    native = xr.open_dataset(path, engine="tet", chunks={})["v"]
    assert native.chunks == ((1,) * 60, (1,) * 64)  # under the cap: the file's chunks
    monkeypatch.setattr(tet.dask, "MAX_BLOCKS", 100)
    assert tet.dask.grouped_chunk_shape((60, 64), (1, 1)) == (1, 64)  # 60 blocks
    assert tet.dask.grouped_chunk_shape((60, 64), (1, 1), 10) == (6, 64)
    assert tet.dask.grouped_chunk_shape((60, 64), (1, 1), 1) == (60, 64)
    assert tet.dask.grouped_chunk_shape((60, 64), (7, 3)) == (7, 6)  # whole chunks each
    var = xr.open_dataset(path, engine="tet", chunks={})["v"]
    assert var.encoding["preferred_chunks"] == {"y": 1, "x": 64}
    assert var.encoding["chunksizes"] == (1, 1)  # the file's own chunks, for writers
    assert math.prod(len(c) for c in var.chunks) == 60
    np.testing.assert_array_equal(var.values, a)
    np.testing.assert_allclose(float(var.mean().compute()), a.mean(), rtol=1e-6)
    d = tet.to_dask(path, "v", block_bytes=4)  # one chunk per block would be 3840 blocks
    assert math.prod(len(c) for c in d.chunks) <= 100
    assert all(sum(c) == n for c, n in zip(d.chunks, a.shape, strict=True))
    np.testing.assert_array_equal(d.compute(), a)


def test_duplicate_dim_names_are_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "d.tet"
    with tet.TetWriter.create(path) as w:
        w.write_dataset("v", np.ones((2, 3)), dim_names=["xx", "yy"])
        w.write_dataset("w", np.zeros(4), dim_names=["t"])
    path.write_bytes(path.read_bytes().replace(b'"yy"', b'"xx"'))
    with tet.open(path) as f:
        assert f["v"].dim_names == ("xx", "xx")
    with pytest.raises(tet.CatalogError) as info:
        xr.open_dataset(path, engine="tet")
    assert isinstance(info.value, ValueError)
    assert type(info.value) is tet.xarray_backend.XarrayLayoutError
    assert str(info.value) == (
        f"{path}: dataset 'v' has duplicate dim_names ['xx', 'xx'] in its footer; xarray needs "
        "one name per axis (open the file without it: drop_variables=['v'])")
    ds = xr.open_dataset(path, engine="tet", drop_variables=["v"])
    assert list(ds.data_vars) == ["w"]


def test_a_missing_group_is_an_os_error_and_a_tet_error(tmp_path: Path) -> None:
    path = tet.write_dataset(tmp_path / "g.tet", "a/b", np.arange(3.0))
    with pytest.raises(tet.TetOSError) as info:
        xr.open_dataset(path, engine="tet", group="nope")
    assert isinstance(info.value, FileNotFoundError) is False and info.value.errno == 2
    assert str(info.value) == f"group 'nope' not found in {path} (groups: 'a')"


# one tile declared 2**31 f64 values (16 GiB) whose row says 16 bytes
BIG_TILE = crafted([2**31], [2**31], [((0,), 0, 16, 16, 0)], dtype=F8, payload=b"\0" * 16)


@pytest.mark.skipif(UNDER_ASAN, reason="RLIMIT_AS cannot be applied under ASan")
def test_a_block_is_checked_before_its_buffer_is_allocated(tmp_path: Path) -> None:
    """The budget allows 16 GiB (a host with 64 GiB free), the address space 3 GiB: a
    read that allocated before checking the row would fail to allocate, not as the
    row's ChunkError."""
    path = _file(tmp_path, "b.tet", BIG_TILE)
    got = child(f"""
        import xarray as xr
        from tet.query import budget
        budget._read_available = lambda: 64 << 30
        out = [outcome(lambda: tet.to_dask({str(path)!r}, "x").compute()),
               outcome(lambda: xr.open_dataset({str(path)!r}, engine="tet")["x"].values),
               outcome(lambda: xr.open_dataset({str(path)!r}, engine="tet",
                                               chunks={{}})["x"][:5].values)]
        print(json.dumps(out))
        """, limit_as=3 << 30)
    for r in got:  # type: ignore[attr-defined]
        assert (r["cls"], r["tet"]) == ("ChunkError", True), r
        assert "raw_byte_len" in r["msg"] and r["peak"] < 1 << 30


def test_a_block_over_the_budget_is_a_memory_budget_error(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    a = np.arange(1 << 20, dtype=np.float64)  # 8 MiB in one chunk
    path = tet.write_dataset(tmp_path / "one.tet", "v", a, chunk_shape=(a.size,))
    with tet.TetWriter.open_append(path) as w:
        w.set_execution(memory_budget_bytes=1 << 20)  # 1 MiB for reads of this file
    d = tet.to_dask(path, "v")
    assert d.chunks == ((a.size,),)  # one chunk, larger than the budget: one block
    with pytest.raises(tet.MemoryBudgetError, match=r"needs 8388608 bytes, over the memory "
                                                    r"budget of 1048576 bytes"):
        d.compute()
    np.testing.assert_array_equal(tet.to_dask(path, "v", selection=[{"stop": 1000}]).compute(),
                                  a[:1000])


def test_to_dask_with_a_step_past_int64(tmp_path: Path) -> None:
    a = np.arange(40.0).reshape(8, 5)
    path = tet.write_dataset(tmp_path / "s.tet", "v", a, chunk_shape=(3, 2))
    for step in (2**63, 2**64 - 1):
        sel = [{"start": 2, "step": step}, {"step": step}]
        d = tet.to_dask(path, "v", selection=sel)
        assert d.chunks == ((1,), (1,))
        np.testing.assert_array_equal(d.compute(), a[2:3, 0:1])


def test_padded_coordinate_labels_come_out_of_the_budget_in_xarray_and_export(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Footer labels for the first positions of an axis are padded with "" to its length;
    an axis of 2**28 elements needs 1 GiB of them (the tile itself is a sparse hole)."""
    n = 2**28
    head = crafted([n], [n], [((0,), 0, n, n, 0)], dtype=5)  # u8, one raw tile
    doc = (b'{"history":[],"metadata":{"datasets":{"x":{"dim_names":["t"],"coords":{"t":'
           b'{"labels":["a","b"]}}}}}}')
    path = tmp_path / "c.tet"
    with path.open("wb") as fh:
        fh.write(head[:12] + (1).to_bytes(4, "little") + head[16:])  # footer flag set
        fh.truncate(len(head) + n)
        fh.seek(len(head) + n)
        fh.write(doc + len(doc).to_bytes(8, "little") + b"\1\0\0\0THST")
    with tet.open(path) as f:
        assert f["x"].coords == {"t": ("a", "b")}
    from tet.query import budget

    monkeypatch.setattr(budget, "_read_available", lambda: 1 << 30)
    monkeypatch.setattr(budget, "_probe", (-1.0, None))
    with pytest.raises(tet.MemoryBudgetError) as info:
        xr.open_dataset(path, engine="tet")
    assert str(info.value) == (
        f"the coordinate 't' of {path} (2 labels padded to its {n} positions) needs {4 * n} "
        f"bytes, over the memory budget of {1 << 28} bytes; drop the dataset "
        "(drop_variables=[...]) or read it with tet.open")
    with pytest.raises(tet.ExportError) as info:  # the export pads by the same rule
        tet.export(path, tmp_path / "c.zarr", fsync=False)
    assert info.value.dataset == "x"
    assert str(info.value) == (
        f"Zarr export failed: dataset `x`: the coordinate 't' (2 labels padded to its {n} "
        f"positions) needs {4 * n} bytes, over the memory budget of {1 << 28} bytes; export "
        "on a host with more memory, or rewrite the file without those labels")
    assert not (tmp_path / "c.zarr").exists()


# ---------------------------------------------------------------------------
# summary() and its per-chunk dicts


def test_summary_refuses_rows_over_the_budget(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    n = 120_000  # 92 MB of row dicts: over WORK_FLOOR (64 MiB), which a budget always allows
    path = write_u8_tiles(tmp_path / "t.tet", n)
    from tet.query import budget

    monkeypatch.setattr(budget, "_read_available", lambda: 256 << 20)  # a 64 MiB budget
    monkeypatch.setattr(budget, "_probe", (-1.0, None))
    with tet.open(path) as f:
        with pytest.raises(tet.MemoryBudgetError) as info:
            f.summary()
        assert str(info.value) == (
            f"summary() of {path} ({n} chunk rows, one dict each) needs "
            f"{n * tet.file.SUMMARY_ROW_BYTES} bytes, over the memory budget of {64 << 20} "
            "bytes; take the rows a page at a time from iter_chunks(start, stop) instead")
        with pytest.raises(tet.MemoryBudgetError):
            f.summary_json()
        rows = list(f.iter_chunks(n - 2))
        assert [r["chunk_index"][0] for r in rows] == [n - 2, n - 1]
        assert f.catalog.summary(rows=False)["chunks"] == []
    monkeypatch.setattr(budget, "_read_available", lambda: 4 << 30)
    monkeypatch.setattr(budget, "_probe", (-1.0, None))
    with tet.open(path) as f:
        assert len(f.summary()["chunks"]) == n


# ---------------------------------------------------------------------------
# histograms


@pytest.fixture
def extremes(tmp_path: Path) -> Path:
    return tet.write_dataset(tmp_path / "h.tet", "a", np.array(
        [[1.0, -1.7e308, 1.7e308], [1e300, 1e300, 1e300], [0.0, 1.0, 2.0]]))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min": -1.7e308, "max": 1.7e308},
     "validation: too many bins for the histogram range [-1.7e+308, 1.7e+308]: cannot create 3 "
     "finite-sized bins"),
    ({"min": 0.0, "max": 5e-324},
     "validation: too many bins for the histogram range [0.0, 5e-324]: cannot create 3 "
     "finite-sized bins"),
    ({}, "validation: too many bins for the histogram range [-1.7e+308, 1.7e+308]: cannot "
         "create 3 finite-sized bins"),
    ({"axes": [1]}, "validation: too many bins for the histogram range [-1.7e+308, 1.7e+308] "
                    "(cell 0): cannot create 3 finite-sized bins"),
])
def test_histogram_bins_that_cannot_be_finite(extremes: Path, kwargs: dict[str, Any],
                                              message: str) -> None:
    """np.histogram refuses these ("Too many bins for data range"); so does tet, with no
    NaN edge and no RuntimeWarning."""
    with tet.open(extremes) as f, warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(tet.QueryError) as info:
            f.histogram("a", 3, **kwargs)
        assert str(info.value) == message
        doc = {"dataset": "a", "histogram": {"bins": 3, "axis": kwargs.get("axes", []),
                                             **{k: v for k, v in kwargs.items() if k != "axes"}}}
        with pytest.raises(tet.QueryError) as info:
            f.query(doc)
        assert str(info.value) == message
        data = f.read_numpy("a")
        ok = f.histogram("a", 3, selection=[{"start": 2}, {}])  # the finite row still works
    want = np.histogram(data[2:], 3)
    assert ok.histogram_counts is not None and ok.histogram_edges is not None
    assert ok.histogram_counts.tolist() == want[0].tolist()
    assert ok.histogram_edges.tolist() == want[1].tolist()
    lo, hi = kwargs.get("min", np.min(data)), kwargs.get("max", np.max(data))
    with warnings.catch_warnings(), pytest.raises(ValueError, match="Too many bins for data "):
        warnings.simplefilter("ignore")  # NumPy warns on its way to the refusal
        np.histogram(data, 3, range=(lo, hi))


@pytest.mark.parametrize("bins", [4097, 2**32 - 1])
def test_histogram_bins_too_large_say_so(extremes: Path, bins: int) -> None:
    with tet.open(extremes) as f:
        with pytest.raises(tet.QueryError) as info:
            f.query({"dataset": "a", "histogram": {"bins": bins}})
        assert str(info.value) == f"validation: histogram bins exceeds maximum 4096 (got {bins})"
        # past u32 the engine, like the reference, reads the field as absent
        for missing in (2**32, 2**63, 2**64 - 1, 2**64, -1, 2.5):
            with pytest.raises(tet.QueryError, match=r"^validation: `histogram.bins` is "
                                                     r"required$"):
                f.query({"dataset": "a", "histogram": {"bins": missing}})


def test_export_pads_chunks_within_the_budget(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Zarr edge chunks are written full size: a chunk far larger than its dataset (a
    hostile chunk_shape, or a careless one) must not be padded past the budget."""
    from tet.query import budget

    monkeypatch.setattr(budget, "_read_available", lambda: 1 << 30)  # a 256 MiB budget
    monkeypatch.setattr(budget, "_probe", (-1.0, None))
    a = np.arange(12.0).reshape(3, 4)
    path = tet.write_dataset(tmp_path / "p.tet", "v", a, chunk_shape=(3, 2**26))
    with pytest.raises(tet.TetError) as info:
        tet.export(path, tmp_path / "out.zarr", fsync=False)
    need = 3 * 3 * 2**26 * 8
    assert str(info.value) == (
        f"Zarr export failed: dataset `v`: chunk [0, 0] (chunk_shape [3, 67108864] padded, and "
        f"encoded) needs {need} bytes, over the memory budget of {1 << 28} bytes; export on a "
        "host with more memory, or rewrite the file with smaller chunks")
    assert not (tmp_path / "out.zarr").exists()
    small = tet.write_dataset(tmp_path / "q.tet", "v", a, chunk_shape=(3, 1000))
    tet.export(small, tmp_path / "ok.zarr", fsync=False)
    raw = (tmp_path / "ok.zarr" / "v" / "c" / "0" / "0").read_bytes()
    padded = np.full((3, 1000), np.nan)  # floats are padded with their fill value, NaN
    padded[:, :4] = a
    assert raw == padded.tobytes()
