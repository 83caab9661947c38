"""`.tet` → Zarr v3 directory store (cli.md §7, with decision 28: edge chunks padded).

Every dataset becomes one Zarr array; slashes in its name become nested groups.  The
store is written by hand (JSON documents and chunk files), so exporting needs no Zarr
library.  Zarr requires every chunk file to hold a full ``chunk_shape`` tile, while a
``.tet`` edge tile is ragged: interior tiles whose codec already matches are copied byte
for byte (zstd frames stay compressed), edge tiles and tiles changing codec are decoded,
padded with the fill value (0) and encoded again.

The store is built in a hidden directory beside the target and renamed onto it only when
complete and fsynced: a failure or Ctrl-C never leaves a half-written store, and an
existing empty target directory is replaced atomically.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tet import dtypes, kernels
from tet.durable import fsync_dir
from tet.errors import OS_ERRORS, DiskFullError, TetError
from tet.file import TetFile
from tet.layout import DatasetRecord, tile_counts
from tet.query.budget import WORK_FLOOR, require_memory
from tet.safeio import checked_path, remove_stale, temp_name

__all__ = ["CODEC_CHOICES", "ZARR_DATA_TYPES", "ExportDiskFullError", "ExportError",
           "ExportReport", "export"]

PathLike = str | os.PathLike[str]
CODEC_CHOICES = ("keep", "raw", "zstd")
ZARR_DATA_TYPES: Mapping[str, str] = {
    "f32": "float32", "f64": "float64", "i32": "int32", "i64": "int64", "u8": "uint8",
    "u16": "uint16", "i16": "int16", "u32": "uint32", "f16": "float16", "u64": "uint64",
}
RAW, ZSTD = 0, 1
_PREFIX = "Zarr export failed: "
_BYTES_CODEC = {"name": "bytes", "configuration": {"endian": "little"}}
_ZSTD_CODEC = {"name": "zstd", "configuration": {"level": 0, "checksum": False}}
_RESERVED_PARTS = ("", ".", "..", "zarr.json")
_COPY_BLOCK = 16 * 1024 * 1024


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


class _WriteFailed(OSError):
    """A file of the store that could not be written, and its size."""

    def __init__(self, exc: OSError, path: Path, size: int) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc), exc.filename or str(path))
        self.size = size


@dataclass(frozen=True)
class ExportReport:
    """What `export` wrote.

    Attributes
    ----------
    input, output : the paths as given.
    datasets : the exported dataset names, in catalog order.
    chunks : chunk files written (every tile of every dataset).
    copied_chunks : chunk files copied byte for byte from the ``.tet`` payloads.
    encoded_chunks : chunk files decoded, padded and/or re-encoded (edge tiles, codec changes).
    bytes_written : bytes of chunk files.
    elapsed_secs : wall time of the whole export.
    """

    input: Path
    output: Path
    datasets: tuple[str, ...]
    chunks: int
    copied_chunks: int
    encoded_chunks: int
    bytes_written: int
    elapsed_secs: float

    def summary_line(self, output: str | None = None) -> str:
        """``exported <n> dataset(s), <m> chunk(s) → <output> (<secs>s)`` (cli.md §7)."""
        where = self.output if output is None else output
        return (f"exported {len(self.datasets)} dataset(s), {self.chunks} chunk(s) → {where} "
                f"({self.elapsed_secs:.2f}s)")


@dataclass(frozen=True)
class _Array:
    """One dataset planned for export: where it goes and how its tiles are written."""

    name: str
    record: DatasetRecord
    parts: tuple[str, ...]
    table: kernels.TileTable
    codec: int
    attrs: dict[str, str]
    dim_names: list[str] | None

    @property
    def dtype(self) -> np.dtype[Any]:
        return dtypes.by_tag(self.record.dtype).numpy

    @property
    def tile_memory(self) -> int:
        """Bytes a tile that is not copied verbatim needs: the chunk padded to its full
        extent, the ragged part read into it, and its zstd encoding."""
        return 3 * math.prod(self.record.chunk_shape) * self.dtype.itemsize

    @property
    def in_flight(self) -> int:
        """Tiles that may be in memory at once within the memory budget (at least one)."""
        return max(1, max(self.table.budget(), WORK_FLOOR) // max(1, self.tile_memory))


def _fail(message: str, dataset: str | None = None) -> ExportError:
    return ExportError(_PREFIX + message, dataset=dataset)


def _os_text(exc: OSError, shown: Callable[[str], str]) -> str:
    text = exc.strerror or str(exc)
    return f"cannot write {shown(os.fspath(exc.filename))}: {text}" if exc.filename else text


def _os_fail(exc: OSError, text: str, shown: Callable[[str], str],
             dataset: str | None = None) -> ExportError:
    """`_fail(text)`; a full disk is `ExportDiskFullError`, with the size of the file
    whose write failed in `size` and in the message."""
    code = exc.errno
    if code is None or OS_ERRORS.get(code) is not DiskFullError:
        return _fail(text, dataset)
    size = exc.size if isinstance(exc, _WriteFailed) else None
    where = shown(os.fspath(exc.filename)) if exc.filename else None
    return ExportDiskFullError(_PREFIX + text + (f" ({size} bytes)" if size is not None else ""),
                               dataset=dataset, errno=code, strerror=exc.strerror,
                               filename=where, size=size)


def _dataset_fail(name: str, exc: BaseException,
                  shown: Callable[[str], str] = str) -> ExportError:
    text = _os_text(exc, shown) if isinstance(exc, OSError) else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if isinstance(exc, OSError):
        return _os_fail(exc, f"dataset `{name}`: {first}", shown, name)
    return _fail(f"dataset `{name}`: {first}", name)


# ---------------------------------------------------------------------------
# Planning: everything that can be refused is refused before a byte is written.


def _node_parts(name: str) -> tuple[str, ...]:
    parts = tuple(name.split("/"))
    bad = [p for p in parts if p in _RESERVED_PARTS or "\0" in p or "\\" in p]
    if bad:
        raise _fail(f"dataset `{name}` cannot be a Zarr node path: component {bad[0]!r} is not "
                    "allowed (empty, '.', '..', 'zarr.json', NUL or backslash); rename it "
                    "in the .tet file first", name)
    return parts


def _codec_of(name: str, table: kernels.TileTable, choice: str) -> int:
    if choice == "raw":
        return RAW
    if choice == "zstd":
        return ZSTD
    present = set(np.unique(table.codec).tolist()) - {kernels.TileTable.MISSING}
    if present == {RAW, ZSTD}:
        raise _fail(f"dataset `{name}` mixes raw and zstd chunk codecs; re-export with one "
                    "codec", name)
    return ZSTD if present == {ZSTD} else RAW


def _plan(f: TetFile, choice: str) -> tuple[list[_Array], list[tuple[str, ...]]]:
    """The arrays in catalog order and the intermediate groups (parents before children)."""
    arrays: list[_Array] = []
    array_paths: dict[tuple[str, ...], str] = {}
    groups: dict[tuple[str, ...], str] = {}
    for dataset_id, record in enumerate(f.catalog.datasets):
        name = record.name
        parts = _node_parts(name)
        if parts in array_paths:
            raise _fail(f"dataset `{name}` appears twice in the catalog", name)
        if parts in groups:
            raise _fail(f"dataset `{name}` is also the group of dataset `{groups[parts]}`", name)
        for k in range(1, len(parts)):
            prefix = parts[:k]
            if prefix in array_paths:
                raise _fail(f"dataset `{name}` would nest under dataset "
                            f"`{array_paths[prefix]}`, which is an array", name)
            groups.setdefault(prefix, name)
        array_paths[parts] = name
        try:
            table = f._table(dataset_id)
            dtypes.by_tag(record.dtype)
        except TetError as exc:
            raise _dataset_fail(name, exc) from exc
        ds = f.dataset(dataset_id)
        dims = list(ds.dim_names) if ds.dim_names and len(ds.dim_names) == ds.ndim else None
        arrays.append(_Array(name, record, parts, table, _codec_of(name, table, choice),
                             dict(ds.attrs), dims))
    return arrays, sorted(groups, key=len)


def _array_document(a: _Array) -> dict[str, Any]:
    """The array's ``zarr.json`` (cli.md §7; ``dimension_names`` when the footer has them)."""
    wire = dtypes.by_tag(a.record.dtype)
    attrs: dict[str, str] = {"tetration_dtype": wire.name, **a.attrs}
    attrs["tetration_dtype"] = wire.name  # the stored dtype wins over a stale footer attr
    doc: dict[str, Any] = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(a.record.shape),
        "data_type": ZARR_DATA_TYPES[wire.name],
        "chunk_grid": {"name": "regular",
                       "configuration": {"chunk_shape": list(a.record.chunk_shape)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0 if wire.numpy.kind == "f" else 0,
        "codecs": [_BYTES_CODEC, _ZSTD_CODEC] if a.codec == ZSTD else [_BYTES_CODEC],
        "attributes": attrs,
    }
    if a.dim_names is not None:
        doc["dimension_names"] = a.dim_names
    doc["storage_transformers"] = []
    return doc


# ---------------------------------------------------------------------------
# Writing.


def _write_fd(fd: int, data: memoryview) -> None:
    while len(data):
        done = os.write(fd, data)
        if done <= 0:
            raise OSError(errno.EIO, "short write")
        data = data[done:]


def _copy_span(src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    """Copy a payload span between files in the kernel when it can (no user-space copy)."""
    pos, left = offset, length
    while left > 0:
        try:
            done = os.copy_file_range(src_fd, dst_fd, min(left, _COPY_BLOCK), pos)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                                 errno.EPERM):
                raise
            done = 0
        if done <= 0:  # unsupported here, or nothing copied: plain reads and writes
            chunk = os.pread(src_fd, min(left, _COPY_BLOCK), pos)
            if not chunk:
                raise OSError(errno.EIO, f"source ended early at offset {pos}")
            _write_fd(dst_fd, memoryview(chunk))
            done = len(chunk)
        pos += done
        left -= done


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)


