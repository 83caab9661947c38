"""`.tet` → Zarr v3 directory store (cli.md §7, with decision 28: edge chunks padded) that
zarr-python and xarray read back as ``xr.open_dataset(path, engine="tet")`` shows the file.

Every dataset becomes one Zarr array; slashes in its name become nested groups.  The
store is written by hand (JSON documents and chunk files), so exporting needs no Zarr
library.  Zarr requires every chunk file to hold a full ``chunk_shape`` tile, while a
``.tet`` edge tile is ragged: interior tiles whose codec already matches are copied byte
for byte (zstd frames stay compressed), edge tiles and tiles changing codec are decoded,
padded with the array's fill value and encoded again.

What xarray sees of the file is carried over (the rules of `tet.xrmodel`, which the ``tet``
xarray backend follows too):

- attributes: the dataset's typed attributes as JSON values (numbers, lists, booleans;
  NaN and infinities spelled ``NaN``/``Infinity`` as zarr-python writes them); keys of
  the dataset's CF ``encoding`` are not attributes; the reserved ``_tet_*`` keys older
  files carry are read (attribute types, file attributes, coordinate dtypes, 0-d marks)
  and never written;
- ``fill_value``: the dataset's own ``_FillValue`` when it has one as a real attribute
  (then also the ``_FillValue`` attribute, in the form xarray's Zarr reader decodes: an
  integer, or for floats the base64 text of a little-endian float64), else ``"NaN"`` for
  floats and 0 for integers;
- ``dimension_names`` always: the footer's, else ``dim_0``, ``dim_1``, … (prefixed with
  the array's name where ``dim_i`` is taken with another length, as the backend does);
- footer ``coords`` labels of a dimension: a 1-D coordinate array named after it
  (numbers and dates in the dtype the typed metadata records, else strings);
- 0-d datasets (stored as ``(1,)``): 0-d arrays; text datasets (``u8`` marked as text):
  ``string`` arrays (``vlen-utf8``) or ``variable_length_bytes`` arrays (``vlen-bytes``);
- file-level attributes: the root group's, beside ``tetration_export``.

The store is built in a hidden directory beside the target and renamed onto it only when
complete and fsynced: a failure or Ctrl-C never leaves a half-written store, and an
existing empty target directory is replaced atomically.

This module writes the store; `tet.export_plan` decides what goes in it (and holds the
errors), `tet.zarr_json` spells its JSON documents.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tet import kernels
from tet.durable import atomic_replace, fsync_dir
from tet.errors import CatalogError
from tet.export_plan import (
    CODEC_CHOICES,
    ZSTD,
    ExportDiskFullError,
    ExportError,
    WriteFailed,
    ZarrArray,
    dataset_fail,
    os_fail,
    os_text,
    plan,
)
from tet.file import TetFile
from tet.layout import tile_counts
from tet.paths import checked_path
from tet.query.budget import require_memory
from tet.safedir import Dir
from tet.tempnames import remove_stale, temp_name
from tet.text import encode_text
from tet.zarr_json import ZARR_DATA_TYPES, group_document

__all__ = ["CODEC_CHOICES", "ZARR_DATA_TYPES", "ExportDiskFullError", "ExportError",
           "ExportReport", "chunk_count", "export"]

PathLike = str | os.PathLike[str]
_COPY_BLOCK = 16 * 1024 * 1024

@dataclass(frozen=True)
class ExportReport:
    """What `export` wrote.

    Attributes
    ----------
    input, output : the paths as given.
    datasets : the exported dataset names, in catalog order.
    chunks : chunk files written (every tile of every array, coordinates included).
    copied_chunks : chunk files copied byte for byte from the ``.tet`` payloads.
    encoded_chunks : chunk files decoded, padded and/or re-encoded (edge tiles, codec changes).
    bytes_written : bytes of chunk files.
    elapsed_secs : wall time of the whole export.
    coordinates : paths of the coordinate arrays made from footer ``coords`` labels.
    """

    input: Path
    output: Path
    datasets: tuple[str, ...]
    chunks: int
    copied_chunks: int
    encoded_chunks: int
    bytes_written: int
    elapsed_secs: float
    coordinates: tuple[str, ...] = ()  # coordinate arrays made from footer labels

    def summary_line(self, output: str | None = None) -> str:
        """``exported <n> dataset(s), <m> chunk(s) → <output> (<secs>s)`` (cli.md §7)."""
        where = self.output if output is None else output
        return (f"exported {len(self.datasets)} dataset(s), {self.chunks} chunk(s) → {where} "
                f"({self.elapsed_secs:.2f}s)")


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
        raise WriteFailed(exc, path, memoryview(data).nbytes) from exc


def _write_json(path: Path, doc: Mapping[str, Any], fsync: bool) -> None:
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # text UTF-8 cannot hold (a lone surrogate): JSON escapes
        data = (json.dumps(doc, indent=2, ensure_ascii=True) + "\n").encode("ascii")
    _write_file(path, data, fsync)


@dataclass(frozen=True)
class _Tile:
    array: ZarrArray
    linear: int
    coords: tuple[int, ...]
    path: Path


def _box(a: ZarrArray, t: _Tile) -> tuple[list[int], list[int]]:
    """The tile's [start, stop) in the Zarr array."""
    start = [c * k for c, k in zip(t.coords, a.chunks)]
    return start, [min(s + k, n) for s, k, n in zip(start, a.chunks, a.shape)]


