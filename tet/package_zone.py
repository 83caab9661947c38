"""The zone maps of a package generation (``ZONE.json``: per tile its element count, NaN
count, and min/max ignoring NaN), loaded once per open file and checked before a query
may answer from them (`tet.query.zones`).

``ZONE.json`` sits beside ``packed.tet`` and is written by whoever published the
generation, so nothing in it is taken on faith.  It is used only when all of this holds;
otherwise it is ignored and queries decode tiles as for any file:

- it is at most ``ZONE_MAX_BYTES`` (and 1 KiB per index row), strict JSON (no NaN or
  Infinity literals, bounded nesting), and its SHA-256 is the ``zone_maps_sha256`` of the
  generation's ``MANIFEST.json``;
- the manifest and the zone map name the pinned generation, share ``packed_sha256``, and
  the manifest's ``packed_byte_len`` is the opened file's size;
- its bytes are the ``zone_maps_ref`` region of the opened ``packed.tet`` (so a zone map
  from another generation or a swapped file is never paired with this file's tiles);
- every row has exactly the known keys with the right types; its dataset and tile are one
  of the file's index rows, each at most once; ``element_count`` is that tile's element
  count (edge tiles clipped); ``null_count`` is 0 for integer dtypes and at most the
  count; ``min_le``/``max_le`` are present exactly when a non-NaN value is, each
  ``2 × itemsize`` hex digits of a non-NaN value, min <= max.

A dataset is answered from zones only when every tile of its grid has a row.  A writer
who forges the zone region, ``ZONE.json`` and the manifest together can still make zone
answers differ from the tiles (as one who rewrites the tiles can change any answer);
``TET_ZONE_MAPS=off`` turns zone answers off.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tet import dtypes
from tet.errors import TetError
from tet.jsonlimits import MAX_DEPTH, json_depth
from tet.package_layout import MANIFEST, ZONE, gen_name

if TYPE_CHECKING:
    from tet.file import TetFile

__all__ = ["ZONE_MAX_BYTES", "DatasetZones", "zones_of"]

ZONE_MAX_BYTES = 1 << 30
MANIFEST_MAX_BYTES = 1 << 20
_ROW_BYTES = 1024  # per index row, plus the dimensions' share below
_KEYS = frozenset({"dataset_id", "chunk_index", "element_count", "null_count", "min_le",
                   "max_le"})
_HEX = re.compile(r"[0-9a-fA-F]*")


@dataclass(frozen=True)
class DatasetZones:
    """One dataset's zone map, shaped like its tile grid."""

    count: np.ndarray[Any, Any]   # int64 elements per tile
    nan: np.ndarray[Any, Any]     # int64 NaN count per tile
    lo: np.ndarray[Any, Any]      # float64 min ignoring NaN (NaN: the tile is all NaN)
    hi: np.ndarray[Any, Any]      # float64 max ignoring NaN
    finite: np.ndarray[Any, Any]  # bool: no NaN and no infinity in the tile


class _Bad(Exception):
    """A zone map that is not used (the reason is the message)."""


_CACHE: weakref.WeakKeyDictionary[Any, dict[int, DatasetZones] | None] = \
    weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def zones_of(f: TetFile) -> dict[int, DatasetZones] | None:
    """The checked zone maps of `f` by dataset id (datasets with a complete grid only), or
    None when `f` is not a local package generation or its ``ZONE.json`` fails a check.
    Loaded on first use and kept for the life of the handle."""
    if os.environ.get("TET_ZONE_MAPS", "").lower() in ("0", "off", "false", "no"):
        return None
    if f.generation is None or f.url is not None:
        return None
    reader = f.reader
    with _LOCK:
        if reader in _CACHE:
            return _CACHE[reader]
    try:
        zones: dict[int, DatasetZones] | None = _load(f)
    except (_Bad, TetError, OSError, ValueError, TypeError, OverflowError, RecursionError,
            MemoryError):
        zones = None
    with _LOCK:
        _CACHE[reader] = zones
    return zones


def _read(path: os.PathLike[str] | str, limit: int) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise _Bad(f"{path} exceeds {limit} bytes")
    return data


def _strict_json(data: bytes) -> Any:
    text = data.decode("utf-8")
    if json_depth(text) > MAX_DEPTH:
        raise _Bad("nested too deeply")

    def refuse(name: str) -> Any:
        raise _Bad(f"non-finite literal {name}")

    return json.loads(text, parse_constant=refuse)