def _write_file(path: Path, data: bytes | memoryview, fsync: bool) -> None:
    try:
        fd = _create(path)
        try:
            _write_fd(fd, memoryview(data))
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _WriteFailed(exc, path, memoryview(data).nbytes) from exc


def _write_json(path: Path, doc: Mapping[str, Any], fsync: bool) -> None:
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # text UTF-8 cannot hold (a lone surrogate): JSON escapes
        data = (json.dumps(doc, indent=2, ensure_ascii=True) + "\n").encode("ascii")
    _write_file(path, data, fsync)


@dataclass(frozen=True)
class _Tile:
    array: _Array
    linear: int
    coords: tuple[int, ...]
    path: Path


def _padded(a: _Array, t: _Tile) -> np.ndarray[Any, Any]:
    """The tile decoded into a full chunk, the part past the array's end left at 0."""
    chunk = a.record.chunk_shape
    start = [c * k for c, k in zip(t.coords, chunk)]
    stop = [min(s + k, n) for s, k, n in zip(start, chunk, a.record.shape)]
    out = np.zeros(chunk, dtype=a.dtype)
    full = all(e - s == k for s, e, k in zip(start, stop, chunk))
    dst = out if full else np.empty([e - s for s, e in zip(start, stop)], dtype=a.dtype)
    a.table.read(start, stop, [1] * len(chunk), dst)
    if not full:
        out[tuple(slice(0, n) for n in dst.shape)] = dst
    return out


