"""Tier C (median, quantile, histogram, covariance, correlation) and top-level spill
export, against NumPy on the same values promoted to float64.

Matrix: dtypes (f32 with NaN/inf, f64, i16, u8, u64, f16) × chunkings × selections
(full, offset, strided) × axes ([] and each single axis, plus a pair on rank 3);
the same queries with ``memory_budget_bytes: 1`` (temp-spill materialisation) give
identical answers and leave no temp file; errors carry the spec's texts.
"""

from __future__ import annotations

import math
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tet.query import materialize

Arr = np.ndarray[Any, Any]
pytestmark = pytest.mark.usefixtures("private_cache")


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def array(dtype: str, shape: tuple[int, ...], seed: int) -> Arr:
    rng = np.random.default_rng(seed)
    if dtype in ("f4", "f8", "f2"):
        a = (rng.standard_normal(shape) * 100).astype(dtype)
        flat = a.reshape(-1)
        flat[rng.integers(0, flat.size, 3)] = np.nan
        if dtype == "f4":
            flat[rng.integers(0, flat.size)] = np.inf
        return a
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -(2**40)), min(info.max, 2**40)
    return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)


SHAPES = [((13, 17), (4, 5)), ((6, 7, 5), (3, 4, 2))]
SELECTIONS = ["full", "offset", "strided"]


def selection(kind: str, shape: tuple[int, ...]) -> tuple[list[dict[str, int]] | None,
                                                           tuple[slice, ...]]:
    if kind == "full":
        return None, tuple(slice(None) for _ in shape)
    if kind == "offset":
        return ([{"start": 1, "stop": n - 1} for n in shape],
                tuple(slice(1, n - 1) for n in shape))
    return ([{"start": 1, "step": 2} for _ in shape], tuple(slice(1, None, 2) for _ in shape))


def close(got: Any, want: Arr, rtol: float = 1e-12) -> None:
    g = np.asarray([np.nan if v is None else v for v in np.ravel(got)], dtype=np.float64)
    np.testing.assert_allclose(g, np.ravel(want), rtol=rtol, atol=1e-9, equal_nan=True)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NumPy's own, on inf
@pytest.mark.parametrize("dtype", ["f4", "f8", "i2", "u1", "u8", "f2"])
@pytest.mark.parametrize("shape,chunk", SHAPES)
@pytest.mark.parametrize("sel", SELECTIONS)
def test_order_statistics_and_histograms_equal_numpy(dtype: str, shape: tuple[int, ...],
                                                     chunk: tuple[int, ...], sel: str,
                                                     tmp_path: Path, private_cache: Path) -> None:
    a = array(dtype, shape, sum(shape) + len(dtype))
    path = tet.write_dataset(tmp_path / "c.tet", "a", a, chunk_shape=chunk, codec="zstd")
    wire, slices = selection(sel, shape)
    x = a[slices].astype(np.float64)
    axes_list: list[list[int]] = [[], *([d] for d in range(len(shape)))]
    if len(shape) == 3:
        axes_list.append([0, 2])
    with tet.open(path) as f:
        for axes in axes_list:
            ax = tuple(axes) or None
            for budget in (None, 1):
                extra: dict[str, Any] = {"selection": wire} if wire else {}
                if budget:
                    extra["execution"] = {"memory_budget_bytes": budget}
                for op, body, want in (
                    ("median", axes, np.median(x, axis=ax)),
                    ("quantile", {"q": 0.3, "axes": axes}, np.quantile(x, 0.3, axis=ax)),
                    ("quantile", {"q": 1.0, "axes": axes}, np.quantile(x, 1.0, axis=ax)),
                ):
                    ex = f.query({"dataset": "a", op: body, **extra})["execution"]
                    assert ex["memory_strategy"] == (
                        "streaming_select" if not axes  # a scalar answer: no copy at all
                        else "temp_spill_materialize" if budget else "in_memory_materialize")
                    got = ex[f"operation_reduced_{op}"] if axes else ex[f"operation_{op}"]
                    close(got, want)
            check_histograms(f, x, axes, wire)
    assert leftovers(private_cache) == []


def numpy_histogram(cell: Arr, bins: int, rng: tuple[float, float] | None) -> tuple[Arr, Arr]:
    v = cell[~np.isnan(cell)]
    return np.histogram(v, bins, range=rng)


