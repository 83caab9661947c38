"""`.tet` → Zarr v3 directory store (cli.md §7, with decision 28: edge chunks padded) that
zarr-python and xarray read back as ``xr.open_dataset(path, engine="tet")`` shows the file.

Every dataset becomes one Zarr array; slashes in its name become nested groups.  The
store is written by hand (JSON documents and chunk files), so exporting needs no Zarr
library.  Zarr requires every chunk file to hold a full ``chunk_shape`` tile, while a
``.tet`` edge tile is ragged: interior tiles whose codec already matches are copied byte
for byte (zstd frames stay compressed), edge tiles and tiles changing codec are decoded,
padded with the array's fill value and encoded again.

What xarray sees of the file is carried over (the rules of the ``tet`` xarray backend):

- attributes: the dataset's typed attributes as JSON values (numbers, lists, booleans;
  NaN and infinities spelled ``NaN``/``Infinity`` as zarr-python writes them); keys of
  the dataset's CF ``encoding`` are not attributes; the reserved ``_tet_*`` keys older
  files carry are read (attribute types, file attributes, coordinate dtypes, 0-d marks)
  and never written;
- ``fill_value``: the dataset's own ``_FillValue`` when it has one as a real attribute
  (then also the ``_FillValue`` attribute, in the form xarray's Zarr reader decodes: an
  integer, or for floats the base64 text of a little-endian float64), else ``"NaN"`` for
  floats and 0 for integers;
- ``dimension_names`` always: the footer's, else ``dim_0``, ``dim_1``, … (prefixed with
  the array's name where ``dim_i`` is taken with another length, as the backend does);
- footer ``coords`` labels of a dimension: a 1-D coordinate array named after it
  (numbers and dates in the dtype the typed metadata records, else strings);
- 0-d datasets (stored as ``(1,)``): 0-d arrays; text datasets (``u8`` marked as text):
  ``string`` arrays (``vlen-utf8``) or ``variable_length_bytes`` arrays (``vlen-bytes``);
- file-level attributes: the root group's, beside ``tetration_export``.

The store is built in a hidden directory beside the target and renamed onto it only when
complete and fsynced: a failure or Ctrl-C never leaves a half-written store, and an
existing empty target directory is replaced atomically.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import math
import os
import shutil
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tet import dtypes, kernels
from tet.attrs import ext_of, labels_to_values, merge_attrs
from tet.durable import atomic_replace, fsync_dir
from tet.errors import OS_ERRORS, CatalogError, DiskFullError, TetError
from tet.file import Dataset, TetFile
from tet.layout import DatasetRecord, tile_counts
from tet.paths import checked_path
from tet.query.budget import WORK_FLOOR, require_memory, resolve_budget
from tet.safedir import Dir
from tet.tempnames import remove_stale, temp_name
from tet.text import encode_text

__all__ = ["CODEC_CHOICES", "ZARR_DATA_TYPES", "ExportDiskFullError", "ExportError",
           "ExportReport", "chunk_count", "export"]

PathLike = str | os.PathLike[str]
CODEC_CHOICES = ("keep", "raw", "zstd")
ZARR_DATA_TYPES: Mapping[str, str] = {
    "f32": "float32", "f64": "float64", "i32": "int32", "i64": "int64", "u8": "uint8",
    "u16": "uint16", "i16": "int16", "u32": "uint32", "f16": "float16", "u64": "uint64",
}
RAW, ZSTD = 0, 1
_PREFIX = "Zarr export failed: "
_BYTES_CODEC = {"name": "bytes", "configuration": {"endian": "little"}}
_ZSTD_CODEC = {"name": "zstd", "configuration": {"level": 0, "checksum": False}}
_RESERVED_PARTS = ("", ".", "..", "zarr.json")
_COPY_BLOCK = 16 * 1024 * 1024
_COORD_CHUNK = 1 << 16  # elements per chunk of a coordinate made from labels
# reserved attr keys of files written by older `from_xarray` (read here, never written)
LEGACY_TYPES = "_tet_types"
LEGACY_GLOBAL = "_tet_global:"
LEGACY_COORD = "_tet_coord:"
LEGACY_SCALAR = "_tet_scalar"
CF_NUMERIC = ("_FillValue", "missing_value", "scale_factor", "add_offset")
PACKING = ("scale_factor", "add_offset")


class ExportError(TetError):
    """An export that could not finish; `dataset` names the array that failed, if any.

    Nothing is left at the target (nor beside it) when this is raised.
    """

    def __init__(self, message: str, *, dataset: str | None = None) -> None:
        super().__init__(message)
        self.dataset = dataset


class ExportDiskFullError(ExportError, DiskFullError):
    """An export that ran out of space (``ENOSPC``, ``EDQUOT``, ``EFBIG``): both an
    `ExportError` and a `DiskFullError`; ``size`` is the bytes of the file whose write
    failed.  As for every `ExportError`, nothing is left behind."""

    def __init__(self, message: str, *, dataset: str | None = None, errno: int | None = None,
                 strerror: str | None = None, filename: object = None,
                 size: int | None = None) -> None:
        DiskFullError.__init__(self, message, errno=errno, strerror=strerror,
                               filename=filename)
        self.dataset = dataset
        self.size = size


class _WriteFailed(OSError):
    """A file of the store that could not be written, and its size."""

    def __init__(self, exc: OSError, path: Path, size: int) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc), exc.filename or str(path))
        self.size = size


@dataclass(frozen=True)
class ExportReport:
    """What `export` wrote.

    Attributes
    ----------
    input, output : the paths as given.
    datasets : the exported dataset names, in catalog order.
    chunks : chunk files written (every tile of every array, coordinates included).
    copied_chunks : chunk files copied byte for byte from the ``.tet`` payloads.
    encoded_chunks : chunk files decoded, padded and/or re-encoded (edge tiles, codec changes).
    bytes_written : bytes of chunk files.
    elapsed_secs : wall time of the whole export.
    coordinates : paths of the coordinate arrays made from footer ``coords`` labels.
    """

    input: Path
    output: Path
    datasets: tuple[str, ...]
    chunks: int
    copied_chunks: int
    encoded_chunks: int
    bytes_written: int
    elapsed_secs: float
    coordinates: tuple[str, ...] = ()  # coordinate arrays made from footer labels

    def summary_line(self, output: str | None = None) -> str:
        """``exported <n> dataset(s), <m> chunk(s) → <output> (<secs>s)`` (cli.md §7)."""
        where = self.output if output is None else output
        return (f"exported {len(self.datasets)} dataset(s), {self.chunks} chunk(s) → {where} "
                f"({self.elapsed_secs:.2f}s)")


@dataclass(frozen=True)
class _Array:
    """One Zarr array planned for export: where it goes, its document, and where its
    chunks come from (a dataset's tiles, or a coordinate's values)."""

    name: str  # the dataset's name, or the coordinate array's path
    parts: tuple[str, ...]
    shape: tuple[int, ...]  # the Zarr array's (a text dataset's without its char axis)
    chunks: tuple[int, ...]
    data_type: str
    fill: Any  # the JSON fill_value
    pad: Any  # what pads a numeric edge chunk (the fill value)
    codec: int
    attrs: dict[str, Any]  # JSON values
    dims: tuple[str, ...]
    budget: int
    record: DatasetRecord | None = None  # None: a coordinate made from footer labels
    table: kernels.TileTable | None = None
    text: str | None = None  # "str" | "bytes": a u8 dataset whose last axis holds text
    lead: int = 0  # stored axes before the Zarr ones (1 for a 0-d dataset stored as (1,))
    values: np.ndarray[Any, Any] | None = None  # a coordinate's values (text: u8 rows)
    narrow: np.dtype[Any] | None = None  # integers stored wider than they read (int8 as i16)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The element type of a chunk in memory (text: its bytes)."""
        if self.text is not None:
            return np.dtype(np.uint8)
        if self.record is not None:
            return dtypes.by_tag(self.record.dtype).numpy
        assert self.values is not None
        dtype: np.dtype[Any] = self.values.dtype
        return dtype

    @property
    def width(self) -> int:
        """Bytes per text value (the stored last axis); 0 for numbers."""
        if self.text is None:
            return 0
        if self.record is not None:
            return self.record.shape[-1]
        assert self.values is not None
        return int(self.values.shape[-1])

    @property
    def tile_memory(self) -> int:
        """Bytes a chunk that is not copied verbatim needs: the chunk padded to its full
        extent, the ragged part read into it, and its encoding (text: the values with
        their length prefixes, the mask that gathers them, the gathered copy and the
        encoding)."""
        items = math.prod(self.chunks)
        if self.text is not None:
            return 6 * items * (self.width + 4)
        return 3 * items * self.dtype.itemsize

    @property
    def in_flight(self) -> int:
        """Tiles that may be in memory at once within the memory budget (at least one)."""
        return max(1, max(self.budget, WORK_FLOOR) // max(1, self.tile_memory))


def _fail(message: str, dataset: str | None = None) -> ExportError:
    return ExportError(_PREFIX + message, dataset=dataset)


def _os_text(exc: OSError, shown: Callable[[str], str]) -> str:
    text = exc.strerror or str(exc)
    return f"cannot write {shown(os.fspath(exc.filename))}: {text}" if exc.filename else text


def _os_fail(exc: OSError, text: str, shown: Callable[[str], str],
             dataset: str | None = None) -> ExportError:
    """`_fail(text)`; a full disk is `ExportDiskFullError`, with the size of the file
    whose write failed in `size` and in the message."""
    code = exc.errno
    if code is None or OS_ERRORS.get(code) is not DiskFullError:
        return _fail(text, dataset)
    size = exc.size if isinstance(exc, _WriteFailed) else None
    where = shown(os.fspath(exc.filename)) if exc.filename else None
    return ExportDiskFullError(_PREFIX + text + (f" ({size} bytes)" if size is not None else ""),
                               dataset=dataset, errno=code, strerror=exc.strerror,
                               filename=where, size=size)


def _dataset_fail(name: str, exc: BaseException,
                  shown: Callable[[str], str] = str) -> ExportError:
    text = _os_text(exc, shown) if isinstance(exc, OSError) else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if isinstance(exc, OSError):
        return _os_fail(exc, f"dataset `{name}`: {first}", shown, name)
    return _fail(f"dataset `{name}`: {first}", name)


# ---------------------------------------------------------------------------
# What xarray sees of a dataset (the rules of tet.xarray_backend, without xarray).


def _legacy_types(raw: Mapping[str, str]) -> dict[str, str]:
    """The ``_tet_types`` map older `from_xarray` files carry (attr key -> type tag)."""
    try:
        types = json.loads(raw.get(LEGACY_TYPES, "{}"))
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in types.items()} if isinstance(types, dict) else {}


