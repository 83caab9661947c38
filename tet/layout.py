"""Layout v1: parse and build the superblock, dataset directory, TIDX chunk index
and THST history footer.

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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tet import dtypes
from tet.attrs import EXT_KEY, validate_ext
from tet.errors import CatalogError, InvalidTextError
from tet.jsonlimits import MAX_DEPTH, json_depth, lone_surrogate
from tet.limits import LIMITS

__all__ = [
    "CHECKSUMS_KEY",
    "ENTRY_DTYPE",
    "LIMITS",
    "Catalog",
    "DatasetRecord",
    "align8",
    "check_size",
    "chunk_rows",
    "encode_footer",
    "encode_header",
    "header_length",
    "load_json_region",
    "parse_catalog",
    "tile_counts",
]

MAGIC = b"TETR"
INDEX_MAGIC = b"TIDX"
FOOTER_MAGIC = b"THST"
LAYOUT_VERSION = 1
INDEX_VERSION = 1
SUPERBLOCK_LEN = 32
INDEX_HEADER_LEN = 32
ENTRY_LEN = 104
FOOTER_TAIL_LEN = 16
MAX_NDIM = 8
FLAG_FOOTER = 1
ROW_BLOCK = 1 << 16  # chunk index rows handled at a time by the blockwise loops
WRITE_PREFIX = "invalid one-chunk write spec: "
CHECKSUMS_KEY = "tet_checksums_ref"  # footer key of the tile checksum table (tet/integrity.py)

ENTRY_DTYPE = np.dtype(
    [
        ("dataset_id", "<u8"),
        ("chunk_index", "<u8", (8,)),
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
    history, metadata, footer_version, payload_bound, refs = _parse_footer(buf, file_len, flags)
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
            raise CatalogError(f"ndim {ndim} out of range (max 8) in dataset record {i}")
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
            length_row = _first_row((codec == 0) & (block["raw_byte_len"] != stored), lo)
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


def _parse_footer(
    buf: Any, file_len: int, flags: int
) -> tuple[list[dict[str, Any]], dict[str, Any], int | None, int, dict[str, tuple[int, int]]]:
    """(history, metadata, footer version, payload bound, out-of-line regions by key)
    per layout.md §5.4."""
    has_tail = file_len >= FOOTER_TAIL_LEN and bytes(buf[file_len - 4 : file_len]) == FOOTER_MAGIC
    json_len = version = 0
    if has_tail:
        json_len = _u64(buf, file_len - 16)
        version = _u32(buf, file_len - 8)
        if version not in (1, 2):
            raise CatalogError(f"unsupported history footer version {version}")
        if json_len > file_len - FOOTER_TAIL_LEN:
            raise CatalogError(
                f"history footer out of bounds: json_len {json_len} + 16 exceeds file length "
                f"{file_len}"
            )
    if not flags & FLAG_FOOTER:
        return [], {}, None, file_len, {}
    if not has_tail:
        raise CatalogError("superblock history flag set but footer missing")
    json_at = file_len - FOOTER_TAIL_LEN - json_len
    doc = load_json_region(buf, json_at, json_len, "footer", LIMITS["footer_json_bytes"])
    if not isinstance(doc, dict):
        raise CatalogError(f"{WRITE_PREFIX}footer JSON parse: expected an object at {json_at}")
    bound = json_at
    refs = {k: v for k, v in doc.items() if k.endswith("_ref")}
    regions = {key: _parse_ref(key, ref, file_len) for key, ref in refs.items()}
    for start, _ in regions.values():  # payloads end before every out-of-line region
        bound = min(bound, start)
    history = _parse_history(doc.get("history", []))
    if "metadata_ref" in refs:
        start, length = _parse_ref("metadata_ref", refs["metadata_ref"], file_len)
        if length > LIMITS["metadata_blob_bytes"]:
            raise CatalogError(
                f"{WRITE_PREFIX}metadata blob of {length} bytes exceeds metadata_blob_bytes limit"
            )
        metadata = load_json_region(buf, start, length, "metadata_ref",
                                    LIMITS["metadata_blob_bytes"])
        validate_metadata(metadata)
    else:
        metadata = doc.get("metadata", {})
    _check_metadata_shape(metadata)
    return history, metadata, version, bound, regions


def load_json_region(buf: Any, at: int, length: int, what: str, limit: int) -> Any:
    """The JSON value of `length` bytes at `at` (a footer or a spilled metadata blob),
    refused before it is read when over `limit` bytes and before it is parsed when
    nested deeper than query documents may be (`MAX_DEPTH`): always a `CatalogError`,
    never a `RecursionError` or an unbounded read.  A string holding a lone surrogate
    (an unpaired ``"\\ud800"`` escape) is refused too (`InvalidTextError`), as the
    reference's reader refuses it: nothing downstream has to meet text UTF-8 cannot hold."""
    where = f" (footer at {at})" if what == "footer" else ""
    if length > limit:
        name = "footer_json_bytes" if what == "footer" else "metadata_blob_bytes"
        raise CatalogError(
            f"{WRITE_PREFIX}{what} JSON of {length} bytes exceeds {name} limit "
            f"({limit}){where}"
        )
    try:
        text = bytes(buf[at : at + length]).decode("utf-8")
        depth = json_depth(text)
        if depth > MAX_DEPTH:
            raise CatalogError(
                f"{WRITE_PREFIX}{what} JSON parse: nesting depth {depth} exceeds maximum "
                f"{MAX_DEPTH}{where}"
            )
        value = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CatalogError(f"{WRITE_PREFIX}{what} JSON parse: {exc}{where}") from None
    lone = lone_surrogate(text, value)
    if lone is not None:  # JSON allows "\ud800"; no UTF-8 text (and no reader) can hold it
        raise InvalidTextError(f"{WRITE_PREFIX}{what} JSON parse: lone surrogate escape in a "
                               f"string at {lone}{where}")
    return value


