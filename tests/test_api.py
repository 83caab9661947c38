"""The public Python API of an open file: exact exception types and messages, selections,
metadata.

Covers:

- `UnknownDatasetError` (a KeyError and a TetError; message lines, suggestions,
  unquoted ``str()``), catalog-index `IndexError`, missing and closed files;
- `Dataset` fields and ``axis_index`` (ints, negative ints, dim names) with
  `UnknownAxisError` (a ValueError and a TetError) and its message lines;
- selection errors with the exact texts of query.md §3, label selections through
  coords (dim-name keys and decimal axis-index keys, exclusive ``stop_label``),
  box form ≡ per-axis form, `axis_slice` / `selection_slices` / `full_selection`;
- memory budgets (`MemoryBudgetError` naming both sizes; per call and from the
  file's TIDX settings);
- zero-copy reads (``copy=None`` view: read-only, backed by the file mapping,
  alive after ``close``; ``copy=False`` refusing zstd, partial and strided boxes);
- ``typing_stub`` text (python-api.md §2); numpy integers where ints are taken, empty
  slices.

The write session's checks are in test_writer.py.
"""

from __future__ import annotations

import mmap
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tet.layout import ENTRY_DTYPE, encode_header

A = np.arange(12, dtype=np.float64).reshape(3, 4)


def unknown_field_message(key: str) -> str:
    return (f"invalid query JSON: unknown field `{key}`, expected one of `start`, `stop`, "
            "`step`, `start_label`, `stop_label`")


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    """One float64 (3, 4) dataset 'a' without footer metadata."""
    return tet.write_dataset(tmp_path / "plain.tet", "a", A)


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """'temperature' (3, 4) with dim_names and coords on both axes, 'grid' (2, 5) with
    coords keyed by axis index, 'meta_only' (3,) with attrs but no coords."""
    path = tmp_path / "labelled.tet"
    with tet.TetWriter.create(path) as w:
        w.write_dataset("temperature", A, chunk_shape=(2, 3), dim_names=["time", "x"],
                        coords={"time": ["t0", "t1", "t2"], "x": ["a", "b", "c", "d"]},
                        attrs={"units": "K"})
        w.write_dataset("grid", np.arange(10, dtype=np.int32).reshape(2, 5),
                        coords={"1": ["p", "q", "r", "s", "t"]})
        w.write_dataset("meta_only", np.arange(3, dtype=np.uint8), attrs={"k": "v"})
    return path


# ---------------------------------------------------------------------------
# unknown datasets, catalog indices, files


def test_unknown_dataset_error_type_and_message(plain: Path) -> None:
    with tet.open(plain) as f, pytest.raises(tet.UnknownDatasetError) as info:
        f["x"]
    err = info.value
    assert isinstance(err, KeyError)
    assert isinstance(err, tet.TetError)
    assert err.name == "x"
    assert Path(str(err.path)) == plain
    assert err.available == ("a",)
    assert str(err).splitlines() == [
        f"unknown dataset 'x' in {plain}",
        "available datasets (1):",
        "  - 'a'",
    ]
    assert not str(err).startswith(('"', "'"))   # KeyError would quote the whole text


def test_unknown_dataset_suggests_close_names(tmp_path: Path) -> None:
    path = tmp_path / "s.tet"
    with tet.TetWriter.create(path) as w:
        for name in ("temperature", "pressure", "temp"):
            w.write_dataset(name, A)
    with tet.open(path) as f:
        with pytest.raises(tet.UnknownDatasetError) as info:
            f.read_numpy("tmp")
        assert str(info.value).splitlines() == [
            f"unknown dataset 'tmp' in {path}",
            "available datasets (3):",
            "  - 'temperature'",
            "  - 'pressure'",
            "  - 'temp'",
            "did you mean: 'temp'?",
        ]
        with pytest.raises(KeyError) as info2:
            f.dataset("zzzzzz")
        assert "did you mean" not in str(info2.value)
        assert "zzzzzz" not in f
        assert "temp" in f


