"""Zarr v3 input through zarr-python 3: arrays of every group, children sorted by
name, depth-first (cli.md §6).  `dimension_names` become dim names, and a 1-D array
named like a dimension (beside the array or in a parent group, as xarray lays stores
out) gives that axis its coordinate labels.  Zarr values are not CF-decoded."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tet.convert.source import (
    ConvertError,
    SourceVar,
    admit,
    chunk_grid,
    describe_each,
    footer_attrs,
    labels_for,
    require,
    valid_dim_names,
)

__all__ = ["ZarrSource"]


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


class ZarrSource:
    """An open Zarr v3 store (directory, or `.zip`); `variables()` describes what will
    be converted."""

    def __init__(self, path: Path, *, keep_packed: bool = False) -> None:
        zarr = require("zarr", "Zarr")
        self._zarr = zarr
        self._path = path
        doc = _root_meta(path)
        if not isinstance(doc, dict) or doc.get("zarr_format") != 3:
            found = doc.get("zarr_format") if isinstance(doc, dict) else None
            if found is None and path.is_dir() and ((path / ".zgroup").exists()
                                                    or (path / ".zarray").exists()):
                found = 2
            what = f"zarr_format {found}" if found is not None else "no zarr.json at its root"
            raise ConvertError(f"unsupported Zarr store `{path}`: {what} "
                               "(only Zarr v3 stores convert)")
        if doc.get("node_type") not in ("array", "group"):
            raise ConvertError(f"unsupported Zarr store `{path}`: node_type "
                               f"{doc.get('node_type')!r} (expected 'array' or 'group')")
        self._store: Any = None
        try:
            if path.is_file():
                self._store = zarr.storage.ZipStore(path, mode="r")
                self._root = zarr.open(store=self._store, mode="r", zarr_format=3)
            else:
                self._root = zarr.open(store=str(path), mode="r", zarr_format=3)
        except Exception as exc:
            raise ConvertError(f"cannot open Zarr store `{path}`: {exc}") from None

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
                raise ConvertError(f"invalid Zarr store `{self._path}`: {exc}") from None
        return describe_each(((name, (arr, chain)) for name, arr, chain in found),
                             lambda name, member: self._describe(name, *member))

    def _describe(self, name: str, arr: Any, chain: list[Any]) -> SourceVar | None:
        shape = tuple(int(n) for n in arr.shape)
        wire = admit(name, shape, arr.dtype)
        if wire is None:
            return None
        try:
            chunks: tuple[int, ...] | None = tuple(arr.chunks)
            unit = tuple(arr.shards) if arr.shards is not None else chunks
        except NotImplementedError:  # an irregular chunk grid: the default tiling
            chunks = unit = None
        dim_names = valid_dim_names(getattr(arr.metadata, "dimension_names", None), len(shape))

        def read(box: tuple[slice, ...]) -> np.ndarray[Any, Any]:
            return np.asarray(arr[box])

        return SourceVar(
            name=name, shape=shape, dtype=wire, read=read,
            chunks=chunk_grid(shape, chunks, wire.itemsize),
            unit=chunk_grid(shape, unit, wire.itemsize) if unit != chunks else None,
            attrs=footer_attrs(arr.attrs.asdict().items()),
            dim_names=dim_names, coords=self._coords(arr, shape, dim_names, chain))

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