def _parse_ref(key: str, ref: Any, file_len: int) -> tuple[int, int]:
    if (
        not isinstance(ref, dict)
        or not isinstance(ref.get("offset"), int)
        or not isinstance(ref.get("len"), int)
        or ref["offset"] < 0
        or ref["len"] < 0
    ):
        raise CatalogError(f"{WRITE_PREFIX}{key} must be {{\"offset\": u64, \"len\": u64}}")
    start, length = ref["offset"], ref["len"]
    if start > file_len or length > file_len - start:
        raise CatalogError(
            f"{key.replace('_ref', '')}_ref out of bounds: [{start}, {start + length}) "
            f"in a file of {file_len} bytes"
        )
    return start, length


_ROW_KEYS = ("op", "source", "at", "parents", "params")


def _parse_history(rows: Any) -> list[dict[str, Any]]:
    if not isinstance(rows, list):
        raise CatalogError(f"{WRITE_PREFIX}footer history must be an array")
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, list):
            if len(row) != 3 or not all(isinstance(v, str) for v in row):
                raise CatalogError(
                    f"{WRITE_PREFIX}history row {i}: legacy rows are [op, source, at]"
                )
            out.append({"op": row[0], "source": row[1], "at": row[2]})
            continue
        if not isinstance(row, dict):
            raise CatalogError(f"{WRITE_PREFIX}history row {i} must be an object")
        unknown = [k for k in row if k not in _ROW_KEYS]
        if unknown:
            raise CatalogError(f"{WRITE_PREFIX}history row {i}: unknown field `{unknown[0]}`")
        if not all(isinstance(row.get(k), str) for k in ("op", "source", "at")):
            raise CatalogError(f"{WRITE_PREFIX}history row {i}: op, source and at must be strings")
        parents, params = row.get("parents", []), row.get("params", {})
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise CatalogError(f"{WRITE_PREFIX}history row {i}: parents must be strings")
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            raise CatalogError(f"{WRITE_PREFIX}history row {i}: params must map strings")
        out.append(history_row(row["op"], row["source"], row["at"], parents, params))
    return out


