"""Layout v1: parse and build the superblock, dataset directory and TIDX chunk index,
the structs they hold (`DatasetRecord`, the index rows `ENTRY_DTYPE`, `Catalog`) and the
size checks on a dataset's geometry.  The THST history footer is `tet.footer`'s.

Every offset and length read from a file is checked against the file size before
it is used; a bad file is a `CatalogError` whose message says what and where.
"""

from __future__ import annotations

import gc
import json
import math
import mmap
import operator
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tet import dtypes
from tet.errors import CatalogError
from tet.footer import parse_footer

__all__ = [
    "CODECS",
    "ENTRY_DTYPE",
    "MAX_NDIM",
    "RAW",
    "ZSTD",
    "Catalog",
    "DatasetRecord",
    "align8",
    "check_size",
    "chunk_rows",
    "encode_header",
    "header_length",
    "parse_catalog",
    "tile_counts",
]

MAGIC = b"TETR"
INDEX_MAGIC = b"TIDX"
LAYOUT_VERSION = 1
INDEX_VERSION = 1
SUPERBLOCK_LEN = 32
INDEX_HEADER_LEN = 32
ENTRY_LEN = 104
MAX_NDIM = 8  # axes of a dataset, at most (csrc/tet.h TET_MAX_NDIM)
CODECS = {"raw": 0, "zstd": 1}  # a tile's codec tag (csrc/tet.h tet_codec)
RAW, ZSTD = CODECS["raw"], CODECS["zstd"]
FLAG_FOOTER = 1
ROW_BLOCK = 1 << 16  # chunk index rows handled at a time by the blockwise loops

ENTRY_DTYPE = np.dtype(
    [
        ("dataset_id", "<u8"),
        ("chunk_index", "<u8", (MAX_NDIM,)),
        ("payload_offset", "<u8"),
        ("raw_byte_len", "<u8"),
        ("stored_byte_len", "<u8"),
        ("codec", "<u4"),
        ("reserved", "<u4"),
    ]
)
assert ENTRY_DTYPE.itemsize == ENTRY_LEN

def align8(n: int) -> int:
    return (n + 7) & ~7


