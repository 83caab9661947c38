"""Interoperability: `.tet` files this project did not write, read by `tet`.

Matrix:

(a) every ``files[]`` entry of ``interop/files/manifest.json`` with ``opens: true``
    (19 reference/upstream files: 1-d .. 4-d, ten dtypes, edge tiles, several
    datasets per file, appended sessions, a transform sidecar, a converted Zarr
    store, spilled metadata): ``tet.open`` succeeds and the catalog equals the
    manifest field by field — file size, dataset names and order
    (``dataset_names`` tuple / callable, ``datasets()``), wire dtype tags, NumPy
    dtypes, shapes, chunk shapes, chunk counts (index rows per dataset in
    ``summary()["chunks"]``), codecs used, superblock, ``file_execution``,
    history and metadata — and every dataset's ``read_numpy()`` equals its
    ``.npy`` (dtype and values, NaN == NaN);
(b) every entry with ``opens: false`` (``plan.tet``: flag bit 0 set, garbage
    ``THST`` JSON) raises `tet.CatalogError` from ``tet.open`` whose message
    contains the reference error of the file's ``open_error`` case in
    ``cases.jsonl`` (``invalid one-chunk write spec: footer JSON parse``);
(c) every ``kind == "read"`` case of ``cases.jsonl``: ``read_numpy(dataset,
    selection=query["selection"])`` has the expected dtype, shape and values
    (``"NaN"`` / ``"Infinity"`` / ``"-Infinity"`` decoded to floats);
(d) every ``.tet`` in ``upstream-fixtures/tet`` against the known values of that
    folder's README (sample / multichunk_{u8,u32,f16}: values 1..6 in [2, 3];
    large: f32 [34, 64] = 0..2175, mean 1087.5, 144 chunks; plan: fails to open);
(e) the upstream query documents: each ``.json`` / ``.toml`` pair parses to the
    same document (an explicit JSON ``null`` is the same as an absent TOML key),
    and the ``slice_*`` documents select the right sub-array of ``sample.tet``
    through ``read_numpy(selection=doc["selection"])``.
"""

from __future__ import annotations

import json
import math
import tomllib
from typing import Any

import numpy as np
import pytest

import tet
from tests.conftest import INTEROP, UPSTREAM

MANIFEST: dict[str, Any] = json.loads((INTEROP / "manifest.json").read_text())
FILES: dict[str, dict[str, Any]] = {m["file"]: m for m in MANIFEST["files"]}
CASES: list[dict[str, Any]] = [
    json.loads(line) for line in (INTEROP / "cases.jsonl").read_text().splitlines() if line.strip()
]
SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

OPENS = sorted(n for n, m in FILES.items() if m["opens"])
REFUSED = sorted(n for n, m in FILES.items() if not m["opens"])
READ_CASES = [c for c in CASES if c["kind"] == "read"]
OPEN_ERROR_CASES = {c["file"]: c for c in CASES if c["kind"] == "open_error"}

UPSTREAM_TET = UPSTREAM / "tet"
QUERIES = UPSTREAM / "queries"


def dec(v: Any) -> Any:
    """Decode the corpus' string spellings of non-finite floats."""
    if isinstance(v, list):
        return [dec(x) for x in v]
    if isinstance(v, str):
        return SPECIAL.get(v, v)
    return v