def _check_metadata_shape(metadata: Any) -> None:
    """The types readers rely on (limits are `validate_metadata`'s and verify's job).
    Unknown keys are ignored, as the format asks."""

    def bad(what: str) -> CatalogError:
        return CatalogError(f"{WRITE_PREFIX}footer metadata: {what}")

    if not isinstance(metadata, dict):
        raise bad("must be an object")
    file_meta = metadata.get("file", {})
    if not isinstance(file_meta, dict):
        raise bad("`file` must be an object")
    datasets = metadata.get("datasets", {})
    if not isinstance(datasets, dict):
        raise bad("`datasets` must be an object keyed by dataset name")
    for name, entry in datasets.items():
        if not isinstance(entry, dict):
            raise bad(f"dataset {name!r} must be an object")
        attrs = entry.get("attrs", {})
        if not isinstance(attrs, dict) or not all(isinstance(v, str) for v in attrs.values()):
            raise bad(f"dataset {name!r}: attrs must map strings to strings")
        dims = entry.get("dim_names", [])
        if not isinstance(dims, list) or not all(isinstance(d, str) for d in dims):
            raise bad(f"dataset {name!r}: dim_names must be a list of strings")
        coords = entry.get("coords", {})
        if not isinstance(coords, dict):
            raise bad(f"dataset {name!r}: coords must be an object keyed by axis")
        for axis, coord in coords.items():
            labels = coord.get("labels", []) if isinstance(coord, dict) else None
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise bad(f"dataset {name!r}: coords {axis!r} needs a list of string labels")
    if EXT_KEY in metadata:
        validate_ext(metadata[EXT_KEY])


def history_row(
    op: str,
    source: str,
    at: str,
    parents: Iterable[str] = (),
    params: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A history row with keys in wire order; empty parents/params are omitted."""
    row: dict[str, Any] = {"op": op, "source": source, "at": at}
    parents = list(parents)
    if parents:
        row["parents"] = parents
    if params:
        row["params"] = dict(sorted(params.items()))
    return row


# ---------------------------------------------------------------------------
# Metadata limits


def _check_string(s: Any, what: str) -> None:
    if not isinstance(s, str):
        raise CatalogError(f"{WRITE_PREFIX}metadata {what} must be a string, got {s!r}")
    try:
        n = len(s.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidTextError(f"{WRITE_PREFIX}metadata {what} {s!r} is not valid text: "
                               f"{exc.reason} (index {exc.start})") from None
    if n == 0:
        raise CatalogError(f"{WRITE_PREFIX}metadata {what} must be a non-empty string")
    if n > LIMITS["attr_string_bytes"]:
        raise CatalogError(
            f"{WRITE_PREFIX}metadata string exceeds attr_string_bytes limit "
            f"({what}: {n} > {LIMITS['attr_string_bytes']} bytes)"
        )


def _check_count(n: int, limit: str, what: str) -> None:
    if n > LIMITS[limit]:
        raise CatalogError(
            f"{WRITE_PREFIX}metadata {what} exceeds {limit} limit ({n} > {LIMITS[limit]})"
        )


def validate_metadata(metadata: Any) -> None:
    """Enforce MetadataLimitsV1 on a metadata object."""
    if not isinstance(metadata, dict):
        raise CatalogError(f"{WRITE_PREFIX}metadata must be an object")
    datasets = metadata.get("datasets", {})
    if not isinstance(datasets, dict):
        raise CatalogError(f"{WRITE_PREFIX}metadata datasets must be an object")
    _check_count(len(datasets), "metadata_datasets", "datasets")
    for name, entry in datasets.items():
        _check_string(name, "dataset name")
        if not isinstance(entry, dict):
            raise CatalogError(f"{WRITE_PREFIX}metadata for dataset {name!r} must be an object")
        attrs = entry.get("attrs", {})
        _check_count(len(attrs), "dataset_attrs", "attrs")
        for k, v in attrs.items():
            _check_string(k, "attr key")
            _check_string(v, f"attr {k!r} value")
        dims = entry.get("dim_names", [])
        _check_count(len(dims), "dim_names", "dim_names")
        for d in dims:
            _check_string(d, "dim name")
        coords = entry.get("coords", {})
        _check_count(len(coords), "coord_axes", "coord axes")
        for axis, coord in coords.items():
            _check_string(axis, "coord axis key")
            labels = coord.get("labels", []) if isinstance(coord, dict) else None
            if not isinstance(labels, list):
                raise CatalogError(f"{WRITE_PREFIX}metadata coords {axis!r} needs a labels list")
            _check_count(len(labels), "coord_labels_per_axis", "coord labels")
            for label in labels:
                _check_string(label, "coord label")
    if EXT_KEY in metadata:
        validate_ext(metadata[EXT_KEY])


def validate_history(history: Sequence[Mapping[str, Any]]) -> None:
    _check_count(len(history), "history_events", "history events")
    for row in history:
        for k in ("op", "source", "at"):
            _check_string(row[k], f"history {k}")
        _check_count(len(row.get("parents", ())), "history_parents", "history parents")
        for p in row.get("parents", ()):
            _check_string(p, "history parent")
        _check_count(len(row.get("params", {})), "history_params", "history params")
        for k, v in row.get("params", {}).items():
            _check_string(k, "history param key")
            _check_string(v, "history param value")


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


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=False, ensure_ascii=False).encode()


def _sorted_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Maps with string keys sorted; empty members dropped (layout.md §5.1)."""

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(v[k]) for k in sorted(v) if not _empty(v[k])}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    def walk_ext(ext: dict[str, Any]) -> dict[str, Any]:
        """Typed values keep their empty lists and objects (``{"json": []}``)."""
        def entries(m: dict[str, Any]) -> dict[str, Any]:
            return {k: {f: (dict(sorted(e[f].items())) if isinstance(e[f], dict) and f in
                            ("attrs", "encoding") else e[f]) for f in sorted(e) if e[f] != {}}
                    for k, e in sorted(m.items()) if isinstance(e, dict)}
        out = {k: (dict(sorted(v.items())) if k == "attrs" else entries(v))
               for k, v in sorted(ext.items()) if isinstance(v, dict)}
        return {k: v for k, v in out.items() if v}

    def _empty(v: Any) -> bool:
        return isinstance(v, (dict, list)) and len(v) == 0

    out: dict[str, Any] = walk({k: v for k, v in metadata.items() if k != EXT_KEY})
    ext = metadata.get(EXT_KEY)
    if isinstance(ext, dict) and (kept := walk_ext(ext)):
        out[EXT_KEY] = kept
    return dict(sorted(out.items()))