def _legacy_value(text: str, tag: str) -> Any:
    """A value an older `from_xarray` stored as JSON text with a type tag (the text when
    it does not parse)."""
    try:
        value = json.loads(text)
        if tag == "json":
            return value
        if tag == "tuple":
            return tuple(value)
        if tag.endswith("[]"):
            return np.asarray(value, dtype=np.dtype(tag[:-2]))
        return np.dtype(tag).type(value)
    except (ValueError, TypeError, OverflowError):
        return text


def _legacy_decoded(raw: Mapping[str, Any], types: Mapping[str, str]) -> dict[str, Any]:
    return {k: _legacy_value(v, types[k]) if k in types and isinstance(v, str) else v
            for k, v in raw.items()}


def _reserved(key: str) -> bool:
    return key in (LEGACY_TYPES, LEGACY_SCALAR) or key.startswith((LEGACY_GLOBAL, LEGACY_COORD))


def _cf_number(text: str, dtype: np.dtype[Any]) -> Any:
    """Footer text of a CF attribute as a number (None when it is not one)."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if dtype.kind in "iu":
        return int(value) if value.is_integer() else value
    with np.errstate(over="ignore"):
        return dtype.type(value) if dtype.kind == "f" else value


def _variable_attrs(ds: Dataset, dtype: np.dtype[Any], encoded: frozenset[str]
                    ) -> dict[str, Any]:
    """The attributes xarray shows (before its CF decoding): the typed attributes, the
    types older files recorded applied, without reserved and encoding keys, and CF
    numbers that are text turned into numbers."""
    raw = dict(ds.attrs)
    types = _legacy_types(raw)
    attrs: dict[str, Any] = {}
    for key, value in ds.typed_attrs.items():
        if _reserved(key) or key in encoded:
            continue
        if key in types and isinstance(value, str) and value == raw.get(key):
            value = _legacy_value(value, types[key])
        if key in CF_NUMERIC and isinstance(value, str):
            number = _cf_number(value, dtype)
            if number is not None:
                value = number
        attrs[key] = value
    return attrs


def _scalar(value: Any) -> float | int | None:
    """A number attribute's value (a one-element array counts); None otherwise."""
    if isinstance(value, np.ndarray):
        if value.size != 1 or value.dtype.kind not in "biuf":
            return None
        value = value.reshape(-1)[0]
    if isinstance(value, np.generic):
        if value.dtype.kind not in "biuf":
            return None
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _float_json(value: float) -> Any:
    """A float as Zarr v3 spells fill values: a number, or "NaN" / "Infinity" / "-Infinity"."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _fill_of(attrs: dict[str, Any], dtype: np.dtype[Any]) -> tuple[Any, Any]:
    """(JSON fill_value, padding value) of a numeric array; rewrites a ``_FillValue``
    attribute into the form xarray's Zarr reader decodes (an int; for floats, base64 of
    the little-endian float64), and drops one no reader could use (not one number)."""
    number = _scalar(attrs["_FillValue"]) if "_FillValue" in attrs else None
    if dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            pad = dtype.type(math.nan if number is None else number)
        if number is not None:
            attrs["_FillValue"] = base64.standard_b64encode(
                struct.pack("<d", float(number))).decode("ascii")
        else:
            attrs.pop("_FillValue", None)
        return _float_json(float(pad)), pad
    fill = 0
    if number is not None and math.isfinite(number) and float(number).is_integer():
        attrs["_FillValue"] = int(number)
        info = np.iinfo(dtype)
        if info.min <= int(number) <= info.max:
            fill = int(number)
    else:
        attrs.pop("_FillValue", None)
    return fill, dtype.type(fill)


def _json_value(value: Any) -> Any:
    """An attribute value as JSON: NumPy scalars and arrays as numbers and lists (exact
    values; non-finite floats as the NaN/Infinity tokens zarr-python reads back), tuples
    as lists, bytes as UTF-8 text (bad bytes replaced)."""
    if isinstance(value, str | bool | None):
        return value
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "S":
            value = np.char.decode(value, "utf-8", errors="replace")
        return _json_value(value.tolist())
    if isinstance(value, np.generic):
        return _json_value(value.item())
    if isinstance(value, int | float):
        return value
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


def _json_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _json_value(v) for k, v in attrs.items()}


@dataclass
class _Var:
    """A dataset as xarray sees it: its place, logical geometry and dimensions."""

    ds: Dataset
    dataset_id: int
    parts: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    text: str | None
    lead: int
    dims: tuple[str, ...] | None  # from the footer; None until assigned

    @property
    def var(self) -> str:
        return self.parts[-1]


def _view(ds: Dataset, dataset_id: int, parts: tuple[str, ...]) -> _Var:
    """A dataset's logical geometry: a text dataset without its char axis, a 0-d one
    (``extra["shape"] == []``, or the ``_tet_scalar`` mark of older files) as shape ();
    a text or 0-d mark that does not fit the stored shape is an `ExportError`."""
    shape, chunks = ds.shape, ds.chunk_shape
    entry = ds.extra.get("text")
    names = ds.dim_names if ds.dim_names is not None and len(ds.dim_names) == len(shape) \
        else None
    text: str | None = None
    if isinstance(entry, Mapping):
        width = int(entry["width"])
        if ds.numpy_dtype != np.uint8 or not shape or shape[-1] != width:
            raise _fail(f"dataset `{ds.name}` is marked as text {width} bytes wide but holds "
                        f"{ds.numpy_dtype} values of shape {list(shape)}", ds.name)
        text = str(entry["kind"])
        shape, chunks = shape[:-1], chunks[:-1]
        names = names[:-1] if names is not None else None
    lead = 0
    marked = ds.extra.get("shape") == []
    if (marked or ds.attrs.get(LEGACY_SCALAR) == "true") and shape:
        if shape == (1,):
            shape, chunks, lead, names = (), (), 1, ()
        elif marked:
            raise _fail(f"dataset `{ds.name}` is marked 0-d but holds shape {list(shape)}",
                        ds.name)
    return _Var(ds, dataset_id, parts, tuple(shape), tuple(chunks), text, lead,
                tuple(names) if names is not None else None)


def _assign_dims(group: Sequence[_Var]) -> None:
    """Dimensions of the datasets of one group: the footer's ``dim_names``, else
    ``dim_i`` (``<name>_dim_i`` where ``dim_i`` is taken with another length) — the
    xarray backend's rule, so both views name them alike."""
    sizes: dict[str, int] = {}
    for v in group:
        if v.dims is not None:
            for dim, n in zip(v.dims, v.shape):
                sizes.setdefault(dim, n)
    for v in group:
        if v.dims is not None:
            continue
        dims = []
        for i, n in enumerate(v.shape):
            dim = f"dim_{i}"
            if sizes.setdefault(dim, n) != n:
                dim = f"{v.var}_dim_{i}"
                sizes.setdefault(dim, n)
            dims.append(dim)
        v.dims = tuple(dims)


