"""Zone-map answers on packages: ``min``/``max``/``count``/``nan_count``/``any_nan``/
``all_finite`` equal the fold over the same ``packed.tet`` opened directly, the execution
block's ``zone_map`` counts the tiles answered, decoded and skipped, and a ``ZONE.json``
that fails any check is ignored (the answer then comes from the tiles)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tests.packages import run_ref
from tests.test_package_ref import _build

OPS = ("min", "max", "count", "nan_count", "any_nan", "all_finite")
SHAPE, CHUNK = (23, 17), (4, 5)  # ragged edge tiles on both axes
GRID = (6, 4)
SELECTIONS: dict[str, Any] = {
    "whole": None,
    "aligned": [{"start": 4, "stop": 20}, {"start": 5, "stop": 15}],
    "to_edge": [{"start": 8}, {"start": 10}],
    "unaligned": [{"start": 1, "stop": 22}, {"start": 2, "stop": 16}],
    "one_tile": [{"start": 1, "stop": 3}, {"start": 6, "stop": 8}],
    "stepped": [{"step": 2}, {}],
}


def _data(dtype: str) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(7)
    if np.dtype(dtype).kind == "f":
        a = (rng.standard_normal(SHAPE) * 100).astype(dtype)
        a[1, 7] = np.nan        # one NaN in tile (0, 1)
        a[4:8, 10:15] = np.nan  # tile (1, 2) all NaN
        a[20, 16] = np.inf      # an infinity in the ragged corner tile
        a[13, 0] = -np.inf
        return a
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, SHAPE, endpoint=True).astype(dtype)


def _package(tmp_path: Path, arrays: dict[str, tuple[np.ndarray[Any, Any], tuple[int, ...]]]
             ) -> Path:
    pkg = tet.create(tmp_path / "z.tet.d")
    src = tmp_path / "src.tet"
    with tet.TetWriter.create(src) as w:
        for name, (array, chunk) in arrays.items():
            w.write_dataset(name, array, chunk_shape=chunk)
    tet.ingest(pkg, src, part_id="p")
    tet.publish(pkg, ["p"])
    return pkg


def _answer(execution: dict[str, Any]) -> Any:
    keys = [k for k in execution if k.startswith("operation_") and k not in (
        "operation_element_count",)] or ["operation_element_count"]
    return {k: execution[k] for k in keys}


def _both(pkg: Path | str, doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    with tet.open(pkg) as f, tet.open(f.path) as g:
        assert f.generation == 1 and g.generation is None
        return f.query(doc)["execution"], g.query(doc)["execution"]


@pytest.mark.parametrize("dtype", ["f4", "f8", "i2", "u1"])
def test_answers_equal_the_fold(tmp_path: Path, dtype: str) -> None:
    pkg = _package(tmp_path, {"x": (_data(dtype), CHUNK)})
    for op in OPS:
        for label, sel in SELECTIONS.items():
            doc: dict[str, Any] = {"dataset": "x", op: []}
            if sel is not None:
                doc["selection"] = sel
            mine, plain = _both(pkg, doc)
            assert _answer(mine) == _answer(plain), (dtype, op, label)
            assert "zone_map" not in plain
            zone = mine.get("zone_map")
            if label in ("one_tile", "stepped"):
                assert zone is None, (op, label)
                continue
            assert zone is not None, (op, label)
            if label == "whole":
                assert zone == {"tiles_answered": 24, "tiles_decoded": 0, "tiles_skipped": 0}
                assert mine["total_bytes_read_from_disk"] == 0
            elif label in ("aligned", "to_edge"):
                assert zone == {"tiles_answered": 8, "tiles_decoded": 0, "tiles_skipped": 0}
            else:  # rows 1..22 touch tiles 0..5, cols 2..16 tiles 0..3; core 1..4 x 1..2
                assert zone["tiles_answered"] == 8
                assert zone["tiles_answered"] + zone["tiles_decoded"] + \
                    zone["tiles_skipped"] == 24
                assert mine["total_bytes_read_from_disk"] <= \
                    plain["total_bytes_read_from_disk"]


def test_values_match_numpy(tmp_path: Path) -> None:
    a = _data("f4")
    pkg = _package(tmp_path, {"x": (a, CHUNK)})
    with tet.open(pkg) as f:
        assert math.isnan(f.min("x")) and math.isnan(f.max("x"))
        assert f.nan_count("x") == np.isnan(a).sum() == 21
        assert bool(f.any_nan("x")) is True
        sel = [{"start": 8, "stop": 20}, {"start": 0, "stop": 10}]  # no NaN, one -inf
        assert f.min("x", selection=sel) == -np.inf
        assert f.max("x", selection=sel) == np.max(a[8:20, 0:10])
        assert not f.all_finite("x", selection=sel)
        assert f.count("x", selection=sel) == 120


def test_partial_axes_with_unit_chunks(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    cube = rng.standard_normal((6, 10, 12)).astype(np.float32)
    cube[2, 3, 4] = np.nan
    pkg = _package(tmp_path, {"c": (cube, (1, 4, 5)), "m": (cube[0], (4, 5))})
    for op in OPS:
        for sel in (None, [{"start": 1, "stop": 5}, {"start": 4}, {"start": 0, "stop": 10}],
                    [{}, {"start": 1, "stop": 9}, {"start": 2, "stop": 11}]):
            doc: dict[str, Any] = {"dataset": "c", op: [1, 2]}
            if sel is not None:
                doc["selection"] = sel
            mine, plain = _both(pkg, doc)
            assert _answer(mine) == _answer(plain), (op, sel)
            assert mine["operation_reduced_shape"] == plain["operation_reduced_shape"]
            assert mine["zone_map"]["tiles_answered"] > 0
        # a kept axis whose tiles are wider than one element: folded as before
        mine, plain = _both(pkg, {"dataset": "m", op: [0]})
        assert "zone_map" not in mine and _answer(mine) == _answer(plain)


def test_whole_tiles_are_not_read(tmp_path: Path) -> None:
    """A tile whose bytes are damaged after publishing still answers from its zone row:
    proof that the zone path reads no tile."""
    a = np.arange(400, dtype=np.float64).reshape(20, 20)
    pkg = _package(tmp_path, {"x": (a, (10, 10))})
    with tet.open(pkg) as f:
        packed, offset = f.path, int(f.catalog.entries["payload_offset"][0])
    with open(packed, "r+b") as fh:
        fh.seek(offset + 10 * 8)
        fh.write(b"\xff" * 8)  # element (1, 0) (in tile (0, 0)) becomes NaN bits
    with tet.open(pkg) as f:
        assert f.min("x") == 0.0 and f.max("x") == 399.0
        assert f.query({"dataset": "x", "any_nan": []})["execution"]["operation_any_nan"] \
            is False
        # a selection with edge tiles folds them (tile (0, 0) is read there)
        assert math.isnan(f.min("x", selection=[{"start": 1}, {}]))


def test_plain_files_and_switch_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = _package(tmp_path, {"x": (_data("f4"), CHUNK)})
    with tet.open(pkg) as f:
        assert "zone_map" in f.query({"dataset": "x", "max": []})["execution"]
    monkeypatch.setenv("TET_ZONE_MAPS", "off")
    with tet.open(pkg) as f:
        assert "zone_map" not in f.query({"dataset": "x", "max": []})["execution"]


def test_pickled_handle_answers_from_zones(tmp_path: Path) -> None:
    import pickle
    pkg = _package(tmp_path, {"x": (_data("f8"), CHUNK)})
    with tet.open(pkg) as f:
        copy = pickle.loads(pickle.dumps(f))
        doc = {"dataset": "x", "nan_count": []}
        assert copy.generation == 1
        assert copy.query(doc)["execution"]["zone_map"]["tiles_answered"] == 24
        assert copy.query(doc)["execution"]["operation_nan_count"] == 21
        copy.close()


# ---------------------------------------------------------------------------
# Tampering: every check that fails leaves the answer to the tiles


def _gen(pkg: Path) -> Path:
    return pkg / "generations" / "00000001"


def _rewrite(pkg: Path, text: bytes, *, manifest: bool = True, region: bool = True) -> None:
    """Replace ZONE.json by `text` (padded with spaces to its length when the packed
    file's zone region is patched too) and, with `manifest`, fix the manifest's hash."""
    gen = _gen(pkg)
    old = (gen / "ZONE.json").read_bytes()
    if region:
        assert len(text) <= len(old)
        text = text + b" " * (len(old) - len(text))
        packed = (gen / "packed.tet").read_bytes()
        at = packed.index(old)
        (gen / "packed.tet").write_bytes(packed[:at] + text + packed[at + len(old):])
    (gen / "ZONE.json").write_bytes(text)
    if manifest:
        doc = json.loads((gen / "MANIFEST.json").read_text())
        doc["zone_maps_sha256"] = hashlib.sha256(text).hexdigest()
        (gen / "MANIFEST.json").write_text(json.dumps(doc, indent=2) + "\n")


def _mutated(pkg: Path, change: Callable[[dict[str, Any]], Any]) -> bytes:
    doc = json.loads((_gen(pkg) / "ZONE.json").read_text())
    change(doc)
    return json.dumps(doc, separators=(",", ":")).encode()


def _set(row: int, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["chunks"][row][key] = value
    return change


def _hex(value: float, dtype: str = "<f4") -> str:
    return np.array([value], dtype=dtype).tobytes().hex()


FORGED: dict[str, Callable[[dict[str, Any]], Any]] = {
    "element_count": _set(3, "element_count", 21),
    "dataset_id": _set(0, "dataset_id", 1),
    "huge_count": _set(0, "element_count", 10 ** 400),
    "float_count": _set(0, "null_count", 0.0),
    "bool_id": _set(0, "dataset_id", False),
    "null_over_count": _set(0, "null_count", 21),
    "bad_hex": _set(0, "min_le", "zz" * 4),
    "short_hex": _set(0, "min_le", "00" * 3),
    "spaced_hex": _set(0, "min_le", "00 00 00"),
    "nan_hex": _set(0, "min_le", _hex(np.nan)),
    "min_over_max": _set(0, "min_le", _hex(1e30)),
    "missing_max": lambda d: d["chunks"][0].pop("max_le"),
    "extra_key": _set(0, "sum", 1),
    "tile_out_of_grid": _set(0, "chunk_index", [6, 0]),
    "repeated_row": lambda d: d["chunks"].__setitem__(1, dict(d["chunks"][0])),
    "dropped_row": lambda d: d["chunks"].pop(),
    "wrong_generation": lambda d: d.__setitem__("generation", 2),
    "wrong_packed_sha": lambda d: d.__setitem__("packed_sha256", "0" * 64),
    "not_a_list": lambda d: d.__setitem__("chunks", {}),
    "row_not_object": lambda d: d["chunks"].__setitem__(0, [0]),
    "minmax_of_all_nan": lambda d: d["chunks"][6].update(min_le=_hex(1), max_le=_hex(2)),
    "null_minmax": lambda d: d["chunks"][6].update(min_le=None, max_le=None),
    "nested_index": _set(0, "chunk_index", [[0], 0]),
    "negative_index": _set(0, "chunk_index", [-1, 0]),
    "float_index": _set(0, "chunk_index", [0.0, 0]),
    "short_index": _set(0, "chunk_index", [0]),
    "swapped_rows": lambda d: d["chunks"][0].update(chunk_index=[0, 1]),
}


def test_rewrite_without_change_is_still_used(tmp_path: Path) -> None:
    """The control for the forgeries below: compact, padded, manifest and region patched,
    but the same content, passes every check."""
    pkg = _package(tmp_path, {"x": (_data("f4"), CHUNK)})
    _rewrite(pkg, _mutated(pkg, lambda d: None))
    mine, plain = _both(pkg, {"dataset": "x", "nan_count": []})
    assert mine["zone_map"]["tiles_answered"] == 24 and _answer(mine) == _answer(plain)


def test_forged_integer_null_count_is_ignored(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {"x": (_data("i2"), CHUNK)})
    _rewrite(pkg, _mutated(pkg, _set(0, "null_count", 1)))
    mine, plain = _both(pkg, {"dataset": "x", "nan_count": []})
    assert "zone_map" not in mine and mine["operation_nan_count"] == 0 == \
        plain["operation_nan_count"]


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_zone_maps_are_ignored(tmp_path: Path, case: str) -> None:
    """A forgery consistent with the manifest and the packed file's zone region still
    fails the row checks, and the answers come from the tiles."""
    a = _data("f4")
    pkg = _package(tmp_path, {"x": (a, CHUNK)})
    _rewrite(pkg, _mutated(pkg, FORGED[case]))
    for op in OPS:
        for sel in (None, SELECTIONS["unaligned"]):
            doc: dict[str, Any] = {"dataset": "x", op: [], **({"selection": sel} if sel else {})}
            mine, plain = _both(pkg, doc)
            assert "zone_map" not in mine, (case, op)
            assert _answer(mine) == _answer(plain)


def _wrong_min(doc: dict[str, Any]) -> None:
    for row in doc["chunks"]:
        if row["null_count"] == 0:
            row["min_le"] = _hex(-1e30)


@pytest.mark.parametrize("how", ["json_only", "manifest_too", "nan_literal", "deep",
                                 "not_utf8", "oversized"])
def test_tampered_files_are_ignored(tmp_path: Path, how: str) -> None:
    pkg = _package(tmp_path, {"x": (_data("f4"), CHUNK)})
    wrong = _mutated(pkg, _wrong_min)
    if how == "json_only":      # ZONE.json edited: its hash no longer the manifest's
        _rewrite(pkg, wrong, manifest=False, region=False)
    elif how == "manifest_too":  # both JSON files edited: not the packed file's zone map
        _rewrite(pkg, wrong, region=False)
    elif how == "nan_literal":
        _rewrite(pkg, wrong.replace(b'"null_count":0', b'"null_count":NaN', 1))
    elif how == "deep":
        _rewrite(pkg, b"[" * 100 + b"]" * 100)
    elif how == "not_utf8":
        _rewrite(pkg, b"\xff\xfe{}")
    else:
        gen = _gen(pkg)
        big = (gen / "ZONE.json").read_bytes() + b" " * (1 << 20)
        _rewrite(pkg, big, region=False)
    sel = [{"start": 8, "stop": 20}, {"start": 0, "stop": 10}]
    mine, plain = _both(pkg, {"dataset": "x", "min": [], "selection": sel})
    assert "zone_map" not in mine
    assert mine["operation_min"] == plain["operation_min"] is None  # -inf on the wire
    with tet.open(pkg) as f:
        assert f.min("x", selection=sel) == -np.inf


def test_reference_packages_answer_from_zones(tmp_path: Path) -> None:
    """A package tet-py 0.8.3 published: its ZONE.json passes the checks, and the zone
    answers equal the fold here and tet-py's own answers."""
    run_ref(_build("tet"), tmp_path)
    cases = [(name, op, axes) for name in ("x", "y", "f", "big") for op in OPS
             for axes in ([], [1]) if not axes or name in ("x", "f")]
    theirs = run_ref(f"""
        import tet, json
        f = tet.open("p.tet.d?generation=1")
        print(json.dumps([f.query({{"dataset": n, op: ax}})["execution"]
                          for n, op, ax in {cases!r}]))
    """, tmp_path)
    used = 0
    for (name, op, axes), ref in zip(cases, theirs):
        mine, plain = _both(f"{tmp_path / 'p.tet.d'}?generation=1", {"dataset": name, op: axes})
        assert _answer(mine) == _answer(plain), (name, op, axes)
        ref_answer = {k: v for k, v in _answer(ref).items() if k in _answer(mine)}
        if name != "f":  # tet-py 0.8.3's NaN answers differ from NumPy's (min skips NaN)
            assert ref_answer == _answer(mine), (name, op, axes)
        used += "zone_map" in mine
    assert used == 4 * 6 + 6  # every scalar; per-row of "f" (chunk (1, 3)) too
    with tet.open(f"{tmp_path / 'p.tet.d'}?generation=1") as f:
        minimum = f.min("f", selection=[{"start": 2}, {}])
        assert minimum == 0.0 and math.copysign(1.0, minimum) == -1.0  # -0.0, as folded


# ---------------------------------------------------------------------------
# Computing zone maps at publish: batched, the same rows and bytes as per tile


def _expected_rows(did: int, a: np.ndarray[Any, Any], chunk: tuple[int, ...]
                   ) -> list[dict[str, Any]]:
    rows = []
    grid = [-(-n // c) for n, c in zip(a.shape, chunk)]
    for tile in np.ndindex(*grid):
        t = a[tuple(slice(i * c, (i + 1) * c) for i, c in zip(tile, chunk))].reshape(-1)
        valid = t[~np.isnan(t)] if t.dtype.kind == "f" else t
        row: dict[str, Any] = {"dataset_id": did, "chunk_index": list(tile),
                               "element_count": t.size, "null_count": t.size - valid.size}
        if valid.size:
            row["min_le"] = valid[int(np.argmin(valid))].tobytes().hex()
            row["max_le"] = valid[int(np.argmax(valid))].tobytes().hex()
        rows.append(row)
    return rows


@pytest.mark.parametrize("batch", [None, 64])
def test_publish_computes_zone_rows_and_postings(tmp_path: Path, batch: int | None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from tet import package_layout, package_pack
    if batch is not None:  # tiny batches: every dataset split over several
        monkeypatch.setattr(package_pack, "_STATS_BATCH", batch)
    zeros = np.zeros((9, 7), np.float32)
    zeros[0, 1], zeros[5, 6] = -0.0, np.nan   # 0.0 before -0.0 in tile (0, 0)
    zeros[3, 0] = -0.0                         # -0.0 first in tile (1, 0)
    arrays: dict[str, tuple[np.ndarray[Any, Any], tuple[int, ...]]] = {
        "f": (_data("f4"), CHUNK), "d": (_data("f8"), (5, 6)), "h": (_data("f2"), CHUNK),
        "i": (_data("i2"), CHUNK), "u": (_data("u1"), (3, 17)), "z": (zeros, (3, 2)),
        "low": ((np.arange(300) % 5).astype(np.int64) - 2, (7,)),
        "lowf": (np.where(np.arange(60) % 9 == 0, np.nan, np.arange(60) % 3).astype("f4"),
                 (8,)),
    }
    pkg = tet.create(tmp_path / "z.tet.d")
    with tet.TetWriter.create(tmp_path / "src.tet") as w:
        for i, (name, (a, chunk)) in enumerate(arrays.items()):
            w.write_dataset(name, a, chunk_shape=chunk, codec="zstd" if i % 2 else "raw")
    tet.ingest(pkg, tmp_path / "src.tet", part_id="p")
    tet.publish(pkg, ["p"])
    text = (_gen(pkg) / "ZONE.json").read_bytes()
    doc = json.loads(text)
    assert package_layout.dumps(doc) == text  # the indented layout, byte for byte
    want = [r for did, (a, chunk) in enumerate(arrays.values())
            for r in _expected_rows(did, a, chunk)]
    assert doc["chunks"] == want
    index = json.loads((_gen(pkg) / "INDEX.json").read_text())["indexes"]
    assert [x["dataset_id"] for x in index] == [5, 6, 7]
    signed = {p["value_le"]: p["chunks"] for p in index[0]["postings"]}
    assert signed["00000080"] == [[0, 0], [1, 0]]  # -0.0: a value of its own
    assert len(signed["00000000"]) == 12
    low = {p["value_le"]: p["chunks"] for p in index[1]["postings"]}
    assert low == {np.int64(v).tobytes().hex(): [[t] for t in range(43)]
                   for v in (-2, -1, 0, 1, 2)}
    lowf = {p["value_le"]: p["chunks"] for p in index[2]["postings"]}
    assert sorted(lowf) == sorted(np.float32(v).tobytes().hex() for v in (0, 1, 2))
    vals = arrays["lowf"][0]
    for v in (0, 1, 2):
        assert lowf[np.float32(v).tobytes().hex()] == [
            [t] for t in range(8) if (vals[t * 8:(t + 1) * 8] == v).any()]


def test_zone_text_matches_dumps() -> None:
    from tet import package_layout, package_pack
    rows = [{"dataset_id": 0, "chunk_index": [], "element_count": 1, "null_count": 1},
            {"dataset_id": 1, "chunk_index": [3], "element_count": 2, "null_count": 0,
             "min_le": "00ff", "max_le": "ff00"},
            {"dataset_id": 2, "chunk_index": [0, 12, 4], "element_count": 60,
             "null_count": 3, "min_le": "0000803f", "max_le": "00008040"}]
    for chunk_rows in ([], rows[:1], rows):
        doc = {"version": 1, "generation": 7, "packed_sha256": "ab" * 32,
               "chunks": chunk_rows}
        assert package_pack._zone_text(7, "ab" * 32, chunk_rows) == package_layout.dumps(doc)


def test_s3_package_answers_from_zones(tmp_path: Path, s3: Any) -> None:
    """A generation range-read from an object store: manifest, zone map and the copy in
    packed.tet are read (three small requests), whole tiles are answered without being
    fetched, and an edited ZONE.json there is ignored."""
    a = _data("f4")
    src = tmp_path / "src.tet"
    tet.write_dataset(src, "x", a, chunk_shape=CHUNK)
    url, o = "s3://tet/zones/p", s3.options
    tet.create(url, storage_options=o)
    tet.ingest(url, src, part_id="p", storage_options=o)
    tet.publish(url, ["p"], storage_options=o)
    local = tmp_path / "local.tet"
    tet.write_dataset(local, "x", a, chunk_shape=CHUNK)
    for op in OPS:
        with tet.open(url, storage_options=o) as f, tet.open(local) as g:
            mine, plain = f.query({"dataset": "x", op: []})["execution"], \
                g.query({"dataset": "x", op: []})["execution"]
        assert _answer(mine) == _answer(plain), op
        assert mine["zone_map"] == {"tiles_answered": 24, "tiles_decoded": 0,
                                    "tiles_skipped": 0}, op
    gen = "zones/p/generations/00000001"
    zone = s3.get("tet", f"{gen}/ZONE.json")
    edited = re.sub(rb'"element_count": (\d+)',
                    lambda m: b'"element_count": %d' % (int(m.group(1)) - 1), zone, count=1)
    assert edited != zone
    s3.put("tet", f"{gen}/ZONE.json", edited)
    with tet.open(url, storage_options=o) as f:
        ex = f.query({"dataset": "x", "count": []})["execution"]
    assert "zone_map" not in ex and ex["operation_element_count"] == a.size