def check_histograms(f: tet.TetFile, x: Arr, axes: list[int],
                     wire: list[dict[str, int]] | None) -> None:
    reduce = axes or list(range(x.ndim))
    kept = [d for d in range(x.ndim) if d not in reduce]
    cells = np.moveaxis(x, reduce, list(range(x.ndim - len(reduce), x.ndim)))
    cells = cells.reshape(math.prod(x.shape[d] for d in kept), -1)
    finite = x[np.isfinite(x)]
    for bins, rng in ((7, (float(finite.min()) + 1, float(finite.max()) - 1)), (1, (-5.0, 5.0)),
                      (4, None)):
        if rng is None and not np.isfinite(x[~np.isnan(x)]).all():
            continue  # NumPy refuses a non-finite autodetected range; see the error test
        body: dict[str, Any] = {"bins": bins, "axes": axes}
        if rng:
            body.update(min=rng[0], max=rng[1])
        doc: dict[str, Any] = {"dataset": "a", "histogram": body}
        if wire:
            doc["selection"] = wire
        ex = f.query(doc)["execution"]
        want = [numpy_histogram(c, bins, rng) for c in cells]
        if axes:
            assert ex["operation_reduced_histogram_counts"] == [
                float(n) for counts, _ in want for n in counts]
        else:
            counts, edges = want[0]
            assert ex["operation_histogram_counts"] == counts.astype(float).tolist()
            close(ex["operation_histogram_edges"], edges, rtol=0)


@pytest.mark.parametrize("dtype", ["f4", "f8", "i2", "u8"])
@pytest.mark.parametrize("obs", [0, 1])
def test_covariance_and_correlation_equal_numpy(dtype: str, obs: int, tmp_path: Path) -> None:
    a = array(dtype, (23, 9), 5)
    if a.dtype.kind == "f":
        a[np.isnan(a)] = 1.0
        a[np.isinf(a)] = 2.0
    a[:, 3] = 7  # a constant variable: correlation gives NaN there, as np.corrcoef does
    b = a if obs == 0 else a.T.copy()
    path = tet.write_dataset(tmp_path / "m.tet", "a", b, chunk_shape=(5, 4))
    x = b.astype(np.float64)
    with tet.open(path) as f, np.errstate(invalid="ignore", divide="ignore"):
        for budget in (None, 1):
            ex_doc = {"execution": {"memory_budget_bytes": budget}} if budget else {}
            cov = f.query({"dataset": "a", "covariance": obs, **ex_doc})["execution"]
            cor = f.query({"dataset": "a", "correlation": {"axis": obs}, **ex_doc})["execution"]
            want_cov = np.cov(x, rowvar=obs == 1, bias=True)
            want_cor = np.corrcoef(x, rowvar=obs == 1)
            assert cov["operation_covariance_order"] == 9
            assert cor["operation_correlation_order"] == 9
            close(cov["operation_covariance"], want_cov)
            close(cor["operation_correlation"], want_cor)
        res = f.covariance("a", obs, selection=[{"stop": 4}, {"stop": 4}])
        assert res.matrix_order == 4 and res.matrix is not None
        assert res.matrix.shape == (4, 4) and res.matrix.dtype == np.float64
        want = np.cov(x[:4, :4], rowvar=obs == 1, bias=True)
        close(res.matrix, want)
        # the wire document keeps the flat list of order² floats
        assert len(res.raw["execution"]["operation_covariance"]) == 16


def test_covariance_propagates_nan(tmp_path: Path) -> None:
    a = np.arange(12.0).reshape(4, 3)
    a[1, 2] = np.nan
    path = tet.write_dataset(tmp_path / "n.tet", "a", a)
    with tet.open(path) as f:
        m = f.covariance("a", 0).matrix
        assert m is not None and m.shape == (3, 3) and m.dtype == np.float64
        close(m, np.cov(a, rowvar=False, bias=True))
        assert math.isnan(m[2, 2]) and not math.isnan(m[0, 0])