def _read_stored(a: ZarrArray, start: list[int], stop: list[int]) -> np.ndarray[Any, Any]:
    """The dataset's values of a Zarr box (text: with its char axis)."""
    assert a.record is not None and a.table is not None
    s0 = [0] * a.lead + start + ([0] if a.text else [])
    s1 = [1] * a.lead + stop + ([a.width] if a.text else [])
    dst = np.empty([e - s for s, e in zip(s0, s1)], dtype=a.dtype)
    a.table.read(s0, s1, [1] * len(s0), dst)
    return dst.reshape([e - s for s, e in zip(start, stop)] + ([a.width] if a.text else []))


def _chunk(a: ZarrArray, t: _Tile) -> np.ndarray[Any, Any]:
    """The tile as a full chunk: numbers padded with the fill value, text as the u8 rows
    of its values (padding rows empty)."""
    start, stop = _box(a, t)
    tail = [a.width] if a.text else []
    if a.values is not None:  # a coordinate: 1-D, its values past their end are padding
        part = a.values[start[0]:min(stop[0], len(a.values))]
    else:
        part = _read_stored(a, start, stop)
    if a.narrow is not None:
        part = _narrowed(part, a.narrow)
    full = tuple(a.chunks) + tuple(tail)
    if part.shape == full:
        return np.ascontiguousarray(part)
    out = np.zeros(full, dtype=a.dtype) if a.text else np.full(full, a.pad, dtype=part.dtype)
    out[tuple(slice(0, n) for n in part.shape)] = part
    return out


