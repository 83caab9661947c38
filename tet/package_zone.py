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
from tet.jsonlimits import MAX_DEPTH
from tet.package_layout import MANIFEST, ZONE, gen_name

if TYPE_CHECKING:
    from tet.file import TetFile

__all__ = ["ZONE_MAX_BYTES", "DatasetZones", "zones_of"]

ZONE_MAX_BYTES = 256 << 20  # ~1.3 million 2-D rows; parsed, a few GB of Python objects
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
    None when `f` is not a package generation (local, or range-read from an object store:
    its manifest, its zone map and the copy embedded in ``packed.tet``, three requests)
    or its ``ZONE.json`` fails a check.
    Loaded on first use and kept for the life of the handle."""
    if os.environ.get("TET_ZONE_MAPS", "").lower() in ("0", "off", "false", "no"):
        return None
    if f.generation is None:
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


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _depth_bound(data: bytes) -> int:
    """Bracket depth counting brackets inside strings too: at least the JSON nesting
    depth, in a pass of C (`tet.jsonlimits.json_depth` is exact but slower), so a zone
    map whose strings hold brackets is refused, which no valid one does."""
    brackets = data.translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _strict_json(data: bytes) -> Any:
    text = data.decode("utf-8")
    if _depth_bound(data) > MAX_DEPTH:
        raise _Bad("nested too deeply")

    def refuse(name: str) -> Any:
        raise _Bad(f"non-finite literal {name}")

    return json.loads(text, parse_constant=refuse)


def _remote_read(f: TetFile, name: str | None, limit: int, span: tuple[int, int] = (0, 0)
                 ) -> bytes:
    """A sibling of a remote ``packed.tet`` (`name`, at most `limit` bytes), or a span of
    the file itself (`name` None: one ranged read, checked against the ETag it was
    opened with)."""
    from tet import objstore
    from tet.remote import RangedSource

    source = f.reader.source
    if not isinstance(source, RangedSource):
        raise _Bad("not a ranged remote file")
    loc = source.loc
    if name is None:
        return objstore.read_range(loc, span[0], span[0] + span[1], etag=source.etag)[0]
    key = loc.key.rpartition("/")[0] + "/" + name
    sibling = objstore.Location(loc.url.rpartition("/")[0] + "/" + name, key, loc.options,
                                loc.store, loc._root)
    data = objstore.read_range(sibling, 0, limit + 1)[0]
    if len(data) > limit:
        raise _Bad(f"{name} exceeds {limit} bytes")
    return data


def _load(f: TetFile) -> dict[int, DatasetZones]:
    remote = f.url is not None
    folder = f.path.parent
    if folder.name != gen_name(int(f.generation)):
        raise _Bad("not a generation folder")
    cat = f.catalog
    rows = len(cat.entries)
    ndim_max = max((r.ndim for r in cat.datasets), default=0)
    zone_limit = min(ZONE_MAX_BYTES, 4096 + rows * (_ROW_BYTES + 32 * ndim_max))
    if remote:  # the same files beside packed.tet under the package's prefix
        manifest = _strict_json(_remote_read(f, MANIFEST, MANIFEST_MAX_BYTES))
        zone_bytes = _remote_read(f, ZONE, zone_limit)
    else:
        manifest = _strict_json(_read(folder / MANIFEST, MANIFEST_MAX_BYTES))
        zone_bytes = _read(folder / ZONE, zone_limit)
    if not isinstance(manifest, dict) or manifest.get("zone_maps_sha256") != \
            hashlib.sha256(zone_bytes).hexdigest():
        raise _Bad("zone_maps_sha256 does not match ZONE.json")
    if manifest.get("generation") != f.generation or \
            manifest.get("packed_byte_len") != f.reader.size:
        raise _Bad("manifest names another generation or file")
    ref = cat.footer_refs.get("zone_maps_ref")
    if ref is None or ref[1] != len(zone_bytes):
        raise _Bad("ZONE.json is not the packed file's zone map")
    embedded = _remote_read(f, None, 0, ref) if remote else \
        bytes(f.reader.buffer()[ref[0]:ref[0] + ref[1]])
    if embedded != zone_bytes:
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


_REQUIRED = ("dataset_id", "chunk_index", "element_count", "null_count")


def _grids(f: TetFile, chunks: list[Any]) -> dict[int, DatasetZones]:
    """Every row checked (a bad one rejects the whole map), column-wise in NumPy; the
    zone maps of the datasets whose every tile has a row."""
    cat = f.catalog
    ids, index, counts, nulls, mins, maxs, present = [], [], [], [], [], [], []
    for row in chunks:
        if type(row) is not dict or not row.keys() <= _KEYS or \
                not all(k in row for k in _REQUIRED) or ("min_le" in row) != ("max_le" in row):
            raise _Bad("zone row keys")
        ids.append(row["dataset_id"])
        index.append(row["chunk_index"])
        counts.append(row["element_count"])
        nulls.append(row["null_count"])
        mins.append(row.get("min_le"))
        maxs.append(row.get("max_le"))
        present.append("min_le" in row)
    if {type(v) for v in ids + counts + nulls} - {int}:
        raise _Bad("zone row integers")
    did = _column(ids, 0, len(cat.datasets) - 1)
    count = _column(counts, 1, 1 << 62)
    null = _column(nulls, 0, 1 << 62)
    ent_did = cat.entries["dataset_id"].astype(np.int64)
    result = {}
    for d, rec in enumerate(cat.datasets):
        at = np.flatnonzero(did == d)
        if len(at) != int((ent_did == d).sum()):
            raise _Bad("zone rows do not match the dataset's index rows")
        if not len(at):
            continue
        grid = np.array([-(-n // c) for n, c in zip(rec.shape, rec.chunk_shape)], np.int64)
        chunk = np.array(rec.chunk_shape, np.int64)
        coords = [index[i] for i in at.tolist()]
        if any(type(c) is not list or len(c) != rec.ndim for c in coords) or \
                {type(v) for c in coords for v in c} - {int}:
            raise _Bad("zone row chunk_index")
        tile = _column(coords, 0, 1 << 62).reshape(len(at), rec.ndim)
        if (tile >= grid).any():
            raise _Bad("zone row tile outside the grid")
        lin = np.ravel_multi_index(tuple(tile.T), tuple(grid.tolist())) if rec.ndim else \
            np.zeros(len(at), np.int64)
        ent_tiles = cat.entries["chunk_index"][ent_did == d][:, :rec.ndim].astype(np.int64)
        ent_lin = np.ravel_multi_index(tuple(ent_tiles.T), tuple(grid.tolist())) \
            if rec.ndim else np.zeros(len(at), np.int64)
        if not np.array_equal(np.sort(lin), np.sort(ent_lin)) or \
                len(np.unique(lin)) != len(lin):
            raise _Bad("zone rows name tiles the index does not hold, or one twice")
        sizes = np.minimum(chunk, np.array(rec.shape, np.int64) - tile * chunk).prod(axis=1)
        n, k = count[at], null[at]
        dt = dtypes.by_tag(rec.dtype).numpy
        if not np.array_equal(n, sizes) or (k > (n if dt.kind == "f" else 0)).any():
            raise _Bad("zone row element or null count")
        has = k < n
        lo, hi = np.full(len(at), np.nan), np.full(len(at), np.nan)
        valued = at[has].tolist()
        if len(valued) != sum(present[i] for i in at.tolist()):
            raise _Bad("zone row min/max presence")
        lo[has] = _values([mins[i] for i in valued], dt)
        hi[has] = _values([maxs[i] for i in valued], dt)
        if not (lo[has] <= hi[has]).all():
            raise _Bad("zone row min > max")
        if math.prod(grid.tolist()) != len(at):
            continue  # sparse: not every tile has a row, so nothing is answered from zones
        order = np.argsort(lin)
        shape = tuple(grid.tolist())
        nan = k[order].reshape(shape)
        lows, highs = lo[order].reshape(shape), hi[order].reshape(shape)
        result[d] = DatasetZones(n[order].reshape(shape), nan, lows, highs,
                                 (nan == 0) & np.isfinite(lows) & np.isfinite(highs))
    return result


def _column(values: list[Any], lo: int, hi: int) -> np.ndarray[Any, Any]:
    """Python ints (already checked to be ints) as int64, each in [lo, hi]."""
    if len(values) and isinstance(values[0], list):
        values = [v for row in values for v in row]
    if any(v < lo or v > hi for v in values):  # before NumPy sees a huge one
        raise _Bad("zone row integer out of range")
    return np.array(values, dtype=np.int64)


def _values(texts: list[Any], dt: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """Zone minima or maxima: each exactly the dtype's little-endian bytes in hex, none
    NaN, as float64."""
    width = 2 * dt.itemsize
    if any(type(t) is not str or len(t) != width for t in texts):
        raise _Bad("zone value is not the dtype's hex")
    joined = "".join(texts)
    if not _HEX.fullmatch(joined):
        raise _Bad("zone value is not hex")
    out = np.frombuffer(bytes.fromhex(joined), dtype=dt.newbyteorder("<")).astype(np.float64)
    if np.isnan(out).any():
        raise _Bad("zone value is NaN")
    return out
