"""`tet export` / `tet.export_zarr.export` (cli.md §7, decision 28).

Matrix: the ten dtypes × raw/zstd sources × `--codec keep|raw|zstd`, ragged edge tiles
(padded with the fill value in the store: NaN for floats, 0 for integers), ranks 1–4,
nested and unicode names, the upstream and interop fixtures; zarr-python reads every
array back equal (dtype, shape, chunks, attrs, dimension_names).  Exact `zarr.json`
documents and chunk bytes for `sample.tet`, verbatim copies of interior zstd frames,
every error text, atomicity (nothing left after a failure, an empty target replaced),
the CLI's flags, summary line and progress bar, and a .tet → Zarr → .tet round trip
through `tet.convert`.  What xarray reads of typed metadata, fills, coordinates, 0-d and
text arrays: tests/test_export_xarray.py.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import re
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import given
from hypothesis import strategies as st
from zarr.core.metadata import ArrayV3Metadata

import tet
import tet.export_zarr as ex
from tests.conftest import INTEROP, UPSTREAM
from tet import dtypes, kernels
from tet.layout import ENTRY_DTYPE, encode_header, header_length

SAMPLE = UPSTREAM / "tet" / "sample.tet"
ALL_DTYPES = [d.name for d in dtypes.DTYPES]
FIXTURES = sorted(p for p in [*(UPSTREAM / "tet").glob("*.tet"), *INTEROP.glob("*.tet")]
                  if p.name != "plan.tet")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _data(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray[Any, Any]:
    """Distinct non-zero values, so a padding or placement mistake cannot go unseen."""
    rng = np.random.default_rng(seed)
    np_dtype = dtypes.by_name(dtype).numpy
    n = int(np.prod(shape))
    values: np.ndarray[Any, Any]
    if np_dtype.kind == "f":
        values = rng.standard_normal(n) * 100 + 1000
    else:
        hi = 250 if np_dtype.itemsize == 1 else 30000 if np_dtype.itemsize == 2 else 10**6
        values = rng.integers(1, hi, n)
    return values.astype(np_dtype).reshape(shape)


def _write(path: Path, datasets: dict[str, dict[str, Any]]) -> Path:
    with tet.TetWriter.create(path) as w:
        for name, spec in datasets.items():
            w.write_dataset(name, spec["data"], chunk_shape=spec.get("chunk"),
                            attrs=spec.get("attrs"), dim_names=spec.get("dims"),
                            codec=spec.get("codec", "raw"))
        w.commit()
    return path


def _array(store: Path, name: str) -> zarr.Array[Any]:
    node = zarr.open_group(store, mode="r")[name]
    assert isinstance(node, zarr.Array)
    assert isinstance(node.metadata, ArrayV3Metadata)
    return node


def _dim_names(arr: zarr.Array[Any]) -> tuple[str | None, ...] | None:
    meta = arr.metadata
    assert isinstance(meta, ArrayV3Metadata)
    return meta.dimension_names


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _assert_store_matches(src: Path, store: Path) -> None:
    """zarr-python reads every dataset back exactly as `tet` does: values, dtype, shape,
    chunks, the typed attrs as JSON values (``_FillValue``: test_export_xarray.py), and
    the footer's dim names (else ``dim_i``, or ``<name>_dim_i`` where ``dim_i`` is taken)."""
    group = zarr.open_group(store, mode="r")
    assert group.attrs["tetration_export"] == tet.__version__
    with tet.open(src) as f:
        for ds in f.iter_datasets():
            arr = _array(store, ds.name)
            expected = f.read_numpy(ds.name)
            got = np.asarray(arr[...])
            assert got.dtype == ds.numpy_dtype
            assert arr.shape == ds.shape
            assert arr.chunks == ds.chunk_shape
            np.testing.assert_array_equal(got, expected)
            attrs = arr.attrs.asdict()
            attrs.pop("_FillValue", None)
            assert attrs == {k: _plain(v) for k, v in ds.typed_attrs.items()
                             if k != "_FillValue"}
            dims = _dim_names(arr)
            assert dims is not None and len(dims) == ds.ndim
            if ds.dim_names is not None:
                assert dims == ds.dim_names
            else:
                leaf = ds.name.rsplit("/", 1)[-1]
                assert all(d in (f"dim_{i}", f"{leaf}_dim_{i}") for i, d in enumerate(dims))


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------------------
# Data read back through zarr-python.