def _narrowed(data: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """Integers stored wider, in the type they read back as (checked to fit first)."""
    info = np.iinfo(dtype)
    if data.size and (int(data.min()) < info.min or int(data.max()) > info.max):
        raise CatalogError(f"it is marked as {dtype} but holds values from {int(data.min())} "
                           f"to {int(data.max())}")
    return data.astype(dtype)


def _vlen(rows: np.ndarray[Any, Any], kind: str) -> np.ndarray[Any, Any]:
    """Zarr's vlen-utf8 / vlen-bytes chunk encoding of NUL-padded fixed-width values:
    the count (u32 LE), then per value its length (u32 LE) and its bytes.  A ``str``
    value that is not UTF-8 has its bad bytes replaced, as `tet.text.decode_text` reads it."""
    n, width = rows.shape
    nonzero = rows != 0
    lengths = np.where(nonzero.any(axis=1), width - np.argmax(nonzero[:, ::-1], axis=1), 0)
    del nonzero
    if kind == "str" and not _utf8(rows, lengths):
        rows, _ = encode_text(np.asarray(
            [bytes(r[:k]).decode("utf-8", "replace") for r, k in zip(rows, lengths)],
            dtype=object))
        return _vlen(rows, kind)
    record = np.empty((n, 4 + width), dtype=np.uint8)
    record[:, :4] = lengths.astype("<u4").view(np.uint8).reshape(n, 4)
    record[:, 4:] = rows
    keep = np.arange(4 + width) < (4 + lengths)[:, None]
    out = np.empty(4 + 4 * n + int(lengths.sum()), dtype=np.uint8)
    out[:4] = np.frombuffer(struct.pack("<I", n), dtype=np.uint8)
    out[4:] = record[keep]
    return out


def _utf8(rows: np.ndarray[Any, Any], lengths: np.ndarray[Any, Any]) -> bool:
    """Whether every value is valid UTF-8: no value starts with a continuation byte (so
    none ends inside a character either), and blocks of whole values (about 1 MiB each,
    so the check needs little memory) decode."""
    if bool(((rows[lengths > 0, 0] & 0xC0) == 0x80).any()):
        return False
    cols = np.arange(rows.shape[1])
    step = max(1, (1 << 20) // rows.shape[1])
    for i in range(0, len(rows), step):
        keep = cols < lengths[i:i + step, None]
        try:
            rows[i:i + step][keep].tobytes().decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


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
    if tbl is not None and a.record is not None and a.text is None and a.narrow is None:
        expected = math.prod(a.record.chunk_shape) * a.dtype.itemsize
        if (int(tbl.codec[i]) == a.codec and int(tbl.raw[i]) == expected
                and tbl.tile_size(i) * a.dtype.itemsize == expected):
            try:
                fd = _create(t.path)
                try:
                    _copy_span(src_fd, fd, int(tbl.offset[i]), int(tbl.stored[i]))
                    if fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise WriteFailed(exc, t.path, int(tbl.stored[i])) from exc
            return int(tbl.stored[i]), True
    require_memory(a.tile_memory, a.budget,
                   f"chunk {list(t.coords)} (chunk_shape {list(a.chunks)} "
                   f"padded, and encoded)",
                   "export on a host with more memory, or rewrite the file with smaller "
                   "chunks")
    tile = _chunk(a, t)
    if a.text is not None:
        body = _vlen(tile.reshape(-1, a.width), a.text)
        del tile
        data = memoryview(body.data)
        if a.codec == ZSTD:
            payload, _ = kernels.encode(body, np.zeros((1, 1), np.int64),
                                        np.asarray([[body.size]], np.int64), codec=ZSTD, level=0)
            data = memoryview(payload.data)
    elif a.codec == ZSTD:
        flat = np.ascontiguousarray(tile).reshape(-1)
        payload, _ = kernels.encode(flat, np.zeros((1, 1), np.int64),
                                    np.asarray([[flat.size]], np.int64), codec=ZSTD, level=0)
        data = memoryview(payload.data)
    else:
        data = memoryview(np.ascontiguousarray(tile).reshape(-1).view(np.uint8).data)
    _write_file(t.path, data, fsync)
    return len(data), False


def _tiles(a: ZarrArray, root: Path, made: set[Path]) -> Iterator[_Tile]:
    """Every tile in grid order, with its chunk file path (parent directories created);
    a 0-d array's one chunk is the file ``c``."""
    counts = tile_counts(a.shape, a.chunks)
    base = root.joinpath(*a.parts, "c")
    for linear, coords in enumerate(np.ndindex(*counts)):
        if not coords:
            yield _Tile(a, linear, (), base)
            continue
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


def _write_arrays(arrays: Sequence[ZarrArray], root: Path, src_fd: int, fsync: bool,
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
            raise dataset_fail(name, exc, shown) from exc
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
                _write_json(root.joinpath(*a.parts, "zarr.json"), a.document(), fsync)
                limit = min(2 * workers, a.in_flight)
                for tile in _tiles(a, root, made):
                    while len(pending) >= limit:
                        settle()
                    pending.append((a.name, pool.submit(_write_tile, tile, src_fd, fsync)))
            except OSError as exc:
                raise dataset_fail(a.name, exc, shown) from exc
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


def _swap(tmp: Path, target: Path, given: str, fsync: bool) -> None:
    """Rename the finished store onto the target (an empty directory is replaced), then
    flush the directory (with `fsync`)."""
    existed = target.is_dir()
    if existed:
        with contextlib.suppress(OSError):
            shutil.copymode(target, tmp)
        if os.name == "nt":  # Windows will not rename onto a directory
            target.rmdir()
    try:
        with Dir.of(target.parent) as folder:
            atomic_replace(folder, tmp.name, target.name, identity=None,
                           action="cannot export to", shown=given, fsync=fsync)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise ExportError(f"export output `{given}` exists and is not empty") from exc
        exc.filename = str(tmp)  # the name relative to the directory: show the path
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
        planned = plan(f, codec)
        arrays, groups = planned.arrays, planned.groups
        created = _missing_ancestors(target.parent)
        tmp = target.parent / temp_name("export", target.name)  # names its owner

        def shown(path: str) -> str:  # messages name the store's path, not the temp one
            return dst_text + path[len(str(tmp)):] if path.startswith(str(tmp)) else path

        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale(target.parent, target.name)  # stores killed exports left
            tmp.mkdir()
            made: set[Path] = set()
            _write_json(tmp / "zarr.json", group_document(planned.root_attrs), fsync)
            for g in groups:
                tmp.joinpath(*g).mkdir()
                _write_json(tmp.joinpath(*g, "zarr.json"),
                            group_document(planned.group_attrs.get(g)), fsync)
            src_fd = os.open(f.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            try:
                counts = _write_arrays(arrays, tmp, src_fd, fsync, progress, made, shown)
            finally:
                os.close(src_fd)
            if fsync:
                dirs = {tmp, *made, *(tmp.joinpath(*g) for g in groups)}
                for a in arrays:
                    path = tmp.joinpath(*a.parts)
                    dirs.update((path, path / "c") if a.shape else (path,))
                for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
                    fsync_dir(d)
            _swap(tmp, target, dst_text, fsync)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            for p in created:  # deepest first; only the directories this call made
                with contextlib.suppress(OSError):
                    p.rmdir()
            if isinstance(exc, OSError) and not isinstance(exc, ExportError):
                if not exc.filename:
                    exc.filename = dst_text
                raise os_fail(exc, os_text(exc, shown), shown) from exc
            raise
    return ExportReport(
        input=Path(src_text), output=Path(dst_text), datasets=planned.datasets,
        chunks=counts.chunks, copied_chunks=counts.copied,
        encoded_chunks=counts.chunks - counts.copied, bytes_written=counts.nbytes,
        elapsed_secs=time.perf_counter() - started, coordinates=planned.coordinates)


def chunk_count(src: PathLike, *, codec: str = "keep") -> int:
    """The chunk files `export` would write for `src` (a progress bar's total); the
    same refusals as `export` (an `ExportError` naming the dataset)."""
    if codec not in CODEC_CHOICES:
        raise ValueError(f"unknown export codec {codec!r} (use one of {', '.join(CODEC_CHOICES)})")
    with TetFile(src) as f:
        return sum(math.prod(tile_counts(a.shape, a.chunks)) for a in plan(f, codec).arrays)