def test_dataset_index_out_of_range(plain: Path) -> None:
    with tet.open(plain) as f:
        assert f.dataset(0).name == "a"
        assert f[0] == f["a"]
        with pytest.raises(IndexError) as info:
            f.dataset(5)
    assert str(info.value) == f"dataset index 5 out of range for {plain} (count=1; names: 'a')"


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        tet.open(tmp_path / "missing.tet")
    with pytest.raises(FileNotFoundError):
        tet.TetFile.open(tmp_path / "missing.tet")


def test_bad_magic_is_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.tet"
    path.write_bytes(b"NOPE" * 32)
    with pytest.raises(tet.CatalogError, match=re.escape("bad magic: expected TETR, got "
                                                         "[78, 79, 80, 69]")), tet.open(path) as f:
        f.datasets()


def test_closed_file_read_raises(plain: Path) -> None:
    f = tet.open(plain)
    ds = f["a"]
    f.close()
    with pytest.raises(tet.TetError):
        f.read_numpy("a")
    with pytest.raises(tet.TetError):
        ds[0:2]
    with tet.open(plain) as g:
        pass
    with pytest.raises(tet.TetError):
        g.read_numpy("a")


def test_file_accessors(plain: Path) -> None:
    with tet.open(plain) as f:
        assert f.path == plain
        assert f.datasets() == ["a"]
        assert tuple(f.dataset_names) == ("a",)
        assert list(f) == ["a"]
        assert [d.name for d in f.iter_datasets()] == ["a"]


# ---------------------------------------------------------------------------
# Dataset and axes


def test_dataset_fields(labelled: Path) -> None:
    with tet.open(labelled) as f:
        ds = f["temperature"]
        assert ds.name == "temperature"
        assert ds.shape == (3, 4)
        assert ds.dtype == 2                    # wire tag of f64
        assert ds.numpy_dtype == np.dtype("<f8")
        assert ds.chunk_shape == (2, 3)
        assert ds.dim_names == ("time", "x")
        assert ds.ndim == 2
        assert ds.nbytes == 96
        assert dict(ds.attrs) == {"units": "K"}
        assert {k: tuple(v) for k, v in ds.coords.items()} == {
            "time": ("t0", "t1", "t2"), "x": ("a", "b", "c", "d")}
        with pytest.raises(AttributeError):
            ds.name = "other"  # type: ignore[misc]
        assert f["grid"].dtype == 3 and f["meta_only"].dtype == 5
        assert f["grid"].dim_names is None
        np.testing.assert_array_equal(ds.to_numpy(f), A)
        np.testing.assert_array_equal(ds.to_numpy(), A)


def test_axis_index_accepts_ints_negative_ints_and_names(labelled: Path) -> None:
    with tet.open(labelled) as f:
        ds = f["temperature"]
        assert [ds.axis_index(a) for a in (0, 1, -1, -2)] == [0, 1, 1, 0]
        assert ds.axis_index("time") == 0
        assert ds.axis_index("x") == 1
        assert f["grid"].axis_index(-1) == 1


def test_unknown_axis_int(labelled: Path) -> None:
    with tet.open(labelled) as f:
        for bad in (2, -3):
            with pytest.raises(tet.UnknownAxisError) as info:
                f["temperature"].axis_index(bad)
            err = info.value
            assert isinstance(err, ValueError) and isinstance(err, tet.TetError)
            assert str(err).splitlines() == [
                f"invalid axis {bad} for dataset 'temperature' in {labelled}",
                "ndim=2, shape=(3, 4)",
                "valid integer axis indices: 0..1 (or negative indexing)",
            ]


def test_unknown_axis_name_with_dim_names(labelled: Path) -> None:
    with tet.open(labelled) as f, pytest.raises(tet.UnknownAxisError) as info:
        f["temperature"].axis_index("tme")
    assert str(info.value).splitlines() == [
        f"invalid axis 'tme' for dataset 'temperature' in {labelled}",
        "ndim=2, shape=(3, 4)",
        "dim_names (index → name):",
        "  0 → 'time'",
        "  1 → 'x'",
        "did you mean: 'time'?",
    ]


def test_unknown_axis_name_without_dim_names(labelled: Path) -> None:
    with tet.open(labelled) as f, pytest.raises(ValueError) as info:
        f["grid"].axis_index("time")
    assert str(info.value).splitlines() == [
        f"invalid axis 'time' for dataset 'grid' in {labelled}",
        "ndim=2, shape=(2, 5)",
        "this dataset has no dim_names in footer metadata; use integer axis indices 0..1",
    ]