def _write_tile(t: _Tile, src_fd: int, fsync: bool) -> tuple[int, bool]:
    """Write one chunk file; (bytes written, copied verbatim?).  An OS failure names
    the chunk file (a write's own error has no file name)."""
    try:
        return _write_tile_at(t, src_fd, fsync)
    except OSError as exc:
        if not exc.filename:
            exc.filename = str(t.path)
        raise


def _write_tile_at(t: _Tile, src_fd: int, fsync: bool) -> tuple[int, bool]:
    a, i = t.array, t.linear
    tbl = a.table
    expected = math.prod(a.record.chunk_shape) * a.dtype.itemsize
    verbatim = (int(tbl.codec[i]) == a.codec and int(tbl.raw[i]) == expected
                and tbl.tile_size(i) * a.dtype.itemsize == expected)
    if verbatim:
        try:
            fd = _create(t.path)
            try:
                _copy_span(src_fd, fd, int(tbl.offset[i]), int(tbl.stored[i]))
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _WriteFailed(exc, t.path, int(tbl.stored[i])) from exc
        return int(tbl.stored[i]), True
    require_memory(a.tile_memory, a.table.budget(),
                   f"chunk {list(t.coords)} (chunk_shape {list(a.record.chunk_shape)} "
                   f"padded, and encoded)",
                   "export on a host with more memory, or rewrite the file with smaller "
                   "chunks")
    tile = _padded(a, t)
    if a.codec == ZSTD:
        ndim = tile.ndim
        payload, _ = kernels.encode(tile, np.zeros((1, ndim), np.int64),
                                    np.asarray([tile.shape], np.int64), codec=ZSTD, level=0)
        data = memoryview(payload.data)
    else:
        data = memoryview(tile.data).cast("B")
    _write_file(t.path, data, fsync)
    return len(data), False


