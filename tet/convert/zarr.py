"""Zarr v3 (and v2) input through zarr-python 3: arrays of every group, children sorted by
name, depth-first (cli.md §6).  `dimension_names` become dim names, and a 1-D array
named like a dimension (beside the array or in a parent group, as xarray lays stores
out) gives that axis its coordinate labels.

Values are CF-decoded the way xarray reads a v3 store: the array's `fill_value` masks
nothing; a `_FillValue` attribute (base64 of a float64 for float arrays, as xarray
writes it; a number for integers), `missing_value`, `scale_factor` and `add_offset`
attributes decode as in NetCDF (`tet.convert.cf`).  In a v2 store (a directory with
`.zgroup` / `.zarray`), as xarray reads it, the array's `fill_value` is the `_FillValue`
and the `_ARRAY_DIMENSIONS` attribute names the dimensions.  String arrays are stored
as text.
The root group's attributes (less xarray's hidden `_nc*` keys) become file attributes."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tet.convert.cf import decoded_var, zarr_fill
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
    scan_width,
    text_encoding,
    text_var,
    typed_attrs,
    valid_dim_names,
)

__all__ = ["RemoteZarr", "ZarrSource"]


class RemoteZarr(NamedTuple):
    """A Zarr store under a prefix of an object store: the obstore store (of the bucket),
    the prefix, and the URL shown in messages."""

    store: Any
    prefix: str
    url: str


def remote_meta(remote: RemoteZarr, name: str) -> Any:
    """The JSON document `name` under the store's prefix (None when there is none)."""
    import obstore
    import obstore.exceptions as oe

    try:
        key = f"{remote.prefix}/{name}" if remote.prefix else name
        raw = bytes(obstore.get(remote.store, key).bytes())
    except (FileNotFoundError, oe.NotFoundError):
        return None
    except Exception as exc:
        raise ConvertError(f"cannot read Zarr store `{remote.url}`: {exc}") from None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ConvertError(f"cannot read Zarr store `{remote.url}`: {name}: {exc}") from None


def _has_v2_meta(path: Path, remote: RemoteZarr | None) -> bool:
    if remote is not None:
        return any(remote_meta(remote, n) is not None for n in (".zgroup", ".zarray"))
    return path.is_dir() and ((path / ".zgroup").exists() or (path / ".zarray").exists())


def _root_meta(path: Path) -> Any:
    """The root `zarr.json` document (None when absent)."""
    try:
        if path.is_file():
            with zipfile.ZipFile(path) as z:
                return json.loads(z.read("zarr.json")) if "zarr.json" in z.namelist() else None
        meta = path / "zarr.json"
        return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConvertError(f"cannot read Zarr store `{path}`: {exc}") from None