def rows_by_dataset(summary: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for row in summary["chunks"]:
        out.setdefault(row["dataset_id"], []).append(row)
    return out


def test_corpus_is_complete() -> None:
    """The matrix above is not silently empty (wrong path, moved corpus)."""
    assert len(OPENS) >= 18
    assert REFUSED == ["plan.tet"]
    assert len(READ_CASES) >= 70
    assert "plan.tet" in OPEN_ERROR_CASES
    for name in FILES:
        assert (INTEROP / name).is_file(), name


# ---------------------------------------------------------------------------
# (a) catalog and full arrays of every file that opens


@pytest.mark.parametrize("name", OPENS)
def test_catalog_matches_manifest(name: str) -> None:
    m = FILES[name]
    path = INTEROP / name
    assert path.stat().st_size == m["size"]
    names = [d["name"] for d in m["datasets"]]
    with tet.open(path) as f:
        assert f.dataset_names == tuple(names)
        assert f.dataset_names() == names
        assert f.datasets() == names
        assert len(f) == len(names)
        s = f.summary()
        assert s["superblock"] == m["superblock"]
        assert s["file_execution"] == m["file_execution"]
        assert f.file_execution == m["file_execution"]
        assert s["history"] == m["history"]
        assert f.history == m["history"]
        assert s["metadata"] == m["metadata"]
        assert f.metadata == m["metadata"]
        assert [d["name"] for d in s["datasets"]] == names
        rows = rows_by_dataset(s)
        assert set(rows) <= set(range(len(names)))
        for i, d in enumerate(m["datasets"]):
            sd = s["datasets"][i]
            assert sd["dtype"] == d["dtype"], d["name"]
            assert sd["shape"] == d["shape"], d["name"]
            assert sd["chunk_shape"] == d["chunk_shape"], d["name"]
            mine = rows.get(i, [])
            assert len(mine) == d["chunk_count"], d["name"]
            assert sorted({r["codec"] for r in mine}) == sorted(d["codecs"]), d["name"]
            ds = f[d["name"]]
            assert ds.name == d["name"]
            assert ds.dtype == d["dtype"]
            assert ds.numpy_dtype == np.dtype(d["numpy_dtype"])
            assert list(ds.shape) == d["shape"]
            assert list(ds.chunk_shape) == d["chunk_shape"]


@pytest.mark.parametrize("name", OPENS)
def test_full_arrays_equal_npy(name: str) -> None:
    m = FILES[name]
    with tet.open(INTEROP / name) as f:
        for d in m["datasets"]:
            want = np.load(INTEROP / d["npy"])
            got = f.read_numpy(d["name"])
            assert got.dtype == want.dtype, d["name"]
            assert got.dtype == np.dtype(d["numpy_dtype"]), d["name"]
            assert got.shape == tuple(d["shape"]), d["name"]
            assert np.array_equal(got, want, equal_nan=True), d["name"]


def test_full_arrays_survive_close() -> None:
    """Arrays returned by read_numpy stay valid after the file is closed."""
    with tet.open(INTEROP / "multi_dataset.tet") as f:
        arrays = {n: f.read_numpy(n) for n in f.dataset_names}
    for d in FILES["multi_dataset.tet"]["datasets"]:
        assert np.array_equal(arrays[d["name"]], np.load(INTEROP / d["npy"]), equal_nan=True)


# ---------------------------------------------------------------------------
# (b) files the reference refuses to open


@pytest.mark.parametrize("name", REFUSED)
def test_refused_files_raise_catalog_error(name: str) -> None:
    case = OPEN_ERROR_CASES[name]
    assert case["expect_error"] is True
    reference = case["reference_error"]
    assert reference == FILES[name]["reference_error"]
    with pytest.raises(tet.CatalogError) as info:
        tet.open(INTEROP / name)
    assert reference in str(info.value)
    assert "footer JSON parse" in str(info.value)
    assert isinstance(info.value, tet.TetError)


@pytest.mark.parametrize("case", list(OPEN_ERROR_CASES.values()), ids=lambda c: c["id"])
def test_open_error_cases(case: dict[str, Any]) -> None:
    with pytest.raises(tet.CatalogError, match=case["reference_error"]):
        tet.open(INTEROP / case["file"])


# ---------------------------------------------------------------------------
# (c) read cases


@pytest.mark.parametrize("case", READ_CASES, ids=lambda c: c["id"])
def test_read_case(case: dict[str, Any]) -> None:
    e = case["expect"]
    want = np.array(dec(e["values"]), dtype=e["dtype"]).reshape(e["logical_selection_shape"])
    with tet.open(INTEROP / case["file"]) as f:
        got = f.read_numpy(case["dataset"], selection=case["query"].get("selection"))
    assert got.dtype == np.dtype(e["dtype"])
    assert list(got.shape) == e["logical_selection_shape"]
    assert np.array_equal(got, want, equal_nan=True)


def test_read_cases_match_npy_slices() -> None:
    """Each read case is also the NumPy slice of the full .npy array."""
    for case in READ_CASES:
        m = FILES[case["file"]]
        d = next(d for d in m["datasets"] if d["name"] == case["dataset"])
        full = np.load(INTEROP / d["npy"])
        sel = case["query"].get("selection") or [{} for _ in full.shape]
        key = tuple(
            slice(s.get("start") or 0, s.get("stop") if s.get("stop") is not None else n,
                  s.get("step") or 1)
            for s, n in zip(sel, full.shape)
        )
        with tet.open(INTEROP / case["file"]) as f:
            got = f.read_numpy(case["dataset"], selection=case["query"].get("selection"))
        assert np.array_equal(got, full[key], equal_nan=True), case["id"]


# ---------------------------------------------------------------------------
# (d) upstream fixtures

ONE_TO_SIX = np.arange(1, 7).reshape(2, 3)
UPSTREAM_KNOWN: dict[str, tuple[str, str, np.ndarray[Any, Any], list[int], int]] = {
    # file: (dataset, dtype, values, chunk_shape, chunk count)
    "sample.tet": ("temperature", "float32", ONE_TO_SIX, [2, 2], 2),
    "multichunk_u8.tet": ("a", "uint8", ONE_TO_SIX, [2, 2], 2),
    "multichunk_u32.tet": ("a", "uint32", ONE_TO_SIX, [2, 2], 2),
    "multichunk_f16.tet": ("a", "float16", ONE_TO_SIX, [2, 2], 2),
    "large.tet": ("a", "float32", np.arange(34 * 64).reshape(34, 64), [4, 4], 144),
}
UPSTREAM_FILES = sorted(p.name for p in UPSTREAM_TET.glob("*.tet"))


def test_upstream_listing() -> None:
    assert set(UPSTREAM_FILES) == {*UPSTREAM_KNOWN, "plan.tet"}


@pytest.mark.parametrize("name", UPSTREAM_FILES)
def test_upstream_fixture(name: str) -> None:
    path = UPSTREAM_TET / name
    if name == "plan.tet":
        with pytest.raises(tet.CatalogError, match="footer JSON parse"):
            tet.open(path)
        return
    dataset, dtype, values, chunk_shape, n_chunks = UPSTREAM_KNOWN[name]
    with tet.open(path) as f:
        assert f.dataset_names() == [dataset]
        s = f.summary()
        assert s["superblock"]["flags"] == 0
        assert s["history"] == [] and s["metadata"] == {}
        assert s["datasets"][0]["chunk_shape"] == chunk_shape
        assert len(s["chunks"]) == n_chunks
        got = f.read_numpy(dataset)
        if name in FILES:  # the interop corpus carries a verbatim copy
            m = FILES[name]
            assert path.stat().st_size == m["size"]
            assert s["superblock"] == m["superblock"]
            assert [d["name"] for d in s["datasets"]] == [d["name"] for d in m["datasets"]]
    assert got.dtype == np.dtype(dtype)
    assert got.shape == values.shape
    assert np.array_equal(got, values.astype(dtype))


def test_upstream_sample_statistics() -> None:
    with tet.open(UPSTREAM_TET / "sample.tet") as f:
        a = f.read_numpy("temperature").astype(np.float64)
    assert a.mean() == 3.5 and a.sum() == 21.0
    assert a.var() == pytest.approx(2.9166667, rel=1e-6)


def test_upstream_large_mean() -> None:
    with tet.open(UPSTREAM_TET / "large.tet") as f:
        a = f.read_numpy("a")
        assert f["a"].shape == (34, 64)
    assert a.shape == (34, 64)
    assert float(a.astype(np.float64).mean()) == 1087.5


# ---------------------------------------------------------------------------
# (e) upstream query documents

QUERY_STEMS = sorted(p.stem for p in QUERIES.glob("*.json"))


def _drop_nulls(v: Any) -> Any:
    """JSON ``null`` members mean "absent" on the wire; TOML has no null."""
    if isinstance(v, dict):
        return {k: _drop_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_drop_nulls(x) for x in v]
    return v


def _load_pair(stem: str) -> tuple[Any, Any]:
    doc_json = json.loads((QUERIES / f"{stem}.json").read_text())
    with (QUERIES / f"{stem}.toml").open("rb") as fh:
        doc_toml = tomllib.load(fh)
    return doc_json, doc_toml


def test_query_pairs_complete() -> None:
    tomls = sorted(p.stem for p in QUERIES.glob("*.toml"))
    assert tomls == QUERY_STEMS
    assert {"slice_full_temperature", "slice_2x2_temperature"} <= set(QUERY_STEMS)


@pytest.mark.parametrize("stem", QUERY_STEMS)
def test_query_pair_parses_to_same_document(stem: str) -> None:
    doc_json, doc_toml = _load_pair(stem)
    assert isinstance(doc_json, dict)
    assert _drop_nulls(doc_json) == _drop_nulls(doc_toml)


SLICE_EXPECT = {
    "slice_full_temperature": ONE_TO_SIX,
    "slice_2x2_temperature": ONE_TO_SIX[0:2, 0:2],
}


@pytest.mark.parametrize("stem", [s for s in QUERY_STEMS if s.startswith("slice_")])
def test_slice_query_documents(stem: str) -> None:
    doc_json, doc_toml = _load_pair(stem)
    want = SLICE_EXPECT[stem].astype(np.float32)
    with tet.open(UPSTREAM_TET / "sample.tet") as f:
        assert doc_json["dataset"] in f.dataset_names
        for doc in (doc_json, doc_toml):
            got = f.read_numpy(doc["dataset"], selection=doc.get("selection"))
            assert got.dtype == np.float32
            assert np.array_equal(got, want)