def tile_counts(shape: Sequence[int], chunk_shape: Sequence[int], name: str | None = None
                ) -> tuple[int, ...]:
    """Chunks per axis: ceil(shape / chunk_shape).

    A chunk extent below 1 (a file may declare 0) is a `CatalogError`, never a division
    by zero: every reader of the grid (planner, export, xarray, dask) comes here.
    `name`, the dataset's, goes into the message."""
    if any(c < 1 for c in chunk_shape):
        what = f"dataset {name!r}: " if name is not None else ""
        raise CatalogError(f"{what}invalid geometry: shape {list(shape)}, chunk_shape "
                           f"{list(chunk_shape)} (every chunk extent must be >= 1)")
    return tuple(-(-s // c) for s, c in zip(shape, chunk_shape, strict=True))


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    """One dataset directory record."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def encode(self) -> bytes:
        name = self.name.encode("utf-8")
        head = struct.pack("<IIII", len(name), self.dtype, self.ndim, 0)
        pad = b"\0" * (align8(16 + len(name)) - 16 - len(name))
        dims = struct.pack(f"<{2 * self.ndim}Q", *self.shape, *self.chunk_shape)
        return head + name + pad + dims


@dataclass(frozen=True)
class Catalog:
    """Everything layout v1 says about a file, parsed and validated."""

    file_len: int
    dataset_count: int
    flags: int
    chunk_index_offset: int
    chunk_index_length: int
    datasets: tuple[DatasetRecord, ...]
    entries: np.ndarray[Any, np.dtype[np.void]]
    budget_percent_bps: int
    budget_bytes: int
    history: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    footer_version: int | None = None
    payload_bound: int = 0
    footer_refs: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (offset, len)

    @property
    def file_execution(self) -> dict[str, int]:
        return {
            "memory_budget_percent_bps": self.budget_percent_bps,
            "memory_budget_bytes": self.budget_bytes,
        }

    def summary(self, *, rows: bool = True) -> dict[str, Any]:
        """The summary dict of layout.md §7 (every chunk row included).  With
        ``rows=False`` its ``chunks`` list is left empty, for callers that take the rows
        from `iter_chunks` instead (a file can have millions of them)."""
        chunks = list(self.iter_chunks()) if rows else []
        return {
            "superblock": {
                "layout_version": LAYOUT_VERSION,
                "dataset_count": self.dataset_count,
                "flags": self.flags,
                "chunk_index_offset": self.chunk_index_offset,
                "chunk_index_length": self.chunk_index_length,
            },
            "datasets": [
                {
                    "name": d.name,
                    "dtype": d.dtype,
                    "shape": list(d.shape),
                    "chunk_shape": list(d.chunk_shape),
                }
                for d in self.datasets
            ],
            "chunks": chunks,
            "file_execution": self.file_execution,
            "history": [dict(h) for h in self.history],
            "metadata": json.loads(json.dumps(self.metadata)),
        }

    def iter_chunks(self, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """The summary's chunk rows ``start`` to ``stop`` (exclusive; None = the end), built
        lazily a block at a time, so memory stays bounded however many rows there are."""
        start = operator.index(start)
        end = len(self.entries) if stop is None else operator.index(stop)
        if start < 0 or end < 0:
            raise ValueError(f"iter_chunks takes non-negative bounds, got {start}, {stop}")
        end = min(end, len(self.entries))
        for lo in range(start, end, ROW_BLOCK):
            yield from chunk_rows(self.entries[lo:min(lo + ROW_BLOCK, end)])


def chunk_rows(entries: np.ndarray[Any, Any]) -> list[dict[str, Any]]:
    """Chunk index rows as summary dicts (layout.md §7), built a column at a time."""
    gc_was_on = gc.isenabled()
    gc.disable()  # many small acyclic dicts would trigger collections for nothing
    try:
        return [
            {"dataset_id": d, "chunk_index": c, "payload_offset": o, "raw_byte_len": r,
             "stored_byte_len": s, "codec": k}
            for d, c, o, r, s, k in zip(
                entries["dataset_id"].tolist(), entries["chunk_index"].tolist(),
                entries["payload_offset"].tolist(), entries["raw_byte_len"].tolist(),
                entries["stored_byte_len"].tolist(), entries["codec"].tolist())
        ]
    finally:
        if gc_was_on:
            gc.enable()


# ---------------------------------------------------------------------------
# Reading


def _u32(buf: Any, at: int) -> int:
    return int(struct.unpack_from("<I", buf, at)[0])


def _u64(buf: Any, at: int) -> int:
    return int(struct.unpack_from("<Q", buf, at)[0])


# Signatures of the formats a .tet file is most often confused with (offset 0).
FOREIGN_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89HDF\r\n\x1a\n", "HDF5"),
    (b"CDF\x01", "NetCDF-3"),
    (b"CDF\x02", "NetCDF-3"),
    (b"\x93NUMPY", "a NumPy .npy file"),
)
NETCDF_EXTENSIONS = (".nc", ".netcdf", ".nc4", ".nc3", ".cdf", ".ncdf")


def foreign_format(head: bytes, name: str = "") -> str | None:
    """What the first bytes of a file that is not a .tet file say it is (``HDF5``;
    ``NetCDF-4 (HDF5)`` for an HDF5 file named ``*.nc``), or None."""
    for magic, label in FOREIGN_SIGNATURES:
        if head.startswith(magic):
            if label == "HDF5" and name.lower().endswith(NETCDF_EXTENSIONS):
                return "NetCDF-4 (HDF5)"
            return label
    return None


def not_tet_hint(path: str, label: str) -> str:
    """``x.h5 is HDF5, not a .tet file; convert it with `tet convert x.h5 x.tet` ``
    (a .npy file, which `tet convert` does not read, points to `tet.TetWriter`)."""
    import shlex
    from pathlib import PurePath

    if label.startswith("a NumPy"):
        return (f"{path} is {label}, not a .tet file; load it with numpy.load and write "
                f"it into one with tet.TetWriter")
    given = PurePath(path)
    out = given.with_suffix(".tet") if given.suffix else given.with_name(given.name + ".tet")
    return (f"{path} is {label}, not a .tet file; convert it with "
            f"`tet convert {shlex.quote(path)} {shlex.quote(str(out))}`")


def parse_catalog(buf: Any, file_len: int) -> Catalog:
    """Parse and validate the whole catalog of a mapped file (layout.md §7, in order)."""
    if file_len < SUPERBLOCK_LEN:
        raise CatalogError(f"file too short for superblock: need 32 bytes, got {file_len}")
    magic = bytes(buf[0:4])
    if magic != MAGIC:
        raise CatalogError(f"bad magic: expected TETR, got {list(magic)}")
    version, count, flags = struct.unpack_from("<III", buf, 4)
    if version != LAYOUT_VERSION:
        raise CatalogError(f"unsupported layout_version: {version} (only 1 is supported)")
    index_off, index_len = _u64(buf, 16), _u64(buf, 24)
    if index_off > file_len or index_len > file_len - index_off:
        raise CatalogError(
            f"chunk index region is out of bounds for file length {file_len}: "
            f"offset {index_off}, length {index_len}"
        )
    history, metadata, footer_version, payload_bound, refs = parse_footer(
        buf, file_len, bool(flags & FLAG_FOOTER))
    empty = np.zeros(0, dtype=ENTRY_DTYPE)
    if count == 0:
        return Catalog(file_len, 0, flags, index_off, index_len, (), empty, 0, 0,
                       history, metadata, footer_version, payload_bound, refs)
    if file_len < 40:
        raise CatalogError(
            f"dataset_count is {count} but dataset directory is missing (file length {file_len})"
        )
    blob_len = _u64(buf, 32)
    if blob_len > file_len - 40:
        raise CatalogError(
            f"file too short for catalog: need {40 + blob_len} bytes for the dataset directory "
            f"(dataset_blob_len {blob_len}), got {file_len}"
        )
    datasets = _parse_records(buf, count, blob_len)
    expected = align8(40 + blob_len)
    if index_off != expected:
        raise CatalogError(
            f"chunk index offset mismatch: superblock says {index_off}, expected {expected}"
        )
    entries, bps, budget = _parse_index(buf, index_off, index_len)
    _check_entries(entries, payload_bound, file_len)
    return Catalog(file_len, count, flags, index_off, index_len, datasets, entries, bps, budget,
                   history, metadata, footer_version, payload_bound, refs)


def _parse_records(buf: Any, count: int, blob_len: int) -> tuple[DatasetRecord, ...]:
    records = []
    at, end = 40, 40 + blob_len
    for i in range(count):
        if end - at < 16:
            raise CatalogError(
                f"dataset record {i} at offset {at} is truncated: 16 header bytes needed, "
                f"{end - at} left in dataset_blob_len"
            )
        name_len, dtype, ndim = struct.unpack_from("<III", buf, at)
        if not 1 <= ndim <= MAX_NDIM:
            raise CatalogError(f"ndim {ndim} out of range (max {MAX_NDIM}) in dataset record {i}")
        if name_len > end - at - 16:
            raise CatalogError(
                f"dataset record {i} at offset {at}: name of {name_len} bytes runs past "
                f"the dataset directory"
            )
        try:
            name = bytes(buf[at + 16 : at + 16 + name_len]).decode("utf-8")
        except UnicodeDecodeError:
            raise CatalogError(f"invalid UTF-8 in dataset name (record {i})") from None
        dims_at = at + align8(16 + name_len)
        rec_end = dims_at + 16 * ndim
        if rec_end > end:
            raise CatalogError(
                f"dataset record {i} ({name!r}) runs past the dataset directory: "
                f"ends at {rec_end}, directory ends at {end}"
            )
        dims = struct.unpack_from(f"<{2 * ndim}Q", buf, dims_at)
        check_size(i, name, dtype, dims[:ndim])
        records.append(DatasetRecord(name, dtype, tuple(dims[:ndim]), tuple(dims[ndim:])))
        at = rec_end
    if at != end:
        raise CatalogError(f"dataset blob length mismatch: declared {blob_len}, parsed {at - 40}")
    return tuple(records)


SIZE_LIMIT = 2**63  # element counts and byte sizes must fit 63 bits (signed 64-bit sizes)


def check_size(i: int | None, name: str, dtype: int, shape: Sequence[int]) -> None:
    """A dataset whose element count or byte size does not fit 63 bits cannot be held,
    read or planned; refuse it (record `i` of the directory) before any size is derived
    from it.  An unknown dtype tag is not refused (layout.md §3.2), so only its element
    count is checked."""
    what = f"dataset record {i} ({name!r})" if i is not None else f"dataset {name!r}"
    for d, n in enumerate(shape):  # a zero extent elsewhere would hide it from the count
        if n >= SIZE_LIMIT:
            raise CatalogError(
                f"{what}: shape {list(shape)} has an extent of {n} on axis {d}, which does "
                f"not fit 63 bits"
            )
    count = math.prod(shape)
    if count >= SIZE_LIMIT:
        raise CatalogError(
            f"{what}: shape {list(shape)} has {count} elements, which does not fit 63 bits"
        )
    if dtypes.is_known_tag(dtype):
        dt = dtypes.by_tag(dtype)
        if count * dt.size >= SIZE_LIMIT:
            raise CatalogError(
                f"{what}: shape {list(shape)} of {dt.name} is {count} x {dt.size} = "
                f"{count * dt.size} bytes, which does not fit 63 bits"
            )


def _parse_index(buf: Any, off: int, length: int) -> tuple[np.ndarray[Any, Any], int, int]:
    if length < INDEX_HEADER_LEN:
        raise CatalogError(
            f"chunk index region of {length} bytes at offset {off} is shorter than its "
            f"32-byte TIDX header"
        )
    magic = bytes(buf[off : off + 4])
    if magic != INDEX_MAGIC:
        raise CatalogError(f"bad chunk index magic: expected TIDX, got {list(magic)}")
    version = _u32(buf, off + 4)
    if version != INDEX_VERSION:
        raise CatalogError(f"unsupported chunk index version: {version}")
    n = _u64(buf, off + 8)
    if n > (length - INDEX_HEADER_LEN) // ENTRY_LEN or INDEX_HEADER_LEN + n * ENTRY_LEN != length:
        raise CatalogError(f"chunk index entry count {n} does not fit in region length {length}")
    bps = int(struct.unpack_from("<H", buf, off + 16)[0])
    budget = _u32(buf, off + 20)
    # Copy the rows out of the mapping a block at a time, and let the mapped pages go
    # once copied: the index is resident once, not twice (a file can have 10^7 rows).
    at = off + INDEX_HEADER_LEN
    source = np.frombuffer(buf, dtype=ENTRY_DTYPE, count=n, offset=at)
    entries = np.empty(n, dtype=ENTRY_DTYPE)
    drop = getattr(buf, "madvise", None) if hasattr(mmap, "MADV_DONTNEED") else None
    step = 16 * ROW_BLOCK
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        entries[lo:hi] = source[lo:hi]
        if drop is not None:  # whole pages only; the mapping refaults them if read again
            first = (at + lo * ENTRY_LEN) // mmap.PAGESIZE * mmap.PAGESIZE
            last = (at + hi * ENTRY_LEN) // mmap.PAGESIZE * mmap.PAGESIZE
            if last > first:
                drop(mmap.MADV_DONTNEED, first, last - first)
    return entries, bps, budget


def _check_entries(entries: np.ndarray[Any, Any], bound: int, file_len: int) -> None:
    """The row checks in order of precedence (codec, raw/stored, bounds), each reporting
    its first bad row; run a block at a time so no temporary is the size of the index."""
    b = np.uint64(bound)
    codec_row = length_row = bounds_row = None  # the first bad row of each check
    for lo in range(0, len(entries), ROW_BLOCK):
        block = entries[lo:lo + ROW_BLOCK]
        codec, stored = block["codec"], block["stored_byte_len"]
        codec_row = _first_row(codec > 1, lo)
        if codec_row is not None:
            break
        if length_row is None:
            length_row = _first_row((codec == RAW) & (block["raw_byte_len"] != stored), lo)
        if bounds_row is None:
            off = block["payload_offset"]
            bounds_row = _first_row((off > b) | (stored > b - np.minimum(off, b)), lo)
    if codec_row is not None:
        i = codec_row
        raise CatalogError(
            f"unsupported codec {int(entries['codec'][i])} (supported: 0 = raw, 1 = zstd) "
            f"at chunk index row {i}"
        )
    if length_row is not None:
        i = length_row
        raise CatalogError(
            f"raw/stored length mismatch for codec=0: raw={int(entries['raw_byte_len'][i])}, "
            f"stored={int(entries['stored_byte_len'][i])} at chunk index row {i}"
        )
    if bounds_row is not None:
        i = bounds_row
        a = int(entries["payload_offset"][i])
        raise CatalogError(
            f"chunk payload [{a}, {a + int(entries['stored_byte_len'][i])}) out of bounds for "
            f"file length {file_len} (chunk index row {i}; payload region ends at {bound})"
        )


def _first_row(bad: np.ndarray[Any, Any], base: int) -> int | None:
    rows = np.flatnonzero(bad)
    return base + int(rows[0]) if rows.size else None


# ---------------------------------------------------------------------------
# Writing


def header_length(records: Sequence[DatasetRecord], entry_count: int) -> int:
    """Bytes before the first payload: superblock, directory, padding and TIDX."""
    blob = sum(align8(16 + len(r.name.encode("utf-8"))) + 16 * r.ndim for r in records)
    return align8(40 + blob) + INDEX_HEADER_LEN + ENTRY_LEN * entry_count


def encode_header(
    records: Sequence[DatasetRecord],
    entries: np.ndarray[Any, Any],
    *,
    flags: int,
    budget_percent_bps: int = 0,
    budget_bytes: int = 0,
) -> bytes:
    """Superblock + directory + padding + TIDX header + rows, ready for offset 0."""
    blob = b"".join(r.encode() for r in records)
    index_off = align8(40 + len(blob))
    index_len = INDEX_HEADER_LEN + ENTRY_LEN * len(entries)
    out = bytearray()
    out += struct.pack("<4sIII", MAGIC, LAYOUT_VERSION, len(records), flags)
    out += struct.pack("<QQ", index_off, index_len)
    out += struct.pack("<Q", len(blob)) + blob
    out += b"\0" * (index_off - len(out))
    out += struct.pack("<4sIQHHIQ", INDEX_MAGIC, INDEX_VERSION, len(entries),
                       budget_percent_bps, 0, budget_bytes, 0)
    out += np.ascontiguousarray(entries, dtype=ENTRY_DTYPE).tobytes()
    return bytes(out)
