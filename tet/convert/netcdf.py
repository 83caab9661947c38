"""NetCDF input through netCDF4: each group's variables in sorted order, then its
sub-groups (cli.md §6), with dimension names and coordinate variables.

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

from tet.convert.hdf5 import H5Reader
from tet.convert.source import (
    CF_PACKING,
    Box,
    ConvertError,
    SourceVar,
    admit,
    cf_decoder,
    chunk_grid,
    describe_each,
    footer_attrs,
    labels_for,
    require,
    require_regular,
    skip,
    valid_dim_names,
)

__all__ = ["NCSource"]


class _Locked:
    """Reads of one variable under the file's lock."""

    def __init__(self, var: Any, lock: threading.Lock) -> None:
        self._var = var
        self._lock = lock

    def read(self, box: Box) -> np.ndarray[Any, Any]:
        with self._lock:
            return np.asarray(self._var[box])


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
            yield from self._walk(group.groups[name], prefix + name + "/")

    def variables(self) -> list[SourceVar]:
        return describe_each(self._walk(self._root, ""), self._describe)

    def _describe(self, path: str, var: Any) -> SourceVar | None:
        nc = self._nc
        if isinstance(var.datatype, (nc.VLType, nc.CompoundType)) or var.dtype is str:
            kind = "compound" if isinstance(var.datatype, nc.CompoundType) else "variable-length"
            skip(path, f"{'string' if var.dtype is str else kind} element type")
            return None
        shape = tuple(int(n) for n in var.shape)
        wire = admit(path, shape, var.dtype)
        if wire is None:
            return None
        items = _attr_items(var)
        cf = None
        if not self._keep_packed:
            cf = cf_decoder(path, var.dtype, dict(items), _fill(var))
        dtype = cf[0] if cf else wire
        chunking = var.chunking()
        dim_names = valid_dim_names(list(var.dimensions), len(shape))
        return SourceVar(
            name=path, shape=shape, dtype=dtype, read=self._reader(var, shape),
            chunks=chunk_grid(shape, chunking if isinstance(chunking, list) else None,
                              dtype.itemsize),
            decode=cf[1] if cf else None,
            attrs=footer_attrs(items, drop=CF_PACKING if cf else ()),
            dim_names=dim_names, coords=self._coords(var, shape, dim_names))

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
        (found in the group that defines the dimension), when it has 1..64 values."""
        out: dict[str, list[str]] = {}
        for i, dim in enumerate(var.get_dims()):
            coord = dim.group().variables.get(dim.name)
            if coord is None or tuple(coord.dimensions) != (dim.name,):
                continue
            if not 1 <= shape[i] <= 64 or tuple(coord.shape) != (shape[i],):
                continue
            with self._lock:
                values = np.asarray(coord[:])
            if values.dtype.kind in "biuf" and not self._keep_packed:
                try:
                    cf = cf_decoder(coord.name, values.dtype, dict(_attr_items(coord)),
                                    _fill(coord))
                except ConvertError:  # unusable packing on a coordinate: no labels
                    continue
                if cf is not None:
                    values = cf[1](values)
            labels = labels_for(values, shape[i])
            if labels is not None:
                out[dim_names[i] if dim_names else str(i)] = labels
        return out


def _fill(var: Any) -> Any:
    """The variable's fill: `_FillValue`, else the type's default (None in no-fill mode)."""
    try:
        return var.get_fill_value()
    except Exception:  # older netCDF4 or a type without a default fill
        return None