def _axis_dim(axis: str, v: _Var) -> str | None:
    """The dimension a footer coords key names (a dim name or a decimal axis index)."""
    assert v.dims is not None
    names = v.ds.dim_names
    if names is not None and axis in names and names.index(axis) < len(v.dims):
        return v.dims[names.index(axis)]
    if axis.isdigit() and int(axis) < len(v.dims):
        return v.dims[int(axis)]
    return None




_TIME_UNITS = {"D": "days", "h": "hours", "m": "minutes", "s": "seconds",
               "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def _time_encoded(values: np.ndarray[Any, Any], attrs: dict[str, Any]
                  ) -> np.ndarray[Any, Any]:
    """Dates or durations as CF integers xarray decodes back: dates as counts of the
    coarsest unit that holds every one exactly since 1970-01-01 (``units``,
    ``calendar``), durations as counts of their own unit (``units``, ``dtype``); NaT is
    the int64 minimum, marked as ``_FillValue``."""
    nat = np.isnat(values)
    if values.dtype.kind == "M":
        valid = values[~nat]
        unit = "ns"
        for unit in ("D", "h", "m", "s", "ms", "us", "ns"):
            if (valid.astype(f"M8[{unit}]") == valid).all():
                break
        counts = values.astype(f"M8[{unit}]").view(np.int64)
        attrs.update(units=f"{_TIME_UNITS[unit]} since 1970-01-01",
                     calendar="proleptic_gregorian")
    else:
        unit = np.datetime_data(values.dtype)[0]
        if unit not in _TIME_UNITS:
            values, unit = values.astype("m8[ns]"), "ns"
        counts = values.view(np.int64)
        attrs.update(units=_TIME_UNITS[unit], dtype=f"timedelta64[{unit}]")
    if nat.any():
        attrs["_FillValue"] = int(np.iinfo(np.int64).min)
    return np.ascontiguousarray(counts, dtype="<i8")


