"""Writing an xarray Dataset (or DataArray) to a ``.tet`` file: `from_xarray`.

Variables are CF-encoded first, exactly as xarray encodes for netCDF (dates become
numbers with ``units``, floats get ``_FillValue: NaN``, booleans a ``dtype`` attr,
non-index coordinates are listed in ``coordinates`` attrs), so `open_dataset` with
``engine="tet"`` decodes them back and the round trip is identical.

What the v1 footer (string attrs only) cannot hold goes to its typed metadata,
``metadata.tet`` (`tet.attrs`), which `tet.xarray_backend` reads back:

- attributes keep their types (NumPy scalars and arrays with their dtype, bytes,
  bools, lists, tuples; the footer text beside them for other readers); the
  Dataset's attrs are the file attributes (`TetWriter.set_file_attrs`), or the
  group's with ``group=`` (`TetWriter.set_group_attrs`);
- a 0-d variable is a one-element dataset marked ``shape: []``;
- strings and bytes (``U``, ``S``, object arrays of either), of any length, are
  fixed-width ``u8`` datasets marked ``text`` (`tet.text`) with one more axis,
  ``<name>_strlen``, that readers drop;
- int8 (which the format lacks) is stored as i16 marked ``encoding: {"dtype":
  "int8"}``, and reads back as int8.

Index coordinates (a 1-D coordinate named like its dimension) of at most 64 values
are not datasets: they become the footer ``coords`` labels of every dataset on that
dimension (numbers in their shortest exact text, dates as ISO 8601 strings), with
their dtype and attrs in ``tet.coords[dim]``, so tet queries can select by label.
Longer coordinates, text that labels cannot hold (empty strings, bytes, labels over
1024 bytes), and coordinates no dataset could carry are datasets of their own.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from xarray import conventions

from tet import dtypes
from tet.attrs import display, encode_value, ext_of, split_attrs
from tet.limits import LIMITS
from tet.text import encode_text
from tet.wire import is_axis_index
from tet.writer import TetWriter, default_chunk_shape
from tet.xrmodel import values_to_labels

__all__ = ["DATAARRAY_NAME", "DATAARRAY_VARIABLE", "from_xarray"]

PathLike = str | os.PathLike[str]
MAX_LABELS = LIMITS["coord_labels_per_axis"]
MAX_STRING = LIMITS["attr_string_bytes"]
MAX_ATTRS = LIMITS["dataset_attrs"]
# As xarray's DataArray.to_netcdf names them, so xr.open_dataarray gives the array back.
DATAARRAY_VARIABLE = "__xarray_dataarray_variable__"
DATAARRAY_NAME = "__xarray_dataarray_name__"


def _fits(label: str) -> bool:
    return 0 < len(label.encode("utf-8")) <= MAX_STRING


def _as_dataset(obj: Any) -> xr.Dataset:
    """A Dataset as it is; a DataArray as xarray's ``to_netcdf`` stores one (unnamed, or
    named like one of its coordinates: ``__xarray_dataarray_variable__``)."""
    if isinstance(obj, xr.Dataset):
        return obj
    if isinstance(obj, xr.DataArray):
        if obj.name is None:
            return obj.to_dataset(name=DATAARRAY_VARIABLE)
        if obj.name in obj.coords or obj.name in obj.dims:
            ds = obj.to_dataset(name=DATAARRAY_VARIABLE)
            ds.attrs[DATAARRAY_NAME] = obj.name
            return ds
        return obj.to_dataset()
    raise TypeError(f"from_xarray writes an xarray Dataset or DataArray, not "
                    f"{type(obj).__name__}")


def _typed(attrs: Mapping[Any, Any], where: str) -> dict[str, Any]:
    """Attrs ready for the footer: non-finite Python floats as float64 (JSON has no
    NaN); anything the footer cannot type is a TypeError naming `where` and the key."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = np.float64(value)
        out[key] = value
    split_attrs(out, where)  # refuses names and values it cannot store
    return out