# ---------------------------------------------------------------------------
# selection errors (query.md §3)


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ([{"stop": 5}, {}], "validation: selection[0].stop must be <= shape[0] (3), got 5"),
        ([{}, {"stop": 9}], "validation: selection[1].stop must be <= shape[1] (4), got 9"),
        ([{"start": 3}, {}], "validation: selection[0].start must be < shape[0] (3), got 3"),
        ([{}, {"start": 4, "stop": 6}],
         "validation: selection[1].start must be < shape[1] (4), got 4"),
        ([{}, {"step": 0}], "validation: selection[1].step must be >= 1, got 0"),
        ([{}], "validation: selection must specify exactly 2 axes (one per dataset "
               "dimension), got 1"),
        ([{}, {}, {}], "validation: selection must specify exactly 2 axes (one per dataset "
                       "dimension), got 3"),
        ([{}] * 9, "validation: selection rank 9 exceeds maximum 8"),
        ([{"start": 2, "stop": 1}, {}],
         "validation: selection[0]: start must be < stop when both set (got 2 >= 1)"),
        ([{"start": 0, "start_label": "t0"}, {}],
         "validation: selection[0]: use either `start` or `start_label`, not both"),
        ([{}, {"stop": 2, "stop_label": "b"}],
         "validation: selection[1]: use either `stop` or `stop_label`, not both"),
        ([{"foo": 1}, {}], unknown_field_message("foo")),
        ([{}, {"Start": 1}], unknown_field_message("Start")),
        ([{"start": -1}, {}], "invalid query JSON: invalid value: integer `-1`, expected u64"),
        ([{}, {"stop": -2}], "invalid query JSON: invalid value: integer `-2`, expected u64"),
        ([{"step": -1}, {}], "invalid query JSON: invalid value: integer `-1`, expected u64"),
    ],
)
def test_selection_error_texts(labelled: Path, selection: Any, message: str) -> None:
    with tet.open(labelled) as f, pytest.raises(tet.SelectionError) as info:
        f.read_numpy("temperature", selection)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError) and isinstance(info.value, tet.TetError)


@pytest.mark.parametrize(
    ("dataset", "selection", "message"),
    [
        ("temperature", [{"start_label": "t9"}, {}],
         'validation: unknown coordinate label "t9" (axis has 3 labels)'),
        ("temperature", [{}, {"stop_label": "z"}],
         'validation: unknown coordinate label "z" (axis has 4 labels)'),
        ("grid", [{"start_label": "p"}, {}],
         "validation: selection[0] coordinate labels require `coords` for this axis in "
         "footer metadata"),
        ("meta_only", [{"start_label": "x"}],
         "validation: selection[0] coordinate labels require `coords` for this axis in "
         "footer metadata"),
        # stop_label is exclusive: the first label as stop leaves nothing
        ("temperature", [{"stop_label": "t0"}, {}],
         "validation: selection[0]: require start < stop (got 0 >= 0)"),
        ("temperature", [{"start_label": "t2", "stop_label": "t1"}, {}],
         "validation: selection[0]: require start < stop (got 2 >= 1)"),
    ],
)
def test_label_selection_error_texts(labelled: Path, dataset: str, selection: Any,
                                     message: str) -> None:
    with tet.open(labelled) as f, pytest.raises(tet.SelectionError) as info:
        f.read_numpy(dataset, selection)
    assert str(info.value) == message


def test_labels_without_footer_metadata(plain: Path) -> None:
    with tet.open(plain) as f, pytest.raises(tet.SelectionError) as info:
        f.read_numpy("a", [{"start_label": "x"}, {}])
    assert str(info.value) == ("validation: selection coordinate labels require footer "
                               "metadata for this dataset")


