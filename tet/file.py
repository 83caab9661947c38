"""Reading: `TetFile` (a read-only memory map of one ``.tet`` file) and `Dataset`."""

from __future__ import annotations

import json
import operator
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal, TypeVar, overload

import numpy as np

from tet import dtypes
from tet.attrs import ext_of, merge_attrs
from tet.errors import TetError, UnknownAxisError
from tet.handles import (
    RemoteKey,
    allow_for,
    checked_mode,
    key_of,
    name_of,
    open_remote,
    reopen,
    url_of,
)
from tet.layout import Catalog, DatasetRecord
from tet.objstore import local_target
from tet.opencache import FileKey
from tet.package import package_target
from tet.paths import checked_path
from tet.query.allow import Allowlist
from tet.query.api import AxisArg, QueryAPI, reduction, via_api
from tet.query.budget import require_memory, resolve_budget
from tet.query.plan import ReadPlan, plan_read
from tet.query.result import QueryResult
from tet.query.sinks import SidecarTransformResult, TransformNamespace
from tet.reader import Reader
from tet.selection import Box, box_from_key
from tet.stub import typing_stub
from tet.tilecache import DEFAULT_CACHE_BYTES, checked_capacity
from tet.wire import is_axis_index

__all__ = ["Dataset", "TetFile", "open"]

PathLike = str | os.PathLike[str]
_T = TypeVar("_T")
_REOPEN = threading.Lock()
# Memory of one summary chunk row: its dict, the chunk_index list and the ints (CPython
# 3.11 measured 512-760 bytes, the most when no value is a small cached int).
SUMMARY_ROW_BYTES = 768


def _expand(path: PathLike) -> Path:
    return Path(os.path.expanduser(checked_path(path, "cannot open")))


