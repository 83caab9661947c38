"""The datasets a write session holds until they are placed in its output: whole arrays
(`ArraySource`), datasets copied from the file being appended to (`CopiedSource`) and
streamed datasets (`DatasetStream`, queued as `StreamSource`), with the tile grid and
encode-window helpers they share."""

from __future__ import annotations

import itertools
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import numpy as np

from tet import dtypes, kernels, kernels_integrity
from tet.attrs import display, encode_value, merge_attrs, split_attrs, validate_ext
from tet.errors import CatalogError, InvalidTextError
from tet.footer import WRITE_PREFIX
from tet.guard import watching
from tet.layout import CODECS, ENTRY_DTYPE, MAX_NDIM, RAW, DatasetRecord, tile_counts
from tet.limits import LIMITS
from tet.selection import box_from_key
from tet.wire import is_axis_index
from tet.writer_store import Store, aligned_offsets, copy_runs, write_all, writer_pool

TARGET_CHUNK_BYTES = 8 * 1024 * 1024
WINDOW_BYTES = 16 * 1024 * 1024  # tiles encoded per C call, about


def refused(msg: str) -> CatalogError:
    """A write the format cannot take (`tet.layout.WRITE_PREFIX`)."""
    return CatalogError(WRITE_PREFIX + msg)


def checked_text(value: str, what: str) -> str:
    """`value`, if UTF-8 can store it; a lone surrogate (what ``os.fsdecode`` makes of
    bytes that are not UTF-8) is `InvalidTextError` naming the field and the index."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidTextError(f"{WRITE_PREFIX}{what} {value!r} is not valid text: "
                               f"{exc.reason} (index {exc.start})") from None
    return value


def dataset_geometry(name: str, shape: Sequence[int], itemsize: int,
                     chunk_shape: Sequence[int] | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    shape = tuple(int(n) for n in shape)
    if not 1 <= len(shape) <= MAX_NDIM:
        if len(shape) == 0:
            raise ValueError("write_dataset requires an array with at least one dimension")
        raise refused(f"dataset {name!r} has rank {len(shape)}; the format allows 1..{MAX_NDIM}")
    if any(n < 1 for n in shape):
        raise refused(f"dataset {name!r} has an empty axis (shape {shape}); every extent >= 1")
    chunk = (default_chunk_shape(shape, itemsize) if chunk_shape is None
             else tuple(int(c) for c in chunk_shape))
    if len(chunk) != len(shape) or any(c < 1 for c in chunk):
        raise refused(f"chunk_shape {chunk} does not fit shape {shape} (one extent >= 1 each)")
    return shape, chunk

def dataset_meta(name: str, shape: Sequence[int], attrs: Mapping[str, Any] | None,
                 dim_names: Sequence[str] | None,
                 coords: Mapping[str, Sequence[str]] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    texts = {k: _attr_text(v) for k, v in (attrs or {}).items()}
    if any(t is not None for t in texts.values()):
        meta["attrs"] = {checked_text(str(k), "attr name"): checked_text(t, f"attr {k!r}")
                         for k, t in texts.items() if t is not None}
    if dim_names is not None:
        dims = [checked_text(str(d), "dim name") for d in dim_names]
        if len(dims) != len(shape):
            raise refused(f"dim_names has {len(dims)} names for a rank-{len(shape)} dataset")
        if dims:
            meta["dim_names"] = dims
    if coords:
        keys = meta.get("dim_names", [])
        out = {}
        for axis, labels in coords.items():
            d = keys.index(axis) if axis in keys else \
                (int(axis) if is_axis_index(str(axis)) else -1)
            if not 0 <= d < len(shape):
                raise refused(f"coords key {axis!r} is neither a dim name nor an axis index")
            labels = [checked_text(str(x), f"coords {axis!r} label") for x in labels]
            if len(labels) > shape[d]:
                raise refused(f"coords {axis!r}: {len(labels)} labels for an axis of {shape[d]}")
            out[str(axis)] = {"labels": labels}
        meta["coords"] = out
    return meta


def _attr_text(value: Any) -> str | None:
    """The v1 text of an ``attrs=`` value: a string as it is (the v1 limits apply); any
    other value's display text when it has one that fits (its type is kept in the typed
    metadata either way)."""
    if isinstance(value, str):
        return value
    text = display(value)
    return text if text is not None and len(text.encode("utf-8")) <= LIMITS[
        "attr_string_bytes"] else None


def dataset_ext(name: str, attrs: Mapping[str, Any] | None,
                 extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `metadata.tet` entry of a new dataset: its typed attrs and `extra` fields."""
    entry: dict[str, Any] = {k: deep_copy(v) for k, v in (extra or {}).items()}
    for field_ in ("attrs", "encoding"):
        if field_ in entry:
            entry[field_] = {k: encode_value(v, f"dataset {name!r} {field_} {k!r}")
                             for k, v in entry[field_].items()}
    typed = {k: encode_value(v, f"dataset {name!r}: attribute {k!r}")
             for k, v in (attrs or {}).items() if not isinstance(v, str)}
    if typed:
        entry["attrs"] = {**typed, **entry.get("attrs", {})}
    validate_ext({"datasets": {name: entry}})
    return entry


