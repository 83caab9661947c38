"""`tet.many.query_many`: one document over many files, locally or on a cluster.

Covers:

- responses come back in path order and equal each file's own ``query``;
- ``combine=True`` equals the single-file answer on the concatenated data for every
  combinable fold (scalar, and partial over the concatenation axis), with NaN and
  ±inf present, with selections, dim names and ``null_count`` fills;
- refusals: ops that do not combine (arg_*, tier C, no op), unequal reduced shapes,
  unequal fills, preview with combine, no files; invalid documents fail before any
  file is touched; a failing file is named in the error (missing file, unknown
  dataset, corrupt file);
- on a ``LocalCluster(n_workers=2, processes=True)`` over loopback: 20 files with and
  without ``combine``, errors crossing process boundaries, and dask arrays and
  xarray datasets computed there with each worker opening a file at most once.
  The cluster is shut down by the fixture.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tet.errors import CatalogError, QueryError
from tet.many import COMBINABLE_OPS, query_many

PIECES = 20
SHAPE = (6, 5, 4)  # one piece: time, y, x; pieces concatenate along time


def _pieces(kind: str) -> list[np.ndarray[Any, Any]]:
    rng = np.random.default_rng(11)
    out = [rng.standard_normal(SHAPE) * 3 + 1e4 for _ in range(PIECES)]
    if kind == "dirty":
        out[3][2, 1, 1] = np.nan
        out[7][0, 4, 3] = np.inf
        out[12][5, 0, 0] = -np.inf
        out[12][5, 0, 2] = -9999.0
        out[19][1, 1, 1] = -9999.0
    return out


def _write(directory: Path, kind: str) -> tuple[list[str], Path]:
    directory.mkdir(parents=True, exist_ok=True)
    pieces = _pieces(kind)
    meta: dict[str, Any] = {"dim_names": ["time", "y", "x"], "attrs": {"_FillValue": "-9999"}}
    paths = [str(tet.write_dataset(directory / f"{kind}-{i:02d}.tet", "v", p,
                                   chunk_shape=(4, 3, 4), **meta))
             for i, p in enumerate(pieces)]
    whole = tet.write_dataset(directory / f"{kind}-all.tet", "v", np.concatenate(pieces),
                              chunk_shape=(4, 3, 4), **meta)
    return paths, whole


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], Path]]:
    root = tmp_path_factory.mktemp("archive")
    return {kind: _write(root / kind, kind) for kind in ("clean", "dirty")}


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a == b and type(a) is type(b)
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)


def _results(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response["execution"].items() if k.startswith("operation_")}


# ---------------------------------------------------------------------------
# local pool


def test_responses_in_order(archive: dict[str, tuple[list[str], Path]]) -> None:
    paths, _ = archive["clean"]
    doc = {"dataset": "v", "mean": ["y"]}
    responses = query_many(paths, doc)
    assert len(responses) == PIECES
    for path, response in zip(paths, responses):
        with tet.open(path) as f:
            want = f.query(doc)
        assert response["tet_file"] == path
        assert _results(response) == _results(want)
        assert response["read_plan"] == want["read_plan"]
    assert query_many([], doc) == []


def test_preview_and_text_documents(archive: dict[str, tuple[list[str], Path]]) -> None:
    paths, _ = archive["clean"]
    out = query_many(paths[:3], '{"dataset": "v", "max": []}', preview=2, max_workers=1)
    with tet.open(paths[1]) as f:
        first = f.read_numpy("v").ravel()[:2].tolist()
    assert out[1]["execution"]["f64_preview"] == first
    assert [r["execution"]["operation_max"] for r in out] == [
        float(p.max()) for p in _pieces("clean")[:3]]


@pytest.mark.parametrize("kind", ["clean", "dirty"])
@pytest.mark.parametrize("axes", [[], ["time"], ["0", "x"]])
def test_combine_equals_single_file(archive: dict[str, tuple[list[str], Path]], kind: str,
                                    axes: list[str]) -> None:
    paths, whole = archive[kind]
    with tet.open(whole) as f:
        for op in sorted(COMBINABLE_OPS):
            doc = {"dataset": "v", op: axes}
            combined = query_many(paths, doc, combine=True)
            single = f.query(doc)
            assert combined["operation"] == single["operation"], op
            got, want = _results(combined), _results(single)
            assert sorted(got) == sorted(want), op
            for key in want:
                assert _close(got[key], want[key]), (op, key, got[key], want[key])
            assert combined["execution"]["memory_strategy"] == "streaming_fold"
            assert combined["tet_files"] == paths


def test_combine_matches_numpy(archive: dict[str, tuple[list[str], Path]]) -> None:
    paths, _ = archive["clean"]
    data = np.concatenate(_pieces("clean"))

    def scalar(op: str) -> Any:
        return query_many(paths, {"dataset": "v", op: []}, combine=True)["execution"]

    assert scalar("count")["operation_element_count"] == data.size
    assert math.isclose(scalar("mean")["operation_mean"], data.mean(), rel_tol=1e-14)
    assert math.isclose(scalar("var")["operation_var"], data.var(), rel_tol=1e-11)
    assert math.isclose(scalar("std")["operation_std"], data.std(), rel_tol=1e-12)
    assert scalar("min")["operation_min"] == data.min()
    assert scalar("max")["operation_max"] == data.max()
    reduced = query_many(paths, {"dataset": "v", "var": "time"}, combine=True)["execution"]
    assert reduced["operation_reduced_shape"] == [5, 4]
    np.testing.assert_allclose(reduced["operation_reduced_var"], data.var(axis=0).ravel(),
                               rtol=1e-10)


def test_combine_with_selection_and_fill(archive: dict[str, tuple[list[str], Path]]) -> None:
    paths, whole = archive["dirty"]
    sel = [{"start": 1, "stop": 5}, {"step": 2}, {}]
    doc = {"dataset": "v", "selection": sel, "nan_std": ["time"]}
    combined = query_many(paths, doc, combine=True)
    assert combined["selection_axes"] == 3
    parts = np.concatenate([p[1:5, ::2] for p in _pieces("dirty")])
    with np.errstate(invalid="ignore"):
        want = np.nanstd(parts, axis=0)
    got = np.array([np.nan if v is None else v for v in
                    combined["execution"]["operation_reduced_nan_std"]])
    np.testing.assert_allclose(got, np.where(np.isfinite(want), want, np.nan).ravel(),
                               rtol=1e-10)
    nulls = query_many(paths, {"dataset": "v", "null_count": []}, combine=True)
    assert nulls["operation"] == {"null_count": {"axes": [], "fill": -9999.0}}
    assert nulls["execution"]["operation_null_count"] == 2.0
    with tet.open(whole) as f:
        assert f.null_count("v") == 2.0


def test_combine_refusals(archive: dict[str, tuple[list[str], Path]], tmp_path: Path) -> None:
    paths, _ = archive["clean"]
    for op, shown in (("arg_max", "'arg_max'"), ("median", "'median'")):
        with pytest.raises(QueryError, match=rf"combine=True works for the folds all_finite, "
                                             rf"any_inf, .*; the document has {shown}"):
            query_many(paths, {"dataset": "v", op: []}, combine=True)
    with pytest.raises(QueryError, match="the document has no operation"):
        query_many(paths, {"dataset": "v"}, combine=True)
    other = str(tet.write_dataset(tmp_path / "short.tet", "v", np.ones((2, 3, 4)),
                                  dim_names=["time", "y", "x"], attrs={"_FillValue": "0"}))
    with pytest.raises(QueryError, match=r"needs the same reduced shape from every file; "
                                         r".*clean-00\.tet gives \[5, 4\], .*short\.tet "
                                         r"gives \[3, 4\]"):
        query_many([paths[0], other], {"dataset": "v", "sum": "time"}, combine=True)
    # combining along time works when the kept shape agrees
    sums = query_many([paths[0], other], {"dataset": "v", "sum": "y"}, combine=False)
    assert [r["execution"]["operation_reduced_shape"] for r in sums] == [[6, 4], [2, 4]]
    with pytest.raises(QueryError, match=r"null_count fill differs between files \(-9999\.0 in "
                                         r".*clean-00\.tet, 0\.0 in .*short\.tet\); pass `fill`"):
        query_many([paths[0], other], {"dataset": "v", "null_count": []}, combine=True)
    both = query_many([paths[0], other], {"dataset": "v", "null_count": {"fill": 1.0}},
                      combine=True)
    assert both["execution"]["operation_null_count"] == 24.0
    with pytest.raises(ValueError, match="preview does not apply with combine=True"):
        query_many(paths, {"dataset": "v", "sum": []}, combine=True, preview=3)
    with pytest.raises(ValueError, match="combine=True needs at least one file"):
        query_many([], {"dataset": "v", "sum": []}, combine=True)


def test_errors_name_the_file(archive: dict[str, tuple[list[str], Path]],
                              tmp_path: Path) -> None:
    paths, _ = archive["clean"]
    missing = str(tmp_path / "missing.tet")
    with pytest.raises(FileNotFoundError, match=r"missing\.tet: No such file or directory"):
        query_many([paths[0], missing], {"dataset": "v", "sum": []})
    with pytest.raises(tet.TetError, match=r"unknown dataset 'w' in .*clean-00\.tet"):
        query_many(paths[:2], {"dataset": "w", "sum": []}, combine=True)
    broken = tmp_path / "broken.tet"
    broken.write_bytes(b"NOPE" + bytes(60))
    with pytest.raises(CatalogError, match=r"broken\.tet: bad magic: expected TETR"):
        query_many([str(broken)], {"dataset": "v", "sum": []})
    # the document is checked before any file is opened
    with pytest.raises(QueryError, match="validation"):
        query_many([missing], {"dataset": "v", "sum": [], "bogus": 1})
    with pytest.raises(TypeError, match="query must be a dict or JSON string"):
        query_many(paths, 42)


# ---------------------------------------------------------------------------
# dask.distributed


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    cluster: Any = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None)
    c: Any = Client(cluster)  # type: ignore[no-untyped-call]
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def test_distributed_query_many(client: Any, archive: dict[str, tuple[list[str], Path]]
                                ) -> None:
    paths, whole = archive["dirty"]
    assert len(client.scheduler_info()["workers"]) == 2
    doc = {"dataset": "v", "nan_mean": ["x"]}
    remote = query_many(paths, doc, client)
    local = query_many(paths, doc)
    assert [r["tet_file"] for r in remote] == paths
    assert [_results(r) for r in remote] == [_results(r) for r in local]
    with tet.open(whole) as f:
        for op in ("mean", "var", "std", "min", "max", "sum", "count", "any_nan"):
            combined = query_many(paths, {"dataset": "v", op: ["time"]}, client, combine=True)
            want = _results(f.query({"dataset": "v", op: ["time"]}))
            got = _results(combined)
            assert all(_close(got[k], want[k]) for k in want), op
        scalar = query_many(paths, {"dataset": "v", "var": []}, client, combine=True)
        assert _close(_results(scalar), _results(f.query({"dataset": "v", "var": []})))


def test_distributed_errors(client: Any, archive: dict[str, tuple[list[str], Path]],
                            tmp_path: Path) -> None:
    paths, _ = archive["clean"]
    with pytest.raises(tet.TetError, match=r"unknown dataset 'w' in .*clean-01\.tet"):
        query_many(paths[1:3], {"dataset": "w", "sum": []}, client)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.tet"):
        query_many([str(tmp_path / "nowhere.tet")], {"dataset": "v", "sum": []}, client,
                   combine=True)


def test_distributed_dask_and_xarray(client: Any, tmp_path: Path) -> None:
    import xarray as xr

    from tet.dask import cache_info, to_dask
    from tet.xarray_backend import TetBackendEntrypoint

    a = np.random.default_rng(5).standard_normal((64, 48))
    path = tet.write_dataset(tmp_path / "d.tet", "a", a, chunk_shape=(8, 16),
                             dim_names=["row", "col"])
    x: Any = to_dask(path, "a", block_bytes=8 * 16 * 8 * 2)
    assert x.chunks == ((8,) * 8, (32, 16))
    np.testing.assert_array_equal(client.compute(x).result(), a)
    np.testing.assert_allclose(client.compute(x.std(axis=0)).result(), a.std(axis=0),
                               rtol=1e-12)
    ds = xr.open_dataset(path, engine=TetBackendEntrypoint, chunks={})
    np.testing.assert_allclose(float(ds["a"].mean().compute()), a.mean(), rtol=1e-12)
    opened = client.run(cache_info)
    counts = [info.get(str(path), 0) for info in opened.values()]
    assert max(counts) == 1 and sum(counts) >= 1
