"""Writing an xarray Dataset to a ``.tet`` file: `from_xarray`.

Variables are CF-encoded first, exactly as xarray encodes for netCDF (dates become
numbers with ``units``, floats get ``_FillValue: NaN``, booleans a ``dtype`` attr,
non-index coordinates are listed in ``coordinates`` attrs), so `open_dataset` with
``engine="tet"`` decodes them back and the round trip is identical.

Index coordinates (a 1-D coordinate named like its dimension) of at most 64 values
are not datasets: they become the footer ``coords`` labels of every dataset on that
dimension (numbers in their shortest exact text, dates as ISO 8601 strings), so tet
queries can select by label.  Longer numeric coordinates, and coordinates no
dataset could carry, are datasets of their own.  Strings can only be labels.

The reserved attrs recording types and Dataset attrs are described in
`tet.xarray_backend`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from xarray import conventions

from tet import dtypes
from tet.limits import LIMITS
from tet.writer import TetWriter, default_chunk_shape
from tet.xarray_backend import (
    COORD_PREFIX,
    GLOBAL_PREFIX,
    SCALAR_ATTR,
    TYPES_ATTR,
    encode_attrs,
    values_to_labels,
)

__all__ = ["from_xarray"]

PathLike = str | os.PathLike[str]
MAX_LABELS = LIMITS["coord_labels_per_axis"]
MAX_STRING = LIMITS["attr_string_bytes"]


def _fits(label: str) -> bool:
    return 0 < len(label.encode("utf-8")) <= MAX_STRING


def _label_coords(ds: xr.Dataset) -> dict[str, tuple[list[str], str | None, dict[str, Any]]]:
    """Index coordinates that can be footer labels: dim -> (labels, dtype, attrs)."""
    out: dict[str, tuple[list[str], str | None, dict[str, Any]]] = {}
    for name, coord in ds.coords.items():
        if not isinstance(name, str) or coord.dims != (name,) or coord.size > MAX_LABELS:
            continue
        if not any(name in ds[v].dims for v in ds.data_vars):
            continue  # no dataset would carry the labels
        found = values_to_labels(np.asarray(coord.values))
        if found is None or not all(_fits(label) for label in found[0]):
            continue
        out[name] = (found[0], found[1], dict(coord.attrs))
    return out


def _coord_meta(dtype: str | None, attrs: Mapping[str, Any], where: str) -> str | None:
    """The ``_tet_coord:<dim>`` JSON text, or None when plain strings without attrs."""
    if dtype is None and not attrs:
        return None
    strings, types = encode_attrs(attrs, where)
    meta: dict[str, Any] = {}
    if dtype is not None:
        meta["dtype"] = dtype
    if strings:
        meta["attrs"] = strings
    if types:
        meta["types"] = types
    return json.dumps(meta, separators=(",", ":"))


def _storable(name: Hashable, var: xr.Variable) -> xr.Variable:
    """An encoded variable in a dtype the format holds (bools as u8 0/1)."""
    kind = var.dtype.kind
    if kind == "i" and var.dtype.itemsize == 1 and var.attrs.get("dtype") == "bool":
        return var.copy(data=var.data.astype(np.uint8))
    if kind in "USO" or (kind == "i" and var.dtype.itemsize == 1):
        hint = ("; index coordinates of at most 64 strings are stored as labels"
                if kind in "USO" else "; cast it to int16 first")
        raise TypeError(f"variable {name!r} has dtype {var.dtype}, which tet cannot store{hint}")
    dtypes.for_numpy(var.dtype)  # complex and others: TypeError naming the supported ones
    return var


def _chunk_shape(var: xr.Variable, chunks: Mapping[Hashable, int] | None) -> tuple[int, ...]:
    """Explicit `chunks` per dim, else the variable's recorded or dask chunks, else the
    writer's default tiles (at most 8 MiB)."""
    shape = tuple(int(n) for n in var.shape)
    base: Sequence[int] | None = var.encoding.get("chunksizes")
    if base is None and var.chunks is not None:
        base = [c[0] for c in var.chunks]
    if base is None or len(base) != len(shape):
        base = default_chunk_shape(shape, var.dtype.itemsize)
    out = [max(1, min(int(c), n)) for c, n in zip(base, shape)]
    for d, dim in enumerate(var.dims):
        if chunks and dim in chunks:
            out[d] = max(1, min(int(chunks[dim]), shape[d]))
    return tuple(out)