AttrParts = tuple[dict[str, str], dict[str, Any]]  # (footer string attrs, typed attrs)


def updated_attrs(name: str, old: AttrParts, attrs: Mapping[str, Any], *,
                  replace: bool) -> AttrParts:
    """The attrs of dataset `name` once `attrs` update the `old` ones (or replace them):
    strings that fit the footer's map go there, every other value to the typed metadata
    (`tet.attrs.split_attrs`); refused values raise here, not at commit."""
    where = f"dataset {name!r}"
    values = {} if replace else merge_attrs(*old, where)
    values.update(attrs)
    text, typed = split_attrs(values, where)
    for key, value in text.items():
        checked_text(key, "attr name")
        checked_text(value, f"attr {key!r}")
    validate_ext({"datasets": {name: {"attrs": typed}}})
    return text, typed


def apply_attrs(meta: dict[str, Any], ext_datasets: dict[str, Any], name: str,
                parts: AttrParts) -> None:
    """Put `parts` as the attrs of dataset `name` in the footer metadata `meta` and in
    the typed entries `ext_datasets`, dropping entries left empty."""
    for where, value in ((meta.setdefault("datasets", {}), parts[0]), (ext_datasets, parts[1])):
        entry = {k: v for k, v in where.get(name, {}).items() if k != "attrs"}
        if value:
            entry["attrs"] = value
        if entry:
            where[name] = entry
        else:
            where.pop(name, None)
    if not meta["datasets"]:
        del meta["datasets"]



def deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deep_copy(v) for v in value]
    return value


class TileSink(Protocol):
    """What a `DatasetStream` hands its encoded tiles to: its `tet.writer.TetWriter`."""

    def check_open(self) -> None: ...

    def put_tiles(self, stream: DatasetStream, keys: np.ndarray[Any, Any],
                  payload: np.ndarray[Any, Any], lens: np.ndarray[Any, Any],
                  crc: np.ndarray[Any, Any]) -> None: ...



def codec_tag(name: str) -> int:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r} (use 'raw' or 'zstd')") from None


