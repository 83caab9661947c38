"""HDF5 input through h5py: every numeric, 0-d and string dataset of every group,
sorted by name, depth-first (cli.md §6).  Attributes are read as xarray's h5netcdf
engine reads them (fixed-length strings decoded, one-element arrays as scalars, string
arrays as lists), values CF-decoded as xarray decodes them (`tet.convert.cf`); fixed-
length strings are stored as bytes, variable-length ones as text.

h5py holds one global lock around every HDF5 call, so threads cannot read a file in
parallel through it.  `H5Reader` sidesteps that for the common layouts: it asks HDF5
once for the file offset of every chunk, then reads and inflates chunks itself
(`os.pread`, `zlib`, a NumPy unshuffle: all release the GIL), so `--jobs` threads really
run side by side.  Other layouts (other filters, virtual or external storage) read
through h5py.
"""

from __future__ import annotations

import math
import os
import posixpath
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tet.convert.cf import decoded_var, plan
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

__all__ = ["H5Reader", "H5Source"]

FILTER_DEFLATE = 1
FILTER_SHUFFLE = 2
# Attributes that are HDF5 / netCDF-4 plumbing, not user metadata.
PLUMBING = frozenset({"CLASS", "NAME", "REFERENCE_LIST", "DIMENSION_LIST", "DIMENSION_LABELS",
                      "_Netcdf4Dimid", "_Netcdf4Coordinates", "_nc3_strict", "_NCProperties"})
PHONY_DIM = "This is a netCDF dimension but not a netCDF variable"


