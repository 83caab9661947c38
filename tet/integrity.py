"""The per-tile checksum table: what `tet`'s writer records so that `tet verify --deep`
can tell a damaged tile from a good one.

Layout v1 has no checksum field, so the table is an out-of-line footer region like the
metadata spill: a binary blob right after the chunk payloads (before the metadata spill,
if any), named by the top-level footer key ``"tet_checksums_ref": {"offset": O, "len": L}``.
Readers that do not know the key ignore it (tet-py 0.8.3 does), and every reader ends the
payload region at the lowest out-of-line offset, so the table never counts as payload.
Being binary and out of line, it stays clear of the 64 KiB inline-footer and 16 MiB
metadata limits whatever the tile count.

Blob (little-endian, ``28 + 4 × row_count`` bytes)::

    0   4  magic "TCRC"
    4   4  u32 version = 1
    8   4  u32 algorithm = 1: CRC-32C (Castagnoli; reflected polynomial 0x82F63B78,
           preset and final xor 0xFFFFFFFF, as in iSCSI and ext4)
    12  4  u32 crc32c of the chunk index rows (row_count × 104 bytes at
           chunk_index_offset + 32): binds the table to the rows it describes
    16  8  u64 row_count = the TIDX entry_count
    24  4n u32 per chunk index row, in row order: crc32c of the row's stored bytes
           [payload_offset, payload_offset + stored_byte_len) as they lie in the file
           (the raw tile, or the whole zstd frame)
    24+4n 4 u32 crc32c of the blob's bytes [0, 24 + 4n)

The table is read only by `verify` and by writers that copy tiles (`TetWriter.open_append`
carries the old rows' checksums); opening and reading a file never touch it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from tet import kernels_integrity
from tet.footer import CHECKSUMS_KEY
from tet.layout import ENTRY_DTYPE, ENTRY_LEN, INDEX_HEADER_LEN, Catalog

__all__ = [
    "ALGORITHM_CRC32C",
    "CHECKSUMS_KEY",
    "MAGIC",
    "VERSION",
    "ChecksumTable",
    "check_table",
    "encode_table",
    "index_checksum",
    "read_table",
    "table_length",
]

MAGIC = b"TCRC"
VERSION = 1
ALGORITHM_CRC32C = 1
_HEAD = struct.Struct("<4sIIIQ")
_HEAD_LEN = _HEAD.size  # 24


def index_checksum(entries: np.ndarray[Any, Any]) -> int:
    """crc32c of chunk index rows as the file stores them (104 bytes each)."""
    return kernels_integrity.crc32c(np.ascontiguousarray(entries, dtype=ENTRY_DTYPE).view(np.uint8))


def encode_table(checksums: np.ndarray[Any, Any], entries: np.ndarray[Any, Any]) -> bytes:
    """The blob for these index rows and the crc32c of each row's stored bytes."""
    crc = np.ascontiguousarray(checksums, dtype="<u4")
    if crc.shape != (len(entries),):
        raise ValueError(f"{crc.size} checksums for {len(entries)} chunk index rows")
    body = _HEAD.pack(MAGIC, VERSION, ALGORITHM_CRC32C, index_checksum(entries),
                      len(entries)) + crc.tobytes()
    return body + struct.pack("<I", kernels_integrity.crc32c(body))


@dataclass(frozen=True)
class ChecksumTable:
    """A file's checksum table, or why it cannot be used.

    ``crc`` (uint32, one per chunk index row) is set when the table is sound;
    otherwise ``problem`` says what is wrong, and ``damaged`` whether that is damage
    (an error for `verify`) rather than a table this version does not understand.
    """

    offset: int
    length: int
    crc: np.ndarray[Any, Any] | None = None
    problem: str | None = None
    damaged: bool = False


def read_table(buf: Any, cat: Catalog) -> ChecksumTable | None:
    """The checksum table of a parsed file, or None when it has none.  Never raises for
    a bad table: the catalog does not depend on it."""
    ref = cat.footer_refs.get(CHECKSUMS_KEY)
    if ref is None:
        return None
    offset, length = ref  # inside the file: parse checked it
    return check_table(buf, offset, length, cat.chunk_index_offset, len(cat.entries))


def table_length(rows: int) -> int:
    """Bytes of the blob for `rows` chunk index rows."""
    return _HEAD_LEN + 4 * rows + 4


def check_table(buf: Any, offset: int, length: int, index_offset: int,
                entry_count: int) -> ChecksumTable:
    """The table blob at [offset, offset + length) of `buf` (the caller checked the span
    lies inside it) for a chunk index of `entry_count` rows at `index_offset`: sound
    (``crc`` set) or why not.  Needs no parsed footer, so `tet repair` can find the
    table of a file whose footer is damaged."""
    where = f"checksum table [{offset}, {offset + length})"

    def bad(text: str, damaged: bool = True) -> ChecksumTable:
        return ChecksumTable(offset, length, problem=f"{where}: {text}", damaged=damaged)

    if length < _HEAD_LEN + 4:
        return bad(f"{length} bytes is too short for its {_HEAD_LEN + 4}-byte frame")
    magic, version, algorithm, index_crc, rows = _HEAD.unpack_from(buf, offset)
    if magic != MAGIC:
        return bad(f"bad magic {list(magic)} (expected TCRC)")
    if version != VERSION:
        return bad(f"unsupported version {version} (this tet reads version {VERSION})",
                   damaged=False)
    if algorithm != ALGORITHM_CRC32C:
        return bad(f"unsupported algorithm {algorithm} (this tet knows 1 = crc32c)",
                   damaged=False)
    if rows > (length - _HEAD_LEN - 4) // 4 or length != table_length(rows):
        return bad(f"length {length} does not match its row count {rows}")
    body = memoryview(buf)[offset : offset + length - 4]
    (stored,) = struct.unpack_from("<I", buf, offset + length - 4)
    found = kernels_integrity.crc32c(body)
    body.release()
    if found != stored:
        return bad(f"its own crc32c is 0x{found:08x}, the table says 0x{stored:08x}")
    n = entry_count
    if rows != n:
        return bad(f"it has {rows} rows, the chunk index has {n}")
    at = index_offset + INDEX_HEADER_LEN
    index = memoryview(buf)[at : at + n * ENTRY_LEN]
    rows_crc = kernels_integrity.crc32c(index)
    index.release()
    if rows_crc != index_crc:
        return bad(f"the chunk index rows have crc32c 0x{rows_crc:08x}, the table was written "
                   f"for rows with 0x{index_crc:08x} (the index changed or is damaged)")
    crc = np.frombuffer(buf, dtype="<u4", count=n, offset=offset + _HEAD_LEN).astype(np.uint32)
    return ChecksumTable(offset, length, crc=crc)