@dataclass(frozen=True, slots=True)
class Dataset:
    """One array of a file: its geometry and footer metadata.

    Index it like an h5py dataset (``ds[10:20, ::2]``, ints drop axes, ``...``)
    while its file is open.  ``dtype`` is the wire tag; ``numpy_dtype`` the NumPy type.
    """

    name: str
    shape: tuple[int, ...]
    dtype: int
    chunk_shape: tuple[int, ...]
    dim_names: tuple[str, ...] | None = None
    attrs: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    coords: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False, hash=False)
    # `attrs` with the typed values of the footer's `metadata.tet` overlaid (tet.attrs),
    # and that entry's other fields (encoding, shape, text)
    typed_attrs: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    _file: TetFile | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def chunks(self) -> tuple[int, ...]:
        """The tile extent per axis (``chunk_shape``), as h5py's and zarr's ``chunks``."""
        return self.chunk_shape

    @property
    def dims(self) -> tuple[str, ...]:
        """The axis names: the footer's ``dim_names``, else ``dim_0``, ``dim_1``, ... (the
        names the xarray backend gives such a dataset's axes)."""
        return self.dim_names or tuple(f"dim_{i}" for i in range(self.ndim))

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        return dtypes.by_tag(self.dtype).numpy

    @property
    def dtype_name(self) -> str:
        return dtypes.by_tag(self.dtype).name if dtypes.is_known_tag(self.dtype) else "?"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=object))

    @property
    def nbytes(self) -> int:
        return self.size * dtypes.by_tag(self.dtype).size

    def __len__(self) -> int:
        return self.shape[0]

    def axis_index(self, axis: int | str, *, path: object = None) -> int:
        """A non-negative axis index from an int (negative counts from the end) or a dim name."""
        where = path if path is not None else (self._file.path if self._file else None)
        if isinstance(axis, bool) or not isinstance(axis, (int, str)):
            raise self._axis_error(axis, where)
        if isinstance(axis, int):
            if -self.ndim <= axis < self.ndim:
                return axis % self.ndim
            raise self._axis_error(axis, where)
        if self.dim_names is not None and self.dim_names.count(axis) == 1:
            return self.dim_names.index(axis)
        if is_axis_index(axis) and int(axis) < self.ndim:
            return int(axis)
        raise self._axis_error(axis, where)

    def _axis_error(self, axis: object, path: object) -> UnknownAxisError:
        return UnknownAxisError(axis, dataset=self.name, path=path, ndim=self.ndim,
                                shape=self.shape, dim_names=self.dim_names)

    def to_numpy(self, file: TetFile | None = None, selection: Any = None) -> np.ndarray[Any, Any]:
        """``file.read_numpy(self.name, selection)`` (the dataset's own file by default)."""
        return self._owner(file).read_numpy(self.name, selection)

    def to_dask(self, selection: Any = None, *, block_bytes: int | None = None) -> Any:
        """A lazy dask array of this dataset (or a selection): whole chunks grouped into
        blocks of about `block_bytes` (default 64 MiB); needs the ``dask`` extra."""
        from tet.dask import to_dask

        return to_dask(self._owner(None), self.name, selection, block_bytes=block_bytes)

    def __getitem__(self, key: Any) -> Any:
        """NumPy-style reads: integers, slices (any step), 1-D integer arrays and boolean
        masks per axis, each axis indexed independently (h5py's fancy indexing, zarr's
        ``oindex``; see `tet.selection.box_from_key`)."""
        sel = box_from_key(key, self.shape)
        owner = self._owner(None)
        if sel.box is not None and all(p is None for p in sel.order):
            out = owner.read_box(self.name, sel.box).reshape(sel.shape)
        else:
            reader = owner._reader
            out = reader.read_key(reader.dataset_id(self.name), sel)
        return out[()] if out.ndim == 0 else out

    @property
    def oindex(self) -> Dataset:
        """``ds.oindex[...]`` as zarr writes it: the same orthogonal indexing as ``ds[...]``."""
        return self

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray[Any, Any]:
        if copy is False:
            raise ValueError("reading a .tet dataset always makes a copy; use copy=None")
        out = self._owner(None).read_numpy(self.name)
        return out if dtype is None else out.astype(dtype)

    def __reduce__(self) -> tuple[Any, ...]:
        # its fields and its file (which pickles as its path and options): the copy reads
        # once the file proves to be the same one (TetFile.__reduce__)
        return (_rebuild_dataset, (self._file, self.name, self.shape, self.dtype,
                                   self.chunk_shape, self.dim_names, dict(self.attrs),
                                   dict(self.coords), dict(self.typed_attrs), dict(self.extra)))

    def _owner(self, file: TetFile | None) -> TetFile:
        owner = file if file is not None else self._file
        if owner is None:
            raise TetError(f"dataset {self.name!r} is not attached to an open file")
        return owner


def _rebuild_dataset(file: TetFile | None, name: str, shape: tuple[int, ...], dtype: int,
                     chunk_shape: tuple[int, ...], dim_names: tuple[str, ...] | None,
                     *maps: dict[str, Any]) -> Dataset:
    attrs, coords, typed, extra = (MappingProxyType(m) for m in maps)
    return Dataset(name, shape, dtype, chunk_shape, dim_names, attrs, coords, typed, extra,
                   _file=file)


def _reopen_file(path: str, spill_allow: tuple[str, ...], key: FileKey | RemoteKey,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, generation: int | None = None) -> TetFile:
    self = TetFile.__new__(TetFile)
    self._cache_bytes, self._generation = cache_bytes, generation
    self._path = name_of(key, path)
    self.spill_allow = spill_allow
    self._allow = allow_for(self._path, spill_allow)
    self._live = None
    self._key = key
    self._datasets = {}
    return self


class _Names(tuple[str, ...]):
    """A tuple of dataset names that may also be called (``f.dataset_names()``)."""

    def __call__(self) -> list[str]:
        return list(self)


