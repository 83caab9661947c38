"""Planning a Zarr export: every array the store will hold (datasets in catalog order,
then coordinates made from footer labels), its ``zarr.json`` and where its chunks come
from, and the groups with their attributes, decided before a byte is written; and the
errors an export raises.

What an array shows is what ``xr.open_dataset(path, engine="tet")`` shows of the
dataset: the rules of `tet.xrmodel`, shared with the xarray backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tet import dtypes, kernels
from tet.attrs import ext_of, labels_to_values
from tet.errors import OS_ERRORS, DiskFullError, TetError
from tet.file import TetFile
from tet.layout import RAW, ZSTD, DatasetRecord
from tet.query.budget import WORK_FLOOR, resolve_budget
from tet.text import encode_text
from tet.xrmodel import (
    Variable,
    assign_dims,
    axis_dim,
    converted,
    coord_meta,
    describe,
    group_attrs,
    legacy_globals,
    reserved,
)
from tet.zarr_json import array_document, fill_of, json_attrs, json_value, time_encoded

__all__ = ["CODEC_CHOICES", "RAW", "ZSTD", "ExportDiskFullError", "ExportError", "Plan",
           "WriteFailed", "ZarrArray", "dataset_fail", "export_fail", "os_fail", "os_text",
           "plan"]

CODEC_CHOICES = ("keep", "raw", "zstd")
_PREFIX = "Zarr export failed: "
_RESERVED_PARTS = ("", ".", "..", "zarr.json")
_COORD_CHUNK = 1 << 16  # elements per chunk of a coordinate made from labels


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



class WriteFailed(OSError):
    """A file of the store that could not be written, and its size."""

    def __init__(self, exc: OSError, path: Path, size: int) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc), exc.filename or str(path))
        self.size = size



@dataclass(frozen=True)
class ZarrArray:
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


    def document(self) -> dict[str, Any]:
        """The array's ``zarr.json``."""
        return array_document(shape=self.shape, chunks=self.chunks, data_type=self.data_type,
                              fill=self.fill, text=self.text, zstd=self.codec == ZSTD,
                              attrs=self.attrs, dims=self.dims)


def export_fail(message: str, dataset: str | None = None) -> ExportError:
    """``Zarr export failed: <message>``."""
    return ExportError(_PREFIX + message, dataset=dataset)


def os_text(exc: OSError, shown: Callable[[str], str]) -> str:
    """An OS error's text, naming the file (as `shown` spells its path) where it has one."""
    text = exc.strerror or str(exc)
    return f"cannot write {shown(os.fspath(exc.filename))}: {text}" if exc.filename else text


def os_fail(exc: OSError, text: str, shown: Callable[[str], str],
             dataset: str | None = None) -> ExportError:
    """`export_fail(text)`; a full disk is `ExportDiskFullError`, with the size of the file
    whose write failed in `size` and in the message."""
    code = exc.errno
    if code is None or OS_ERRORS.get(code) is not DiskFullError:
        return export_fail(text, dataset)
    size = exc.size if isinstance(exc, WriteFailed) else None
    where = shown(os.fspath(exc.filename)) if exc.filename else None
    return ExportDiskFullError(_PREFIX + text + (f" ({size} bytes)" if size is not None else ""),
                               dataset=dataset, errno=code, strerror=exc.strerror,
                               filename=where, size=size)


def dataset_fail(name: str, exc: BaseException,
                 shown: Callable[[str], str] = str) -> ExportError:
    """The export refused or failed at dataset `name` (the first line of `exc`)."""
    text = os_text(exc, shown) if isinstance(exc, OSError) else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if isinstance(exc, OSError):
        return os_fail(exc, f"dataset `{name}`: {first}", shown, name)
    return export_fail(f"dataset `{name}`: {first}", name)


def _coordinate(parts: tuple[str, ...], length: int, values: np.ndarray[Any, Any],
                attrs: dict[str, Any], codec: int, budget: int) -> ZarrArray:
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
        values = time_encoded(values, attrs)
        fill = int(attrs.get("_FillValue", 0))
        data_type, pad = "int64", np.int64(fill)
    elif values.dtype.kind == "b":
        data_type, fill, pad = "bool", False, np.bool_(False)
    else:
        values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
        data_type = values.dtype.name
        fill, pad = (("NaN", values.dtype.type(math.nan)) if values.dtype.kind == "f"
                     else (0, values.dtype.type(0)))
    return ZarrArray(name, parts, (length,), chunks, data_type, fill, pad, codec,
                  json_attrs(attrs), (parts[-1],), budget, text=text, values=values)


def _node_parts(name: str) -> tuple[str, ...]:
    parts = tuple(name.split("/"))
    bad = [p for p in parts if p in _RESERVED_PARTS or "\0" in p or "\\" in p]
    if bad:
        raise export_fail(f"dataset `{name}` cannot be a Zarr node path: component "
                          f"{bad[0]!r} is not allowed (empty, '.', '..', 'zarr.json', NUL or "
                          "backslash); rename it in the .tet file first", name)
    return parts


def _codec_of(name: str, table: kernels.TileTable, choice: str) -> int:
    if choice == "raw":
        return RAW
    if choice == "zstd":
        return ZSTD
    present = set(np.unique(table.codec).tolist()) - {kernels.TileTable.MISSING}
    if present == {RAW, ZSTD}:
        raise export_fail(f"dataset `{name}` mixes raw and zstd chunk codecs; re-export "
                          "with one codec", name)
    return ZSTD if present == {ZSTD} else RAW




def _node_name(dim: str) -> bool:
    """Whether a dimension can name a coordinate array (one Zarr node path component)."""
    return dim not in _RESERVED_PARTS and not any(c in dim for c in "/\0\\")