def default_chunk_shape(shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    """Chunks of at most 8 MiB (whole array when it fits): halve the longest axis
    until the tile fits, so tiles stay roughly square for hyperslab reads."""
    chunk = list(shape)
    while math.prod(chunk) * itemsize > TARGET_CHUNK_BYTES and max(chunk) > 1:
        d = chunk.index(max(chunk))
        chunk[d] = -(-chunk[d] // 2)
    return tuple(chunk)


def _grid(shape: Sequence[int], chunk: Sequence[int]) -> tuple[np.ndarray[Any, Any], ...]:
    """(coords, origin, extent) of every tile, in linear grid order ([n, ndim] each)."""
    counts = tile_counts(shape, chunk)
    coords = np.indices(counts, dtype=np.int64).reshape(len(counts), -1).T
    origin = coords * np.asarray(chunk, dtype=np.int64)
    extent = np.minimum(origin + np.asarray(chunk), np.asarray(shape)) - origin
    return coords, origin, extent


def _windows(raw: np.ndarray[Any, Any]) -> list[slice]:
    """Split tiles into runs of about WINDOW_BYTES (at least one tile each)."""
    edges = np.searchsorted(np.cumsum(raw), np.arange(WINDOW_BYTES, int(raw.sum()), WINDOW_BYTES))
    bounds = sorted({0, *[int(e) + 1 for e in edges], len(raw)})
    return [slice(a, b) for a, b in itertools.pairwise(bounds) if a < b]


def _entries(dataset_id: int, coords: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    e = np.zeros(len(coords), dtype=ENTRY_DTYPE)
    e["dataset_id"] = dataset_id
    e["chunk_index"][:, : coords.shape[1]] = coords
    return e


# ---------------------------------------------------------------------------
# Pending datasets.  Each places its payloads in a store (at commit, or earlier
# while streams fill the output) and knows its index rows there, and the crc32c
# of each row's stored bytes for the file's checksum table (tet/integrity.py).


@dataclass
class Pending:
    record: DatasetRecord
    meta: dict[str, Any]
    store: Store | None = field(default=None, repr=False)
    rows: np.ndarray[Any, Any] | None = field(default=None, repr=False)
    crc: np.ndarray[Any, Any] | None = field(default=None, repr=False)  # uint32, per row
    ext: dict[str, Any] = field(default_factory=dict)  # its `metadata.tet` entry (tet.attrs)

    def emit(self, out: IO[bytes], dataset_id: int,
             at: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Write every payload at `out`'s position (offset `at`), in index order;
        returns the index rows and their checksums."""
        raise NotImplementedError

    def place(self, store: Store, dataset_id: int) -> None:
        """Write the payloads at the end of `store`."""
        at = store.end
        rows, crc = self.emit(store.at_end(), dataset_id, at)
        if len(rows):
            store.end = int(rows["payload_offset"][-1] + rows["stored_byte_len"][-1])
        self.store, self.rows, self.crc = store, rows, crc

    def rows_in(self, out: Store, dataset_id: int) -> np.ndarray[Any, Any]:
        """This dataset's index rows with its payloads in `out`: written there now,
        copied from where they were placed earlier, or already there."""
        if self.store is None:
            self.place(out, dataset_id)
        elif self.store is not out:
            assert self.rows is not None
            self.rows = out.copy_rows(self.store, self.rows,
                                      dtypes.by_tag(self.record.dtype).size)
            self.store = out
        assert self.rows is not None
        rows = self.rows.copy()
        rows["dataset_id"] = dataset_id
        return rows


@dataclass
class ArraySource(Pending):
    array: np.ndarray[Any, Any] = field(default_factory=lambda: np.zeros(0))
    codec: int = 0
    level: int = 0

    def emit(self, out: IO[bytes], dataset_id: int,
             at: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        r = self.record
        coords, origin, extent = _grid(r.shape, r.chunk_shape)
        entries = _entries(dataset_id, coords)
        elem = self.array.dtype.itemsize
        raw = np.prod(extent, axis=1) * elem
        pad = (-at) % elem if self.codec == RAW else 0  # raw tiles start element-aligned
        if pad:
            write_all(out, np.zeros(pad, np.uint8))
            at += pad
        stored = np.zeros(len(coords), dtype=np.uint64)
        crc = np.zeros(len(coords), dtype=np.uint32)
        windows = _windows(raw)
        cap = max(kernels.encode_capacity(self.codec, raw[w]) for w in windows)
        # Two buffers: C encodes window k+1 while a writer thread writes window k.
        buffers = [np.empty(cap, dtype=np.uint8) for _ in range(min(2, len(windows)))]
        busy: list[Future[None] | None] = [None] * len(buffers)
        with writer_pool(f"dataset {r.name!r}") as writer:
            for k, w in enumerate(windows):
                slot = k % len(buffers)
                previous = busy[slot]
                if previous is not None:
                    previous.result()
                payload, lens = kernels.encode(self.array, origin[w], extent[w], codec=self.codec,
                                               level=self.level, scratch=buffers[slot],
                                               checksums=crc[w])
                busy[slot] = writer.submit(write_all, out, payload)
                stored[w] = lens
            for f in busy:
                if f is not None:
                    f.result()
        ends = np.cumsum(stored, dtype=np.uint64)
        entries["payload_offset"] = np.uint64(at) + ends - stored
        entries["raw_byte_len"] = raw
        entries["stored_byte_len"] = stored
        entries["codec"] = self.codec
        return entries, crc

    def place(self, store: Store, dataset_id: int) -> None:
        super().place(store, dataset_id)
        self.array = self.array[:0]  # written: no need to hold the caller's array


@dataclass
class CopiedSource(Pending):
    """A dataset of the file being appended to: payload bytes copied verbatim, with
    the checksums the old file's table recorded for them (`old_crc`), so damage done
    to them since is still seen; computed from the old file (mapped as `buf`) when
    it has no usable table."""

    old: np.ndarray[Any, Any] = field(default_factory=lambda: np.zeros(0, ENTRY_DTYPE))
    fd: int = -1
    old_crc: np.ndarray[Any, Any] | None = field(default=None, repr=False)
    buf: Any = field(default=b"", repr=False)

    def emit(self, out: IO[bytes], dataset_id: int,
             at: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        entries = self.old.copy()
        entries["dataset_id"] = dataset_id
        stored = entries["stored_byte_len"]
        crc = self.old_crc
        if crc is None:
            with watching(self.buf):  # never record checksums of zeros
                crc = kernels_integrity.crc32c_spans(self.buf, len(self.buf),
                                                     entries["payload_offset"], stored)
        dest = aligned_offsets(at, stored, entries["codec"], dtypes.by_tag(self.record.dtype).size)
        copy_runs(self.fd, out, entries["payload_offset"], stored, dest, at)
        entries["payload_offset"] = dest
        return entries, crc


class DatasetStream:
    """A dataset written block by block: ``stream[a:b, :] = block``.

    Blocks may have any position and size; tiles they cover completely are
    encoded at once and written to the session's output file (in the order they
    complete: write in index order to get payloads in index order), tiles they
    cover partly wait in memory until the rest arrives.  Memory stays bounded by
    the blocks in flight.  Elements never written read as 0 (as in h5py and zarr).
    """

    def __init__(self, record: DatasetRecord, dtype: np.dtype[Any], codec: int, level: int,
                 session: TileSink) -> None:
        self.record = record
        self._dtype = dtype
        self._codec = codec
        self._level = level
        self._owner = weakref.ref(session)  # no cycle: a dropped session is freed at once
        self._store: Store | None = None  # where this dataset's tiles go
        self._done: dict[int, tuple[int, int, int]] = {}  # tile -> (offset, length, crc32c)
        self._partial: dict[int, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}
        self._counts = tile_counts(record.shape, record.chunk_shape)
        self._tiles = math.prod(self._counts)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.record.shape

    @property
    def _session(self) -> TileSink:
        session = self._owner()
        if session is None:
            raise RuntimeError(f"the TetWriter session of {self.record.name!r} is gone")
        return session

    @property
    def complete(self) -> bool:
        """Every tile is encoded and placed."""
        return len(self._done) == self._tiles

    def __setitem__(self, key: Any, block: Any) -> None:
        sel = box_from_key(key, self.shape)
        data = np.broadcast_to(np.asarray(block), sel.shape).astype(self._dtype, copy=False)
        if sel.empty:
            return
        if sel.box is None or any(p is not None for p in sel.order):
            raise TypeError("streamed writes take integers, unit-step slices and '...'")
        if any(k != 1 for k in sel.box.step):
            raise ValueError("streamed writes take unit-step regions")
        self.write(np.ascontiguousarray(data.reshape(sel.box.shape)), sel.box.start)

    def write(self, block: np.ndarray[Any, Any], offset: Sequence[int]) -> None:
        """Write a dense block whose first element lands at `offset`."""
        self._session.check_open()
        r = self.record
        block = np.ascontiguousarray(block, dtype=self._dtype)
        if block.ndim != r.ndim or len(offset) != r.ndim:
            raise ValueError(f"block of rank {block.ndim} for a rank-{r.ndim} dataset")
        lo = np.asarray(offset, dtype=np.int64)
        hi = lo + np.asarray(block.shape)
        if (lo < 0).any() or (hi > np.asarray(r.shape)).any():
            raise ValueError(f"block {block.shape} at {tuple(offset)} exceeds shape {r.shape}")
        chunk = np.asarray(r.chunk_shape)
        first, last = lo // chunk, (hi - 1) // chunk
        coords = np.indices(tuple(last - first + 1)).reshape(r.ndim, -1).T + first
        t0 = coords * chunk
        t1 = np.minimum(t0 + chunk, np.asarray(r.shape))
        full = np.all((t0 >= lo) & (t1 <= hi), axis=1)
        linear = np.ravel_multi_index(coords.T, self._counts)
        clash = [int(x) for x in linear if int(x) in self._done]
        if clash:
            c = np.unravel_index(clash[0], self._counts)
            raise ValueError(f"tile {[int(v) for v in c]} of {r.name!r} was already written")
        partial = np.flatnonzero(~full)
        regions = [self._partial_region(int(linear[i]), t0[i], t1[i], lo, hi) for i in partial]
        if full.any():
            crc = np.empty(int(full.sum()), np.uint32)
            payload, lens = kernels.encode(block, t0[full] - lo, t1[full] - t0[full],
                                           codec=self._codec, level=self._level, checksums=crc)
            self._session.put_tiles(self, linear[full], payload, lens, crc)
        for i, (dst, src) in zip(partial, regions):
            self._write_partial(int(linear[i]), t0[i], t1[i], dst, block[src])

    def _partial_region(self, key: int, t0: np.ndarray[Any, Any], t1: np.ndarray[Any, Any],
                        lo: np.ndarray[Any, Any], hi: np.ndarray[Any, Any]) -> tuple[Any, Any]:
        """(slices in the tile, slices in the block) of a partly covered tile; refuses
        overlap with what the tile already holds before anything is written."""
        a, b = np.maximum(lo, t0), np.minimum(hi, t1)
        dst = tuple(slice(int(x), int(y)) for x, y in zip(a - t0, b - t0))
        src = tuple(slice(int(x), int(y)) for x, y in zip(a - lo, b - lo))
        if key in self._partial and self._partial[key][1][dst].any():
            c = [int(v) for v in np.unravel_index(key, self._counts)]
            raise ValueError(f"part of tile {c} of {self.record.name!r} was already written")
        return dst, src

    def _write_partial(self, key: int, t0: np.ndarray[Any, Any], t1: np.ndarray[Any, Any],
                       dst: Any, values: np.ndarray[Any, Any]) -> None:
        if key not in self._partial:
            shape = tuple(int(v) for v in t1 - t0)
            self._partial[key] = (np.zeros(shape, self._dtype), np.zeros(shape, bool))
        tile, mask = self._partial[key]
        tile[dst] = values
        mask[dst] = True
        if mask.all():
            self._encode_tile(key, tile)
            del self._partial[key]

    def _encode_tile(self, key: int, tile: np.ndarray[Any, Any]) -> None:
        origin = np.zeros((1, tile.ndim), dtype=np.int64)
        extent = np.asarray([tile.shape], dtype=np.int64)
        crc = np.empty(1, np.uint32)
        payload, lens = kernels.encode(tile, origin, extent, codec=self._codec, level=self._level,
                                       checksums=crc)
        self._session.put_tiles(self, np.asarray([key]), payload, lens, crc)

    def _finish(self) -> None:
        """Encode what is left, in index order: partly written tiles as they are, never
        written ones as zeros (a window of them per encode call)."""
        if self.complete:
            return
        r = self.record
        _, _, extent = _grid(r.shape, r.chunk_shape)
        raw = np.prod(extent, axis=1) * self._dtype.itemsize
        zeros = np.zeros(r.chunk_shape, self._dtype)
        run: list[int] = []
        run_bytes = 0

        def flush() -> None:
            if run:
                keys = np.asarray(run, np.int64)
                crc = np.empty(len(keys), np.uint32)
                payload, lens = kernels.encode(zeros, np.zeros((len(keys), r.ndim), np.int64),
                                               extent[keys], codec=self._codec,
                                               level=self._level, checksums=crc)
                self._session.put_tiles(self, keys, payload, lens, crc)
                run.clear()

        for key in range(self._tiles):
            if key in self._done:
                continue
            if key in self._partial:
                flush()
                run_bytes = 0
                self._encode_tile(key, self._partial.pop(key)[0])
                continue
            if run and run_bytes + int(raw[key]) > WINDOW_BYTES:
                flush()
                run_bytes = 0
            run.append(key)
            run_bytes += int(raw[key])
        flush()

    def _rows(self, dataset_id: int) -> np.ndarray[Any, Any]:
        """Index rows of the finished stream, offsets in its store."""
        r = self.record
        coords, _, extent = _grid(r.shape, r.chunk_shape)
        entries = _entries(dataset_id, coords)
        spans = np.asarray([self._done[k] for k in range(len(coords))], dtype=np.uint64)
        entries["payload_offset"] = spans[:, 0]
        entries["raw_byte_len"] = np.prod(extent, axis=1) * self._dtype.itemsize
        entries["stored_byte_len"] = spans[:, 1]
        entries["codec"] = self._codec
        return entries

    def append_tiles(self, store_for: Callable[[], Store], keys: np.ndarray[Any, Any],
                     payload: np.ndarray[Any, Any], lens: np.ndarray[Any, Any],
                     crc: np.ndarray[Any, Any]) -> None:
        """Append encoded tiles to this stream's store (``store_for()`` the first time)
        and record where they are and their checksums; the session calls it under its
        lock (`TileSink.put_tiles`)."""
        store = self._store
        if store is None:
            store = self._store = store_for()
        if self._codec == RAW:  # raw tiles start element-aligned
            store.align(self._dtype.itemsize)
        at = store.append(payload)
        starts = np.cumsum(lens) - lens
        for key, off, n, c in zip(keys, starts, lens, crc):
            self._done[int(key)] = (at + int(off), int(n), int(c))

    def _checksums(self) -> np.ndarray[Any, Any]:
        """crc32c of the finished stream's tiles, in index order."""
        return np.asarray([self._done[k][2] for k in range(self._tiles)], dtype=np.uint32)


@dataclass
class StreamSource(Pending):
    stream: DatasetStream | None = None

    def rows_in(self, out: Store, dataset_id: int) -> np.ndarray[Any, Any]:
        assert self.stream is not None
        s = self.stream
        if self.rows is None:
            s._finish()  # into its store, or into `out` if it has none yet
            self.store, self.rows, self.crc = s._store, s._rows(dataset_id), s._checksums()
        return super().rows_in(out, dataset_id)