def test_label_selections_resolve_through_coords(labelled: Path) -> None:
    with tet.open(labelled) as f:
        got = f.read_numpy("temperature", [{"start_label": "t1"},
                                           {"start_label": "b", "stop_label": "d"}])
        np.testing.assert_array_equal(got, A[1:, 1:3])
        got = f.read_numpy("temperature", [{"stop_label": "t2"}, {"stop_label": "d", "step": 2}])
        np.testing.assert_array_equal(got, A[:2, 0:3:2])
        # coords keyed by the decimal axis index when the dataset has no dim_names
        g = np.arange(10, dtype=np.int32).reshape(2, 5)
        got = f.read_numpy("grid", [{}, {"start_label": "q", "stop_label": "t"}])
        np.testing.assert_array_equal(got, g[:, 1:4])
        # numeric bounds mixed with labels on the same axis
        got = f.read_numpy("grid", [{"start": 1}, {"start": 2, "stop_label": "s"}])
        np.testing.assert_array_equal(got, g[1:, 2:3])


def test_coords_keyed_by_index_beside_dim_names(tmp_path: Path) -> None:
    path = tmp_path / "k.tet"
    tet.write_dataset(path, "d", A, dim_names=["row", "col"], coords={"1": ["w", "x", "y", "z"]})
    with tet.open(path) as f:
        got = f.read_numpy("d", [{}, {"start_label": "x", "stop_label": "z"}])
        np.testing.assert_array_equal(got, A[:, 1:3])


def test_box_form_equals_per_axis_form(labelled: Path) -> None:
    with tet.open(labelled) as f:
        box = {"start": [1, 0], "stop": [3, 4], "step": [1, 3]}
        per_axis = [{"start": 1, "stop": 3, "step": 1}, {"start": 0, "stop": 4, "step": 3}]
        np.testing.assert_array_equal(f.read_numpy("temperature", box),
                                      f.read_numpy("temperature", per_axis))
        np.testing.assert_array_equal(f.read_numpy("temperature", box), A[1:3, 0:4:3])
        np.testing.assert_array_equal(f.read_numpy("temperature", {"start": [0, 2]}), A[:, 2:])
        with pytest.raises(tet.SelectionError, match="box selection"):
            f.read_numpy("temperature", {"start": [0, 2], "stop": [3]})


def test_h5py_key_errors(plain: Path) -> None:
    with tet.open(plain) as f:
        ds = f["a"]
        with pytest.raises(tet.SelectionError, match="slice step cannot be zero on axis 0"):
            ds[::0]
        np.testing.assert_array_equal(ds[:, ::-1], A[:, ::-1])  # negative steps as NumPy
        with pytest.raises(tet.TetIndexError, match="index 3 is out of bounds for axis 0"):
            ds[3]
        with pytest.raises(IndexError):
            ds[0, 0, 0]
        with pytest.raises(IndexError):
            ds[..., 0, ...]
        with pytest.raises(TypeError):
            ds["x"]
        assert ds[-1, -2] == A[-1, -2]
        np.testing.assert_array_equal(ds[..., -3:], A[..., -3:])
        np.testing.assert_array_equal(ds[-2], A[-2])


# ---------------------------------------------------------------------------
# selection helpers


def test_axis_slice() -> None:
    assert tet.axis_slice() == {}
    assert tet.axis_slice(1, 5, 2) == {"start": 1, "stop": 5, "step": 2}
    assert tet.axis_slice(stop=3) == {"stop": 3}
    assert tet.axis_slice(0) == {"start": 0}
    assert tet.axis_slice(start_label="a", stop_label="b") == {"start_label": "a",
                                                                "stop_label": "b"}
    assert tet.axis_slice(-1) == {"start": -1}      # passed through; the reader rejects it


def test_selection_slices_and_full_selection(plain: Path) -> None:
    first, second = tet.axis_slice(1), tet.axis_slice(step=2)
    sel = tet.selection_slices(first, second)
    assert sel == [{"start": 1}, {"step": 2}]
    sel[0]["stop"] = 2
    assert first == {"start": 1}                    # copies, not the caller's dicts
    assert tet.selection_slices() == []
    full = tet.full_selection(3)
    assert full == [{}, {}, {}]
    full[0]["start"] = 1
    assert full[1] == {} and full[2] == {}          # independent dicts
    with tet.open(plain) as f:
        np.testing.assert_array_equal(f.read_numpy("a", tet.full_selection(2)), A)
        np.testing.assert_array_equal(
            f.read_numpy("a", tet.selection_slices(tet.axis_slice(1), tet.axis_slice(step=2))),
            A[1:, ::2])
        with pytest.raises(tet.SelectionError, match=re.escape("integer `-1`, expected u64")):
            f.read_numpy("a", [tet.axis_slice(-1), tet.axis_slice()])


