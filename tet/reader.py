"""The reader core: one open ``.tet`` file as a byte source, its validated catalog, the
tile tables built from it, and the reads (`resolve`, `read`, `fill`, `check`).

Everything above this module (`tet.file`, the query engine, the dask and xarray
integrations, the exporters) reads through a `Reader` and never learns where the bytes
come from.  A byte source is anything that satisfies `ByteSource`; `MappedFile` (a
read-only memory map of a local file, guarded against truncation by `tet.guard`) is
the one this package opens today.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tet import dtypes
from tet.errors import CatalogError, MemoryBudgetError, TetError, UnknownDatasetError
from tet.guard import GuardedMap, watching
from tet.kernels import FillMask, TileTable
from tet.layout import RAW, Catalog, foreign_format, not_tet_hint, parse_catalog
from tet.paths import map_readonly, open_regular
from tet.query.budget import require_memory, resolve_budget
from tet.query.plan import tile_table
from tet.selection import Box, KeySelection, resolve_selection
from tet.tilecache import DEFAULT_CACHE_BYTES, TileCache

__all__ = ["ByteSource", "MappedFile", "Reader"]


class ByteSource(Protocol):
    """Where the bytes of one open file come from.

    ``size`` is the length measured at open; ``identity`` says which file it was (two
    sources of the same file compare equal).  `buffer` is the whole byte range as a
    buffer the catalog parser and the kernels read (``b""`` for an empty or closed
    source); reads of it run inside `guarded`, which turns a source that changed under
    the read into `FileChangedError`.  `lend` hands out the buffer for a zero-copy view
    read after the call returns, first checking that the bytes below `end` are still
    there ([start, end) is what the view reads: a ranged source fetches and keeps it).
    `close` releases the source (views already lent keep what they use).  `make_table`
    builds its tile tables (`TileTable`, or a subclass that fetches before each call).
    """

    @property
    def size(self) -> int: ...

    @property
    def identity(self) -> tuple[int, int]: ...

    def buffer(self) -> Any: ...

    def guarded(self) -> contextlib.AbstractContextManager[None]: ...

    def lend(self, end: int, start: int = 0) -> Any: ...

    def make_table(self, *args: Any, **kwargs: Any) -> TileTable: ...

    def close(self) -> None: ...


class MappedFile:
    """A local file mapped read-only (a `tet.guard.GuardedMap`, None when empty).

    Opened with O_NONBLOCK and measured with fstat: a FIFO or device is refused at once,
    never waited on; the map is exactly the size measured, so a file truncated meanwhile
    is `FileChangedError`."""

    __slots__ = ("_identity", "_size", "map")

    def __init__(self, path: Path) -> None:
        fd, st = open_regular(path)
        try:
            self._size: int = st.st_size
            self._identity = (st.st_dev, st.st_ino)
            self.map = map_readonly(fd, self._size, path)
        finally:
            os.close(fd)

    @property
    def size(self) -> int:
        return self._size

    @property
    def identity(self) -> tuple[int, int]:
        return self._identity

    def buffer(self) -> Any:
        return self.map if self.map is not None else b""

    def guarded(self) -> contextlib.AbstractContextManager[None]:
        return watching(self.map)

    def make_table(self, *args: Any, **kwargs: Any) -> TileTable:
        return TileTable(*args, **kwargs)

    def lend(self, end: int, start: int = 0) -> Any:
        buf = self.buffer()
        if isinstance(buf, GuardedMap) and end > 0:
            # The view is read later, unchecked: touch its last byte now, so a file
            # already truncated below it is FileChangedError here.  One truncated after
            # this returns reads zeros in the view (the guard absorbs the fault).
            with watching(buf):
                buf[end - 1]
        return buf

    def close(self) -> None:
        if self.map is not None:
            with contextlib.suppress(BufferError):  # a zero-copy view still uses it
                self.map.close()
            self.map = None


class Reader:
    """One open file: its byte source, the catalog validated from it, tile tables.

    Dataset ids are catalog indices.  Boxes are numeric (`tet.selection.Box`); `resolve`
    turns a selection (wire or box form, labels) into one.  Small reads of zstd tiles go
    through `cache`, this reader's decoded-tile cache of `cache_bytes` (`tet.tilecache`).
    """

    def __init__(self, source: ByteSource, path: Path, *,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.source = source
        self.path = path
        self._closed = False
        self.cache = TileCache(cache_bytes)
        self._tables: dict[int, TileTable] = {}
        self._ids: dict[str, int] | None = None
        self._catalog: Catalog | None = None
        try:  # validate now, as h5py does: a corrupt file fails to open
            with source.guarded():  # truncated while parsed: FileChangedError
                self._catalog = parse_catalog(self.buffer(), source.size)
        except CatalogError as exc:
            hint = self._foreign_hint(exc)
            self.close()
            if hint is None:
                raise
            raise CatalogError(f"{exc} ({hint})") from None
        except BaseException:
            self.close()
            raise

    def _foreign_hint(self, exc: CatalogError) -> str | None:
        """For a bad magic: what the file is instead (HDF5, NetCDF, .npy) and what to do."""
        if not str(exc).startswith("bad magic:"):
            return None
        try:
            with self.source.guarded():
                head = bytes(self.buffer()[:8])
        except (TetError, OSError):
            return None
        label = foreign_format(head, self.path.name)
        return None if label is None else not_tet_hint(str(self.path), label)

    @classmethod
    def open(cls, path: Path, *, cache_bytes: int = DEFAULT_CACHE_BYTES) -> Reader:
        """A reader of the local file at `path` (memory-mapped)."""
        return cls(MappedFile(path), path, cache_bytes=cache_bytes)

    @property
    def size(self) -> int:
        return self.source.size

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        for table in self._tables.values():
            table.release()
        self._tables.clear()
        self.cache.clear()
        self.source.close()

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            with self.source.guarded():
                self._catalog = parse_catalog(self.buffer(), self.source.size)
        return self._catalog

    def buffer(self) -> Any:
        """The source's whole byte range (read it inside ``source.guarded()``)."""
        if self._closed:
            raise TetError(f"{self.path} is closed")
        return self.source.buffer()

    def names(self) -> list[str]:
        return [d.name for d in self.catalog.datasets]

    def find(self, name: str) -> int | None:
        """The id of the first dataset called `name` (a table built once), or None."""
        ids = self._ids
        if ids is None:
            ids = {}
            for i, record in enumerate(self.catalog.datasets):
                ids.setdefault(record.name, i)
            self._ids = ids
        return ids.get(name)

    def dataset_id(self, name: str) -> int:
        found = self.find(name)
        if found is None:
            raise UnknownDatasetError(name, path=self.path, available=self.names())
        return found

    def meta(self, name: str) -> Mapping[str, Any]:
        """The footer's metadata entry of dataset `name` (empty when it has none)."""
        entry = self.catalog.metadata.get("datasets", {}).get(name, {})
        return entry if isinstance(entry, dict) else {}

    def table(self, dataset_id: int) -> TileTable:
        """The tile table of a dataset, built (and its geometry checked) on first use."""
        table = self._tables.get(dataset_id)
        if table is None:
            table = tile_table(self.catalog, dataset_id, self.buffer(), self.source.make_table)
            self._tables[dataset_id] = table
        return table

    def resolve(self, dataset: str, selection: Any = None) -> tuple[int, Box]:
        """The dataset id and numeric box of a wire/box-form selection (labels resolved)."""
        dataset_id = self.dataset_id(dataset)
        shape = self.table(dataset_id).shape  # building the table checked the geometry
        if selection is None:
            return dataset_id, Box.full(shape)
        meta = self.meta(dataset)

        def labels(d: int) -> Sequence[str] | None:
            dims = meta.get("dim_names") or []
            coords = meta.get("coords") or {}
            key = dims[d] if len(dims) == len(shape) and dims[d] in coords else str(d)
            coord = coords.get(key)
            return coord.get("labels") if isinstance(coord, dict) else None

        has_meta = dataset in self.catalog.metadata.get("datasets", {})
        return dataset_id, resolve_selection(selection, shape, labels, has_metadata=has_meta)

    def read(
        self, dataset_id: int, box: Box, *, copy: bool | None, budget: int | None,
        mask: FillMask | None = None,
    ) -> np.ndarray[Any, Any]:
        """The box as a new C-ordered array (or, ``copy`` not True, a zero-copy view when
        the box is exactly one raw chunk), within the memory budget."""
        catalog = self.catalog
        record = catalog.datasets[dataset_id]
        dtype = dtypes.by_tag(record.dtype).numpy if mask is None else mask.out_dtype
        view = (None if copy is True or mask is not None
                else self._zero_copy(dataset_id, box, dtype))
        if view is not None:
            return view
        if copy is False:
            raise TetError(
                f"copy=False needs a selection that is exactly one raw (uncompressed) chunk "
                f"of {record.name!r}; use copy=None to fall back to a copy"
            )
        nbytes = box.size * dtype.itemsize
        limit = resolve_budget(query_bytes=budget, file_bytes=catalog.budget_bytes,
                               file_bps=catalog.budget_percent_bps)
        if nbytes > limit:
            raise MemoryBudgetError(
                f"reading {record.name!r} {list(box.shape)} ({dtype.name}) needs {nbytes} bytes, "
                f"over the memory budget of {limit} bytes; read a smaller selection "
                f"(selection=... or f[{record.name!r}][a:b, ...]) and process it in pieces, or "
                f"raise the budget with read_numpy(..., memory_budget_bytes=N)"
            )
        try:
            out = np.empty(box.shape, dtype=dtype)
        except (MemoryError, ValueError) as exc:
            raise MemoryBudgetError(
                f"reading {record.name!r} {list(box.shape)} ({dtype.name}) needs {nbytes} "
                f"bytes, within the memory budget of {limit} bytes, but the system could not "
                f"allocate them ({exc}); read a smaller selection or lower the budget"
            ) from None
        self.fill(dataset_id, box, out, budget=limit, mask=mask)
        return out

    def read_key(self, dataset_id: int, sel: KeySelection, *,
                 budget: int | None = None) -> np.ndarray[Any, Any]:
        """An orthogonal selection (`tet.selection.box_from_key`) as a new array of
        ``sel.shape``: one box read when every axis is a range, else one orthogonal read
        of the sorted distinct indices, then each axis's `order` applied with NumPy."""
        record = self.catalog.datasets[dataset_id]
        dtype = dtypes.by_tag(record.dtype).numpy
        if sel.empty:
            return np.empty(sel.shape, dtype=dtype)
        limit = resolve_budget(query_bytes=budget, file_bytes=self.catalog.budget_bytes,
                               file_bps=self.catalog.budget_percent_bps)
        read_bytes = math.prod(sel.read_shape) * dtype.itemsize
        out_bytes = math.prod(sel.shape) * dtype.itemsize
        index_bytes = 0 if sel.box is not None else 24 * sum(sel.read_shape)
        require_memory(read_bytes + index_bytes + out_bytes * any(p is not None for p in sel.order),
                       limit, f"reading {record.name!r} {list(sel.shape)} ({dtype.name})",
                       "read a smaller selection and process it in pieces, or raise the budget")
        out = np.empty(sel.read_shape, dtype=dtype)
        if sel.box is not None:
            self.fill(dataset_id, sel.box, out, budget=limit)
        else:
            table = self.table(dataset_id)
            points = sel.points()
            describe = self._describer(dataset_id, table)
            self._check_fresh()
            if not self.cache.read_index(table, dataset_id, points, out, budget=limit,
                                         describe=describe):
                table.read_index(points, out, budget=limit, describe=describe)
        for d, perm in enumerate(sel.order):
            if perm is not None:
                out = np.take(out, perm, axis=d)
        return out.reshape(sel.shape)

    def fill(self, dataset_id: int, box: Box, out: np.ndarray[Any, Any], *,
             budget: int | None = None, mask: FillMask | None = None) -> None:
        """Copy the box into `out` (C-contiguous, the dataset dtype, the box's shape):
        a RAM array or a memory-mapped file alike.  `budget` bounds the decode scratch
        (default: the file's).  With `mask` (a query's ``mask_fill``) its fill values
        read as NaN and `out` is of ``mask.out_dtype``."""
        table = self.table(dataset_id)
        describe = self._describer(dataset_id, table)
        if mask is None:
            self._check_fresh()
            if self.cache.read_box(table, dataset_id, box.start, box.stop, box.step, out,
                                   budget=budget, describe=describe):
                return
        table.read(box.start, box.stop, box.step, out, describe=describe, budget=budget,
                   mask=mask)

    @staticmethod
    def _describer(dataset_id: int, table: TileTable) -> Callable[[int], str]:
        """How a read's errors name a tile of this dataset."""
        return lambda tile: f"dataset_id={dataset_id} {table.chunk_name(tile)}"

    def _check_fresh(self) -> None:
        """`FileChangedError` once a read saw the mapped file change: a cached tile is
        not served from a file seen truncated, as no read of it is."""
        buf = self.source.buffer()
        if isinstance(buf, GuardedMap):
            buf.check()

    def check(self, dataset_id: int, box: Box) -> None:
        """Raise what `fill` would for a bad index row the box touches, reading nothing:
        run before an output (a spill file, a block buffer) is sized from the box."""
        table = self.table(dataset_id)
        table.check(box.start, box.stop, box.step,
                    describe=self._describer(dataset_id, table))

    def _zero_copy(
        self, dataset_id: int, box: Box, dtype: np.dtype[Any]
    ) -> np.ndarray[Any, Any] | None:
        """A read-only view when the box is exactly one raw chunk, else None."""
        record = self.catalog.datasets[dataset_id]
        chunk = record.chunk_shape
        if any(k != 1 for k in box.step) or any(s % c for s, c in zip(box.start, chunk)):
            return None
        tile = tuple(min(c, n - s) for s, c, n in zip(box.start, chunk, record.shape))
        if box.shape != tile:
            return None
        table = self.table(dataset_id)
        (i,) = table.touch(box.start, box.stop, box.step).astype(np.int64)
        if int(table.codec[i]) != RAW or int(table.raw[i]) != box.size * dtype.itemsize:
            return None
        end = int(table.offset[i]) + int(table.raw[i])
        if end > self.source.size:
            return None  # the checked read path reports it
        self.buffer()  # closed: TetError
        buf = self.source.lend(end, int(table.offset[i]))
        view = np.frombuffer(buf, dtype=dtype, count=box.size,
                             offset=int(table.offset[i])).reshape(box.shape)
        view.flags.writeable = False  # a ranged source's buffer is a writable map
        return view