@pytest.mark.parametrize("doc,message", [
    ({"covariance": 0, "dataset": "v"},
     "validation: covariance/correlation require a rank-2 logical selection (got rank 1)"),
    ({"correlation": 5, "dataset": "m"},
     "validation: observation axis index 5 out of range for rank 2"),
    ({"covariance": 0, "dataset": "wide"},
     "validation: variable axis length 1025 exceeds maximum 1024"),
    ({"histogram": {"bins": 3}, "dataset": "inf"},
     "validation: histogram range taken from the data is not finite"),
])
def test_tier_c_errors(doc: dict[str, Any], message: str, tmp_path: Path) -> None:
    w = tet.TetWriter.create(tmp_path / "e.tet")
    w.write_dataset("v", np.arange(5.0))
    w.write_dataset("m", np.ones((3, 4)))
    w.write_dataset("wide", np.ones((2, 1025)))
    w.write_dataset("inf", np.array([1.0, np.inf, 3.0]))
    w.commit()
    with tet.open(tmp_path / "e.tet") as f, pytest.raises(tet.QueryError) as err:
        f.query(doc)
    assert str(err.value).startswith(message)


def test_histogram_edge_rules(tmp_path: Path) -> None:
    a = np.array([[3.0, 3.0, 3.0], [np.nan, 1.0, 9.0]])
    path = tet.write_dataset(tmp_path / "h.tet", "a", a)
    with tet.open(path) as f:
        h = f.histogram("a", 2, selection=[{"stop": 1}, {}])  # constant data: v ± 0.5
        assert h.histogram_edges is not None and h.histogram_counts is not None
        assert h.histogram_edges.dtype == np.float64 and h.histogram_counts.dtype == np.int64
        assert h.histogram_edges.tolist() == [2.5, 3.0, 3.5]
        assert h.histogram_counts.tolist() == [0, 3]
        assert h.raw["execution"]["operation_histogram_counts"] == [0.0, 3.0]  # wire unchanged
        h = f.histogram("a", 4, min=1.0, max=3.0)  # outside dropped, max in the last bin
        want, edges = np.histogram(a[~np.isnan(a)], 4, range=(1.0, 3.0))
        np.testing.assert_array_equal(h.histogram_counts, want.astype(np.int64), strict=True)
        np.testing.assert_array_equal(h.histogram_edges, edges, strict=True)
        part = f.histogram("a", 2, axis=1)
        assert part.reduced_shape == [2]
        assert part.reduced is not None and part.reduced.dtype == np.int64
        assert part.reduced.tolist() == [[0, 3], [1, 1]]
        assert part.raw["execution"]["operation_reduced_histogram_counts"] == [0.0, 3.0, 1.0, 1.0]


@pytest.mark.parametrize("tmpfile", [True, False], ids=["o_tmpfile", "named"])
def test_materialisation_temp_file_has_no_name_and_survives_error_and_interrupt(
        tmp_path: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch,
        tmpfile: bool) -> None:
    """The tier-C temp spill is a file with no name (O_TMPFILE, or created and unlinked at
    once), so neither an error, Ctrl-C nor SIGKILL can leave it in the cache."""
    if not tmpfile:
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    path = tet.write_dataset(tmp_path / "t.tet", "a", np.arange(100.0).reshape(10, 10))
    seen: list[list[Path]] = []
    real = materialize.quantile

    def boom(x: Arr, *args: Any, **kw: Any) -> Arr:
        seen.append(leftovers(private_cache))
        assert isinstance(x.base, mmap.mmap)  # it is file-backed, not RAM
        raise KeyboardInterrupt

    monkeypatch.setattr(materialize, "quantile", boom)
    # per row: a scalar median streams and copies nothing
    doc = {"dataset": "a", "median": [1], "execution": {"memory_budget_bytes": 1}}
    with tet.open(path) as f:
        with pytest.raises(KeyboardInterrupt):
            f.query(doc)
        assert seen == [[]]  # nothing named in the cache even while it is in use
        assert leftovers(private_cache) == []
        monkeypatch.setattr(materialize, "quantile", real)
        assert f.median("a") == 49.5
    assert leftovers(private_cache) == []