def from_xarray(
    ds: xr.Dataset,
    path: PathLike,
    *,
    codec: str = "raw",
    level: int = 0,
    chunks: Mapping[Hashable, int] | None = None,
    group: str | None = None,
    mode: str = "w",
) -> Path:
    """Write `ds` to a ``.tet`` file; ``xr.open_dataset(path, engine="tet")`` gives it back.

    Parameters
    ----------
    codec, level : "raw" or "zstd" (and its level) for every dataset.
    chunks : chunk length per dimension name; other dimensions keep the variable's
        ``encoding["chunksizes"]``, else its dask chunks, else tiles of at most 8 MiB.
    group : write the variables as ``group/<name>`` (open with ``group=``).
    mode : "w" replaces the file; "a" adds the datasets to an existing file.

    Dask-backed variables are written block by block (bounded memory).

    Raises
    ------
    TypeError
        A variable tet cannot hold (strings beyond labels, int8, complex, objects),
        or an attribute value it cannot store.
    CatalogError
        Footer limits (64 attrs per dataset, 1024-byte strings) or name clashes.
    """
    if mode not in ("w", "a"):
        raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
    prefix = f"{group.strip('/')}/" if group and group.strip("/") else ""
    labels = _label_coords(ds)
    keep = ds.drop_vars([name for name in labels if name in ds.variables])
    variables, global_attrs = conventions.encode_dataset_coordinates(keep)
    variables, global_attrs = conventions.cf_encoder(variables, global_attrs)
    writer = TetWriter.create(path) if mode == "w" else TetWriter.open_append(path)
    first = True
    try:
        for name, var in variables.items():
            if not isinstance(name, str):
                raise TypeError(f"variable names must be strings, got {name!r}")
            var = _storable(name, var)
            attrs, types = encode_attrs(var.attrs, f"variable {name!r}")
            if var.ndim == 0:
                var = xr.Variable(("_tet_scalar",), np.asarray(var.values).reshape(1))
                attrs[SCALAR_ATTR] = "true"
            if first and global_attrs:
                g_attrs, g_types = encode_attrs(global_attrs, "Dataset attrs")
                attrs.update({GLOBAL_PREFIX + k: v for k, v in g_attrs.items()})
                types.update({GLOBAL_PREFIX + k: v for k, v in g_types.items()})
            first = False
            coords: dict[str, list[str]] = {}
            for dim in var.dims:
                if dim in labels and not attrs.get(SCALAR_ATTR):
                    values, dtype, cattrs = labels[str(dim)]
                    coords[str(dim)] = values
                    meta = _coord_meta(dtype, cattrs, f"coordinate {dim!r}")
                    if meta is not None:
                        attrs[COORD_PREFIX + str(dim)] = meta
            if types:
                attrs[TYPES_ATTR] = json.dumps(types, separators=(",", ":"))
            dims = None if attrs.get(SCALAR_ATTR) else [str(d) for d in var.dims]
            kwargs: dict[str, Any] = {
                "chunk_shape": _chunk_shape(var, chunks), "attrs": attrs, "dim_names": dims,
                "coords": coords or None, "codec": codec, "level": level,
            }
            _write(writer, prefix + name, var, kwargs)
        if first:
            raise ValueError("from_xarray needs at least one variable to write")
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


def _write(writer: TetWriter, name: str, var: xr.Variable, kwargs: dict[str, Any]) -> None:
    data = var.data
    if not hasattr(data, "dask"):
        writer.write_dataset(name, np.asarray(data), **kwargs)
        return
    import dask.array as da

    stream = writer.create_dataset(name, var.shape, var.dtype, **kwargs)
    da.store(data, stream, lock=threading.Lock(), scheduler="threads")  # type: ignore[arg-type]