def _tiles(a: _Array, root: Path, made: set[Path]) -> Iterator[_Tile]:
    """Every tile in grid order, with its chunk file path (parent directories created)."""
    counts = tile_counts(a.record.shape, a.record.chunk_shape)
    base = root.joinpath(*a.parts, "c")
    for linear, coords in enumerate(np.ndindex(*counts)):
        parent = base.joinpath(*(str(c) for c in coords[:-1]))
        if parent not in made:
            parent.mkdir(parents=True, exist_ok=True)
            made.add(parent)
        yield _Tile(a, linear, tuple(coords), parent / str(coords[-1]))



@dataclass
class _Counts:
    chunks: int = 0
    copied: int = 0
    nbytes: int = 0


def _write_arrays(arrays: Sequence[_Array], root: Path, src_fd: int, fsync: bool,
                  progress: Callable[[int], object] | None, made: set[Path],
                  shown: Callable[[str], str]) -> _Counts:
    """Chunk files of every array, on a thread pool (I/O, zstd and decoding release the
    GIL); at most a few tiles are in flight, so memory stays bounded."""
    counts = _Counts()
    workers = min(kernels.thread_count(), 16)
    pending: deque[tuple[str, Future[tuple[int, bool]]]] = deque()

    def settle() -> None:
        name, fut = pending.popleft()
        try:
            nbytes, copied = fut.result()
        except Exception as exc:
            raise _dataset_fail(name, exc, shown) from exc
        counts.chunks += 1
        counts.copied += copied
        counts.nbytes += nbytes
        if progress is not None:
            progress(1)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tet-export")
    try:
        for a in arrays:
            try:
                root.joinpath(*a.parts).mkdir()
                _write_json(root.joinpath(*a.parts, "zarr.json"), _array_document(a), fsync)
                limit = min(2 * workers, a.in_flight)
                for tile in _tiles(a, root, made):
                    while len(pending) >= limit:
                        settle()
                    pending.append((a.name, pool.submit(_write_tile, tile, src_fd, fsync)))
            except OSError as exc:
                raise _dataset_fail(a.name, exc, shown) from exc
        while pending:
            settle()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return counts


# ---------------------------------------------------------------------------
# The target directory.


def _check_target(given: str, target: Path) -> Path:
    """The directory to replace (a symlink's destination); refuses a non-empty one."""
    if target.is_symlink():
        target = target.resolve()
    if not target.exists():
        return target
    if not target.is_dir():
        raise ExportError(f"export output `{given}` exists and is not a directory")
    with os.scandir(target) as it:
        if any(True for _ in it):
            raise ExportError(f"export output `{given}` exists and is not empty")
    return target