def _int(value: Any, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise _Bad(f"integer out of range: {value!r}")
    return value


def _load(f: TetFile) -> dict[int, DatasetZones]:
    folder = f.path.parent
    if folder.name != gen_name(int(f.generation)):
        raise _Bad("not a generation folder")
    cat = f.catalog
    rows = len(cat.entries)
    ndim_max = max((r.ndim for r in cat.datasets), default=0)
    manifest = _strict_json(_read(folder / MANIFEST, MANIFEST_MAX_BYTES))
    zone_bytes = _read(folder / ZONE, min(ZONE_MAX_BYTES,
                                          4096 + rows * (_ROW_BYTES + 32 * ndim_max)))
    if not isinstance(manifest, dict) or manifest.get("zone_maps_sha256") != \
            hashlib.sha256(zone_bytes).hexdigest():
        raise _Bad("zone_maps_sha256 does not match ZONE.json")
    if manifest.get("generation") != f.generation or \
            manifest.get("packed_byte_len") != f.reader.size:
        raise _Bad("manifest names another generation or file")
    ref = cat.footer_refs.get("zone_maps_ref")
    if ref is None or ref[1] != len(zone_bytes) or \
            bytes(f.reader.buffer()[ref[0]:ref[0] + ref[1]]) != zone_bytes:
        raise _Bad("ZONE.json is not the packed file's zone map")
    doc = _strict_json(zone_bytes)
    if not isinstance(doc, dict) or doc.get("version") != 1 or \
            doc.get("generation") != f.generation or \
            not isinstance(doc.get("packed_sha256"), str) or \
            doc.get("packed_sha256") != manifest.get("packed_sha256"):
        raise _Bad("zone map header does not match the manifest")
    chunks = doc.get("chunks")
    if not isinstance(chunks, list) or len(chunks) != rows:
        raise _Bad("zone map rows do not match the index rows")
    return _grids(f, chunks)


def _grids(f: TetFile, chunks: list[Any]) -> dict[int, DatasetZones]:
    cat = f.catalog
    ent = cat.entries
    shapes: list[tuple[int, ...] | None] = []
    for rec in cat.datasets:
        full = tuple(-(-s // c) for s, c in zip(rec.shape, rec.chunk_shape))
        # a grid with more tiles than there are rows is sparse: not answered from zones
        shapes.append(None if math.prod(full) > len(ent) else full)
    # the index rows of each dataset, by linear tile number (the rows zones must match)
    have: list[set[int]] = [set() for _ in cat.datasets]
    for did, idx in zip(ent["dataset_id"].tolist(), ent["chunk_index"].tolist()):
        known = shapes[did] if did < len(shapes) else None
        if known is not None:
            have[did].add(_linear(idx[:len(known)], known))
    grids: dict[int, dict[str, np.ndarray[Any, Any]]] = {}
    for did, grid in enumerate(shapes):
        if grid is not None and len(have[did]) == math.prod(grid):
            n = math.prod(grid)
            grids[did] = {"count": np.full(n, -1, np.int64), "nan": np.zeros(n, np.int64),
                          "lo": np.full(n, np.nan), "hi": np.full(n, np.nan)}
    for row in chunks:
        if not isinstance(row, dict) or not set(row) <= _KEYS or \
                not {"dataset_id", "chunk_index", "element_count", "null_count"} <= set(row):
            raise _Bad("zone row keys")
        did = _int(row["dataset_id"], 0, len(cat.datasets) - 1)
        rec = cat.datasets[did]
        idx = row["chunk_index"]
        if not isinstance(idx, list) or len(idx) != rec.ndim:
            raise _Bad("zone row chunk_index")
        tile = [_int(t, 0, -(-s // c) - 1) for t, s, c in zip(idx, rec.shape,
                                                               rec.chunk_shape)]
        grid = shapes[did]
        if grid is None or _linear(tile, grid) not in have[did]:
            raise _Bad("zone row names no index row")
        size = math.prod(min(c, s - t * c) for t, s, c in zip(tile, rec.shape,
                                                               rec.chunk_shape))
        count = _int(row["element_count"], size, size)
        dt = dtypes.by_tag(rec.dtype).numpy
        floating = dt.kind in "fc"
        nulls = _int(row["null_count"], 0, count if floating else 0)
        lo = hi = math.nan
        if nulls < count:
            lo, hi = _value(row.get("min_le"), dt), _value(row.get("max_le"), dt)
            if not lo <= hi:
                raise _Bad("zone row min > max")
        elif "min_le" in row or "max_le" in row:
            raise _Bad("zone row of an all-NaN tile has min/max")
        out = grids.get(did)
        if out is None:
            continue
        at = _linear(tile, grid)
        if out["count"][at] != -1:
            raise _Bad("zone row repeated")
        out["count"][at], out["nan"][at], out["lo"][at], out["hi"][at] = count, nulls, lo, hi
    result = {}
    for did, g in grids.items():
        if (g["count"] < 0).any():
            raise _Bad("zone rows missing")
        grid = shapes[did]
        assert grid is not None
        lows, highs = g["lo"].reshape(grid), g["hi"].reshape(grid)
        nan = g["nan"].reshape(grid)
        result[did] = DatasetZones(g["count"].reshape(grid), nan, lows, highs,
                                   (nan == 0) & np.isfinite(lows) & np.isfinite(highs))
    return result


def _linear(idx: Any, grid: tuple[int, ...]) -> int:
    at = 0
    for i, n in zip(idx, grid):
        at = at * n + int(i)
    return at


def _value(text: Any, dt: np.dtype[Any]) -> float:
    """A zone min/max: exactly the dtype's little-endian bytes in hex, not NaN."""
    if not isinstance(text, str) or len(text) != 2 * dt.itemsize or not _HEX.fullmatch(text):
        raise _Bad("zone value is not the dtype's hex")
    value = float(np.frombuffer(bytes.fromhex(text), dtype=dt.newbyteorder("<"))[0])
    if math.isnan(value):
        raise _Bad("zone value is NaN")
    return value