# ---------------------------------------------------------------------------
# memory budget


def test_memory_budget_error_names_size_and_budget(plain: Path) -> None:
    with tet.open(plain) as f:
        with pytest.raises(tet.MemoryBudgetError) as info:
            f.read_numpy("a", memory_budget_bytes=95)
        err = info.value
        assert isinstance(err, tet.TetError) and isinstance(err, MemoryError)
        numbers = re.findall(r"\d+", str(err))
        assert "96" in numbers and "95" in numbers
        np.testing.assert_array_equal(f.read_numpy("a", memory_budget_bytes=96), A)
        sel = [{"start": 1}, {"step": 2}]           # 2 x 2 x 8 = 32 bytes
        with pytest.raises(tet.MemoryBudgetError, match=r"\b32\b.*\b31\b"):
            f.read_numpy("a", sel, memory_budget_bytes=31)
        np.testing.assert_array_equal(f.read_numpy("a", sel, memory_budget_bytes=32), A[1:, ::2])


def test_memory_budget_from_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "b.tet"
    with tet.TetWriter.create(path) as w:
        w.write_dataset("a", A)
        w.set_execution(memory_budget_bytes=64)
    with tet.open(path) as f:
        assert f.file_execution["memory_budget_bytes"] == 64
        with pytest.raises(tet.MemoryBudgetError, match=r"\b96\b.*\b64\b"):
            f.read_numpy("a")
        np.testing.assert_array_equal(f.read_numpy("a", [{"stop": 2}, {}]), A[:2])
        np.testing.assert_array_equal(f.read_numpy("a", memory_budget_bytes=1000), A)
    with tet.TetWriter.open_append(path) as w:      # append keeps the TIDX settings
        w.write_dataset("b", A[:1])
    with tet.open(path) as f:
        assert f.file_execution["memory_budget_bytes"] == 64


# ---------------------------------------------------------------------------
# zero-copy views


def mapping_of(view: np.ndarray[Any, Any]) -> Any:
    base: Any = view
    while isinstance(base, np.ndarray):
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


def test_zero_copy_view_of_one_raw_chunk(tmp_path: Path) -> None:
    a = np.arange(40, dtype=np.float64).reshape(8, 5)
    path = tet.write_dataset(tmp_path / "v.tet", "a", a, chunk_shape=(4, 5))
    f = tet.open(path)
    view = f.read_numpy("a", [{"start": 4}, {}], copy=None)
    assert view.flags.writeable is False
    assert isinstance(mapping_of(view), mmap.mmap)
    again = f.read_numpy("a", {"start": [4, 0], "stop": [8, 5], "step": [1, 1]}, copy=False)
    assert np.shares_memory(view, again)
    with pytest.raises(ValueError):
        view[0, 0] = -1.0
    np.testing.assert_array_equal(view, a[4:])
    f.close()
    np.testing.assert_array_equal(view, a[4:])      # the view keeps the mapping alive
    np.testing.assert_array_equal(again, a[4:])
    with pytest.raises(tet.TetError):
        f.read_numpy("a")


def test_zero_copy_edge_chunk_and_whole_array(tmp_path: Path) -> None:
    a = np.arange(7, dtype=np.int16)
    path = tet.write_dataset(tmp_path / "e.tet", "a", a, chunk_shape=(4,))
    with tet.open(path) as f:
        edge = f.read_numpy("a", [{"start": 4}], copy=False)
        np.testing.assert_array_equal(edge, a[4:])
        assert not edge.flags.writeable
    path = tet.write_dataset(tmp_path / "w.tet", "a", A)
    with tet.open(path) as f:
        whole = f.read_numpy("a", copy=None)
    np.testing.assert_array_equal(whole, A)
    assert not whole.flags.writeable


