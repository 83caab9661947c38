"""Writing: `TetWriter` sessions and the one-shot `write_dataset`.

A session queues datasets (whole arrays, or streamed block by block with
bounded memory) and `commit` finishes the file beside the target, fsyncs it and
renames it into place: a crash never leaves a torn file where a good one was.
Tiling and zstd run in C across all cores, a window of chunks per call.

Payload bytes are written once.  The header's length depends only on the
datasets (one index row per tile), so when the first streamed tile is complete
the session opens its output file (anonymous until commit), reserves the header
and from then on appends every complete tile at its final offset; whole arrays
and copied datasets are placed between the streams in catalog order.  Tiles land
in completion order, so a caller that writes in index order gets payloads back
to back in index order.  `commit` adds what is left, the footer, and the header
at offset 0 last.  A dataset declared after the first streamed tile grows the
header: `commit` then rebuilds the file in index order by copying, which costs
what a spool file would (every payload written twice).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from tet import dtypes
from tet.attrs import EXT_KEY, encode_value, ext_of, validate_ext
from tet.errors import FileChangedError, InvalidTextError, TetError, UnknownDatasetError, os_error
from tet.footer import WRITE_PREFIX, encode_footer, history_row
from tet.guard import watching
from tet.integrity import encode_table, read_table
from tet.layout import CODECS as CODECS
from tet.layout import (
    FLAG_FOOTER,
    Catalog,
    DatasetRecord,
    encode_header,
    header_length,
    tile_counts,
)
from tet.paths import checked_path, open_regular, path_text
from tet.remote_write import UPLOAD_PART_BYTES, RemoteTarget, built_by, remote_target
from tet.safedir import Dir
from tet.safeio import write_error
from tet.tempnames import remove_stale
from tet.writer_store import Store, failed_size, pwrite_all
from tet.writer_store import aligned_offsets as aligned_offsets
from tet.writer_stream import (
    ArraySource,
    AttrParts,
    CopiedSource,
    DatasetStream,
    Pending,
    StreamSource,
    apply_attrs,
    checked_text,
    codec_tag,
    dataset_ext,
    dataset_geometry,
    dataset_meta,
    deep_copy,
    default_chunk_shape,
    refused,
    updated_attrs,
)

__all__ = ["DatasetStream", "TetWriter", "default_chunk_shape", "write_dataset"]

PathLike = str | os.PathLike[str]
Clock = Callable[[], str]
MAX_NAME_BYTES = 1024


def _now() -> str:
    """The default clock: Unix seconds as a decimal string."""
    return str(int(time.time()))


class TetWriter:
    """A write session: queue datasets and history, then `commit` the whole file.

    Use `create` for a new file or `open_append` to add datasets to an existing
    one (its payload bytes are copied verbatim).  As a context manager the
    session commits on a clean exit and discards everything on an exception.
    Streams of one session may be written from several threads.
    """

    def __init__(self, path: PathLike, *, _append: bool = False, tool: str = "tet-py",
                 clock: Clock | None = None, _dir: Dir | None = None,
                 _remote: RemoteTarget | None = None) -> None:
        from tet.reader import Reader  # the reader core sits below us

        # `_remote`: the file is built at its local path and uploaded at commit
        self._remote = _remote
        self._path = (_remote.local if _remote is not None
                      else Path(os.path.expanduser(checked_path(path, "cannot write"))))
        # `_dir`: the target's directory, already opened (and verified) by the caller;
        # every name is then made, renamed and removed relative to it (sidecars)
        self._dir = _dir
        self._clock = clock
        self._pending: list[Pending] = []
        # Output: opened at the first streamed tile, for the datasets declared so far
        # (`_frozen` of them); `_next` is the first of those not yet placed in order.
        self._lock = threading.RLock()
        self._store: Store | None = None
        self._stores: list[Store] = []
        self._frozen = 0
        self._next = 0
        self._in_order = True
        self._closed = False
        self._history: list[dict[str, Any]] = []
        self._old_history: list[dict[str, Any]] = []
        self._metadata: dict[str, Any] = {}
        self._file_attrs: dict[str, Any] | None = None
        self._coord_types: dict[str, dict[str, Any]] = {}
        self._group_attrs: dict[str, dict[str, Any]] = {}
        self._attrs: dict[str, AttrParts] = {}  # set_attrs: the new attrs of a dataset
        self._budget = (0, 0)
        self._tool = tool
        self._committed = False
        self._source: Reader | None = None
        self._queued = 0
        self._source_fd = -1
        if _append:
            self._source = Reader.open(self._path)
            cat = self._source.catalog
            self._old_history = [dict(h) for h in cat.history]
            self._metadata = deep_copy(cat.metadata)
            self._budget = (cat.budget_percent_bps, cat.budget_bytes)
            self._take_existing(cat)

    def _take_existing(self, cat: Catalog) -> None:
        assert self._source is not None
        fd, st = open_regular(self._path)
        if (st.st_dev, st.st_ino) != self._source.source.identity:  # replaced since it was parsed
            os.close(fd)
            self._source.close()
            raise FileChangedError(f"{self._path} was replaced while it was being opened for "
                                   "appending; open it again")
        self._source_fd = fd
        buf = self._source.buffer()
        with watching(buf):  # truncated under us: FileChangedError
            table = read_table(buf, cat)
        old_crc = table.crc if table is not None else None
        for i, record in enumerate(cat.datasets):
            mine = cat.entries["dataset_id"] == i
            rows = cat.entries[mine]
            crc = old_crc[mine] if old_crc is not None else None
            self._pending.append(CopiedSource(record, {}, old=rows, fd=fd, old_crc=crc, buf=buf))

    @classmethod
    def create(cls, path: PathLike, *, tool: str = "tet-py",
               clock: Clock | None = None, _dir: Dir | None = None,
               storage_options: Mapping[str, Any] | None = None, store: Any = None,
               part_bytes: int = UPLOAD_PART_BYTES) -> TetWriter:
        """A session for a new file (created or replaced at `commit`); `tool` is recorded
        as the footer's ``file.tool``.  `clock` gives the time stamped on history rows
        and ``file.created_at`` (Unix seconds as a decimal string; default: now), so a
        caller can make output reproducible.

        A URL `path` (``s3://b/k.tet``, ``gs://…``, ``az://…``; a key with `store`) is
        built in the cache and uploaded at `commit` (`tet.remote_write`)."""
        remote = remote_target(path, storage_options, store, part_bytes, append=False)
        with built_by(remote):
            return cls(path, tool=tool, clock=clock, _dir=_dir, _remote=remote)

    @classmethod
    def open_append(cls, path: PathLike, *, clock: Clock | None = None,
                    storage_options: Mapping[str, Any] | None = None, store: Any = None,
                    part_bytes: int = UPLOAD_PART_BYTES) -> TetWriter:
        """A session that keeps the datasets, history, metadata and settings of `path`;
        a URL is downloaded, and uploaded at `commit` only if its ETag is unchanged."""
        remote = remote_target(path, storage_options, store, part_bytes, append=True)
        with built_by(remote):
            return cls(path, _append=True, clock=clock, _remote=remote)

    @property
    def path(self) -> Path:
        """The file written (for a remote write: the local build, gone after commit)."""
        return self._path

    @property
    def url(self) -> str | None:
        """The object a remote write uploads to (credentials removed); None when local."""
        return self._remote.url if self._remote is not None else None

    @property
    def dataset_count(self) -> int:
        """Datasets queued in this session (not counting those already in the file)."""
        return self._queued

    def _stamp(self) -> str:
        return self._clock() if self._clock is not None else _now()

    def __enter__(self) -> TetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None and not self._committed:
            self.commit()
        else:
            self.abort()

    # -- queueing -----------------------------------------------------------
    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise refused("dataset name must be a non-empty string")
        if len(checked_text(name, "dataset name").encode("utf-8")) > MAX_NAME_BYTES:
            raise refused(f"dataset name exceeds {MAX_NAME_BYTES} bytes")
        for p in self._pending:
            if p.record.name == name:
                which = "exists in file" if isinstance(p, CopiedSource) else "queued in session"
                raise refused(f"dataset name already {which}: {name!r}")

    def write_dataset(
        self,
        name: str,
        array: Any,
        *,
        chunk_shape: Sequence[int] | None = None,
        attrs: Mapping[str, Any] | None = None,
        dim_names: Sequence[str] | None = None,
        coords: Mapping[str, Sequence[str]] | None = None,
        codec: str = "raw",
        level: int = 0,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue a whole array (any of the ten dtypes; bool is stored as u8).

        Parameters
        ----------
        chunk_shape : tile extent per axis; default tiles of at most 8 MiB.
        attrs : the footer attributes (layout.md §5.2 limits: 64 keys, 1024 bytes);
            strings as they are, other values (numbers, arrays, bytes, lists) as their
            display text, their typed values kept beside it (`tet.attrs`).
        dim_names, coords : axis names, and per-axis coordinate labels.
        codec : "raw" or "zstd"; level is the zstd level (0 = library default).
        extra : the dataset's typed-metadata fields (`tet.attrs`): ``attrs`` (typed
            attributes the footer's string map cannot hold: longer strings, past 64
            keys; any values), ``encoding``, ``shape`` (``[]``: 0-d), ``text``.
        """
        arr = np.asarray(array)
        wire = dtypes.for_numpy(arr.dtype)
        self._check_name(name)
        shape, chunk = dataset_geometry(name, arr.shape, wire.size, chunk_shape)
        codec_id = codec_tag(codec)
        data = arr.view(np.uint8) if arr.dtype.kind == "b" else arr.astype(wire.numpy, copy=False)
        meta = dataset_meta(name, shape, attrs, dim_names, coords)
        record = DatasetRecord(name, wire.tag, shape, chunk)
        source = ArraySource(record, meta, array=np.ascontiguousarray(data), codec=codec_id,
                              level=int(level))
        source.ext = dataset_ext(name, attrs, extra)
        self._queue(source)

    def create_dataset(
        self,
        name: str,
        shape: Sequence[int],
        dtype: Any,
        *,
        chunk_shape: Sequence[int] | None = None,
        attrs: Mapping[str, Any] | None = None,
        dim_names: Sequence[str] | None = None,
        coords: Mapping[str, Sequence[str]] | None = None,
        codec: str = "raw",
        level: int = 0,
        extra: Mapping[str, Any] | None = None,
    ) -> DatasetStream:
        """Declare a dataset by shape and dtype and return a stream to write it
        block by block (``stream[i:j] = block``) with bounded memory.  The other
        parameters are `write_dataset`'s."""
        wire = dtypes.for_numpy(dtype)
        self._check_name(name)
        shape_t, chunk = dataset_geometry(name, shape, wire.size, chunk_shape)
        meta = dataset_meta(name, shape_t, attrs, dim_names, coords)
        record = DatasetRecord(name, wire.tag, shape_t, chunk)
        stream = DatasetStream(record, wire.numpy, codec_tag(codec), int(level), self)
        self._queue(StreamSource(record, meta, stream=stream,
                                  ext=dataset_ext(name, attrs, extra)))
        return stream

    def _queue(self, source: Pending) -> None:
        with self._lock:  # streams of this session may be writing on other threads
            self._check_name(source.record.name)
            self._pending.append(source)
            self._queued += 1

    def set_file_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Replace the file-level attributes (any values `tet.attrs` can type: strings,
        numbers, arrays, bytes, lists), kept in the footer's typed metadata."""
        typed = {}
        for key, value in attrs.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"file attribute names must be non-empty strings, got {key!r}")
            typed[key] = encode_value(value, f"file attribute {key!r}")
        validate_ext({"attrs": typed})
        with self._lock:
            self.check_open()
            self._file_attrs = typed

    def set_attrs(self, name: str, attrs: Mapping[str, Any], *, replace: bool = False) -> None:
        """Update the attributes of dataset `name` (of the file or queued): the keys of
        `attrs` are set, the others kept (``replace=True``: `attrs` becomes the whole map).
        Values are typed as `write_dataset`'s ``attrs=``; the file changes only at
        `commit`, atomically.  An unknown name is `UnknownDatasetError`."""
        with self._lock:
            self.check_open()
            p = next((p for p in self._pending if p.record.name == name), None)
            if p is None:
                raise UnknownDatasetError(name, path=self._path,
                                          available=[p.record.name for p in self._pending])
            old = self._attrs.get(name)
            if old is None and isinstance(p, CopiedSource):
                old = (self._metadata.get("datasets", {}).get(name, {}).get("attrs", {}),
                       ext_of(self._metadata).get("datasets", {}).get(name, {}).get("attrs", {}))
            elif old is None:
                old = (p.meta.get("attrs", {}), p.ext.get("attrs", {}))
            self._attrs[name] = updated_attrs(name, old, attrs, replace=replace)

    def set_coord_types(self, coords: Mapping[str, Mapping[str, Any]]) -> None:
        """How the footer ``coords`` labels of each dimension read back, kept in the
        footer's typed metadata (``tet.coords``): ``{dim: {"dtype": "<numpy dtype name>",
        "attrs": {...}}}`` (both optional; attrs typed as `set_file_attrs`'s; an empty entry:
        plain string labels).  Replaces the entries of the dimensions named; the others
        are kept."""
        entries: dict[str, dict[str, Any]] = {}
        for dim, spec in coords.items():
            entry: dict[str, Any] = {}
            if spec.get("dtype") is not None:
                entry["dtype"] = str(spec["dtype"])
            if spec.get("attrs"):
                entry["attrs"] = {k: encode_value(v, f"coordinate {dim!r} attribute {k!r}")
                                  for k, v in spec["attrs"].items()}
            entries[str(dim)] = entry
        validate_ext({"coords": entries})
        with self._lock:
            self.check_open()
            self._coord_types.update(entries)

    def set_group_attrs(self, group: str, attrs: Mapping[str, Any]) -> None:
        """Replace the attributes of the group `group` (the datasets named
        ``group/...``), kept in the footer's typed metadata (``tet.groups``)."""
        path = str(group).strip("/")
        if not path:
            self.set_file_attrs(attrs)
            return
        typed = {}
        for key, value in attrs.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"group {path!r} attribute names must be non-empty strings, "
                                f"got {key!r}")
            typed[key] = encode_value(value, f"group {path!r} attribute {key!r}")
        validate_ext({"groups": {path: {"attrs": typed}}})
        with self._lock:
            self.check_open()
            self._group_attrs[path] = typed

    def push_history_event(self, op: str, source: str, *, parents: Iterable[str] = (),
                           params: Mapping[str, str] | None = None) -> None:
        """Queue a history row (``at`` = now, Unix seconds)."""
        for what, text in (("history op", op), ("history source", source),
                           *(("history parent", str(p)) for p in parents),
                           *(("history param", f"{k}={v}") for k, v in (params or {}).items())):
            if isinstance(text, str):
                checked_text(text, what)
        self._history.append(history_row(op, source, self._stamp(), parents, params))

    def set_execution(self, *, memory_budget_bytes: int = 0,
                      memory_budget_percent_bps: int = 0) -> None:
        """The file's default memory budget (TIDX fields; 0 = engine default)."""
        if not 0 <= memory_budget_bytes < 2**32:
            raise ValueError("memory_budget_bytes must fit in u32")
        if not 0 <= memory_budget_percent_bps <= 10_000:
            raise ValueError("memory_budget_percent_bps must be in 0..10000")
        self._budget = (memory_budget_percent_bps, memory_budget_bytes)

    # -- placement ----------------------------------------------------------
    def check_open(self) -> None:
        """Refuse work once the session is committed or aborted (`TileSink`)."""
        if self._closed:
            raise RuntimeError("TetWriterSession already committed or aborted")

    def _freeze(self) -> Store:
        """Open the output for the datasets declared so far: their header length is
        known (one index row per tile), so payloads can go to their final offsets."""
        records = [p.record for p in self._pending]
        tiles = sum(math.prod(tile_counts(r.shape, r.chunk_shape)) for r in records)
        with contextlib.suppress(OSError):
            remove_stale(self._dir or self._path.parent, self._path.name)
        store = self._store = Store(self._path, header_length(records, tiles), anonymous=True,
                                     directory=self._dir)
        self._stores.append(store)
        self._frozen = len(self._pending)
        self._advance()
        return store

    def _advance(self) -> None:
        """Place whole arrays and copied datasets as soon as every dataset before them
        in catalog order is complete, so payloads written in index order stay in
        index order."""
        while self._in_order and self._store is not None and self._next < self._frozen:
            p = self._pending[self._next]
            if isinstance(p, StreamSource):
                assert p.stream is not None
                if not p.stream.complete:
                    return
            elif p.store is None:
                p.place(self._store, self._next)
            self._next += 1

    def put_tiles(self, stream: DatasetStream, keys: np.ndarray[Any, Any],
                  payload: np.ndarray[Any, Any], lens: np.ndarray[Any, Any],
                  crc: np.ndarray[Any, Any]) -> None:
        """Append encoded tiles of `stream` to its store and record where they are
        (and their checksums) (`TileSink`)."""
        try:
            with self._lock:
                self.check_open()
                stream.append_tiles(lambda: self._store or self._freeze(), keys, payload,
                                    lens, crc)
                self._advance()
        except OSError as exc:
            raise os_error(exc, "cannot write", self._path, size=failed_size(exc)) from exc

    # -- commit -------------------------------------------------------------
    def commit(self, *, fsync: bool = True) -> Path | str:
        """Finish the file beside the target and rename it into place; returns its path
        (for a remote write: uploads it, removes the local build and returns the URL).
        `fsync=False` skips the file and directory syncs (faster; not crash safe)."""
        fsync = fsync and self._remote is None  # a local build before an upload: no sync
        if self._committed:
            raise RuntimeError("TetWriterSession already committed")
        if not self._pending:
            raise refused("at least one dataset is required")
        self._committed = True
        try:
            with self._lock:
                self._in_order = False
                out = self._write(fsync)
                out = out.named(fsync, self._stores)
                out.publish(fsync)
        except OSError as exc:
            # a full disk: the bytes of the write that failed, else the whole output
            size = failed_size(exc, self._stores[-1].end if self._stores else None)
            self._release()
            if self._dir is not None:  # says so when another process removed the directory
                raise write_error(exc, self._dir, "cannot write", self._path, size) from exc
            raise os_error(exc, "cannot write", self._path, size=size) from exc
        except BaseException:
            self._release()
            raise
        if self._remote is not None:
            try:
                self._remote.upload()
            finally:
                self._release()
            return self._remote.url
        self._release()
        return self._path

    def abort(self) -> None:
        """Discard the session; nothing is written (and nothing is left behind)."""
        self._committed = True
        self._release()

    def _release(self) -> None:
        with self._lock:
            self._closed = True
            for store in self._stores:
                store.discard()
            self._stores.clear()
            self._store = None
            if self._source_fd >= 0:
                os.close(self._source_fd)
                self._source_fd = -1
            if self._source is not None:
                self._source.close()
                self._source = None
            if self._remote is not None:
                self._remote.cleanup()

    def _footer_parts(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        history = self._old_history + (
            self._history or [history_row("write", self.url or path_text(self._path),
                                          self._stamp())]
        )
        meta = deep_copy(self._metadata)
        ext = meta.pop(EXT_KEY, {})
        old = ext.get("datasets", {})
        ext["datasets"] = {}
        for p in self._pending:
            if p.meta:
                meta.setdefault("datasets", {})[p.record.name] = p.meta
            entry = old.get(p.record.name) if isinstance(p, CopiedSource) else p.ext
            if entry:
                ext["datasets"][p.record.name] = entry
            if p.record.name in self._attrs:
                apply_attrs(meta, ext["datasets"], p.record.name, self._attrs[p.record.name])
        if self._file_attrs is not None:
            ext["attrs"] = self._file_attrs
        if self._coord_types:
            coords = {**ext.get("coords", {}), **self._coord_types}
            ext["coords"] = {d: e for d, e in coords.items() if e}  # {}: plain string labels
        if self._group_attrs:
            groups = {**ext.get("groups", {}), **{g: {"attrs": a} for g, a in
                                                   self._group_attrs.items()}}
            ext["groups"] = {g: e for g, e in groups.items() if e.get("attrs")}
        if any(ext.values()):
            meta[EXT_KEY] = ext
        file_meta = meta.setdefault("file", {})
        from tet.version import __version__

        file_meta["tool"] = self._tool
        file_meta["library_version"] = __version__
        file_meta.setdefault("created_at", self._stamp())
        return history, meta

    def _output(self, head_len: int) -> Store:
        """The file to finish: the one streams filled, when its reserved header is
        still right; else a new one, into which what was placed is copied in index
        order.  Stale temps of the target (their writers gone) are removed first."""
        old = self._store
        if old is not None and old.base == head_len:
            return old
        if old is None:
            with contextlib.suppress(OSError):
                remove_stale(self._dir or self._path.parent, self._path.name)
        out = self._store = Store(self._path, head_len, anonymous=True, directory=self._dir)
        self._stores.append(out)
        return out

    def _write(self, fsync: bool) -> Store:
        records = [p.record for p in self._pending]
        counts = [math.prod(tile_counts(r.shape, r.chunk_shape)) for r in records]
        head_len = header_length(records, sum(counts))
        history, meta = self._footer_parts()
        out = self._output(head_len)
        parts, crcs = [], []
        for i, p in enumerate(self._pending):
            e = p.rows_in(out, i)
            if len(e) != counts[i]:
                raise TetError(f"{p.record.name!r}: {len(e)} tiles, expected {counts[i]}")
            assert p.crc is not None and len(p.crc) == len(e)
            parts.append(e)
            crcs.append(p.crc)
        entries = np.concatenate(parts)
        table = encode_table(np.concatenate(crcs), entries)
        try:
            footer = encode_footer(history, meta, out.end, table)
        except UnicodeEncodeError as exc:  # text the appended file's footer carried
            raise InvalidTextError(f"{WRITE_PREFIX}footer text is not valid UTF-8: "
                                   f"{exc.reason} in {exc.object[:80]!r}") from None
        out.append(footer)
        out.flush()
        bps, budget = self._budget
        header = encode_header(records, entries, flags=FLAG_FOOTER if footer else 0,
                               budget_percent_bps=bps, budget_bytes=budget)
        assert len(header) == head_len
        pwrite_all(out.fileno(), header, 0)
        if fsync:
            os.fsync(out.fileno())
        return out


def write_dataset(
    path: PathLike,
    name: str,
    array: Any,
    *,
    chunk_shape: Sequence[int] | None = None,
    attrs: Mapping[str, Any] | None = None,
    dim_names: Sequence[str] | None = None,
    coords: Mapping[str, Sequence[str]] | None = None,
    history_op: str | None = None,
    history_source: str | None = None,
    codec: str = "raw",
    level: int = 0,
    storage_options: Mapping[str, Any] | None = None,
    store: Any = None,
) -> Path | str:
    """Write a one-dataset file (replacing `path`) and return its path (or its URL,
    uploaded as `TetWriter.create` does)."""
    w = TetWriter.create(path, storage_options=storage_options, store=store)
    if history_op is not None:
        w.push_history_event(history_op, history_source or w.url or path_text(w.path))
    w.write_dataset(name, array, chunk_shape=chunk_shape, attrs=attrs, dim_names=dim_names,
                    coords=coords, codec=codec, level=level)
    return w.commit()