@dataclass
class Plan:
    """What `tet.export_zarr.export` writes."""

    arrays: list[ZarrArray]
    groups: list[tuple[str, ...]]  # intermediate groups, parents before children
    root_attrs: dict[str, Any]
    group_attrs: dict[tuple[str, ...], dict[str, Any]]  # a group's own (``tet.groups``)
    datasets: tuple[str, ...]
    coordinates: tuple[str, ...]


@dataclass(frozen=True)
class _Entry:
    dataset_id: int
    parts: tuple[str, ...]
    var: Variable


def _entries(f: TetFile) -> tuple[list[_Entry], dict[tuple[str, ...], str]]:
    """Every dataset as a variable named by the last part of its node path, and the
    groups above them (path -> the first dataset below); node paths that Zarr cannot
    hold and marks that do not fit the stored shape are refused."""
    array_paths: dict[tuple[str, ...], str] = {}
    groups: dict[tuple[str, ...], str] = {}
    typed = ext_of(f.catalog.metadata).get("datasets", {})
    from_convert = converted(f)
    entries: list[_Entry] = []
    for dataset_id, record in enumerate(f.catalog.datasets):
        name = record.name
        parts = _node_parts(name)
        if parts in array_paths:
            raise export_fail(f"dataset `{name}` appears twice in the catalog", name)
        if parts in groups:
            raise export_fail(f"dataset `{name}` is also the group of dataset "
                              f"`{groups[parts]}`", name)
        for k in range(1, len(parts)):
            prefix = parts[:k]
            if prefix in array_paths:
                raise export_fail(f"dataset `{name}` would nest under dataset "
                                  f"`{array_paths[prefix]}`, which is an array", name)
            groups.setdefault(prefix, name)
        array_paths[parts] = name
        ds = f.dataset(dataset_id)
        try:
            dtypes.by_tag(ds.dtype)
        except TetError as exc:
            raise dataset_fail(name, exc) from exc

        def fail(what: str, name: str = name) -> ExportError:
            return export_fail(f"dataset `{name}` {what}", name)

        var = describe(ds, parts[-1], has_ext=name in typed, converted=from_convert, fail=fail)
        entries.append(_Entry(dataset_id, parts, var))
    return entries, groups


def _dataset_array(f: TetFile, e: _Entry, choice: str) -> ZarrArray:
    v, name = e.var, e.var.ds.name
    try:
        table = f.reader.table(e.dataset_id)
    except TetError as exc:
        raise dataset_fail(name, exc) from exc
    attrs = dict(v.attrs)
    text = None if v.text is None else "str" if v.dtype.kind == "U" else "bytes"
    fill: Any
    pad: Any
    if text is not None:
        attrs.pop("_FillValue", None)
        data_type = "string" if text == "str" else "variable_length_bytes"
        fill, pad = "", None
    else:
        data_type = v.dtype.name
        fill, pad = fill_of(attrs, v.dtype)
    return ZarrArray(name, e.parts, v.shape, v.chunks, data_type, fill, pad,
                     _codec_of(name, table, choice), json_attrs(attrs), v.dims,
                     table.budget(), record=f.catalog.datasets[e.dataset_id], table=table,
                     text=text, lead=int(v.scalar), narrow=v.narrow)


def plan(f: TetFile, choice: str) -> Plan:
    """Every array (datasets in catalog order, then the coordinates made from labels),
    the intermediate groups (parents before children) and the root's attributes;
    everything that can be refused is refused here, before a byte is written."""
    entries, groups = _entries(f)
    by_group: dict[tuple[str, ...], list[Variable]] = {}
    for e in entries:
        by_group.setdefault(e.parts[:-1], []).append(e.var)
    for members in by_group.values():
        assign_dims(members)
    arrays = [_dataset_array(f, e, choice) for e in entries]

    ext = ext_of(f.catalog.metadata)
    budget = resolve_budget(file_bytes=f.catalog.budget_bytes,
                            file_bps=f.catalog.budget_percent_bps)
    coordinates: list[str] = []
    coord_codec = ZSTD if choice == "zstd" else RAW
    for group, members in by_group.items():
        taken = {v.name for v in members} | {g[-1] for g in groups if g[:-1] == group}
        made: dict[str, ZarrArray] = {}
        for v in members:
            if not v.dims:
                continue
            for axis, labels in v.ds.coords.items():
                dim = axis_dim(axis, v)
                if dim is None or dim in made or dim in taken or not _node_name(dim):
                    continue  # first labels win; a dataset named like the dim wins
                meta, cattrs = coord_meta(v, dim, ext)
                length = v.shape[v.dims.index(dim)]
                try:
                    values = labels_to_values(
                        labels, length, meta, budget, f"the coordinate {dim!r}",
                        "export on a host with more memory, or rewrite the file without "
                        "those labels")
                except TetError as exc:
                    raise dataset_fail(v.ds.name, exc) from exc
                if values is None:
                    continue
                made[dim] = _coordinate((*group, dim), length, values, cattrs, coord_codec,
                                        budget)
        arrays.extend(made.values())
        coordinates.extend(a.name for a in made.values())

    root: dict[str, Any] = {"tetration_export": _version()}
    shown = legacy_globals(e.var for e in entries)
    shown.update(group_attrs(f, ""))
    for key, value in shown.items():
        if key != "tetration_export" and not reserved(key):
            root[key] = json_value(value)
    own: dict[tuple[str, ...], dict[str, Any]] = {}
    for g in groups:
        attrs = group_attrs(f, "/".join(g))
        if attrs:
            own[g] = json_attrs(attrs)
    return Plan(arrays, sorted(groups, key=len), root, own,
                tuple(e.var.ds.name for e in entries), tuple(coordinates))


def _version() -> str:
    from tet.version import __version__

    return __version__