def _missing_ancestors(path: Path) -> list[Path]:
    out = []
    p = path.absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def _swap(tmp: Path, target: Path, given: str) -> None:
    """Rename the finished store onto the target (an empty directory is replaced)."""
    existed = target.is_dir()
    if existed:
        with contextlib.suppress(OSError):
            shutil.copymode(target, tmp)
        if os.name == "nt":  # Windows will not rename onto a directory
            target.rmdir()
    try:
        os.replace(tmp, target)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise ExportError(f"export output `{given}` exists and is not empty") from exc
        raise


def export(src: PathLike, dst: PathLike, *, codec: str = "keep",
           progress: Callable[[int], object] | None = None, fsync: bool = True
           ) -> ExportReport:
    """Export every dataset of a ``.tet`` file into a new Zarr v3 directory store.

    Parameters
    ----------
    src : the ``.tet`` file.
    dst : the store directory; it must not exist (it is created, parents too) or be empty.
    codec : "keep" (default) writes each dataset with the codec its chunks have in the
        ``.tet`` file (a dataset mixing raw and zstd chunks is refused); "raw" or "zstd"
        converts every chunk to that codec.
    progress : called with 1 after each chunk file is written (a progress bar's update).
    fsync : flush every file and directory before the store is renamed into place.

    Returns
    -------
    ExportReport

    Raises
    ------
    ExportError
        The output exists and is not empty, the file has no datasets, a dataset cannot be
        exported (its name is in the message and in ``.dataset``), or writing failed.
        The target is left as it was and no temp directory remains.
    CatalogError, FileNotFoundError
        The input cannot be opened.
    """
    if codec not in CODEC_CHOICES:
        raise ValueError(f"unknown export codec {codec!r} (use one of {', '.join(CODEC_CHOICES)})")
    started = time.perf_counter()
    src_text = checked_path(src, "cannot open")
    dst_text = checked_path(dst, "cannot export to")
    with TetFile(src) as f:
        target = _check_target(dst_text, Path(os.path.expanduser(dst_text)))
        if not f.catalog.datasets:
            raise ExportError(f"no datasets in {src_text}")
        arrays, groups = _plan(f, codec)
        created = _missing_ancestors(target.parent)
        tmp = target.parent / temp_name("export", target.name)  # names its owner

        def shown(path: str) -> str:  # messages name the store's path, not the temp one
            return dst_text + path[len(str(tmp)):] if path.startswith(str(tmp)) else path

        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale(target.parent, target.name)  # stores killed exports left
            tmp.mkdir()
            made: set[Path] = set()
            _write_json(tmp / "zarr.json", {"zarr_format": 3, "node_type": "group",
                                            "attributes": {"tetration_export": _version()}},
                        fsync)
            for g in groups:
                tmp.joinpath(*g).mkdir()
                _write_json(tmp.joinpath(*g, "zarr.json"),
                            {"zarr_format": 3, "node_type": "group"}, fsync)
            src_fd = os.open(f.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            try:
                counts = _write_arrays(arrays, tmp, src_fd, fsync, progress, made, shown)
            finally:
                os.close(src_fd)
            if fsync:
                dirs = {tmp, *made, *(tmp.joinpath(*g) for g in groups)}
                for a in arrays:
                    path = tmp.joinpath(*a.parts)
                    dirs.update((path, path / "c"))
                for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
                    fsync_dir(d)
            _swap(tmp, target, dst_text)
            if fsync:
                fsync_dir(target.parent)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            for p in created:  # deepest first; only the directories this call made
                with contextlib.suppress(OSError):
                    p.rmdir()
            if isinstance(exc, OSError) and not isinstance(exc, ExportError):
                if not exc.filename:
                    exc.filename = dst_text
                raise _os_fail(exc, _os_text(exc, shown), shown) from exc
            raise
    return ExportReport(
        input=Path(src_text), output=Path(dst_text), datasets=tuple(a.name for a in arrays),
        chunks=counts.chunks, copied_chunks=counts.copied,
        encoded_chunks=counts.chunks - counts.copied, bytes_written=counts.nbytes,
        elapsed_secs=time.perf_counter() - started)


def _version() -> str:
    from tet import __version__

    return __version__