def _coordinate(parts: tuple[str, ...], length: int, values: np.ndarray[Any, Any],
                attrs: dict[str, Any], codec: int, budget: int) -> _Array:
    """A 1-D coordinate array made from an axis's labels."""
    name = "/".join(parts)
    chunks = (min(length, _COORD_CHUNK),)
    text: str | None = None
    fill: Any
    pad: Any
    if values.dtype.kind == "U":
        rows, _ = encode_text(values.astype(object) if values.size else
                              np.array([""], dtype=object))
        data_type, fill, pad, text, values = "string", "", None, "str", rows
    elif values.dtype.kind in "Mm":
        values = _time_encoded(values, attrs)
        fill = int(attrs.get("_FillValue", 0))
        data_type, pad = "int64", np.int64(fill)
    elif values.dtype.kind == "b":
        data_type, fill, pad = "bool", False, np.bool_(False)
    else:
        values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
        data_type = values.dtype.name
        fill, pad = (("NaN", values.dtype.type(math.nan)) if values.dtype.kind == "f"
                     else (0, values.dtype.type(0)))
    return _Array(name, parts, (length,), chunks, data_type, fill, pad, codec,
                  _json_attrs(attrs), (parts[-1],), budget, text=text, values=values)


def _node_parts(name: str) -> tuple[str, ...]:
    parts = tuple(name.split("/"))
    bad = [p for p in parts if p in _RESERVED_PARTS or "\0" in p or "\\" in p]
    if bad:
        raise _fail(f"dataset `{name}` cannot be a Zarr node path: component {bad[0]!r} is not "
                    "allowed (empty, '.', '..', 'zarr.json', NUL or backslash); rename it "
                    "in the .tet file first", name)
    return parts


def _codec_of(name: str, table: kernels.TileTable, choice: str) -> int:
    if choice == "raw":
        return RAW
    if choice == "zstd":
        return ZSTD
    present = set(np.unique(table.codec).tolist()) - {kernels.TileTable.MISSING}
    if present == {RAW, ZSTD}:
        raise _fail(f"dataset `{name}` mixes raw and zstd chunk codecs; re-export with one "
                    "codec", name)
    return ZSTD if present == {ZSTD} else RAW


def _encoded_keys(ds: Dataset, reference_convert: bool) -> frozenset[str]:
    """Keys that are the dataset's CF encoding, not attributes: its typed ``encoding``;
    in a file from ``tet convert`` whose dataset has no typed metadata (the reference's
    convert), a float dataset with ``scale_factor``/``add_offset`` holds decoded values,
    so its CF keys are encoding too (the backend's rule)."""
    keys = set(ds.extra.get("encoding", {}))
    if reference_convert and ds.numpy_dtype.kind == "f" and any(
            k in ds.typed_attrs and k not in keys for k in PACKING):
        keys.update(CF_NUMERIC)
    return frozenset(keys)


def _narrow_dtype(ds: Dataset) -> np.dtype[Any] | None:
    """The integer type a dataset reads back as when it is stored wider (int8 as i16,
    ``encoding["dtype"]``, no packing); None when it reads as stored."""
    encoding = ds.extra.get("encoding", {})
    stored = ds.numpy_dtype
    try:
        narrow = np.dtype(str(encoding["dtype"])) if "dtype" in encoding else None
    except TypeError:
        return None
    if (narrow is None or stored.kind not in "iu" or narrow.kind not in "iu"
            or narrow.itemsize >= stored.itemsize or any(k in encoding for k in PACKING)):
        return None
    return narrow


def _converted(f: TetFile) -> bool:
    """Whether the footer says the file came from ``tet convert``."""
    meta = f.catalog.metadata.get("file")
    tool = meta.get("tool") if isinstance(meta, dict) else None
    return tool == "tet convert" or any(
        isinstance(h, Mapping) and h.get("op") == "convert" for h in f.catalog.history)