class H5Reader:
    """Thread-safe box reads of one chunked or contiguous h5py dataset."""

    def __init__(self, ds: Any, fd: int) -> None:
        self._ds = ds
        self._fd = fd
        self._chunks: tuple[int, ...] | None = None
        self._filters: list[int] = []
        self._index: tuple[np.ndarray[Any, Any], ...] | None = None
        if fd >= 0:
            self._plan_direct()

    @property
    def direct(self) -> bool:
        """Whether chunks are read and inflated outside HDF5."""
        return self._index is not None

    def _plan_direct(self) -> None:
        ds = self._ds
        if ds.chunks is None or ds.is_virtual or ds.dtype.kind not in "biuf":
            return
        dcpl = ds.id.get_create_plist()
        if dcpl.get_external_count():
            return
        filters = [int(dcpl.get_filter(i)[0]) for i in range(dcpl.get_nfilters())]
        if any(f not in (FILTER_DEFLATE, FILTER_SHUFFLE) for f in filters):
            return
        chunks = tuple(int(c) for c in ds.chunks)
        counts = tuple(-(-int(n) // c) for n, c in zip(ds.shape, chunks))
        total = math.prod(counts)
        offset = np.full(total, -1, np.int64)
        size = np.zeros(total, np.int64)
        mask = np.zeros(total, np.int64)

        def note(info: Any) -> None:
            coord = tuple(int(o) // c for o, c in zip(info.chunk_offset, chunks))
            k = int(np.ravel_multi_index(coord, counts))
            offset[k], size[k], mask[k] = info.byte_offset, info.size, info.filter_mask

        try:
            if hasattr(ds.id, "chunk_iter"):
                ds.id.chunk_iter(note)
            else:
                for i in range(ds.id.get_num_chunks()):
                    note(ds.id.get_chunk_info(i))
        except Exception:  # an index HDF5 cannot list: read through h5py instead
            return
        self._chunks, self._filters = chunks, filters
        self._index = (offset, size, mask, np.asarray(counts, np.int64))

    def read(self, box: Box) -> np.ndarray[Any, Any]:
        if self._index is None:
            return np.asarray(self._ds[box])
        return self._read_direct(box)

    def _read_direct(self, box: Box) -> np.ndarray[Any, Any]:
        assert self._chunks is not None and self._index is not None
        ds, chunks = self._ds, self._chunks
        offset, size, mask, counts = self._index
        lo = np.asarray([s.start for s in box], np.int64)
        hi = np.asarray([s.stop for s in box], np.int64)
        out = np.empty(tuple(hi - lo), ds.dtype)
        cs = np.asarray(chunks, np.int64)
        first, last = lo // cs, (hi - 1) // cs
        for rel in np.ndindex(*(last - first + 1)):
            coord = first + np.asarray(rel, np.int64)
            k = int(np.ravel_multi_index(tuple(coord), tuple(counts)))
            c0 = coord * cs
            a, b = np.maximum(lo, c0), np.minimum(hi, c0 + cs)
            dst = tuple(slice(int(x), int(y)) for x, y in zip(a - lo, b - lo))
            if offset[k] < 0:  # never written: the dataset's fill value
                out[dst] = ds.fillvalue
                continue
            tile = self._chunk(int(offset[k]), int(size[k]), int(mask[k]), tuple(coord))
            out[dst] = tile[tuple(slice(int(x), int(y)) for x, y in zip(a - c0, b - c0))]
        return out

    def _chunk(self, at: int, n: int, skipped: int, coord: tuple[int, ...]) -> Any:
        assert self._chunks is not None
        dt = self._ds.dtype
        data = os.pread(self._fd, n, at)
        if len(data) != n:
            raise ConvertError(f"chunk {list(coord)}: file ends early at offset {at}")
        for j in reversed(range(len(self._filters))):
            if skipped & (1 << j):
                continue
            if self._filters[j] == FILTER_DEFLATE:
                data = zlib.decompress(data)
            else:
                data = (np.frombuffer(data, np.uint8).reshape(dt.itemsize, -1).T.tobytes()
                        if dt.itemsize > 1 else data)
        want = math.prod(self._chunks) * dt.itemsize
        if len(data) != want:
            raise ConvertError(f"chunk {list(coord)} decodes to {len(data)} bytes, "
                               f"expected {want}")
        return np.frombuffer(data, dt).reshape(self._chunks)


def _attr_items(obj: Any) -> list[tuple[str, Any]]:
    """Attributes as xarray's h5netcdf engine shows them, HDF5 / netCDF-4 plumbing left
    out (unreadable types are left out too)."""
    import h5py  # type: ignore[import-untyped]

    out = []
    for key in obj.attrs:
        if key in PLUMBING:
            continue
        try:
            out.append((key, _attr_value(h5py, obj, key)))
        except Exception:  # an attribute type h5py cannot map; not worth failing for
            continue
    return out


def _attr_value(h5py: Any, obj: Any, key: str) -> Any:
    value = obj.attrs[key]
    stored = obj.attrs.get_id(key).dtype
    info = h5py.check_string_dtype(stored)
    if isinstance(value, h5py.Empty):
        return b"" if info is not None and info.length == 1 else np.array([], dtype=stored)
    if info is not None:
        if info.length is not None and info.length > 1:
            codec = info.encoding
            if isinstance(value, (bytes, np.bytes_)):
                value = bytes(value).decode(codec, "replace")
            else:
                value = [bytes(b).decode(codec, "replace") for b in np.asarray(value).flat]
        elif isinstance(value, np.ndarray):
            value = value.tolist()
    if isinstance(value, (list, np.ndarray)) and np.ndim(value) > 0 and len(value) == 1:
        return value[0]
    return value


class H5Source:
    """An open HDF5 file; `variables()` describes what will be converted."""

    def __init__(self, path: Path, *, keep_packed: bool = False) -> None:
        self._h5py = require("h5py", "HDF5")
        self._keep_packed = keep_packed
        require_regular(path)
        try:
            self._file = self._h5py.File(path, "r")
        except OSError as exc:
            raise ConvertError(f"cannot open HDF5 file `{path}`: {exc}") from None
        self._fd = -1
        self._groups: dict[str, dict[str, Any]] = {}
        userblock = self._file.id.get_create_plist().get_userblock()
        if self._file.driver == "sec2" and userblock == 0:
            self._fd = os.open(path, os.O_RDONLY)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._file.close()

    def _walk(self, group: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        h5py = self._h5py
        for key in sorted(group.keys()):
            path = prefix + key
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.SoftLink):
                skip(path, "soft link")
                continue
            if isinstance(link, h5py.ExternalLink):
                skip(path, "external link")
                continue
            obj = group.get(key)
            if isinstance(obj, h5py.Group):
                attrs = file_attrs(f"group `{path}`", _attr_items(obj))
                if attrs:
                    self._groups[path] = attrs
                yield from self._walk(obj, path + "/")
            elif isinstance(obj, h5py.Dataset):
                yield path, obj

    def variables(self) -> list[SourceVar]:
        return describe_each(self._walk(self._file, ""), self._describe)

    def file_attrs(self) -> dict[str, Any]:
        return file_attrs("the file", _attr_items(self._file))

    def group_attrs(self) -> dict[str, dict[str, Any]]:
        """The attributes of every sub-group visited by `variables()`, by path."""
        return dict(self._groups)

    def _describe(self, path: str, ds: Any) -> SourceVar | None:
        shape = ds.shape
        if shape is None:
            skip(path, "empty dataspace")
            return None
        shape = tuple(int(n) for n in shape)
        items = _attr_items(ds)
        if _text(ds.attrs.get("NAME")).startswith(PHONY_DIM):
            skip(path, "netCDF dimension without a variable")
            return None
        raw = dict(items)
        info = self._h5py.check_string_dtype(ds.dtype)
        if info is not None:
            return self._text(path, ds, shape, items, fixed=info.length is not None)
        if admit(path, shape, ds.dtype) is None:
            return None
        dim_names, coords = self._dims(ds, raw) if shape else (None, {})
        chunks = tuple(int(c) for c in ds.chunks) if ds.chunks else None
        return decoded_var(path, shape, np.dtype(ds.dtype), H5Reader(ds, self._fd).read,
                           items=items, keep_packed=self._keep_packed, chunks=chunks,
                           dim_names=dim_names, coords=coords)

    def _text(self, path: str, ds: Any, shape: tuple[int, ...],
              items: list[tuple[str, Any]], *, fixed: bool) -> SourceVar | None:
        """Fixed-length strings as bytes (as xarray shows them), variable-length ones as
        text; their `_FillValue` / `missing_value` move to the encoding (never applied)."""
        if not admit_text(path, shape):
            return None
        view = ds if fixed else ds.asstr()

        def read(box: Box) -> np.ndarray[Any, Any]:  # h5py serialises its calls itself
            return np.asarray(view[box if box else ()])

        kind = "bytes" if fixed else "str"
        chunks = tuple(int(c) for c in ds.chunks) if ds.chunks else None
        width = max(1, int(ds.dtype.itemsize)) if fixed else scan_width(read, shape, chunks,
                                                                         kind)
        attrs = dict(items)
        moved, encoding = text_encoding(attrs, self._keep_packed,
                                        ds.dtype.str[1:] if fixed else "str")
        dim_names, coords = self._dims(ds, attrs) if shape else (None, {})
        return text_var(path, shape, read, kind=kind, width=width, chunks=chunks,
                        attrs=typed_attrs(f"`{path}`", items, moved=moved),
                        dim_names=dim_names, coords=coords,
                        extra={"encoding": encoding} if encoding else None)

    def _values(self, ds: Any) -> np.ndarray[Any, Any] | None:
        """A 1-D coordinate dataset's values (CF-decoded like data), None if unusable."""
        if not isinstance(ds, self._h5py.Dataset) or ds.ndim != 1 or ds.shape[0] > 64:
            return None
        info = self._h5py.check_string_dtype(ds.dtype)
        values = np.asarray(ds.asstr()[...] if info is not None and info.length is None
                            else ds[...])
        if values.dtype.kind in "biuf" and not self._keep_packed:
            try:
                decoding = plan(ds.name, values.dtype, dict(_attr_items(ds)))
            except ConvertError:  # unusable packing on a coordinate: no labels from it
                return None
            if decoding.decode is not None:
                values = decoding.decode(values)
        return values

    def _dims(self, ds: Any, attrs: dict[str, Any]) -> tuple[list[str] | None,
                                                             dict[str, list[str]]]:
        """Dimension names (scale labels / attached scales, else the `coordinates` list
        when it names every axis) and coordinate labels per axis."""
        ndim = ds.ndim
        names: list[str] = [""] * ndim
        values: dict[int, np.ndarray[Any, Any]] = {}
        try:
            for i, dim in enumerate(ds.dims):
                scales = list(dim.values())
                names[i] = dim.label or (posixpath.basename(scales[0].name) if scales else "")
                if scales and not _text(scales[0].attrs.get("NAME")).startswith(PHONY_DIM):
                    v = self._values(scales[0])
                    if v is not None:
                        values[i] = v
        except Exception:  # broken dimension-scale references: no names from scales
            names = [""] * ndim
        if ndim == 1 and not names[0] and getattr(ds, "is_scale", False):
            names[0] = posixpath.basename(ds.name)  # a scale is its own dimension
        listed = self._coordinates(ds, attrs.get("coordinates"))
        if len(listed) == ndim and all(v is not None and v.shape[0] == n
                                       for (_, v), n in zip(listed, ds.shape)):
            if not all(names):
                names = [name for name, _ in listed]
            for i, (_, v) in enumerate(listed):
                if i not in values and v is not None:
                    values[i] = v
        else:
            for _, v in listed:
                if v is None:
                    continue
                fits = [i for i, n in enumerate(ds.shape) if n == v.shape[0] and i not in values]
                if len(fits) == 1:
                    values[fits[0]] = v
        dim_names = valid_dim_names(names, ndim)
        coords: dict[str, list[str]] = {}
        for i in sorted(values):
            labels = labels_for(values[i], int(ds.shape[i]))
            if labels is not None:
                coords[dim_names[i] if dim_names else str(i)] = labels
        return dim_names, coords

    def _coordinates(self, ds: Any, attr: Any) -> list[tuple[str, np.ndarray[Any, Any] | None]]:
        """The datasets a CF `coordinates` attribute lists, looked up as
        `coordinates/<name>` then `<name>` (from the root, then beside the dataset)."""
        out = []
        for name in _text(attr).split():
            found = None
            for base in (self._file, ds.parent):
                for candidate in (f"coordinates/{name}", name):
                    obj = base.get(candidate)
                    if found is None and obj is not None:
                        found = self._values(obj)
            out.append((name, found))
        return out


def _text(value: Any) -> str:
    """A string attribute's text ('' for anything else)."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    return value if isinstance(value, str) else ""