@dataclass
class _Existing:
    """What an appended file already says about label coordinates and attributes."""

    coords: dict[str, Any] = field(default_factory=dict)   # tet.coords, encoded
    labelled: set[str] = field(default_factory=set)        # dims some dataset labels
    file_attrs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: PathLike) -> _Existing:
        from tet.file import TetFile

        with TetFile(path) as f:
            out = cls(dict(ext_of(f.catalog.metadata).get("coords", {})),
                      file_attrs=f.file_attrs)
            for d in f.iter_datasets():
                for axis in d.coords:
                    if d.dim_names is not None and axis in d.dim_names:
                        out.labelled.add(axis)
                    elif is_axis_index(axis):
                        out.labelled.add(d.dim_names[int(axis)] if d.dim_names is not None
                                         and int(axis) < len(d.dim_names) else f"dim_{axis}")
        return out

    def allows(self, dim: str, entry: Mapping[str, Any]) -> bool:
        """Labels of `dim` read back right: no dataset labels it yet, or the file
        already reads its labels with this dtype and these attrs."""
        return dim not in self.labelled or self.coords.get(dim, {}) == entry


def _coord_entry(dtype: str | None, attrs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The encoded ``tet.coords[dim]`` entry ({} for plain strings without attrs)."""
    entry: dict[str, Any] = {}
    if dtype is not None:
        entry["dtype"] = dtype
    if attrs:
        entry["attrs"] = {k: encode_value(v, f"{where} attribute {k!r}")
                          for k, v in _typed(attrs, where).items()}
    return entry


def _label_coords(ds: xr.Dataset, existing: _Existing
                  ) -> dict[str, tuple[list[str], str | None, dict[str, Any], dict[str, Any]]]:
    """Index coordinates that can be footer labels: dim -> (labels, dtype, attrs,
    encoded ``tet.coords`` entry)."""
    out: dict[str, tuple[list[str], str | None, dict[str, Any], dict[str, Any]]] = {}
    for name, coord in ds.coords.items():
        if not isinstance(name, str) or coord.dims != (name,) or coord.size > MAX_LABELS:
            continue
        if not any(name in ds[v].dims for v in ds.data_vars):
            continue  # no dataset would carry the labels
        found = values_to_labels(np.asarray(coord.values))
        if found is None or not all(_fits(label) for label in found[0]):
            continue
        attrs = _typed(coord.attrs, f"coordinate {name!r}")
        entry = _coord_entry(found[1], attrs, f"coordinate {name!r}")
        if existing.allows(name, entry):
            out[name] = (found[0], found[1], attrs, entry)
    return out


def _chunk_shape(var: xr.Variable, chunks: Mapping[Hashable, int] | None) -> tuple[int, ...]:
    """Explicit `chunks` per dim, else the variable's recorded or dask chunks, else the
    writer's default tiles (at most 8 MiB)."""
    shape = tuple(int(n) for n in var.shape)
    base: Sequence[int] | None = var.encoding.get("chunksizes")
    if base is None and var.chunks is not None:
        base = [c[0] for c in var.chunks]
    if base is None or len(base) != len(shape):
        base = default_chunk_shape(shape, var.dtype.itemsize) if shape else ()
    out = [max(1, min(int(c), n)) for c, n in zip(base, shape)]
    for d, dim in enumerate(var.dims):
        if chunks and dim in chunks:
            out[d] = max(1, min(int(chunks[dim]), shape[d]))
    return tuple(out)


MASK_AND_SCALE = ("_FillValue", "missing_value", "scale_factor", "add_offset")


def _keep_decoded(var: xr.Variable) -> tuple[xr.Variable, dict[str, Any]]:
    """`var` with its CF mask and scale encoding taken out, and that encoding.

    Numbers are stored as they are in memory (NaN where missing, unpacked), so tet's
    own statistics see what xarray sees; the ``_FillValue``, ``missing_value``,
    ``scale_factor``, ``add_offset`` and source ``dtype`` of ``var.encoding`` are
    recorded as the dataset's encoding (``Variable.encoding`` again when read back; the
    source ``dtype`` of floats only: integers are cast to theirs, as xarray does).  A
    float without a fill gets ``_FillValue: NaN`` there, as xarray's default, so tet's
    ``null_count`` finds its NaN.  Times, booleans and text are left to xarray's
    encoder, without a default fill (NaT needs none)."""
    enc = dict(var.encoding)
    if var.dtype.kind not in "iuf":
        enc.setdefault("_FillValue", None)
        return xr.Variable(var.dims, var.data, var.attrs, enc), {}
    no_fill = "_FillValue" in enc and enc["_FillValue"] is None
    moved = {k: enc.pop(k) for k in MASK_AND_SCALE if k in enc}
    moved = {k: v for k, v in moved.items() if v is not None}
    if var.dtype.kind == "f" and enc.get("dtype") is not None:  # e.g. int16 unpacked
        try:
            source = np.dtype(enc["dtype"])
        except TypeError:
            source = None
        if source is not None and source != var.dtype:
            del enc["dtype"]
            moved["dtype"] = source.name
    marked = set(moved) | set(var.attrs)
    if var.dtype.kind == "f" and not no_fill and not {"_FillValue", "missing_value"} & marked:
        moved["_FillValue"] = var.dtype.type(np.nan)
    enc["_FillValue"] = None  # xarray's encoder adds none: the data stay as they are
    return xr.Variable(var.dims, var.data, var.attrs, enc), moved


@dataclass
class _Planned:
    """One encoded variable as the dataset to write."""

    data: Any
    chunk: tuple[int, ...]
    dims: list[str] | None
    attrs: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    scalar: bool = False

    def footer(self, where: str) -> tuple[dict[str, str], dict[str, Any]]:
        """(the v1 footer attrs: strings within its limits, the typed metadata of the
        dataset: ``extra`` with the attrs v1 cannot hold exactly)."""
        v1, typed = split_attrs(self.attrs, where)
        extra = dict(self.extra)
        if typed:
            extra["attrs"] = {k: self.attrs[k] for k in typed}
        for key, value in extra.get("encoding", {}).items():  # their text, for tet and
            text = display(value)                           # the reference (cli.md §6)
            if (key in MASK_AND_SCALE and key not in v1 and len(v1) < MAX_ATTRS
                    and text is not None and len(text.encode("utf-8")) <= MAX_STRING):
                v1[key] = text
        return v1, extra


def _char_dim(name: str, taken: set[str]) -> str:
    dim = f"{name}_strlen"
    while dim in taken:
        dim += "_"
    taken.add(dim)
    return dim


def _plan(name: str, var: xr.Variable, chunks: Mapping[Hashable, int] | None,
          taken: set[str]) -> _Planned:
    """The dataset holding `var`: its data in a dtype the format has, and the typed
    metadata that reads it back (text, 0-d, int8)."""
    attrs = _typed(var.attrs, f"variable {name!r}")
    dims = [str(d) for d in var.dims]
    kind = var.dtype.kind
    if kind in "USO":
        try:
            raw, entry = encode_text(np.asarray(var.values))
        except TypeError:
            raise TypeError(f"variable {name!r} has dtype {var.dtype} with values that are "
                            "neither all strings nor all bytes, which tet cannot store"
                            ) from None
        return _Planned(raw, (*_chunk_shape(var, chunks), int(entry["width"])),
                        [*dims, _char_dim(name, taken)], attrs, {"text": entry})
    data = var.data
    extra: dict[str, Any] = {}
    if kind == "i" and var.dtype.itemsize == 1:
        if attrs.get("dtype") == "bool":  # xarray's encoding of booleans
            data = data.astype(np.uint8)
        else:  # no int8 in the format: i16, marked so it reads back as int8
            data = data.astype(np.int16)
            extra["encoding"] = {"dtype": "int8"}
    else:
        dtypes.for_numpy(var.dtype)  # complex and others: TypeError naming the supported ones
    if var.ndim == 0:
        extra["shape"] = []
        return _Planned(np.asarray(data).reshape(1), (1,), None, attrs, extra, scalar=True)
    return _Planned(data, _chunk_shape(var, chunks), dims, attrs, extra)


def from_xarray(
    ds: xr.Dataset | xr.DataArray,
    path: PathLike,
    *,
    codec: str = "raw",
    level: int = 0,
    chunks: Mapping[Hashable, int] | None = None,
    group: str | None = None,
    mode: str = "w",
) -> Path:
    """Write `ds` to a ``.tet`` file; ``xr.open_dataset(path, engine="tet")`` gives it back
    (``xr.open_dataarray`` for a DataArray).

    Parameters
    ----------
    ds : a Dataset, or a DataArray (stored as its own variable; an unnamed one as
        ``__xarray_dataarray_variable__``, as ``DataArray.to_netcdf`` does).
    codec, level : "raw" or "zstd" (and its level) for every dataset.
    chunks : chunk length per dimension name; other dimensions keep the variable's
        ``encoding["chunksizes"]``, else its dask chunks, else tiles of at most 8 MiB.
    group : write the variables as ``group/<name>`` (open with ``group=``, or the whole
        file with ``xr.open_datatree``); the Dataset's attrs become the group's.
    mode : "w" replaces the file; "a" adds the datasets to an existing file (its file
        attributes are updated with the Dataset's).

    Dask-backed variables are written block by block (bounded memory); text variables
    are encoded whole.

    Raises
    ------
    TypeError
        A variable tet cannot hold (complex, objects that are not all strings or all
        bytes), or an attribute value it cannot store.
    CatalogError
        Footer limits (names, label text) or name clashes.
    """
    if mode not in ("w", "a"):
        raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
    ds = _as_dataset(ds)
    prefix = group.strip("/") if group else ""
    existing = _Existing.read(path) if mode == "a" else _Existing()
    labels = _label_coords(ds, existing)
    keep = ds.drop_vars([name for name in labels if name in ds.variables])
    variables, global_attrs = conventions.encode_dataset_coordinates(keep)
    decoded = {name: _keep_decoded(var) for name, var in variables.items()}
    variables = {name: var for name, (var, _) in decoded.items()}
    variables, global_attrs = conventions.cf_encoder(variables, global_attrs)
    global_attrs = _typed(global_attrs, "Dataset attrs")
    taken = {str(d) for v in variables.values() for d in v.dims}
    writer = TetWriter.create(path) if mode == "w" else TetWriter.open_append(path)
    try:
        for name, var in variables.items():
            if not isinstance(name, str):
                raise TypeError(f"variable names must be strings, got {name!r}")
            plan = _plan(name, var, chunks, taken)
            if decoded[name][1]:
                plan.extra.setdefault("encoding", {}).update(decoded[name][1])
            coords = {str(dim): labels[str(dim)][0] for dim in var.dims
                      if str(dim) in labels and not plan.scalar}
            attrs, extra = plan.footer(f"variable {name!r}")
            kwargs: dict[str, Any] = {
                "chunk_shape": plan.chunk, "attrs": attrs, "dim_names": plan.dims,
                "coords": coords or None, "codec": codec, "level": level,
                "extra": extra or None,
            }
            _write(writer, f"{prefix}/{name}" if prefix else name, plan.data, kwargs)
        if not variables:
            raise ValueError("from_xarray needs at least one variable to write")
        if labels:
            writer.set_coord_types({dim: {"dtype": dtype, "attrs": attrs}
                                    for dim, (_, dtype, attrs, _) in labels.items()})
        if prefix:
            writer.set_group_attrs(prefix, global_attrs)
        elif mode == "w" or global_attrs:
            writer.set_file_attrs({**existing.file_attrs, **global_attrs})
        writer.commit()
        return writer.path
    except BaseException:
        writer.abort()
        raise


def _write(writer: TetWriter, name: str, data: Any, kwargs: dict[str, Any]) -> None:
    if not hasattr(data, "dask"):
        writer.write_dataset(name, np.asarray(data), **kwargs)
        return
    import dask.array as da

    stream = writer.create_dataset(name, data.shape, data.dtype, **kwargs)
    da.store(data, stream, lock=threading.Lock(), scheduler="threads")  # type: ignore[arg-type]
