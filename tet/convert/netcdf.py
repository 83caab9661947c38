"""NetCDF input through netCDF4: each group's variables in sorted order, then its
sub-groups (cli.md §6), with dimension names and coordinate variables.

Values are CF-decoded as xarray decodes them (`tet.convert.cf`); strings are stored
as text datasets: NetCDF-4 variable-length strings, and `char` arrays whose last
dimension is a string length (joined into one value per row, as xarray joins them:
bytes, or text when `_Encoding` names their encoding).  The type's default fill
value masks nothing (xarray does not mask it either).

The netCDF-C library is not thread-safe, so its reads run one at a time.  A NetCDF-4
file is an HDF5 file underneath: when h5py is installed its data is read through
`H5Reader`, whose chunk reads run in parallel; metadata always comes from netCDF4.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tet.convert.cf import Plan, decoded_var, plan
from tet.convert.hdf5 import H5Reader
from tet.convert.source import (
    Box,
    ConvertError,
    SourceVar,
    admit,
    admit_text,
    describe_each,
    file_attrs,
    labels_for,
    require,
    require_regular,
    scan_width,
    skip,
    text_encoding,
    text_var,
    typed_attrs,
    valid_dim_names,
)

__all__ = ["NCSource"]

Arr = np.ndarray[Any, Any]


class _Locked:
    """Reads of one variable under the file's lock."""

    def __init__(self, var: Any, lock: threading.Lock) -> None:
        self._var = var
        self._lock = lock

    def read(self, box: Box) -> np.ndarray[Any, Any]:
        with self._lock:
            return np.asarray(self._var[box if box else ...])


def _attr_items(var: Any) -> list[tuple[str, Any]]:
    out = []
    for key in var.ncattrs():
        try:
            out.append((key, var.getncattr(key)))
        except Exception:  # an attribute type netCDF4 cannot map; leave it out
            continue
    return out