@dataclass
class _Plan:
    arrays: list[_Array]
    groups: list[tuple[str, ...]]
    root_attrs: dict[str, Any]
    group_attrs: dict[tuple[str, ...], dict[str, Any]]  # a group's own (``tet.groups``)
    datasets: tuple[str, ...]
    coordinates: tuple[str, ...]


def _plan(f: TetFile, choice: str) -> _Plan:
    """Every array (datasets in catalog order, then the coordinates made from labels),
    the intermediate groups (parents before children) and the root's attributes;
    everything that can be refused is refused here, before a byte is written."""
    array_paths: dict[tuple[str, ...], str] = {}
    groups: dict[tuple[str, ...], str] = {}
    views: list[_Var] = []
    for dataset_id, record in enumerate(f.catalog.datasets):
        name = record.name
        parts = _node_parts(name)
        if parts in array_paths:
            raise _fail(f"dataset `{name}` appears twice in the catalog", name)
        if parts in groups:
            raise _fail(f"dataset `{name}` is also the group of dataset `{groups[parts]}`", name)
        for k in range(1, len(parts)):
            prefix = parts[:k]
            if prefix in array_paths:
                raise _fail(f"dataset `{name}` would nest under dataset "
                            f"`{array_paths[prefix]}`, which is an array", name)
            groups.setdefault(prefix, name)
        array_paths[parts] = name
        views.append(_view(f.dataset(dataset_id), dataset_id, parts))
    ext = ext_of(f.catalog.metadata)
    typed = ext.get("datasets", {})
    converted = _converted(f)
    budget = resolve_budget(file_bytes=f.catalog.budget_bytes,
                            file_bps=f.catalog.budget_percent_bps)
    by_group: dict[tuple[str, ...], list[_Var]] = {}
    for v in views:
        by_group.setdefault(v.parts[:-1], []).append(v)
    for members in by_group.values():
        _assign_dims(members)

    arrays: list[_Array] = []
    legacy_globals: dict[str, Any] = {}
    for v in views:
        ds, name = v.ds, v.ds.name
        try:
            table = f.reader.table(v.dataset_id)
            wire = dtypes.by_tag(ds.dtype)
        except TetError as exc:
            raise _dataset_fail(name, exc) from exc
        raw = dict(ds.attrs)
        types = _legacy_types(raw)
        for key, value in _legacy_decoded(raw, types).items():
            if key.startswith(LEGACY_GLOBAL):
                legacy_globals.setdefault(key[len(LEGACY_GLOBAL):], value)
        encoded = _encoded_keys(ds, converted and name not in typed)
        attrs = _variable_attrs(ds, wire.numpy, encoded)
        narrow = None if v.text is not None else _narrow_dtype(ds)
        text = v.text
        if text == "bytes" and str(attrs.get("_Encoding", "")).lower() in ("utf-8", "utf8"):
            del attrs["_Encoding"]  # encoding: xarray decodes such bytes to strings
            text = "str"
        if text is not None:
            attrs.pop("_FillValue", None)
            data_type = "string" if text == "str" else "variable_length_bytes"
            fill: Any = ""
            pad: Any = None
        else:
            shown = narrow if narrow is not None else wire.numpy
            data_type = shown.name
            fill, pad = _fill_of(attrs, shown)
        assert v.dims is not None
        arrays.append(_Array(name, v.parts, v.shape, v.chunks, data_type, fill, pad,
                             _codec_of(name, table, choice), _json_attrs(attrs), v.dims,
                             table.budget(), record=f.catalog.datasets[v.dataset_id],
                             table=table, text=text, lead=v.lead, narrow=narrow))

    coordinates: list[str] = []
    coord_meta = ext.get("coords", {})
    coord_codec = ZSTD if choice == "zstd" else RAW
    for group, members in by_group.items():
        taken = {v.var for v in members} | {g[-1] for g in groups if g[:-1] == group}
        made: dict[str, _Array] = {}
        for v in members:
            assert v.dims is not None
            if not v.dims:
                continue
            for axis, labels in v.ds.coords.items():
                dim = _axis_dim(axis, v)
                if dim is None or dim in made or dim in taken or dim in _RESERVED_PARTS \
                        or "/" in dim or "\0" in dim or "\\" in dim:
                    continue  # first labels win; a dataset named like the dim wins
                legacy = _legacy_coord(v.ds.attrs, dim)
                meta = legacy if legacy is not None else coord_meta.get(dim)
                dtype = meta.get("dtype") if isinstance(meta, dict) else None
                length = v.shape[v.dims.index(dim)]
                values = labels_to_values(
                    labels, length, {"dtype": dtype}, budget,
                    f"exporting the coordinate {dim!r} of {v.ds.name!r}",
                    "export on a host with more memory, or rewrite the file without those labels")
                if values is None:
                    continue
                if legacy is not None:
                    cattrs = _legacy_decoded(legacy.get("attrs", {}), legacy.get("types", {}))
                elif isinstance(meta, dict):
                    cattrs = merge_attrs({}, meta.get("attrs", {}), f"coords {dim!r}")
                else:
                    cattrs = {}
                cattrs = {k: x for k, x in cattrs.items() if not _reserved(k)}
                made[dim] = _coordinate((*group, dim), length, values, cattrs, coord_codec,
                                        budget)
        arrays.extend(made.values())
        coordinates.extend(a.name for a in made.values())

    root: dict[str, Any] = {"tetration_export": _version()}
    for key, value in {**legacy_globals, **f.file_attrs}.items():
        if key != "tetration_export" and not _reserved(key):
            root[key] = _json_value(value)
    group_attrs: dict[tuple[str, ...], dict[str, Any]] = {}
    entries = ext.get("groups", {})
    for g in groups:
        entry = entries.get("/".join(g)) if isinstance(entries, dict) else None
        if isinstance(entry, dict) and entry.get("attrs"):
            group_attrs[g] = _json_attrs(merge_attrs({}, entry["attrs"],
                                                     f"group {'/'.join(g)!r} attrs"))
    return _Plan(arrays, sorted(groups, key=len), root, group_attrs,
                 tuple(v.ds.name for v in views), tuple(coordinates))


