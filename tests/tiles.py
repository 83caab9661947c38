"""A file with very many tiles, written with NumPy directly (no writer involved): one u8
dataset of shape (n,) in chunks of (1,), each tile a 1-byte raw payload, so the chunk
index holds n rows of 104 bytes (10^7 tiles: a 1.04 GB index)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from tet.layout import ENTRY_DTYPE, align8

BLOCK = 1 << 20  # rows built and written at a time: the builder's memory stays ~110 MB
NAME = b"u8"
BLOB_LEN = align8(16 + len(NAME)) + 16  # one rank-1 dataset record
INDEX_OFFSET = align8(40 + BLOB_LEN)


def payload_offset(n: int) -> int:
    """Where the payloads of an `n`-tile file start (tile i is the byte there + i)."""
    return INDEX_OFFSET + 32 + 104 * n


def write_u8_tiles(path: Path, n: int) -> Path:
    """Write the file of `n` one-byte tiles at `path` and return it."""
    head = bytearray()
    head += struct.pack("<4sIIIQQ", b"TETR", 1, 1, 0, INDEX_OFFSET, 32 + 104 * n)
    head += struct.pack("<Q", BLOB_LEN)
    head += struct.pack("<IIII", len(NAME), 5, 1, 0) + NAME
    head += b"\0" * (40 + align8(16 + len(NAME)) - len(head))
    head += struct.pack("<QQ", n, 1)
    head += b"\0" * (INDEX_OFFSET - len(head))
    head += struct.pack("<4sIQHHIQ", b"TIDX", 1, n, 0, 0, 0, 0)
    with path.open("wb") as fh:
        fh.write(head)
        for lo in range(0, n, BLOCK):
            hi = min(n, lo + BLOCK)
            rows = np.zeros(hi - lo, dtype=ENTRY_DTYPE)
            ids = np.arange(lo, hi, dtype=np.uint64)
            rows["chunk_index"][:, 0] = ids
            rows["payload_offset"] = ids + np.uint64(payload_offset(n))
            rows["raw_byte_len"] = 1
            rows["stored_byte_len"] = 1
            fh.write(rows.tobytes())
        for lo in range(0, n, BLOCK * 16):
            fh.write(values_block(lo, min(n, lo + BLOCK * 16)).tobytes())
    return path


def values_block(lo: int, hi: int) -> np.ndarray[Any, Any]:
    """Values lo..hi of the dataset: i % 251 (sums and means are easy to check)."""
    return (np.arange(lo, hi, dtype=np.int64) % 251).astype(np.uint8)