@pytest.mark.parametrize("dtype", ["f4", "f8", "i8", "u2", "f2"])
def test_spill_export_is_dtype_native_row_major(dtype: str, tmp_path: Path) -> None:
    a = array(dtype, (9, 11), 2)
    src = tet.write_dataset(tmp_path / "s.tet", "a", a, chunk_shape=(4, 3))
    sel = [{"start": 1, "step": 2}, {"stop": 10, "step": 3}]
    with tet.open(src) as f:
        r = f.query({"dataset": "a", "spill": "out/part.bin", "selection": sel}, preview=4)
        ex = r["execution"]
        assert ex["memory_strategy"] == "mmap_spill"
        target = tmp_path / "out" / "part.bin"  # relative to the .tet, parent created
        assert Path(ex["spill_f32_path"]) == target.resolve()
        want = a[1::2, :10:3]
        assert ex["spill_f32_bytes"] == want.nbytes == target.stat().st_size
        got = np.fromfile(target, dtype=np.dtype(dtype).newbyteorder("<")).reshape(want.shape)
        np.testing.assert_array_equal(got, want)
        res = f.read_spill("a", "again.bin", selection=sel)
        np.testing.assert_array_equal(res.to_numpy(), want)
        assert res.to_numpy().dtype == np.dtype(dtype) and res.shape == want.shape
        preview = r["execution"][f"{tet.dtypes.for_numpy(a.dtype).name}_preview"]
        assert len(preview) == 4


def test_spill_refusals_and_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    (tmp_path / "d" / "adir").mkdir(parents=True)
    src = tet.write_dataset(tmp_path / "d" / "s.tet", "a", np.arange(10.0))
    with tet.open(src) as f:
        with pytest.raises(tet.QueryError, match="is not under an allowed root"):
            f.query({"dataset": "a", "spill": "../../../../etc/x.bin"}, preview=1)
        with pytest.raises(tet.QueryError, match="names a directory"):
            f.query({"dataset": "a", "spill": "adir"}, preview=1)
        extra = tmp_path / "elsewhere"
        with pytest.raises(tet.QueryError, match="is not under an allowed root"):
            f.read_spill("a", extra / "x.bin")
    with tet.open(src, spill_allow=[extra]) as f:
        assert f.read_spill("a", extra / "x.bin").to_numpy().tolist() == list(range(10))
        target = tmp_path / "d" / "keep.bin"
        target.write_bytes(b"old")

        def broken(*args: Any, **kw: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(f.reader, "fill", broken)
        with pytest.raises(tet.DiskFullError) as info:
            f.query({"dataset": "a", "spill": "keep.bin"}, preview=1)
        assert str(info.value) == (f"validation: cannot write spill file {target.resolve()}: "
                                   "No space left on device (80 bytes)")
        assert target.read_bytes() == b"old"
        assert sorted(p.name for p in target.parent.iterdir()) == ["adir", "keep.bin", "s.tet"]


def test_spill_results_decode_with_the_real_dtype(tmp_path: Path) -> None:
    a = np.arange(12, dtype=np.int64).reshape(3, 4) * 3
    src = tet.write_dataset(tmp_path / "i.tet", "a", a)
    with tet.open(src) as f:
        res = f.read_spill("a", selection=[{"start": 1}, {}])  # default: the cache
        assert res.path.exists() and res.dtype_tag == tet.dtypes.for_numpy(np.int64).tag
        np.testing.assert_array_equal(res.to_numpy(), a[1:])
        res.path.unlink()
        with pytest.raises(FileNotFoundError) as missing:
            res.to_numpy()
        assert type(missing.value) is tet.TetFileNotFoundError
        assert str(missing.value) == (f"cannot read spill file {res.path}: No such file or "
                                      "directory")
        short = f.read_spill("a", "short.bin")
        os.truncate(short.path, 8)
        with pytest.raises(tet.FileChangedError) as changed:
            short.to_numpy()
        assert str(changed.value) == (f"spill file {short.path} has 8 bytes, expected 96 (12 "
                                      "elements of int64 for shape (3, 4)); it changed after "
                                      "it was written")
        short.path.unlink()
        os.mkfifo(short.path)  # a FIFO put in its place: refused at once, never waited on
        with pytest.raises(tet.NotRegularFileError) as fifo:
            short.to_numpy()
        assert str(fifo.value) == (f"cannot read spill file {short.path}: is a FIFO, not a "
                                   "spill file")