def encode_footer(
    history: Sequence[Mapping[str, Any]], metadata: Mapping[str, Any], payload_end: int,
    checksums: bytes = b"",
) -> bytes:
    """Bytes to append at `payload_end`: the checksum table blob (`checksums`, from
    `tet.integrity.encode_table`, referenced as ``tet_checksums_ref``), the metadata
    spill when inlining would pass the footer limit, history JSON, tail.

    Empty bytes when there is neither history nor metadata nor a table (§5.3 step 5).
    """
    validate_history(history)
    meta = _sorted_metadata(metadata)
    validate_metadata(meta)
    rows = [dict(r) for r in history]
    if not rows and not meta and not checksums:
        return b""
    table = {CHECKSUMS_KEY: {"offset": payload_end, "len": len(checksums)}} if checksums else {}
    doc: dict[str, Any] = {"history": rows}
    if meta:
        doc["metadata"] = meta
    text = _compact({**doc, **table})
    spill = b""
    if len(text) > LIMITS["footer_json_bytes"]:
        spill = _compact(meta)
        if len(spill) > LIMITS["metadata_blob_bytes"]:
            raise CatalogError(f"{WRITE_PREFIX}metadata exceeds metadata_blob_bytes limit")
        doc = {"history": rows,
               "metadata_ref": {"offset": payload_end + len(checksums), "len": len(spill)}}
        text = _compact({**doc, **table})
        if len(text) > LIMITS["footer_json_bytes"]:
            raise CatalogError(
                f"{WRITE_PREFIX}footer JSON exceeds footer_json_bytes limit even without "
                f"inline metadata"
            )
    return checksums + spill + text + struct.pack("<QI4s", len(text), 1, FOOTER_MAGIC)