class TetFile(Mapping[str, Dataset]):
    """A read-only handle on one ``.tet`` file.

    Opening maps the file and validates its whole catalog, so a corrupt file
    raises `CatalogError` from `open`.  Use it as a context manager to
    release the mapping; arrays already returned stay valid.  A file truncated or
    rewritten in place while it is open is `FileChangedError` from the read that sees
    it, and from every read after it (tet.guard): open it again.

    It is a read-only mapping of dataset names to `Dataset` in catalog order (``keys``,
    ``items``, ``values``, ``get``, ``in``, ``dict(f)``); handles compare by identity.
    It pickles as its absolute path, ``spill_allow`` and the identity of the file it
    opened (device, inode, size, mtime); the copy opens the file on first use, and a
    file changed since is `FileChangedError` there.  A closed handle pickles too: the
    copy is open, with the same `cache_bytes` (see `open`).
    """

    def __init__(self, path: PathLike, mode: str = "r", *,
                 spill_allow: Sequence[str | os.PathLike[str]] = (),
                 storage_options: Mapping[str, Any] | None = None, store: Any = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        checked_mode(mode)
        path, self._generation = package_target(path, storage_options, store)  # a package
        self._cache_bytes = checked_capacity(cache_bytes)
        self._live: Reader | None = open_remote(path, storage_options, store,
                                                cache_bytes=self._cache_bytes)  # None: local
        self._path = self._live.path if self._live else _expand(local_target(path))
        self.spill_allow: tuple[str, ...] = tuple(os.fspath(p) for p in spill_allow)
        # the output roots, pinned now: the cwd may change and a root be swapped later
        self._allow = allow_for(self._path, self.spill_allow)
        self._live = self._live or Reader.open(self._path, cache_bytes=self._cache_bytes)
        self._key: FileKey | RemoteKey = key_of(self._path, self._live)
        self._datasets: dict[str, Dataset] = {}

    @classmethod
    def from_reader(cls, reader: Reader, *,
                    spill_allow: Sequence[str | os.PathLike[str]] = ()) -> TetFile:
        """The file API over a reader that is already open (one of `tet.opencache`'s):
        closing the file closes the reader."""
        self = cls.__new__(cls)
        self._path = reader.path
        self.spill_allow = tuple(os.fspath(p) for p in spill_allow)
        self._allow = allow_for(self._path, self.spill_allow)
        self._live, self._generation = reader, None
        self._cache_bytes = reader.cache.capacity
        self._key = key_of(self._path, reader)
        self._datasets = {}
        return self

    @classmethod
    def open(cls, path: PathLike, mode: str = "r", *,
             spill_allow: Sequence[str | os.PathLike[str]] = (),
             storage_options: Mapping[str, Any] | None = None, store: Any = None,
             cache_bytes: int = DEFAULT_CACHE_BYTES) -> TetFile:
        return cls(path, mode, spill_allow=spill_allow, storage_options=storage_options,
                   store=store, cache_bytes=cache_bytes)

    @property
    def _reader(self) -> Reader:
        """The open reader; an unpickled handle opens the file here, on first use."""
        live = self._live
        if live is None:
            with _REOPEN:  # one reader, however many threads use the copy first
                live = self._live = self._live or reopen(self._key, self._cache_bytes)
        return live

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen_file, (os.path.abspath(self._path),
                               tuple(os.path.abspath(p) for p in self.spill_allow), self._key,
                               self._cache_bytes, self._generation))

    __eq__ = object.__eq__  # a handle, not a value: as open files
    __hash__ = object.__hash__

    # -- lifetime -----------------------------------------------------------
    def close(self) -> None:
        """Release the mapping.  Zero-copy views keep their own reference to it."""
        self._reader.close()

    def __enter__(self) -> TetFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        live = self._live
        state = ("not opened yet" if live is None else
                 "closed" if live.closed else f"{live.size} bytes")
        return f"<tet.TetFile {str(self._path)!r} ({state})>"

    # -- catalog ------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def cache_bytes(self) -> int:
        """The byte bound of this file's decoded-tile cache (0: none)."""
        return self._cache_bytes

    url = property(lambda self: url_of(self._key), doc="A remote file's URL, else None.")
    generation = property(lambda self: self._generation,
                          doc="The pinned generation of a package open, else None.")

    @property
    def allowlist(self) -> Allowlist:
        """Where this file's spills and sidecars may be written, pinned at open."""
        return self._allow

    @property
    def reader(self) -> Reader:
        """The reader core of this file: its byte source, catalog, tile tables and reads
        by dataset id and numeric box (what the query engine and integrations use)."""
        return self._reader

    @property
    def catalog(self) -> Catalog:
        return self._reader.catalog

    def datasets(self) -> list[str]:
        return self._reader.names()

    @property
    def dataset_names(self) -> _Names:
        """The catalog names as a tuple (also callable, giving a list)."""
        return _Names(self.datasets())

    def __iter__(self) -> Iterator[str]:
        return iter(self.datasets())

    def __reversed__(self) -> Iterator[str]:
        return reversed(self.datasets())

    def __len__(self) -> int:
        return self.catalog.dataset_count

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._reader.find(name) is not None

    @overload
    def get(self, key: str, /) -> Dataset | None: ...

    @overload
    def get(self, key: str, /, default: Dataset | _T) -> Dataset | _T: ...

    def get(self, key: str, /, default: object = None) -> object:
        """The dataset named `key`, else `default` (names only: ``f[i]`` takes indices)."""
        return self.dataset(key) if key in self else default

    @property
    def attrs(self) -> Mapping[str, Any]:
        """The file-level attributes (typed values, as `file_attrs`), read-only; update
        them with ``TetWriter.open_append(path).set_file_attrs(...)``."""
        return MappingProxyType(self.file_attrs)

    @property
    def history(self) -> list[dict[str, Any]]:
        return [dict(h) for h in self.catalog.history]

    @property
    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(json.dumps(self.catalog.metadata))
        return out

    @property
    def file_attrs(self) -> dict[str, Any]:
        """File-level attributes (typed: numbers, arrays, strings), from the footer's
        typed metadata; empty when the file has none."""
        return merge_attrs({}, ext_of(self.catalog.metadata).get("attrs", {}), "file attrs")

    @property
    def file_execution(self) -> dict[str, int]:
        return self.catalog.file_execution

    def summary(self) -> dict[str, Any]:
        """The layout summary (superblock, datasets, every chunk row, history, metadata).

        One dict per chunk row (about `SUMMARY_ROW_BYTES`), charged to the memory budget
        first (`MemoryBudgetError`); `iter_chunks` pages the rows in bounded memory."""
        catalog = self.catalog
        rows = len(catalog.entries)
        require_memory(
            rows * SUMMARY_ROW_BYTES,
            resolve_budget(file_bytes=catalog.budget_bytes, file_bps=catalog.budget_percent_bps),
            f"summary() of {self._path} ({rows} chunk rows, one dict each)",
            "take the rows a page at a time from iter_chunks(start, stop) instead")
        return catalog.summary()

    def iter_chunks(self, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """The summary's chunk rows ``start`` to ``stop`` (exclusive, None = the end),
        built lazily: ``list(f.iter_chunks(a, b)) == f.summary()["chunks"][a:b]``."""
        return self.catalog.iter_chunks(start, stop)

    info = summary

    def summary_json(self) -> str:
        return json.dumps(self.summary())

    def _make_dataset(self, record: DatasetRecord) -> Dataset:
        cached = self._datasets.get(record.name)
        if cached is not None:
            return cached
        meta = self._reader.meta(record.name)
        ext = ext_of(self.catalog.metadata).get("datasets", {}).get(record.name, {})
        where = f"dataset {record.name!r}"
        extra = {k: v for k, v in ext.items() if k != "attrs"}
        if "encoding" in extra:
            extra["encoding"] = merge_attrs({}, extra["encoding"], f"{where} encoding")
        dims = meta.get("dim_names")
        coords = meta.get("coords") or {}
        ds = Dataset(
            name=record.name, shape=record.shape, dtype=record.dtype,
            chunk_shape=record.chunk_shape,
            dim_names=tuple(dims) if isinstance(dims, list) and dims else None,
            attrs=MappingProxyType(dict(meta.get("attrs") or {})),
            coords=MappingProxyType({
                k: tuple(v.get("labels", ())) for k, v in coords.items() if isinstance(v, dict)
            }),
            typed_attrs=MappingProxyType(merge_attrs(meta.get("attrs") or {},
                                                     ext.get("attrs", {}), where)),
            extra=MappingProxyType(extra),
            _file=self,
        )
        self._datasets[record.name] = ds
        return ds

    def dataset(self, key: str | int) -> Dataset:
        """A dataset by name (`UnknownDatasetError`) or by catalog index (`IndexError`)."""
        records = self.catalog.datasets
        if not isinstance(key, (str, bool)) and hasattr(key, "__index__"):
            key = operator.index(key)
            if not -len(records) <= key < len(records):
                names = ", ".join(repr(r.name) for r in records)
                raise IndexError(
                    f"dataset index {key} out of range for {self._path} "
                    f"(count={len(records)}; names: {names})"
                )
            return self._make_dataset(records[key])
        dataset_id = self._reader.dataset_id(str(key))  # UnknownDatasetError
        return self._make_dataset(records[dataset_id])

    __getitem__ = dataset

    def iter_datasets(self) -> Iterator[Dataset]:
        for record in self.catalog.datasets:
            yield self._make_dataset(record)

    def typing_stub(self) -> str:
        """Literal types of this file's dataset and axis names, for editors and mypy."""
        return typing_stub(self._path, [(d.name, d.dim_names) for d in self.iter_datasets()])

    # -- reading ------------------------------------------------------------
    def resolve(self, dataset: str, selection: Any = None) -> tuple[int, Box]:
        """The dataset id and numeric box of a wire/box-form selection (labels resolved)."""
        return self._reader.resolve(dataset, selection)

    def plan(self, dataset: str, selection: Any = None) -> ReadPlan:
        """The tiles a selection touches (for reports; reads do this inside C)."""
        dataset_id, box = self.resolve(dataset, selection)
        return plan_read(self._reader.table(dataset_id), self.catalog.datasets[dataset_id], box)

    def read_numpy(
        self,
        dataset: str,
        selection: Any = None,
        *,
        copy: bool | None = True,
        memory_budget_bytes: int | None = None,
    ) -> np.ndarray[Any, Any]:
        """Materialise a selection as a C-ordered array of the dataset's dtype.

        Parameters
        ----------
        dataset : catalog name.
        selection : wire form (one ``{start, stop, step, start_label, stop_label}``
            dict per axis), box form (``{"start": [..], "stop": [..], "step": [..]}``)
            or None for everything.
        copy : True (default) always copies; None returns a read-only zero-copy view
            when the selection is exactly one raw chunk; False insists on that view.
            A view reads the file's pages when it is used: if the file is truncated
            after the view was returned, the truncated part reads as zeros.
        memory_budget_bytes : cap on the result size; default from the file's TIDX
            settings, else 25 % of available RAM.

        Raises
        ------
        UnknownDatasetError, SelectionError, MemoryBudgetError, CatalogError;
        FileChangedError when the file was truncated while it was read.
        """
        dataset_id, box = self._reader.resolve(dataset, selection)
        return self._reader.read(dataset_id, box, copy=copy, budget=memory_budget_bytes)

    def read_box(self, dataset: str, box: Box) -> np.ndarray[Any, Any]:
        """A copy of a numeric box of a dataset (what ``f[name][...]`` reads)."""
        return self._reader.read(self._reader.dataset_id(dataset), box, copy=True, budget=None)

    # -- queries (tet.query.api) --------------------------------------------
    query = via_api(QueryAPI.query)
    query_execute = via_api(QueryAPI.query_execute)
    execute = via_api(QueryAPI.execute)
    plan_only = via_api(QueryAPI.plan_only)
    histogram = via_api(QueryAPI.histogram)
    covariance = via_api(QueryAPI.covariance)
    correlation = via_api(QueryAPI.correlation)
    read_spill = via_api(QueryAPI.read_spill)
    null_count = via_api(QueryAPI.null_count)

    @property
    def query_api(self) -> QueryAPI:
        """The query API of this file (what ``f.query``, ``f.mean``, ... call)."""
        return QueryAPI(self)

    @property
    def transform(self) -> TransformNamespace:
        """``f.transform.to_numpy.zscore(name, axis=...)``, ``.to_spill``, ``.to_sidecar``."""
        return QueryAPI(self).transform

    @overload
    def quantile(self, dataset: str, q: float, axes: None = None, *, axis: None = None,
                 selection: Any = None, device: str | None = None, preview: None = None,
                 raw: Literal[False] = False, mask_fill: bool = False) -> float: ...

    @overload
    def quantile(self, dataset: str, q: float, axes: AxisArg = None, *,
                 axis: int | str | None = None, selection: Any = None,
                 device: str | None = None, preview: int | None = None, raw: bool = False,
                 mask_fill: bool = False) -> QueryResult | float | dict[str, Any]: ...

    def quantile(self, dataset: str, q: float, axes: AxisArg = None, *,
                 axis: int | str | None = None, selection: Any = None,
                 device: str | None = None, preview: int | None = None, raw: bool = False,
                 mask_fill: bool = False) -> Any:
        """`np.quantile` (linear) over `axes`; a float for scalar calls, else a `QueryResult`.

        ``mask_fill=True`` (every helper has it) reads the dataset's ``_FillValue`` /
        ``missing_value`` values as NaN (``execution.mask_fill``)."""
        return QueryAPI(self).quantile(dataset, q, axes, axis=axis, selection=selection,
                                       device=device, preview=preview, raw=raw,
                                       mask_fill=mask_fill)

    # one helper per reduction op (tet.query.api.HELPER_OPS), of the op's scalar type
    sum = reduction(float)
    mean = reduction(float)
    min = reduction(float)
    max = reduction(float)
    var = reduction(float)
    std = reduction(float)
    product = reduction(float)
    norm_l1 = reduction(float)
    norm_l2 = reduction(float)
    median = reduction(float)
    nan_count = reduction(float)
    inf_count = reduction(float)
    nan_mean = reduction(float)
    nan_std = reduction(float)
    all_finite = reduction(bool)
    any_nan = reduction(bool)
    any_inf = reduction(bool)
    count = reduction(int)
    numel = reduction(int)
    arg_min = reduction(int)
    arg_max = reduction(int)


SidecarTransformResult.file_class = TetFile


def open(path: PathLike, mode: str = "r", *,
         spill_allow: Sequence[str | os.PathLike[str]] = (),
         storage_options: Mapping[str, Any] | None = None, store: Any = None,
         cache_bytes: int = DEFAULT_CACHE_BYTES) -> TetFile:
    """Open a ``.tet`` file for reading (``mode`` ``"r"`` only; any other is
    `UnsupportedModeError`, naming the `TetWriter` call that writes or appends).

    Missing: `TetFileNotFoundError` (a `FileNotFoundError`); a directory, FIFO, socket or
    device, no permission: the `TetOSError` classes (never blocked on); corrupt:
    `CatalogError`.  `spill_allow` adds output roots besides the file's own tree, the
    cache and temp dirs.  A URL (s3, gs, az, https) is read with ranged requests
    (`storage_options`, or an obstore `store` with `path` its key); ``file://`` is local.
    `cache_bytes` (64 MiB; 0 disables) bounds the cache of decoded tiles (`tet.tilecache`).
    """
    return TetFile(path, mode, spill_allow=spill_allow, storage_options=storage_options,
                   store=store, cache_bytes=cache_bytes)