def _legacy_coord(attrs: Mapping[str, str], dim: str) -> dict[str, Any] | None:
    """The ``_tet_coord:<dim>`` JSON of older files: {"dtype", "attrs", "types"}."""
    text = attrs.get(LEGACY_COORD + dim)
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    if not isinstance(meta, dict):
        return None
    if not isinstance(meta.get("attrs", {}), dict) or not isinstance(meta.get("types", {}),
                                                                     dict):
        return None
    return meta


def _array_document(a: _Array) -> dict[str, Any]:
    """The array's ``zarr.json`` (cli.md §7, with the fill value, typed attributes and
    dimension names xarray reads)."""
    if a.text is not None:
        codecs: list[dict[str, Any]] = [{"name": "vlen-utf8" if a.text == "str" else
                                         "vlen-bytes", "configuration": {}}]
    else:
        codecs = [_BYTES_CODEC]
    if a.codec == ZSTD:
        codecs.append(_ZSTD_CODEC)
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(a.shape),
        "data_type": a.data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(a.chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": a.fill,
        "codecs": codecs,
        "attributes": a.attrs,
        "dimension_names": list(a.dims),
        "storage_transformers": [],
    }


# ---------------------------------------------------------------------------
# Writing.


def _write_fd(fd: int, data: memoryview) -> None:
    while len(data):
        done = os.write(fd, data)
        if done <= 0:
            raise OSError(errno.EIO, "short write")
        data = data[done:]


def _copy_span(src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    """Copy a payload span between files in the kernel when it can (no user-space copy)."""
    pos, left = offset, length
    while left > 0:
        try:
            done = os.copy_file_range(src_fd, dst_fd, min(left, _COPY_BLOCK), pos)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                                 errno.EPERM):
                raise
            done = 0
        if done <= 0:  # unsupported here, or nothing copied: plain reads and writes
            chunk = os.pread(src_fd, min(left, _COPY_BLOCK), pos)
            if not chunk:
                raise OSError(errno.EIO, f"source ended early at offset {pos}")
            _write_fd(dst_fd, memoryview(chunk))
            done = len(chunk)
        pos += done
        left -= done


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)


def _write_file(path: Path, data: bytes | memoryview, fsync: bool) -> None:
    try:
        fd = _create(path)
        try:
            _write_fd(fd, memoryview(data))
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _WriteFailed(exc, path, memoryview(data).nbytes) from exc


def _write_json(path: Path, doc: Mapping[str, Any], fsync: bool) -> None:
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # text UTF-8 cannot hold (a lone surrogate): JSON escapes
        data = (json.dumps(doc, indent=2, ensure_ascii=True) + "\n").encode("ascii")
    _write_file(path, data, fsync)


@dataclass(frozen=True)
class _Tile:
    array: _Array
    linear: int
    coords: tuple[int, ...]
    path: Path


def _box(a: _Array, t: _Tile) -> tuple[list[int], list[int]]:
    """The tile's [start, stop) in the Zarr array."""
    start = [c * k for c, k in zip(t.coords, a.chunks)]
    return start, [min(s + k, n) for s, k, n in zip(start, a.chunks, a.shape)]


def _read_stored(a: _Array, start: list[int], stop: list[int]) -> np.ndarray[Any, Any]:
    """The dataset's values of a Zarr box (text: with its char axis)."""
    assert a.record is not None and a.table is not None
    s0 = [0] * a.lead + start + ([0] if a.text else [])
    s1 = [1] * a.lead + stop + ([a.width] if a.text else [])
    dst = np.empty([e - s for s, e in zip(s0, s1)], dtype=a.dtype)
    a.table.read(s0, s1, [1] * len(s0), dst)
    return dst.reshape([e - s for s, e in zip(start, stop)] + ([a.width] if a.text else []))


def _chunk(a: _Array, t: _Tile) -> np.ndarray[Any, Any]:
    """The tile as a full chunk: numbers padded with the fill value, text as the u8 rows
    of its values (padding rows empty)."""
    start, stop = _box(a, t)
    tail = [a.width] if a.text else []
    if a.values is not None:  # a coordinate: 1-D, its values past their end are padding
        part = a.values[start[0]:min(stop[0], len(a.values))]
    else:
        part = _read_stored(a, start, stop)
    if a.narrow is not None:
        part = _narrowed(part, a.narrow)
    full = tuple(a.chunks) + tuple(tail)
    if part.shape == full:
        return np.ascontiguousarray(part)
    out = np.zeros(full, dtype=a.dtype) if a.text else np.full(full, a.pad, dtype=part.dtype)
    out[tuple(slice(0, n) for n in part.shape)] = part
    return out