def _store_name(path: Path) -> str:
    """Dataset name for an array at the store root: the store's name, less `.zarr`."""
    name = path.name
    for suffix in (".zip", ".zarr"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def _visible(attrs: dict[str, Any]) -> list[tuple[str, Any]]:
    """Group attributes as xarray shows them: its hidden `_nc*` keys left out."""
    return [(k, v) for k, v in attrs.items() if not str(k).lower().startswith("_nc")]


class ZarrSource:
    """An open Zarr v3 store (directory, or `.zip`) or v2 directory store;
    `variables()` describes what will be converted."""

    def __init__(self, path: Path, *, keep_packed: bool = False,
                 remote: RemoteZarr | None = None) -> None:
        zarr = require("zarr", "Zarr")
        self._zarr = zarr
        self._keep_packed = keep_packed
        self._groups: dict[str, dict[str, Any]] = {}
        self._path = path  # remote: the prefix's last part, the name of a root array
        doc = _root_meta(path) if remote is None else remote_meta(remote, "zarr.json")
        self._format = 3
        shown: object = path if remote is None else remote.url  # what messages show
        self._shown = shown
        if not isinstance(doc, dict) or doc.get("zarr_format") != 3:
            found = doc.get("zarr_format") if isinstance(doc, dict) else None
            if found is None and _has_v2_meta(path, remote):
                found = 2
            if found != 2:
                what = (f"zarr_format {found}" if found is not None
                        else "no zarr.json at its root")
                raise ConvertError(f"unsupported Zarr store `{shown}`: {what} "
                                   "(only Zarr v2 directory stores and v3 stores convert)")
            self._format = 2
        elif doc.get("node_type") not in ("array", "group"):
            raise ConvertError(f"unsupported Zarr store `{shown}`: node_type "
                               f"{doc.get('node_type')!r} (expected 'array' or 'group')")
        self._store: Any = None
        try:
            if remote is not None:  # zarr-python 3 reads object stores through obstore
                store = zarr.storage.ObjectStore(remote.store, read_only=True)
                self._root = zarr.open(store=store, path=remote.prefix, mode="r",
                                       zarr_format=self._format)
            elif path.is_file():
                self._store = zarr.storage.ZipStore(path, mode="r")
                self._root = zarr.open(store=self._store, mode="r", zarr_format=3)
            else:
                self._root = zarr.open(store=str(path), mode="r", zarr_format=self._format)
        except Exception as exc:
            raise ConvertError(f"cannot open Zarr store `{shown}`: {exc}") from None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def _walk(self, group: Any, prefix: str) -> Iterator[tuple[str, Any, list[Any]]]:
        """(name, array, groups from the root down to its own) in visiting order."""
        yield from self._walk_in(group, prefix, [group])

    def _walk_in(self, group: Any, prefix: str,
                 chain: list[Any]) -> Iterator[tuple[str, Any, list[Any]]]:
        for name, node in sorted(group.members(), key=lambda m: m[0]):
            if isinstance(node, self._zarr.Group):
                attrs = file_attrs(f"group `{prefix}{name}`", _visible(node.attrs.asdict()))
                if attrs:
                    self._groups[prefix + name] = attrs
                yield from self._walk_in(node, f"{prefix}{name}/", [*chain, node])
            else:
                yield prefix + name, node, chain

    def variables(self) -> list[SourceVar]:
        found: list[tuple[str, Any, list[Any]]]
        if isinstance(self._root, self._zarr.Array):
            found = [(_store_name(self._path), self._root, [])]
        else:
            try:
                found = list(self._walk(self._root, ""))
            except Exception as exc:
                raise ConvertError(f"invalid Zarr store `{self._shown}`: {exc}") from None
        return describe_each(((name, (arr, chain)) for name, arr, chain in found),
                             lambda name, member: self._describe(name, *member))

    def file_attrs(self) -> dict[str, Any]:
        if isinstance(self._root, self._zarr.Array):
            return {}
        return file_attrs("the store", _visible(self._root.attrs.asdict()))

    def group_attrs(self) -> dict[str, dict[str, Any]]:
        """The attributes of every sub-group visited by `variables()`, by path."""
        return dict(self._groups)

    def _describe(self, name: str, arr: Any, chain: list[Any]) -> SourceVar | None:
        shape = tuple(int(n) for n in arr.shape)
        dtype = np.dtype(arr.dtype)
        try:
            chunks: tuple[int, ...] | None = tuple(arr.chunks)
            unit = tuple(arr.shards) if arr.shards is not None else chunks
        except NotImplementedError:  # an irregular chunk grid: the default tiling
            chunks = unit = None
        items = list(arr.attrs.asdict().items())
        if self._format == 2:  # xarray's dimension names, hidden from the attributes
            dims = dict(items).get("_ARRAY_DIMENSIONS")
            items = [(k, v) for k, v in items if k != "_ARRAY_DIMENSIONS"]
        else:
            dims = getattr(arr.metadata, "dimension_names", None)
        dim_names = valid_dim_names(dims, len(shape))

        def read(box: Box) -> np.ndarray[Any, Any]:
            return np.asarray(arr[box if box else ...])

        coords = self._coords(arr, shape, dim_names, chain) if shape else {}
        if dtype.kind in "USTO":
            return self._text(name, shape, dtype, read, items, chunks, dim_names, coords)
        if admit(name, shape, dtype) is None:
            return None
        plain = []
        if self._format == 2:
            # v2 (xarray's reading): the array's fill_value is the _FillValue
            items = [(k, v) for k, v in items if k != "_FillValue"]
            if arr.fill_value is not None:
                items.append(("_FillValue", np.asarray(arr.fill_value, dtype=dtype)[()]))
        for i, (key, value) in enumerate(items):
            if key == "_FillValue" and self._format == 3:
                fill = zarr_fill(value, dtype, name)
                if fill is None:
                    plain.append(key)
                else:
                    items[i] = (key, fill)
        return decoded_var(name, shape, dtype, read, items=items,
                           keep_packed=self._keep_packed, chunks=chunks,
                           unit=unit if unit != chunks else None, dim_names=dim_names,
                           coords=coords, plain=plain)

    def _text(self, name: str, shape: tuple[int, ...], dtype: np.dtype[Any], read: Any,
              items: list[tuple[str, Any]], chunks: tuple[int, ...] | None,
              dim_names: list[str] | None, coords: dict[str, list[str]]) -> SourceVar | None:
        if not admit_text(name, shape):
            return None
        kind = "bytes" if dtype.kind == "S" else "str"
        if dtype.kind == "O":  # variable-length bytes or strings: look at the values
            first = np.asarray(read(tuple(slice(0, 1) for _ in shape))).reshape(-1)
            kind = "bytes" if first.size and isinstance(first[0], bytes) else "str"
        width = (max(1, dtype.itemsize) if dtype.kind == "S"
                 else scan_width(read, shape, chunks, kind))
        moved, encoding = text_encoding(dict(items), self._keep_packed, kind)
        return text_var(name, shape, read, kind=kind, width=width, chunks=chunks,
                        attrs=typed_attrs(f"`{name}`", items, moved=moved),
                        dim_names=dim_names, coords=coords,
                        extra={"encoding": encoding} if encoding else None)

    def _coords(self, arr: Any, shape: tuple[int, ...], dim_names: list[str] | None,
                chain: list[Any]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        if not dim_names:
            return out
        for i, dim in enumerate(dim_names):
            if not 1 <= shape[i] <= 64:
                continue
            for group in reversed(chain):
                try:
                    coord = group.get(dim)
                except Exception:  # a name zarr refuses as a key
                    coord = None
                if isinstance(coord, self._zarr.Array) and tuple(coord.shape) == (shape[i],):
                    labels = labels_for(np.asarray(coord[...]), shape[i])
                    if labels is not None:
                        out[dim] = labels
                    break
        return out