def test_copy_none_falls_back_to_a_copy(tmp_path: Path) -> None:
    a = np.arange(40, dtype=np.float32).reshape(8, 5)
    raw = tet.write_dataset(tmp_path / "r.tet", "a", a, chunk_shape=(4, 5))
    packed = tet.write_dataset(tmp_path / "z.tet", "a", a, chunk_shape=(4, 5), codec="zstd")
    cases = [
        (raw, None, a),                                     # two chunks
        (raw, [{"start": 4, "stop": 7}, {}], a[4:7]),       # part of a chunk
        (raw, [{"start": 4, "step": 2}, {}], a[4::2]),      # strided
        (packed, [{"start": 4}, {}], a[4:]),                # exactly one zstd chunk
    ]
    for path, sel, want in cases:
        with tet.open(path) as f:
            got = f.read_numpy("a", sel, copy=None)
            assert got.flags.writeable and got.flags.c_contiguous
            np.testing.assert_array_equal(got, want)
            with pytest.raises(tet.TetError, match="copy=False"):
                f.read_numpy("a", sel, copy=False)


def test_default_read_is_a_private_copy(tmp_path: Path) -> None:
    path = tet.write_dataset(tmp_path / "c.tet", "a", A)
    with tet.open(path) as f:
        out = f.read_numpy("a")
    assert out.flags.writeable and out.flags.owndata
    out[0, 0] = -1
    with tet.open(path) as f:
        assert f.read_numpy("a")[0, 0] == 0


# ---------------------------------------------------------------------------
# typing stub


def test_typing_stub_with_dim_names(tmp_path: Path) -> None:
    path = tmp_path / "stub.tet"
    with tet.TetWriter.create(path) as w:
        w.write_dataset("air temp-2m", A, dim_names=["time", "x"])
        w.write_dataset("plain", A)
        w.write_dataset("v", A[0], dim_names=["lon"])
    expected = "\n".join([
        "# Autogenerated from tet.TetFile.typing_stub() — names are per .tet file.",
        f"# source: {path}",
        "from __future__ import annotations",
        "from typing import Literal",
        "",
        "DatasetName = Literal['air temp-2m', 'plain', 'v']",
        "",
        "AxisName_air_temp_2m = Literal['time', 'x']  # dim_names for 'air temp-2m'",
        "AxisName_v = Literal['lon']  # dim_names for 'v'",
    ]) + "\n"
    with tet.open(path) as f:
        assert f.typing_stub() == expected
    assert tet.typing_stub(str(path)) == expected


def test_typing_stub_without_dim_names(plain: Path) -> None:
    # DatasetName and its blank line count as added after the header, so no note.
    expected = "\n".join([
        "# Autogenerated from tet.TetFile.typing_stub() — names are per .tet file.",
        f"# source: {plain}",
        "from __future__ import annotations",
        "from typing import Literal",
        "",
        "DatasetName = Literal['a']",
        "",
    ]) + "\n"
    assert tet.typing_stub(str(plain)) == expected


def test_typing_stub_of_a_file_without_datasets(tmp_path: Path) -> None:
    path = tmp_path / "empty.tet"
    path.write_bytes(encode_header([], np.zeros(0, ENTRY_DTYPE), flags=0))
    with tet.open(path) as f:
        assert f.datasets() == []
        assert f.typing_stub() == "\n".join([
            "# Autogenerated from tet.TetFile.typing_stub() — names are per .tet file.",
            f"# source: {path}",
            "from __future__ import annotations",
            "from typing import Literal",
            "",
            "# (no dim_names metadata in footer for any dataset)",
        ]) + "\n"


# ---------------------------------------------------------------------------
# numpy integers and empty slices


def test_numpy_integers_are_accepted_where_python_ints_are(tmp_path: Path) -> None:
    a = np.arange(60, dtype=np.int32).reshape(6, 10)
    path = tet.write_dataset(tmp_path / "n.tet", "a", a, chunk_shape=(4, 4))
    with tet.open(path) as f:
        assert f[np.int64(0)].name == "a"
        sel = [{"start": np.int64(1), "stop": np.uint16(5), "step": np.int8(2)}, {}]
        assert np.array_equal(f.read_numpy("a", sel), a[1:5:2])
        assert np.array_equal(f["a"][np.int32(2), :: np.int64(3)], a[2, ::3])


def test_empty_slices_give_empty_arrays_like_h5py(tmp_path: Path) -> None:
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    path = tet.write_dataset(tmp_path / "e.tet", "a", a)
    with tet.open(path) as f:
        got = f["a"][1:1, 2]
        assert got.shape == a[1:1, 2].shape == (0,) and got.dtype == np.float64