def _narrowed(data: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """Integers stored wider, in the type they read back as (checked to fit first)."""
    info = np.iinfo(dtype)
    if data.size and (int(data.min()) < info.min or int(data.max()) > info.max):
        raise CatalogError(f"it is marked as {dtype} but holds values from {int(data.min())} "
                           f"to {int(data.max())}")
    return data.astype(dtype)


def _vlen(rows: np.ndarray[Any, Any], kind: str) -> np.ndarray[Any, Any]:
    """Zarr's vlen-utf8 / vlen-bytes chunk encoding of NUL-padded fixed-width values:
    the count (u32 LE), then per value its length (u32 LE) and its bytes.  A ``str``
    value that is not UTF-8 has its bad bytes replaced, as `tet.text.decode_text` reads it."""
    n, width = rows.shape
    nonzero = rows != 0
    lengths = np.where(nonzero.any(axis=1), width - np.argmax(nonzero[:, ::-1], axis=1), 0)
    del nonzero
    if kind == "str" and not _utf8(rows, lengths):
        rows, _ = encode_text(np.asarray(
            [bytes(r[:k]).decode("utf-8", "replace") for r, k in zip(rows, lengths)],
            dtype=object))
        return _vlen(rows, kind)
    record = np.empty((n, 4 + width), dtype=np.uint8)
    record[:, :4] = lengths.astype("<u4").view(np.uint8).reshape(n, 4)
    record[:, 4:] = rows
    keep = np.arange(4 + width) < (4 + lengths)[:, None]
    out = np.empty(4 + 4 * n + int(lengths.sum()), dtype=np.uint8)
    out[:4] = np.frombuffer(struct.pack("<I", n), dtype=np.uint8)
    out[4:] = record[keep]
    return out


def _utf8(rows: np.ndarray[Any, Any], lengths: np.ndarray[Any, Any]) -> bool:
    """Whether every value is valid UTF-8: no value starts with a continuation byte (so
    none ends inside a character either), and blocks of whole values (about 1 MiB each,
    so the check needs little memory) decode."""
    if bool(((rows[lengths > 0, 0] & 0xC0) == 0x80).any()):
        return False
    cols = np.arange(rows.shape[1])
    step = max(1, (1 << 20) // rows.shape[1])
    for i in range(0, len(rows), step):
        keep = cols < lengths[i:i + step, None]
        try:
            rows[i:i + step][keep].tobytes().decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def _write_tile(t: _Tile, src_fd: int, fsync: bool) -> tuple[int, bool]:
    """Write one chunk file; (bytes written, copied verbatim?).  An OS failure names
    the chunk file (a write's own error has no file name)."""
    try:
        return _write_tile_at(t, src_fd, fsync)
    except OSError as exc:
        if not exc.filename:
            exc.filename = str(t.path)
        raise


def _write_tile_at(t: _Tile, src_fd: int, fsync: bool) -> tuple[int, bool]:
    a, i = t.array, t.linear
    tbl = a.table
    if tbl is not None and a.record is not None and a.text is None and a.narrow is None:
        expected = math.prod(a.record.chunk_shape) * a.dtype.itemsize
        if (int(tbl.codec[i]) == a.codec and int(tbl.raw[i]) == expected
                and tbl.tile_size(i) * a.dtype.itemsize == expected):
            try:
                fd = _create(t.path)
                try:
                    _copy_span(src_fd, fd, int(tbl.offset[i]), int(tbl.stored[i]))
                    if fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _WriteFailed(exc, t.path, int(tbl.stored[i])) from exc
            return int(tbl.stored[i]), True
    require_memory(a.tile_memory, a.budget,
                   f"chunk {list(t.coords)} (chunk_shape {list(a.chunks)} "
                   f"padded, and encoded)",
                   "export on a host with more memory, or rewrite the file with smaller "
                   "chunks")
    tile = _chunk(a, t)
    if a.text is not None:
        body = _vlen(tile.reshape(-1, a.width), a.text)
        del tile
        data = memoryview(body.data)
        if a.codec == ZSTD:
            payload, _ = kernels.encode(body, np.zeros((1, 1), np.int64),
                                        np.asarray([[body.size]], np.int64), codec=ZSTD, level=0)
            data = memoryview(payload.data)
    elif a.codec == ZSTD:
        flat = np.ascontiguousarray(tile).reshape(-1)
        payload, _ = kernels.encode(flat, np.zeros((1, 1), np.int64),
                                    np.asarray([[flat.size]], np.int64), codec=ZSTD, level=0)
        data = memoryview(payload.data)
    else:
        data = memoryview(np.ascontiguousarray(tile).reshape(-1).view(np.uint8).data)
    _write_file(t.path, data, fsync)
    return len(data), False


def _tiles(a: _Array, root: Path, made: set[Path]) -> Iterator[_Tile]:
    """Every tile in grid order, with its chunk file path (parent directories created);
    a 0-d array's one chunk is the file ``c``."""
    counts = tile_counts(a.shape, a.chunks)
    base = root.joinpath(*a.parts, "c")
    for linear, coords in enumerate(np.ndindex(*counts)):
        if not coords:
            yield _Tile(a, linear, (), base)
            continue
        parent = base.joinpath(*(str(c) for c in coords[:-1]))
        if parent not in made:
            parent.mkdir(parents=True, exist_ok=True)
            made.add(parent)
        yield _Tile(a, linear, tuple(coords), parent / str(coords[-1]))



@dataclass
class _Counts:
    chunks: int = 0
    copied: int = 0
    nbytes: int = 0


def _write_arrays(arrays: Sequence[_Array], root: Path, src_fd: int, fsync: bool,
                  progress: Callable[[int], object] | None, made: set[Path],
                  shown: Callable[[str], str]) -> _Counts:
    """Chunk files of every array, on a thread pool (I/O, zstd and decoding release the
    GIL); at most a few tiles are in flight, so memory stays bounded."""
    counts = _Counts()
    workers = min(kernels.thread_count(), 16)
    pending: deque[tuple[str, Future[tuple[int, bool]]]] = deque()

    def settle() -> None:
        name, fut = pending.popleft()
        try:
            nbytes, copied = fut.result()
        except Exception as exc:
            raise _dataset_fail(name, exc, shown) from exc
        counts.chunks += 1
        counts.copied += copied
        counts.nbytes += nbytes
        if progress is not None:
            progress(1)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tet-export")
    try:
        for a in arrays:
            try:
                root.joinpath(*a.parts).mkdir()
                _write_json(root.joinpath(*a.parts, "zarr.json"), _array_document(a), fsync)
                limit = min(2 * workers, a.in_flight)
                for tile in _tiles(a, root, made):
                    while len(pending) >= limit:
                        settle()
                    pending.append((a.name, pool.submit(_write_tile, tile, src_fd, fsync)))
            except OSError as exc:
                raise _dataset_fail(a.name, exc, shown) from exc
        while pending:
            settle()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return counts


# ---------------------------------------------------------------------------
# The target directory.


def _check_target(given: str, target: Path) -> Path:
    """The directory to replace (a symlink's destination); refuses a non-empty one."""
    if target.is_symlink():
        target = target.resolve()
    if not target.exists():
        return target
    if not target.is_dir():
        raise ExportError(f"export output `{given}` exists and is not a directory")
    with os.scandir(target) as it:
        if any(True for _ in it):
            raise ExportError(f"export output `{given}` exists and is not empty")
    return target


def _missing_ancestors(path: Path) -> list[Path]:
    out = []
    p = path.absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def _swap(tmp: Path, target: Path, given: str, fsync: bool) -> None:
    """Rename the finished store onto the target (an empty directory is replaced), then
    flush the directory (with `fsync`)."""
    existed = target.is_dir()
    if existed:
        with contextlib.suppress(OSError):
            shutil.copymode(target, tmp)
        if os.name == "nt":  # Windows will not rename onto a directory
            target.rmdir()
    try:
        with Dir.of(target.parent) as folder:
            atomic_replace(folder, tmp.name, target.name, identity=None,
                           action="cannot export to", shown=given, fsync=fsync)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise ExportError(f"export output `{given}` exists and is not empty") from exc
        exc.filename = str(tmp)  # the name relative to the directory: show the path
        raise


def export(src: PathLike, dst: PathLike, *, codec: str = "keep",
           progress: Callable[[int], object] | None = None, fsync: bool = True
           ) -> ExportReport:
    """Export every dataset of a ``.tet`` file into a new Zarr v3 directory store.

    Parameters
    ----------
    src : the ``.tet`` file.
    dst : the store directory; it must not exist (it is created, parents too) or be empty.
    codec : "keep" (default) writes each dataset with the codec its chunks have in the
        ``.tet`` file (a dataset mixing raw and zstd chunks is refused); "raw" or "zstd"
        converts every chunk to that codec.
    progress : called with 1 after each chunk file is written (a progress bar's update).
    fsync : flush every file and directory before the store is renamed into place.

    Returns
    -------
    ExportReport

    Raises
    ------
    ExportError
        The output exists and is not empty, the file has no datasets, a dataset cannot be
        exported (its name is in the message and in ``.dataset``), or writing failed.
        The target is left as it was and no temp directory remains.
    CatalogError, FileNotFoundError
        The input cannot be opened.
    """
    if codec not in CODEC_CHOICES:
        raise ValueError(f"unknown export codec {codec!r} (use one of {', '.join(CODEC_CHOICES)})")
    started = time.perf_counter()
    src_text = checked_path(src, "cannot open")
    dst_text = checked_path(dst, "cannot export to")
    with TetFile(src) as f:
        target = _check_target(dst_text, Path(os.path.expanduser(dst_text)))
        if not f.catalog.datasets:
            raise ExportError(f"no datasets in {src_text}")
        plan = _plan(f, codec)
        arrays, groups = plan.arrays, plan.groups
        created = _missing_ancestors(target.parent)
        tmp = target.parent / temp_name("export", target.name)  # names its owner

        def shown(path: str) -> str:  # messages name the store's path, not the temp one
            return dst_text + path[len(str(tmp)):] if path.startswith(str(tmp)) else path

        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale(target.parent, target.name)  # stores killed exports left
            tmp.mkdir()
            made: set[Path] = set()
            _write_json(tmp / "zarr.json", {"zarr_format": 3, "node_type": "group",
                                            "attributes": plan.root_attrs}, fsync)
            for g in groups:
                tmp.joinpath(*g).mkdir()
                doc: dict[str, Any] = {"zarr_format": 3, "node_type": "group"}
                if g in plan.group_attrs:
                    doc["attributes"] = plan.group_attrs[g]
                _write_json(tmp.joinpath(*g, "zarr.json"), doc, fsync)
            src_fd = os.open(f.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            try:
                counts = _write_arrays(arrays, tmp, src_fd, fsync, progress, made, shown)
            finally:
                os.close(src_fd)
            if fsync:
                dirs = {tmp, *made, *(tmp.joinpath(*g) for g in groups)}
                for a in arrays:
                    path = tmp.joinpath(*a.parts)
                    dirs.update((path, path / "c") if a.shape else (path,))
                for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
                    fsync_dir(d)
            _swap(tmp, target, dst_text, fsync)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            for p in created:  # deepest first; only the directories this call made
                with contextlib.suppress(OSError):
                    p.rmdir()
            if isinstance(exc, OSError) and not isinstance(exc, ExportError):
                if not exc.filename:
                    exc.filename = dst_text
                raise _os_fail(exc, _os_text(exc, shown), shown) from exc
            raise
    return ExportReport(
        input=Path(src_text), output=Path(dst_text), datasets=plan.datasets,
        chunks=counts.chunks, copied_chunks=counts.copied,
        encoded_chunks=counts.chunks - counts.copied, bytes_written=counts.nbytes,
        elapsed_secs=time.perf_counter() - started, coordinates=plan.coordinates)


def chunk_count(src: PathLike, *, codec: str = "keep") -> int:
    """The chunk files `export` would write for `src` (a progress bar's total); the
    same refusals as `export` (an `ExportError` naming the dataset)."""
    if codec not in CODEC_CHOICES:
        raise ValueError(f"unknown export codec {codec!r} (use one of {', '.join(CODEC_CHOICES)})")
    with TetFile(src) as f:
        return sum(math.prod(tile_counts(a.shape, a.chunks)) for a in _plan(f, codec).arrays)


def _version() -> str:
    from tet.version import __version__

    return __version__
