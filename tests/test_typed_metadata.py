"""Typed metadata (`tet.attrs`): attribute values keep their types through a file, in the
footer's ``metadata.tet`` extension beside the v1 string maps, and a hostile extension
is a `CatalogError` at open."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tet.attrs import decode_value, display, encode_value, split_attrs
from tet.writer import TetWriter

VALUES: list[Any] = [
    "K",
    "",
    True,
    np.float32(1e20),
    np.float32("nan"),
    np.float64(-np.inf),
    np.int16(-32767),
    np.uint64(2**64 - 1),
    np.int8(-5),
    np.array([0.0, 1.0], dtype=np.float32),
    np.array([], dtype=np.int32),
    np.array([[1, 2], [3, 4]], dtype=np.uint8),
    np.array([1.5, np.nan, np.inf]),
    np.array(["a", "bc"]),
    b"\x00\xffraw",
    3,
    2.5,
    [1, 2, 3],
    [],
    {"a": [1, {"b": None}]},
    (1, "x"),
    "x" * 5000,
]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f")))
    if isinstance(a, np.generic):
        return (type(a) is type(b)
                and (bool(a == b) or (math.isnan(float(a)) and math.isnan(float(b)))))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:30] for v in VALUES])
def test_every_value_comes_back_with_its_type(value: Any) -> None:
    raw = encode_value(value)
    back = decode_value(json.loads(json.dumps(raw, allow_nan=False)))
    assert _same(value, back), (value, back)


@pytest.mark.parametrize("bad", [object(), np.array([1 + 2j]), math.nan, [math.inf],
                                 np.datetime64("2020-01-01")])
def test_values_the_footer_cannot_hold_are_refused(bad: Any) -> None:
    with pytest.raises(TypeError, match="attribute"):
        encode_value(bad, "attribute 'k'")


def test_split_keeps_strings_in_v1_and_types_beside_them() -> None:
    v1, ext = split_attrs({"units": "K", "fill": np.float32(1e20), "range": [0, 1],
                           "long": "y" * 2000, "flag": np.int16(3)})
    assert v1 == {"units": "K", "fill": "100000000000000000000", "range": "[0, 1]",
                  "flag": "3"}
    assert set(ext) == {"fill", "range", "long", "flag"}
    assert ext["fill"] == {"dtype": "float32", "value": 1e20}
    assert ext["long"] == "y" * 2000


def test_split_past_64_keys_keeps_the_rest_typed() -> None:
    attrs = {f"k{i:03d}": f"v{i}" for i in range(80)}
    v1, ext = split_attrs(attrs)
    assert list(v1) == list(attrs)[:64]
    assert ext == {k: attrs[k] for k in list(attrs)[64:]}


def test_display_is_the_convert_text() -> None:
    assert display(np.float32(-9999.0)) == "-9999"
    assert display(np.float32(0.1)) == "0.1"
    assert display(np.array([0, 1], dtype=np.int16)) == "[0, 1]"
    assert display(np.array(["first", "second"])) == "first"
    assert display(b"abc") == "abc"
    assert display("") is None and display(np.array([])) is None


def _write(path: Path, **kwargs: Any) -> Path:
    w = TetWriter.create(path)
    w.write_dataset("t", np.arange(6, dtype=np.float32).reshape(2, 3),
                    attrs=kwargs.get("attrs"), dim_names=["x", "y"], extra=kwargs.get("extra"))
    if "file_attrs" in kwargs:
        w.set_file_attrs(kwargs["file_attrs"])
    w.commit()
    return path


def test_a_file_keeps_typed_dataset_and_file_attrs(tmp_path: Path) -> None:
    attrs = {"units": "K", "_FillValue": np.float32(1e20), "valid_range": np.array(
        [0.0, 1.0], dtype=np.float32), "flag_values": np.array([], dtype=np.int8)}
    gattrs = {"Conventions": "CF-1.7", "realization_index": np.int32(1),
              "branch_time": np.float64(0.0), "history": "h" * 3000}
    path = _write(tmp_path / "a.tet", attrs=attrs, file_attrs=gattrs,
                  extra={"encoding": {"dtype": "int16", "scale_factor": np.float64(0.01)}})
    with tet.open(path) as f:
        ds = f.dataset("t")
        assert dict(ds.attrs) == {"units": "K", "_FillValue": "100000000000000000000",
                                  "valid_range": "[0, 1]"}
        for key, value in attrs.items():
            assert _same(value, ds.typed_attrs[key]), key
        for key, value in gattrs.items():
            assert _same(value, f.file_attrs[key]), key
        enc = ds.extra["encoding"]
        assert enc["dtype"] == "int16" and _same(np.float64(0.01), enc["scale_factor"])
        meta = f.metadata
    # the v1 maps are what the format says; everything else sits under one key
    assert set(meta) == {"file", "datasets", "tet"}
    assert set(meta["datasets"]["t"]) == {"attrs", "dim_names"}


def test_appending_keeps_the_typed_metadata(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.tet", attrs={"n": np.int64(7)}, file_attrs={"title": "x"},
                  extra={"shape": []})
    w = TetWriter.open_append(path)
    w.write_dataset("u", np.zeros(3), attrs={"m": np.float32(2.5)})
    w.commit()
    with tet.open(path) as f:
        assert _same(np.int64(7), f.dataset("t").typed_attrs["n"])
        assert f.dataset("t").extra == {"shape": []}
        assert _same(np.float32(2.5), f.dataset("u").typed_attrs["m"])
        assert f.file_attrs == {"title": "x"}
    w = TetWriter.open_append(path)
    w.set_file_attrs({})
    w.commit()
    with tet.open(path) as f:
        assert f.file_attrs == {}
        assert _same(np.int64(7), f.dataset("t").typed_attrs["n"])


def test_a_file_without_typed_metadata_has_none(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.tet", attrs={"units": "K"})
    with tet.open(path) as f:
        assert "tet" not in f.metadata
        assert f.file_attrs == {}
        assert dict(f.dataset("t").typed_attrs) == {"units": "K"}
        assert dict(f.dataset("t").extra) == {}


@pytest.mark.parametrize("extra", [{"shape": [1]}, {"text": {"width": 0, "kind": "str"}},
                                   {"text": {"width": 4, "kind": "utf-16"}}, {"colour": 1}])
def test_bad_extra_fields_are_refused_when_written(tmp_path: Path, extra: Any) -> None:
    with pytest.raises(tet.CatalogError, match=r"^footer metadata tet: dataset 't'"):
        _write(tmp_path / "a.tet", extra=extra)
    assert not (tmp_path / "a.tet").exists()


def _with_footer_metadata(path: Path, ext: Any) -> Path:
    """`path` with its footer JSON replaced by one whose metadata.tet is `ext`."""
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack_from("<Q", raw, len(raw) - 16)
    doc = json.loads(bytes(raw[len(raw) - 16 - n:len(raw) - 16]))
    doc.pop("tet_checksums_ref", None)
    doc.setdefault("metadata", {})["tet"] = ext
    text = json.dumps(doc, separators=(",", ":")).encode()
    out = path.with_suffix(".hostile.tet")
    out.write_bytes(bytes(raw[:len(raw) - 16 - n]) + text + struct.pack("<QI4s", len(text), 1,
                                                                         b"THST"))
    return out


@pytest.mark.parametrize("ext", [
    [], {"attrs": []}, {"attrs": {"k": {"dtype": "complex128", "value": 1}}},
    {"attrs": {"k": {"dtype": "int8", "value": 300}}}, {"attrs": {"k": {"bytes": "!!"}}},
    {"attrs": {"k": 5}}, {"attrs": {"": "x"}}, {"what": {}},
    {"attrs": {"k": {"json": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}}},
    {"attrs": {f"k{i}": "v" for i in range(4097)}},
    {"datasets": {"t": {"text": {"width": 2**40, "kind": "str"}}}},
    {"coords": {"x": {"dtype": "object"}}},
])
def test_a_hostile_extension_is_a_catalog_error(tmp_path: Path, ext: Any) -> None:
    path = _with_footer_metadata(_write(tmp_path / "a.tet"), ext)
    with pytest.raises(tet.CatalogError, match="footer metadata tet: "):
        tet.open(path)


def test_a_sound_extension_written_by_hand_reads(tmp_path: Path) -> None:
    path = _with_footer_metadata(_write(tmp_path / "a.tet"), {
        "attrs": {"n": {"dtype": "float64", "value": ["NaN", 1, "-Infinity"]}},
        "datasets": {"t": {"attrs": {"b": True}}, "gone": {"attrs": {"x": "y"}}}})
    with tet.open(path) as f:
        got = f.file_attrs["n"]
        assert got.dtype == np.float64 and np.isnan(got[0]) and got[2] == -np.inf
        assert f.dataset("t").typed_attrs["b"] is True


# ---------------------------------------------------------------------------
# fixed-width text (tet.text)


@pytest.mark.parametrize("values", [
    np.array([["ab", "cdé"], ["", "x"]]), np.array([b"a", b"\xffbcd"]),
    np.array([f"station-{i:03d}" for i in range(100)], dtype=object), np.array([], dtype=str)])
def test_text_round_trips_through_a_file(tmp_path: Path, values: Any) -> None:
    from tet.text import decode_text, encode_text

    data, entry = encode_text(values)
    assert data.dtype == np.uint8 and data.shape[:-1] == values.shape
    if values.size == 0:
        return
    w = TetWriter.create(tmp_path / "s.tet")
    w.write_dataset("names", data, extra={"text": entry})
    w.commit()
    with tet.open(tmp_path / "s.tet") as f:
        ds = f.dataset("names")
        back = decode_text(f.read_numpy("names"), ds.extra["text"]["kind"])
    want = values.astype(str if entry["kind"] == "str" else bytes)
    assert back.dtype.kind == ("U" if entry["kind"] == "str" else "S")
    assert back.tolist() == want.tolist()


def test_text_refuses_what_is_not_text() -> None:
    from tet.text import encode_text

    with pytest.raises(TypeError, match="cannot store a int64 array as text"):
        encode_text(np.arange(3))
    with pytest.raises(TypeError, match="cannot store a object array as text"):
        encode_text(np.array(["a", b"b"], dtype=object))


def test_attrs_keep_the_v1_limits_and_extra_attrs_hold_the_rest(tmp_path: Path) -> None:
    with pytest.raises(tet.CatalogError, match="attr_string_bytes limit"):
        _write(tmp_path / "a.tet", attrs={"history": "h" * 2000})
    with pytest.raises(tet.CatalogError, match=r"dataset_attrs limit \(65 > 64\)"):
        _write(tmp_path / "a.tet", attrs={f"k{i}": "v" for i in range(65)})
    many = {f"k{i}": np.int16(i) for i in range(100)}
    path = _write(tmp_path / "a.tet", attrs={"units": "K", "big": np.arange(600)},
                  extra={"attrs": {"history": "h" * 2000, **many}})
    with tet.open(path) as f:
        ds = f.dataset("t")
        assert dict(ds.attrs) == {"units": "K"}  # the array's text passes 1024 bytes
        assert ds.typed_attrs["history"] == "h" * 2000
        assert _same(np.int16(99), ds.typed_attrs["k99"])
        assert _same(np.arange(600), ds.typed_attrs["big"])