class NCSource:
    """An open NetCDF file; `variables()` describes what will be converted."""

    def __init__(self, path: Path, *, keep_packed: bool = False) -> None:
        self._nc = require("netCDF4", "NetCDF")
        self._keep_packed = keep_packed
        self._lock = threading.Lock()
        self._groups: dict[str, dict[str, Any]] = {}
        require_regular(path)
        try:
            self._root = self._nc.Dataset(path, "r")
        except OSError as exc:
            raise ConvertError(f"cannot open NetCDF file `{path}`: {exc}") from None
        self._root.set_auto_maskandscale(False)
        self._root.set_auto_chartostring(False)
        self._root.set_always_mask(False)
        self._h5: Any = None
        self._fd = -1
        if self._root.disk_format == "HDF5":
            self._open_hdf5(path)

    def _open_hdf5(self, path: Path) -> None:
        try:
            import h5py  # type: ignore[import-untyped]

            self._h5 = h5py.File(path, "r")
        except Exception:  # no h5py, or HDF5 refuses: netCDF4 reads everything
            self._h5 = None
            return
        if self._h5.driver == "sec2" and self._h5.id.get_create_plist().get_userblock() == 0:
            self._fd = os.open(path, os.O_RDONLY)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._h5 is not None:
            self._h5.close()
        self._root.close()

    def _walk(self, group: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        for name in sorted(group.variables):
            yield prefix + name, group.variables[name]
        for name in sorted(group.groups):
            sub = group.groups[name]
            attrs = file_attrs(f"group `{prefix + name}`", _attr_items(sub))
            if attrs:
                self._groups[prefix + name] = attrs
            yield from self._walk(sub, prefix + name + "/")

    def variables(self) -> list[SourceVar]:
        return describe_each(self._walk(self._root, ""), self._describe)

    def file_attrs(self) -> dict[str, Any]:
        return file_attrs("the file", _attr_items(self._root))

    def group_attrs(self) -> dict[str, dict[str, Any]]:
        """The attributes of every sub-group visited by `variables()`, by path."""
        return dict(self._groups)

    def _describe(self, path: str, var: Any) -> SourceVar | None:
        nc = self._nc
        if isinstance(var.datatype, nc.CompoundType) or (
                isinstance(var.datatype, nc.VLType) and var.dtype is not str):
            kind = "compound" if isinstance(var.datatype, nc.CompoundType) else "variable-length"
            skip(path, f"{kind} element type")
            return None
        if isinstance(var.datatype, nc.EnumType):
            skip(path, "enum element type")
            return None
        shape = tuple(int(n) for n in var.shape)
        items = _attr_items(var)
        chunking = var.chunking()
        chunks = tuple(chunking) if isinstance(chunking, list) else None
        dim_names = valid_dim_names(list(var.dimensions), len(shape))
        if var.dtype is str or np.dtype(var.dtype).kind == "S":
            return self._text(path, var, shape, items, chunks)
        if admit(path, shape, var.dtype) is None:
            return None
        return decoded_var(path, shape, np.dtype(var.dtype), self._reader(var, shape),
                           items=items, keep_packed=self._keep_packed, chunks=chunks,
                           dim_names=dim_names, coords=self._coords(var, shape, dim_names))

    def _stackable(self, var: Any) -> bool:
        """xarray's rule for joining a `char` array's last axis into strings: that
        dimension has no variable of its own and every variable using it is a `char`
        array with it last."""
        if np.dtype(var.dtype) != np.dtype("S1") or not var.dimensions:
            return False
        group = var.group()
        dim = var.dimensions[-1]
        if dim in group.variables:
            return False
        return all(np.dtype(v.dtype) == np.dtype("S1") and v.dimensions[-1] == dim
                   for v in group.variables.values()
                   if v.dtype is not str and dim in v.dimensions)

    def _text(self, path: str, var: Any, shape: tuple[int, ...], items: list[tuple[str, Any]],
              chunks: tuple[int, ...] | None) -> SourceVar | None:
        attrs = dict(items)
        dims = list(var.dimensions)
        reader = _Locked(var, self._lock)
        read = reader.read
        width = 1
        if var.dtype is str:
            kind, logical = "str", shape
        elif self._stackable(var):
            width = shape[-1]
            logical, dims = shape[:-1], dims[:-1]
            chunks = chunks[:-1] if chunks else None
            kind = "bytes"

            def joined(box: Box, n: int = width) -> Arr:
                raw = np.ascontiguousarray(reader.read((*box, slice(0, n))), dtype="S1")
                return raw.view(f"S{n}").reshape(raw.shape[:-1])

            read = joined
        else:
            kind, logical = "bytes", shape
        if not admit_text(path, logical):
            return None
        moved, encoding = text_encoding(attrs, self._keep_packed, "str" if var.dtype is str
                                        else np.dtype(var.dtype).str[1:])
        codec = attrs.get("_Encoding")
        if kind == "bytes" and isinstance(codec, str) and not self._keep_packed:
            kind = "str"
            moved.append("_Encoding")
            encoding["_Encoding"] = codec
            encoding["dtype"] = np.dtype(var.dtype).str[1:]
            read = _decoded_text(read, codec)
        if kind == "str":
            width = scan_width(read, logical, chunks, kind)
        typed = typed_attrs(f"`{path}`", items, moved=moved)
        coords = self._coords(var, logical, valid_dim_names(dims, len(logical)))
        return text_var(path, logical, read, kind=kind, width=width, chunks=chunks,
                        attrs=typed, dim_names=valid_dim_names(dims, len(logical)),
                        coords=coords, extra={"encoding": encoding} if encoding else None)

    def _reader(self, var: Any, shape: tuple[int, ...]) -> Any:
        """Parallel HDF5 chunk reads when the variable is a plain HDF5 dataset of the
        same shape and type; netCDF4 reads (one at a time) otherwise."""
        if self._h5 is not None:
            where = var.group().path.rstrip("/") + "/" + var.name
            with self._lock:
                ds = self._h5.get(where)
            if (ds is not None and getattr(ds, "shape", None) == shape
                    and ds.dtype == var.dtype):
                return H5Reader(ds, self._fd).read
        return _Locked(var, self._lock).read

    def _coords(self, var: Any, shape: tuple[int, ...],
                dim_names: list[str] | None) -> dict[str, list[str]]:
        """Labels per axis from the coordinate variable named like its dimension
        (found in the group that defines the dimension), when it has 1..64 values;
        decoded like data."""
        out: dict[str, list[str]] = {}
        for i, dim in enumerate(var.get_dims()[:len(shape)]):
            coord = dim.group().variables.get(dim.name)
            if coord is None or tuple(coord.dimensions) != (dim.name,):
                continue
            if not 1 <= shape[i] <= 64 or tuple(coord.shape) != (shape[i],):
                continue
            with self._lock:
                values = np.asarray(coord[:])
            if values.dtype.kind in "biuf" and not self._keep_packed:
                try:
                    decoding: Plan = plan(coord.name, values.dtype, dict(_attr_items(coord)))
                except ConvertError:  # unusable packing on a coordinate: no labels
                    continue
                if decoding.decode is not None:
                    values = decoding.decode(values)
            labels = labels_for(values, shape[i])
            if labels is not None:
                out[dim_names[i] if dim_names else str(i)] = labels
        return out


def _decoded_text(read: Any, codec: str) -> Any:
    """Reads of a bytes variable that return its values decoded with `codec`."""
    def decode(value: bytes) -> str:
        try:
            return value.decode(codec)
        except (LookupError, UnicodeDecodeError):
            return value.decode("utf-8", "replace")

    def run(box: Box) -> Arr:
        raw = np.asarray(read(box))
        out = np.empty(raw.shape, dtype=object)
        for idx, value in np.ndenumerate(raw):
            out[idx] = decode(bytes(value))
        return out

    return run
