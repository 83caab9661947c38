"""Sealing a generation: one layout v1 ``packed.tet`` from the parts of a publish set, with
its ``ZONE.json`` (per tile: element count, NaN count, min and max) and ``INDEX.json``
(value postings of datasets with at most 64 distinct values), as tet-py 0.8.3 writes them.

Tiles are never re-encoded: the header comes from `tet.layout.encode_header`, and each
run of payload bytes is copied from its part with ``copy_file_range`` (`copy_range`), so a
filesystem with reflinks shares the blocks.  Payloads go back to back after the index in
grid order, the zone maps and index follow them, and a version-2 footer names both
(``zone_maps_ref``, ``secondary_index_ref``), as tet-py lays a packed file out; so when
no part carries dataset metadata the file is byte for byte the one tet-py makes.

``packed_sha256`` is what tet-py hashes: the file without its footer, flag bit 0 clear.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tet import dtypes
from tet.attrs import EXT_KEY
from tet.errors import CatalogError, PackageError, TetError
from tet.footer import FOOTER_MAGIC, footer_json, validate_metadata
from tet.layout import ENTRY_DTYPE, Catalog, DatasetRecord, encode_header, header_length
from tet.package_layout import (
    INDEX,
    MANIFEST,
    PACKED,
    ZONE,
    Claim,
    PartMeta,
    dumps,
    manifest_doc,
)
from tet.package_local import copy_range
from tet.reader import Reader

__all__ = ["OpenPart", "SealResult", "open_parts", "seal_generation"]

INDEX_MAX_DISTINCT = 64  # tet-py indexes a dataset with at most this many distinct values
FOOTER_VERSION = 2
_HASH_STEP = 8 << 20
_STATS_BATCH = 64 << 20  # bytes of tiles reduced together when computing zone maps
_PREFIX = 4096  # values looked at first for the index's distinct-value count


@dataclass
class OpenPart:
    part_id: str
    meta: PartMeta
    path: Path
    fd: int
    reader: Reader

    @property
    def buf(self) -> Any:
        return self.reader.buffer()

    @property
    def catalog(self) -> Catalog:
        return self.reader.catalog


@contextlib.contextmanager
def open_parts(parts: Sequence[tuple[PartMeta, Path]]) -> Iterator[list[OpenPart]]:
    """Each part mapped and its catalog parsed, after checking its size and SHA-256
    against ``PART_META.json`` (a part changed since ingest is refused)."""
    opened: list[OpenPart] = []
    try:
        for meta, path in parts:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                reader = Reader.open(path)
            except BaseException:
                os.close(fd)
                raise
            opened.append(OpenPart(meta.part_id, meta, path, fd, reader))
            size, buf = reader.size, reader.buffer()
            digest = hashlib.sha256()
            for at in range(0, size, _HASH_STEP):
                digest.update(buf[at:at + _HASH_STEP])
            if size != meta.byte_len or digest.hexdigest() != meta.sha256:
                raise PackageError(
                    f"tet package: part {meta.part_id!r} ({path}) no longer matches its "
                    f"PART_META.json ({size} bytes, sha256 {digest.hexdigest()[:12]}…; "
                    f"recorded {meta.byte_len} bytes, {meta.sha256[:12]}…): ingest it again")
        yield opened
    finally:
        for p in opened:
            with contextlib.suppress(TetError, BufferError):
                p.reader.close()
            os.close(p.fd)


@dataclass
class _Source:
    part: OpenPart
    dataset_id: int
    tile_offset: tuple[int, ...]
    claim: Claim


@dataclass
class _Out:
    record: DatasetRecord
    sources: list[_Source] = field(default_factory=list)


def _counts(shape: Sequence[int], chunk: Sequence[int]) -> tuple[int, ...]:
    return tuple(-(-s // c) for s, c in zip(shape, chunk))


def plan_datasets(parts: Sequence[OpenPart]) -> list[_Out]:
    """The datasets of the publish set in order, each with the parts it comes from;
    overlapping claims refused, region claims checked to cover their grid exactly.
    Parts with the same bytes as an earlier one add nothing (as tet-py does)."""
    outs: dict[str, _Out] = {}
    seen: set[str] = set()
    for part in parts:
        if part.meta.sha256 in seen:
            continue
        seen.add(part.meta.sha256)
        ids = {r.name: i for i, r in reversed(list(enumerate(part.catalog.datasets)))}
        for claim in part.meta.claims:
            did = ids.get(claim.name)
            if did is None:
                raise PackageError(f"tet package: part {part.part_id!r} claims dataset "
                                   f"{claim.name!r} but its file has no such dataset")
            src = _Source(part, did, tuple(claim.tile_start or (0,) * len(claim.shape)), claim)
            prior = outs.get(claim.name)
            if prior is None:
                outs[claim.name] = _Out(DatasetRecord(claim.name, claim.dtype, claim.shape,
                                                      claim.chunk_shape), [src])
                continue
            first = prior.sources[0]
            if claim.full_grid or first.claim.full_grid:
                raise PackageError(
                    f"overlapping dataset claims in publish set: dataset={claim.name} "
                    f"parts={first.part.part_id} + {part.part_id} "
                    f"({first.claim.describe()} vs {claim.describe()})")
            if (claim.dtype, claim.shape, claim.chunk_shape) != \
                    (prior.record.dtype, prior.record.shape, prior.record.chunk_shape):
                raise PackageError(
                    f"tet package: region claims on dataset={claim.name} disagree: part "
                    f"{first.part.part_id} has dtype:{prior.record.dtype} shape:"
                    f"{list(prior.record.shape)} chunk_shape:{list(prior.record.chunk_shape)},"
                    f" part {part.part_id} dtype:{claim.dtype} shape:{list(claim.shape)} "
                    f"chunk_shape:{list(claim.chunk_shape)}")
            prior.sources.append(src)
    for out in outs.values():
        if not out.sources[0].claim.full_grid:
            _check_cover(out)
    return list(outs.values())


def _check_cover(out: _Out) -> None:
    grid = np.zeros(_counts(out.record.shape, out.record.chunk_shape), dtype=np.int16)
    boxes: list[tuple[_Source, tuple[slice, ...]]] = []
    for src in out.sources:
        start, stop = src.claim.tile_start or (), src.claim.tile_stop or ()
        box = tuple(slice(a, b) for a, b in zip(start, stop))
        for other, obox in boxes:
            if all(a.start < b.stop and b.start < a.stop for a, b in zip(box, obox)):
                raise PackageError(
                    f"overlapping region claims in publish set: dataset={out.record.name} "
                    f"parts={other.part.part_id} + {src.part.part_id} "
                    f"({other.claim.describe()} vs {src.claim.describe()})")
        boxes.append((src, box))
        grid[box] += 1
    missing = np.argwhere(grid == 0)
    if missing.size:
        raise PackageError(
            f"missing tiles in publish set: dataset={out.record.name}: {len(missing)} of "
            f"{grid.size} tiles are claimed by no part (first missing tile "
            f"{missing[0].tolist()}); publish every region part of it together")


_Origin = tuple[OpenPart, int, int, tuple[int, ...]]  # part, payload offset, dataset, tile


def _entries(outs: Sequence[_Out]) -> tuple[np.ndarray[Any, Any], list[_Origin]]:
    """The packed file's index rows (payload offsets still the parts') and, per row, the
    part its bytes come from and their offset there."""
    rows, origin = [], []
    for new_id, out in enumerate(outs):
        counts = np.array(_counts(out.record.shape, out.record.chunk_shape), dtype=np.uint64)
        nd = len(counts)
        per: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], _Source]] = []
        for src in out.sources:
            ent = src.part.catalog.entries
            mine = ent[ent["dataset_id"] == src.dataset_id].copy()
            mine["chunk_index"][:, :nd] += np.array(src.tile_offset, dtype=np.uint64)
            lin = np.zeros(len(mine), dtype=np.uint64)
            for d in range(nd):
                lin = lin * counts[d] + mine["chunk_index"][:, d]
            mine["dataset_id"] = new_id
            per.append((mine, lin, src))
        allrows = np.concatenate([m for m, _, _ in per]) if per else np.zeros(0, ENTRY_DTYPE)
        lin = np.concatenate([x for _, x, _ in per])
        owners = [s for m, _, s in per for _ in range(len(m))]
        order = np.argsort(lin, kind="stable")
        if len(order) > 1 and np.any(np.diff(lin[order]) == 0):
            raise PackageError(f"tet package: dataset {out.record.name!r} has a tile twice in "
                               "its part")
        rows.append(allrows[order])
        for i in order:
            src = owners[i]
            here = tuple(int(c) - o for c, o in zip(allrows["chunk_index"][i][:nd],
                                                     src.tile_offset))
            origin.append((src.part, int(allrows["payload_offset"][i]), src.dataset_id, here))
    entries = np.concatenate(rows) if rows else np.zeros(0, ENTRY_DTYPE)
    return entries, origin


class _Stats:
    """Zone rows and value postings.  Tiles are gathered in batches (raw tiles as they
    are stored, others decoded one at a time by the reader's C path) and each batch is
    reduced per tile by NumPy's ``reduceat`` in one pass, so the cost per tile is a few
    list appends, not a round of NumPy calls."""

    def __init__(self, outs: Sequence[_Out]) -> None:
        self.zone: list[dict[str, Any]] = []
        self.outs = outs
        self.postings: list[dict[bytes, list[list[int]]] | None] = [{} for _ in outs]
        self._did = -1
        self._tiles: list[np.ndarray[Any, Any]] = []
        self._coords: list[list[int]] = []
        self._bytes = 0

    def add(self, row: Any, stored: Any, origin: _Origin) -> None:
        did = int(row["dataset_id"])
        if did != self._did:
            self.flush()
            self._did = did
        rec = self.outs[did].record
        dt = dtypes.by_tag(rec.dtype).numpy
        raw_len = int(row["raw_byte_len"])
        if int(row["codec"]) != 0:  # decoded by the reader's C path, one tile
            part, _, src_did, tile = origin
            table = part.reader.table(src_did)
            lo = [t * c for t, c in zip(tile, table.chunk_shape)]
            hi = [min(a + c, n) for a, c, n in zip(lo, table.chunk_shape, table.shape)]
            arr = np.empty([b - a for a, b in zip(lo, hi)], dtype=dt)
            table.read(lo, hi, [1] * len(lo), arr)
            arr = arr.reshape(-1)
        else:
            arr = np.frombuffer(stored, dtype=dt, count=raw_len // dt.itemsize)
        self._tiles.append(arr)
        self._coords.append([int(c) for c in row["chunk_index"][:rec.ndim]])
        self._bytes += arr.nbytes
        if self._bytes >= _STATS_BATCH:
            self.flush()

    def flush(self) -> None:
        """Reduce the pending tiles (all of one dataset) into zone rows and postings."""
        tiles, coords, did = self._tiles, self._coords, self._did
        self._tiles, self._coords, self._bytes = [], [], 0
        if not tiles:
            return
        dt = dtypes.by_tag(self.outs[did].record.dtype).numpy
        sizes = np.array([t.size for t in tiles], dtype=np.int64)
        if not sizes.all():
            raise PackageError("tet package: a tile with no elements cannot be zone-mapped")
        flat = np.concatenate(tiles) if len(tiles) > 1 else tiles[0]
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        floating = dt.kind == "f"
        nan = np.isnan(flat) if floating else None
        nulls = (np.add.reduceat(nan, starts, dtype=np.int64) if nan is not None
                 else np.zeros(len(tiles), dtype=np.int64))
        lo = (np.fmin if floating else np.minimum).reduceat(flat, starts)
        hi = (np.fmax if floating else np.maximum).reduceat(flat, starts)
        if floating:  # the first of equal extremes, as argmin says: 0.0 vs -0.0
            for i in np.flatnonzero((lo == 0) | (hi == 0)).tolist():
                t = tiles[i][~np.isnan(tiles[i])]
                lo[i], hi[i] = t[int(np.argmin(t))], t[int(np.argmax(t))]
        width = 2 * dt.itemsize
        lo_hex = lo.astype(dt.newbyteorder("<")).tobytes().hex()
        hi_hex = hi.astype(dt.newbyteorder("<")).tobytes().hex()
        for i, (coord, n, nulls_i) in enumerate(zip(coords, sizes.tolist(), nulls.tolist())):
            out: dict[str, Any] = {"dataset_id": did, "chunk_index": coord,
                                   "element_count": n, "null_count": nulls_i}
            if nulls_i < n:
                out["min_le"] = lo_hex[i * width:(i + 1) * width]
                out["max_le"] = hi_hex[i * width:(i + 1) * width]
            self.zone.append(out)
        self._post(did, flat, nan, sizes, coords, dt)

    def _post(self, did: int, flat: np.ndarray[Any, Any], nan: np.ndarray[Any, Any] | None,
              sizes: np.ndarray[Any, Any], coords: list[list[int]],
              dt: np.dtype[Any]) -> None:
        post = self.postings[did]
        if post is None:
            return
        owner = np.repeat(np.arange(len(sizes)), sizes)
        bits = flat.view(f"<u{dt.itemsize}" if dt.itemsize > 1 else "u1")
        if nan is not None:
            bits, owner = bits[~nan], owner[~nan]
        # most datasets have many values: a short prefix says so before the whole batch
        head = bits[:_PREFIX]
        if len(np.unique(head)) > INDEX_MAX_DISTINCT:
            self.postings[did] = None
            return
        values = np.unique(bits) if len(bits) > len(head) else np.unique(head)
        if len(values) > INDEX_MAX_DISTINCT:
            self.postings[did] = None
            return
        known = {bytes(v) for v in post}
        width = dt.itemsize
        names = values.astype(values.dtype.newbyteorder("<")).tobytes()
        keys = [names[at:at + width] for at in range(0, len(names), width)]
        if len(known.union(keys)) > INDEX_MAX_DISTINCT:
            self.postings[did] = None
            return
        pairs = np.unique(owner * len(values) + np.searchsorted(values, bits))
        for pair in pairs.tolist():
            tile, code = divmod(pair, len(values))
            post.setdefault(keys[code], []).append(coords[tile])

    def index_rows(self) -> list[dict[str, Any]]:
        out = []
        for did, post in enumerate(self.postings):
            if post is None:
                continue
            items = sorted((k.hex(), v) for k, v in post.items())
            out.append({"kind": "value_postings", "dataset_id": did,
                        "dtype": self.outs[did].record.dtype,
                        "postings": [{"value_le": h, "chunks": c} for h, c in items]})
        return out


def _metadata(outs: Sequence[_Out]) -> dict[str, Any]:
    """The dataset metadata of each part carried into the packed file (tet-py drops it;
    file-level metadata is dropped as it does).  A region dataset keeps its first
    part's attrs and dim names (coordinate labels there cover one slab only)."""
    plain: dict[str, Any] = {}
    typed: dict[str, Any] = {}
    for out in outs:
        src = out.sources[0]
        meta = src.part.catalog.metadata
        name_there = src.part.catalog.datasets[src.dataset_id].name
        entry = meta.get("datasets", {}).get(name_there)
        ext = meta.get(EXT_KEY, {})
        typed_entry = ext.get("datasets", {}).get(name_there) if isinstance(ext, dict) else None
        if not src.claim.full_grid:
            entry = {k: v for k, v in (entry or {}).items() if k in ("attrs", "dim_names")}
            typed_entry = None
        if entry:
            plain[out.record.name] = entry
        if typed_entry:
            typed[out.record.name] = typed_entry
    doc: dict[str, Any] = {}
    if plain:
        doc["datasets"] = plain
    if typed:
        doc[EXT_KEY] = {"datasets": typed}
    return doc


@dataclass(frozen=True)
class SealResult:
    generation: int
    packed_byte_len: int
    packed_sha256: str
    dataset_names: tuple[str, ...]


def seal_generation(folder: Path, generation: int, parts: Sequence[OpenPart],
                    outs: Sequence[_Out]) -> SealResult:
    """Write ``packed.tet``, ``ZONE.json``, ``INDEX.json`` and ``MANIFEST.json`` into
    `folder` (not yet fsynced: the store's `seal` does that before anything names it)."""
    records = [o.record for o in outs]
    entries, origin = _entries(outs)
    offset = header_length(records, len(entries))
    entries["payload_offset"] = offset + np.concatenate(
        ([0], np.cumsum(entries["stored_byte_len"], dtype=np.uint64)[:-1])
    ).astype(np.uint64) if len(entries) else entries["payload_offset"]
    payload_end = offset + int(entries["stored_byte_len"].sum())
    digest = hashlib.sha256(encode_header(records, entries, flags=0))
    stats = _Stats(outs)
    path = folder / PACKED
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.pwrite(fd, encode_header(records, entries, flags=1), 0)
        run: tuple[OpenPart, int, int, int] | None = None  # part, src start, dst start, len
        for row, where in zip(entries, origin):
            part, src_at = where[0], where[1]
            n = int(row["stored_byte_len"])
            stored = part.buf[src_at:src_at + n]
            digest.update(stored)
            stats.add(row, stored, where)
            dst_at = int(row["payload_offset"])
            if run and run[0] is part and run[1] + run[3] == src_at:
                run = (part, run[1], run[2], run[3] + n)
                continue
            if run:
                copy_range(run[0].fd, fd, run[1], run[3], run[2])
            run = (part, src_at, dst_at, n)
        if run:
            copy_range(run[0].fd, fd, run[1], run[3], run[2])
        stats.flush()
        packed_sha = digest.hexdigest()
        zone = _zone_text(generation, packed_sha, stats.zone)
        index = dumps({"version": 1, "generation": generation, "packed_sha256": packed_sha,
                       "indexes": stats.index_rows()})
        tail = _footer(payload_end, zone, index, _metadata(outs))
        os.pwrite(fd, zone + index + tail, payload_end)
        size = payload_end + len(zone) + len(index) + len(tail)
    finally:
        os.close(fd)
    (folder / ZONE).write_bytes(zone)
    (folder / INDEX).write_bytes(index)
    part_ids = [p.part_id for p in parts]
    (folder / MANIFEST).write_bytes(dumps(manifest_doc(
        generation, part_ids, size, packed_sha, hashlib.sha256(zone).hexdigest(),
        hashlib.sha256(index).hexdigest())))
    return SealResult(generation, size, packed_sha, tuple(r.name for r in records))


def _zone_text(generation: int, packed_sha: str, rows: Sequence[dict[str, Any]]) -> bytes:
    """``ZONE.json`` exactly as `dumps` writes it (indent 2, keys in order), formatted
    row by row: the pure-Python indenting encoder costs tens of microseconds a row."""
    head = dumps({"version": 1, "generation": generation, "packed_sha256": packed_sha,
                  "chunks": []})
    if not rows:
        return head
    parts = []
    for r in rows:
        idx = r["chunk_index"]
        index = ("[\n        " + ",\n        ".join(map(str, idx)) + "\n      ]") if idx \
            else "[]"
        text = (f'    {{\n      "dataset_id": {r["dataset_id"]},\n      "chunk_index": '
                f'{index},\n      "element_count": {r["element_count"]},\n      '
                f'"null_count": {r["null_count"]}')
        if "min_le" in r:
            text += f',\n      "min_le": "{r["min_le"]}",\n      "max_le": "{r["max_le"]}"'
        parts.append(text + "\n    }")
    body = "[\n" + ",\n".join(parts) + "\n  ]"
    assert head.endswith(b'"chunks": []\n}\n')
    return head[:-len(b'[]\n}\n')] + body.encode("ascii") + b"\n}\n"


def _footer(payload_end: int, zone: bytes, index: bytes, metadata: dict[str, Any]) -> bytes:
    """Metadata spill (when it would not fit inline), footer JSON and tail, for the
    bytes after the zone maps and index."""
    validate_metadata(metadata)
    refs = {"zone_maps_ref": {"offset": payload_end, "len": len(zone)},
            "secondary_index_ref": {"offset": payload_end + len(zone), "len": len(index)}}
    try:
        spill, text = footer_json([], metadata, refs, payload_end + len(zone) + len(index))
    except CatalogError as exc:
        raise PackageError(f"tet package: the parts' dataset metadata does not fit one "
                           f"file's footer ({exc})") from None
    return spill + text + len(text).to_bytes(8, "little") + \
        FOOTER_VERSION.to_bytes(4, "little") + FOOTER_MAGIC