@pytest.mark.parametrize("source_codec", ["raw", "zstd"])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_every_dtype_with_ragged_edges(tmp_path: Path, dtype: str, source_codec: str) -> None:
    src = _write(tmp_path / "in.tet", {
        "grid": {"data": _data(dtype, (7, 5)), "chunk": (3, 2), "codec": source_codec,
                 "attrs": {"units": "K", "scale": 1.5}, "dims": ["y", "x"]},
        "line": {"data": _data(dtype, (11,), seed=1), "chunk": (4,), "codec": source_codec},
    })
    report = ex.export(src, tmp_path / "out.zarr")
    _assert_store_matches(src, tmp_path / "out.zarr")
    grid = _array(tmp_path / "out.zarr", "grid")
    assert grid.attrs.asdict() == {"units": "K", "scale": 1.5}
    assert _dim_names(grid) == ("y", "x")
    assert _dim_names(_array(tmp_path / "out.zarr", "line")) == ("dim_0",)
    # grid: 3×3 tiles, 4 of them full; line: 3 tiles, 2 full.
    assert (report.chunks, report.copied_chunks, report.encoded_chunks) == (12, 6, 6)
    doc = json.loads((tmp_path / "out.zarr" / "grid" / "zarr.json").read_text())
    assert doc["data_type"] == ex.ZARR_DATA_TYPES[dtype]
    assert doc["fill_value"] == ("NaN" if dtype.startswith("f") else 0)
    zstd = [{"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "zstd", "configuration": {"level": 0, "checksum": False}}]
    assert doc["codecs"] == (zstd if source_codec == "zstd" else zstd[:1])


def test_integer_edge_tiles_are_padded_with_zero_to_the_full_chunk(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.tet", {"a": {"data": _data("i32", (5, 3)), "chunk": (2, 2)}})
    ex.export(src, tmp_path / "out.zarr")
    chunk_bytes = 2 * 2 * 4
    files = sorted((tmp_path / "out.zarr" / "a" / "c").rglob("*"))
    chunk_files = [p for p in files if p.is_file()]
    assert [p.relative_to(tmp_path / "out.zarr" / "a").as_posix() for p in chunk_files] == [
        "c/0/0", "c/0/1", "c/1/0", "c/1/1", "c/2/0", "c/2/1"]
    assert all(p.stat().st_size == chunk_bytes for p in chunk_files)
    corner = np.frombuffer((tmp_path / "out.zarr" / "a" / "c" / "2" / "1").read_bytes(), "<i4")
    data = tet.open(src).read_numpy("a")
    np.testing.assert_array_equal(corner.reshape(2, 2), [[data[4, 2], 0], [0, 0]])


@pytest.mark.parametrize("src", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_files_read_back_equal(tmp_path: Path, src: Path) -> None:
    report = ex.export(src, tmp_path / "out.zarr")
    _assert_store_matches(src, tmp_path / "out.zarr")
    with tet.open(src) as f:
        assert report.datasets == tuple(f.dataset_names)


def test_ranks_one_to_four_and_chunks_larger_than_the_array(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.tet", {
        "r1": {"data": _data("f64", (9,)), "chunk": (4,)},
        "r3": {"data": _data("u16", (3, 4, 5)), "chunk": (2, 3, 2), "codec": "zstd"},
        "r4": {"data": _data("i16", (2, 3, 2, 3)), "chunk": (1, 2, 2, 2)},
        "big_chunk": {"data": _data("f32", (3, 2)), "chunk": (8, 8)},
    })
    ex.export(src, tmp_path / "out.zarr")
    _assert_store_matches(src, tmp_path / "out.zarr")
    assert (tmp_path / "out.zarr" / "r4" / "c" / "1" / "1" / "0" / "1").is_file()
    assert (tmp_path / "out.zarr" / "big_chunk" / "c" / "0" / "0").stat().st_size == 8 * 8 * 4


# ---------------------------------------------------------------------------
# Exact documents and bytes.

ROOT_JSON = """\
{
  "zarr_format": 3,
  "node_type": "group",
  "attributes": {
    "tetration_export": "%s"
  }
}
"""

SAMPLE_ARRAY_JSON = """\
{
  "zarr_format": 3,
  "node_type": "array",
  "shape": [
    2,
    3
  ],
  "data_type": "float32",
  "chunk_grid": {
    "name": "regular",
    "configuration": {
      "chunk_shape": [
        2,
        2
      ]
    }
  },
  "chunk_key_encoding": {
    "name": "default",
    "configuration": {
      "separator": "/"
    }
  },
  "fill_value": "NaN",
  "codecs": [
    {
      "name": "bytes",
      "configuration": {
        "endian": "little"
      }
    }
  ],
  "attributes": {},
  "dimension_names": [
    "dim_0",
    "dim_1"
  ],
  "storage_transformers": []
}
"""


def test_sample_store_documents_and_chunks_exactly(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    report = ex.export(SAMPLE, out)
    assert (out / "zarr.json").read_text() == ROOT_JSON % tet.__version__
    assert (out / "temperature" / "zarr.json").read_text() == SAMPLE_ARRAY_JSON
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["temperature/c/0/0", "temperature/c/0/1", "temperature/zarr.json",
                     "zarr.json"]
    # chunk (0,0) is the stored payload (offset 344, 16 bytes) verbatim
    assert (out / "temperature" / "c" / "0" / "0").read_bytes() == SAMPLE.read_bytes()[344:360]
    # chunk (0,1) holds column 2 ([3], [6]) padded to 2×2 with the fill value, NaN
    edge = np.frombuffer((out / "temperature" / "c" / "0" / "1").read_bytes(), "<f4")
    np.testing.assert_array_equal(edge, [3, np.nan, 6, np.nan])
    assert report.input == SAMPLE and report.output == out
    assert (report.datasets, report.chunks, report.copied_chunks, report.encoded_chunks,
            report.bytes_written) == (("temperature",), 2, 1, 1, 32)


def test_dimension_names_and_attrs_in_the_array_document(tmp_path: Path) -> None:
    src = INTEROP / "f64_3d_fill.tet"
    ex.export(src, tmp_path / "out.zarr")
    doc = json.loads((tmp_path / "out.zarr" / "field" / "zarr.json").read_text())
    # the footer's "-999.0" is the fill: a number in the metadata, and the attribute in
    # the form xarray's Zarr reader decodes (base64 of the little-endian float64)
    assert doc["attributes"] == {"_FillValue": "AAAAAAA4j8A=", "units": "m s-1"}
    assert struct.unpack("<d", base64.b64decode("AAAAAAA4j8A=")) == (-999.0,)
    assert doc["fill_value"] == -999.0
    assert doc["dimension_names"] == ["time", "lat", "lon"]
    assert list(doc) == ["zarr_format", "node_type", "shape", "data_type", "chunk_grid",
                         "chunk_key_encoding", "fill_value", "codecs", "attributes",
                         "dimension_names", "storage_transformers"]


def test_interior_zstd_frames_are_copied_verbatim_and_edges_reencoded(tmp_path: Path) -> None:
    data = _data("f32", (10, 6))
    src = _write(tmp_path / "in.tet", {"z": {"data": data, "chunk": (4, 3), "codec": "zstd"}})
    ex.export(src, tmp_path / "out.zarr")
    raw_file = src.read_bytes()
    with tet.open(src) as f:
        entries = f.catalog.entries
    for row in entries:
        i, j = (int(c) for c in row["chunk_index"][:2])
        chunk = (tmp_path / "out.zarr" / "z" / "c" / str(i) / str(j)).read_bytes()
        assert chunk.startswith(ZSTD_MAGIC)
        stored = raw_file[int(row["payload_offset"]):][:int(row["stored_byte_len"])]
        assert (chunk == stored) == (i < 2)  # rows 8, 9 form the ragged last tile row
    _assert_store_matches(src, tmp_path / "out.zarr")


# ---------------------------------------------------------------------------
# Nested groups and names.


def test_slash_names_become_nested_groups(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.tet", {
        "a/b/c": {"data": _data("f32", (4, 3)), "chunk": (3, 3)},
        "a/b/d": {"data": _data("i64", (5,)), "chunk": (2,), "codec": "zstd"},
        "a/x": {"data": _data("u8", (2, 2)), "chunk": (1, 2)},
        "température/α": {"data": _data("f16", (3,)), "chunk": (2,)},
        "top": {"data": _data("u32", (6,)), "chunk": (6,)},
    })
    out = tmp_path / "out.zarr"
    ex.export(src, out)
    _assert_store_matches(src, out)
    for group in ("a", "a/b", "température"):
        assert (out / group / "zarr.json").read_text() == (
            '{\n  "zarr_format": 3,\n  "node_type": "group"\n}\n')
    root = zarr.open_group(out, mode="r")
    assert sorted(root.group_keys()) == ["a", "température"]
    assert sorted(root.array_keys()) == ["top"]
    b = root["a/b"]
    assert isinstance(b, zarr.Group)
    assert sorted(b.array_keys()) == ["c", "d"]


@pytest.mark.parametrize(("names", "message"), [
    (["a", "a/b"], "Zarr export failed: dataset `a/b` would nest under dataset `a`, which is "
                   "an array"),
    (["a/b", "a"], "Zarr export failed: dataset `a` is also the group of dataset `a/b`"),
    (["../evil"], "Zarr export failed: dataset `../evil` cannot be a Zarr node path: "
                  "component '..' is not allowed (empty, '.', '..', 'zarr.json', NUL or "
                  "backslash); rename it in the .tet file first"),
    (["a//b"], "Zarr export failed: dataset `a//b` cannot be a Zarr node path: component '' "
               "is not allowed"),
    (["g/zarr.json"], "Zarr export failed: dataset `g/zarr.json` cannot be a Zarr node path: "
                      "component 'zarr.json' is not allowed"),
])
def test_names_that_cannot_be_zarr_paths(tmp_path: Path, names: list[str], message: str) -> None:
    src = _write(tmp_path / "in.tet", {n: {"data": _data("u8", (2,))} for n in names})
    with pytest.raises(ex.ExportError) as info:
        ex.export(src, tmp_path / "out.zarr")
    assert str(info.value).startswith(message)
    assert info.value.dataset == message.split("`")[1]
    assert _listing(tmp_path) == ["in.tet"]


# ---------------------------------------------------------------------------
# Codecs.


def _mixed_file(path: Path) -> np.ndarray[Any, Any]:
    """One dataset whose first tile is raw and second tile a zstd frame (hand-assembled)."""
    data = _data("f32", (4, 4))
    plain = _write(path.with_suffix(".raw.tet"), {"m": {"data": data, "chunk": (2, 4)}})
    with tet.open(plain) as f:
        record, entries = f.catalog.datasets[0], f.catalog.entries.copy()
    body = plain.read_bytes()
    p0 = body[int(entries[0]["payload_offset"]):][:32]
    frame, _ = kernels.encode(data[2:], np.zeros((1, 2), np.int64), np.array([[2, 4]]),
                              codec=1, level=0)
    p1 = frame.tobytes()
    start = header_length([record], 2)
    out = np.zeros(2, ENTRY_DTYPE)
    out["chunk_index"][1, 0] = 1
    out["payload_offset"] = [start, start + len(p0)]
    out["raw_byte_len"] = 32
    out["stored_byte_len"] = [len(p0), len(p1)]
    out["codec"] = [0, 1]
    path.write_bytes(encode_header([record], out, flags=0) + p0 + p1)
    with tet.open(path) as f:
        np.testing.assert_array_equal(f.read_numpy("m"), data)
    return data


def test_mixed_codecs_are_refused_with_keep(tmp_path: Path) -> None:
    src = tmp_path / "mixed.tet"
    _mixed_file(src)
    with pytest.raises(ex.ExportError) as info:
        ex.export(src, tmp_path / "out.zarr")
    assert str(info.value) == ("Zarr export failed: dataset `m` mixes raw and zstd chunk "
                               "codecs; re-export with one codec")
    assert info.value.dataset == "m"
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize("codec", ["raw", "zstd"])
def test_an_explicit_codec_converts_every_chunk(tmp_path: Path, codec: str) -> None:
    src = tmp_path / "mixed.tet"
    data = _mixed_file(src)
    report = ex.export(src, tmp_path / "out.zarr", codec=codec)
    np.testing.assert_array_equal(_array(tmp_path / "out.zarr", "m")[...], data)
    chunks = [(tmp_path / "out.zarr" / "m" / "c" / str(i) / "0").read_bytes() for i in (0, 1)]
    assert [c.startswith(ZSTD_MAGIC) for c in chunks] == [codec == "zstd"] * 2
    assert report.copied_chunks == 1  # the tile already in the wanted codec


def test_raw_source_exported_as_zstd_and_back(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.tet", {"v": {"data": _data("i64", (9, 4)), "chunk": (4, 4)}})
    ex.export(src, tmp_path / "z.zarr", codec="zstd")
    ex.export(src, tmp_path / "r.zarr", codec="raw")
    _assert_store_matches(src, tmp_path / "z.zarr")
    _assert_store_matches(src, tmp_path / "r.zarr")
    z = json.loads((tmp_path / "z.zarr" / "v" / "zarr.json").read_text())
    assert [c["name"] for c in z["codecs"]] == ["bytes", "zstd"]
    assert (tmp_path / "r.zarr" / "v" / "c" / "2" / "0").stat().st_size == 4 * 4 * 8


def test_unknown_codec_choice(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown export codec 'lz4' "
                                         r"\(use one of keep, raw, zstd\)"):
        ex.export(SAMPLE, tmp_path / "out.zarr", codec="lz4")


# ---------------------------------------------------------------------------
# Output directory rules and atomicity.


def test_non_empty_output_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ex.ExportError) as info:
        ex.export(SAMPLE, out)
    assert str(info.value) == f"export output `{out}` exists and is not empty"
    assert _listing(out) == ["keep.txt"]
    assert _listing(tmp_path) == ["out.zarr"]


def test_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    out.write_text("")
    with pytest.raises(ex.ExportError, match="exists and is not a directory"):
        ex.export(SAMPLE, out)
    assert out.read_text() == ""


def test_empty_output_directory_is_replaced_keeping_its_mode(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    out.mkdir(mode=0o750)
    os.chmod(out, 0o750)
    ex.export(SAMPLE, out)
    _assert_store_matches(SAMPLE, out)
    assert out.stat().st_mode & 0o777 == 0o750
    assert _listing(tmp_path) == ["out.zarr"]


def test_symlink_to_an_empty_directory_is_written_through(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link.zarr"
    link.symlink_to(real)
    ex.export(SAMPLE, link)
    assert link.is_symlink()
    _assert_store_matches(SAMPLE, real)


def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "out.zarr"
    ex.export(SAMPLE, out)
    _assert_store_matches(SAMPLE, out)


def test_a_file_without_datasets(tmp_path: Path) -> None:
    src = tmp_path / "empty.tet"
    src.write_bytes(b"TETR" + struct.pack("<IIIQQ", 1, 0, 0, 32, 0))
    with pytest.raises(ex.ExportError) as info:
        ex.export(src, tmp_path / "out.zarr")
    assert str(info.value) == f"no datasets in {src}"
    assert _listing(tmp_path) == ["empty.tet"]


def test_a_missing_input_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ex.export(tmp_path / "nope.tet", tmp_path / "out.zarr")
    assert _listing(tmp_path) == []


def _failing_after(monkeypatch: pytest.MonkeyPatch, n: int, exc: BaseException) -> None:
    original = ex._write_tile
    calls = iter(range(10**6))

    def failing(tile: Any, src_fd: int, fsync: bool) -> tuple[int, bool]:
        if next(calls) == n:
            raise exc
        return original(tile, src_fd, fsync)

    monkeypatch.setattr(ex, "_write_tile", failing)
    monkeypatch.setenv("TET_THREADS", "1")  # a deterministic order of calls


def _two_datasets(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    return _write(tmp_path / "src" / "in.tet", {
        "first": {"data": _data("f32", (6, 6)), "chunk": (2, 2)},        # 9 tiles
        "second/part": {"data": _data("u16", (5, 5)), "chunk": (2, 2)},  # 9 tiles
    })


@pytest.mark.parametrize("pre_existing", [False, True])
def test_a_failure_mid_export_leaves_nothing_behind(tmp_path: Path, pre_existing: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    src = _two_datasets(tmp_path)
    parent = tmp_path / "dest"
    parent.mkdir()
    (parent / "other.txt").write_text("unrelated")
    out = parent / "out.zarr"
    if pre_existing:
        out.mkdir()
    _failing_after(monkeypatch, 12, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(ex.ExportError) as info:
        ex.export(src, out)
    assert str(info.value) == ("Zarr export failed: dataset `second/part`: "
                               "No space left on device")
    assert info.value.dataset == "second/part"
    assert type(info.value) is ex.ExportDiskFullError  # also a DiskFullError (an OSError)
    assert isinstance(info.value, tet.DiskFullError) and info.value.errno == errno.ENOSPC
    assert info.value.size is None  # this failure came with no file being written
    assert _listing(parent) == (["other.txt", "out.zarr"] if pre_existing else ["other.txt"])
    if pre_existing:
        assert _listing(out) == []


def test_an_os_error_names_the_chunk_file_in_the_store(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    src = _two_datasets(tmp_path)
    out = tmp_path / "out.zarr"
    real_create = ex._create

    def create(path: Path) -> int:
        if path.as_posix().endswith("first/c/1/2"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_create(path)

    monkeypatch.setattr(ex, "_create", create)
    with pytest.raises(ex.ExportError) as info:
        ex.export(src, out)
    assert str(info.value) == (f"Zarr export failed: dataset `first`: cannot write "
                               f"{out}/first/c/1/2: Permission denied")
    assert _listing(tmp_path) == ["src"]


def test_interrupt_mid_export_leaves_nothing_behind(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    src = _two_datasets(tmp_path)
    out = tmp_path / "new" / "out.zarr"
    _failing_after(monkeypatch, 3, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        ex.export(src, out)
    assert _listing(tmp_path) == ["src"]  # the parent it created is gone too


def test_a_corrupt_dataset_is_named_and_nothing_is_left(tmp_path: Path) -> None:
    src = _two_datasets(tmp_path)
    with tet.open(src) as f:
        index_at = f.catalog.chunk_index_offset
        row = int(np.flatnonzero(f.catalog.entries["dataset_id"] == 1)[4])
    raw = bytearray(src.read_bytes())
    struct.pack_into("<Q", raw, index_at + 32 + row * 104 + 8, 99)  # tile leaves the grid
    src.write_bytes(bytes(raw))
    with pytest.raises(ex.ExportError) as info:
        ex.export(src, tmp_path / "out.zarr")
    assert str(info.value) == ("Zarr export failed: dataset `second/part`: read failed: "
                               "chunk index has no row for chunk_index=[1, 1]")
    assert _listing(tmp_path) == ["src"]


def test_progress_is_called_once_per_chunk(tmp_path: Path) -> None:
    src = _two_datasets(tmp_path)
    seen: list[int] = []
    report = ex.export(src, tmp_path / "out.zarr", progress=seen.append, fsync=False)
    assert seen == [1] * 18
    assert report.chunks == 18
    _assert_store_matches(src, tmp_path / "out.zarr")


# ---------------------------------------------------------------------------
# The command line.

SUMMARY = re.compile(r"exported (\d+) dataset\(s\), (\d+) chunk\(s\) → (.+) \((\d+\.\d\d)s\)\n")


def test_cli_writes_the_store_and_the_summary_line(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    r = cli("export", SAMPLE, out)
    assert (r.rc, r.out) == (0, "")
    m = SUMMARY.fullmatch(r.err)
    assert m is not None, r.err
    assert m.group(1, 2, 3) == ("1", "2", str(out))
    _assert_store_matches(SAMPLE, out)


def test_cli_summary_names_the_output_as_given(cli: Any, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = cli("export", INTEROP / "multi_dataset.tet", "rel.zarr/")
    m = SUMMARY.fullmatch(r.err)
    assert m is not None, r.err
    # 16 dataset chunks and one of the coordinate array made from the labels of `weights`
    assert m.group(1, 2, 3) == ("4", "17", "rel.zarr/")
    weights = zarr.open_array(tmp_path / "rel.zarr" / "weights_dim_0", mode="r")
    assert weights[...].tolist() == ["w0", "w1", "w2", "w3", "w4"]
    _assert_store_matches(INTEROP / "multi_dataset.tet", tmp_path / "rel.zarr")


@pytest.mark.parametrize("codec", ["keep", "raw", "zstd"])
def test_cli_codec_flag(cli: Any, tmp_path: Path, codec: str) -> None:
    src = _write(tmp_path / "in.tet", {"v": {"data": _data("f64", (5, 3)), "chunk": (2, 3),
                                             "codec": "zstd"}})
    r = cli("export", src, tmp_path / "out.zarr", "--codec", codec)
    assert r.rc == 0, r.err
    doc = json.loads((tmp_path / "out.zarr" / "v" / "zarr.json").read_text())
    assert [c["name"] for c in doc["codecs"]] == (["bytes"] if codec == "raw"
                                                   else ["bytes", "zstd"])
    _assert_store_matches(src, tmp_path / "out.zarr")


def test_cli_errors(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "full"
    out.mkdir()
    (out / "x").write_text("")
    r = cli("export", SAMPLE, out)
    assert (r.rc, r.out, r.err) == (1, "", f"error: export output `{out}` exists and is not "
                                           "empty\n")
    empty = tmp_path / "empty.tet"
    empty.write_bytes(b"TETR" + struct.pack("<IIIQQ", 1, 0, 0, 32, 0))
    r = cli("export", empty, tmp_path / "o.zarr")
    assert (r.rc, r.err) == (1, f"error: no datasets in {empty}\n")
    mixed = tmp_path / "mixed.tet"
    _mixed_file(mixed)
    r = cli("export", mixed, tmp_path / "o.zarr")
    assert (r.rc, r.err) == (1, "error: Zarr export failed: dataset `m` mixes raw and zstd "
                                "chunk codecs; re-export with one codec\n")
    r = cli("export", tmp_path / "missing.tet", tmp_path / "o.zarr")
    assert r.rc == 1 and r.err.startswith("error: ") and "missing.tet" in r.err
    assert "Traceback" not in r.err
    assert not (tmp_path / "o.zarr").exists()


def test_cli_usage_errors(cli: Any, tmp_path: Path) -> None:
    assert cli("export", SAMPLE).rc == 2
    r = cli("export", SAMPLE, tmp_path / "o.zarr", "--codec", "lz4")
    assert r.rc == 2 and "invalid choice: 'lz4'" in r.err
    assert not (tmp_path / "o.zarr").exists()


def test_cli_help_lists_every_flag(cli: Any) -> None:
    r = cli("export", "--help")
    assert r.rc == 0
    for text in ("INPUT", "OUTPUT_DIR", "--codec {keep,raw,zstd}", "--debug"):
        assert text in r.out


def test_cli_progress_bar_counts_chunks(cli: Any, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import tet.cli.export as cmd

    bars: list[tuple[int, str, list[int]]] = []

    @contextlib.contextmanager
    def fake(total: int, desc: str, unit: str = "chunk") -> Iterator[Any]:
        updates: list[int] = []
        bars.append((total, desc, updates))

        class Bar:
            def update(self, n: int = 1) -> None:
                updates.append(n)

        yield Bar()

    monkeypatch.setattr(cmd, "progress", fake)
    r = cli("export", INTEROP / "multi_dataset.tet", tmp_path / "o.zarr")
    assert r.rc == 0, r.err
    assert [(total, desc, sum(u)) for total, desc, u in bars] == [(17, "export → Zarr", 17)]


def test_cli_debug_flag_shows_the_traceback(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "full"
    out.mkdir()
    (out / "x").write_text("")
    with pytest.raises(ex.ExportError):
        cli("export", SAMPLE, out, "--debug")


# ---------------------------------------------------------------------------
# .tet → Zarr → .tet through the Zarr importer.


@st.composite
def _datasets(draw: st.DrawFn) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    names = draw(st.lists(st.sampled_from(["a", "b/c", "b/d", "e/f/g", "h"]), min_size=1,
                          max_size=4, unique=True))
    for k, name in enumerate(names):
        ndim = draw(st.integers(1, 3))
        shape = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
        chunk = tuple(draw(st.integers(1, n + 2)) for n in shape)
        dtype = draw(st.sampled_from(ALL_DTYPES))
        out[name] = {"data": _data(dtype, shape, seed=k), "chunk": chunk,
                     "codec": draw(st.sampled_from(["raw", "zstd"])),
                     "attrs": {"units": "m"} if draw(st.booleans()) else None,
                     "dims": [f"d{k}{i}" for i in range(ndim)] if draw(st.booleans()) else None}
    return out


@given(datasets=_datasets(), codec=st.sampled_from(["keep", "raw", "zstd"]))
def test_round_trip_through_convert(datasets: dict[str, dict[str, Any]], codec: str) -> None:
    from tet.convert import convert

    with tempfile.TemporaryDirectory() as d:
        src = _write(Path(d) / "in.tet", datasets)
        ex.export(src, Path(d) / "store.zarr", codec=codec, fsync=False)
        convert(Path(d) / "store.zarr", Path(d) / "back.tet")
        with tet.open(Path(d) / "back.tet") as back:
            assert sorted(back.dataset_names) == sorted(datasets)
            for name, spec in datasets.items():
                ds = back.dataset(name)
                data = spec["data"]
                assert ds.numpy_dtype == data.dtype
                assert ds.shape == data.shape
                assert ds.chunk_shape == tuple(min(c, n) for c, n in zip(spec["chunk"],
                                                                          data.shape))
                np.testing.assert_array_equal(back.read_numpy(name), data)
                doc = json.loads((Path(d) / "store.zarr" / name / "zarr.json").read_text())
                assert ds.dim_names == tuple(doc["dimension_names"])
                if spec["dims"]:
                    assert ds.dim_names == tuple(spec["dims"])
                attrs = dict(ds.attrs)
                assert attrs.get("units") == ("m" if spec["attrs"] else None)
