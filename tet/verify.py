"""Health check and in-place repair of ``.tet`` files (cli.md §2 and §3).

`verify` runs the check sequence of cli.md §2 and returns a `Report`; it never
prints and never raises for a bad file (a file that does not parse is a report
with ``ok=False``).  Only problems outside the file's bytes (missing file, a
directory, no permission) raise, as `CatalogError`.

`repair` applies the one in-place fix the format allows, ``footer_invalid``:
cut the file after its chunk payloads and clear the history-footer flag.  The
repaired image is built beside the file and renamed over it, so the original
is never left half-written.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import shlex
import shutil
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tet import dtypes
from tet.durable import fsync_dir
from tet.errors import CatalogError, ChunkError
from tet.kernels import TileTable
from tet.layout import (
    FLAG_FOOTER,
    FOOTER_MAGIC,
    FOOTER_TAIL_LEN,
    LAYOUT_VERSION,
    LIMITS,
    SUPERBLOCK_LEN,
    Catalog,
    DatasetRecord,
    load_json_region,
    parse_catalog,
    tile_counts,
    validate_history,
    validate_metadata,
)
from tet.query.budget import resolve_budget

__all__ = [
    "DECODE_LIMIT",
    "REPAIRABLE_CODES",
    "Finding",
    "PlanAction",
    "Progress",
    "Recommendation",
    "RepairAction",
    "RepairPlan",
    "RepairReport",
    "Report",
    "footer_payload_end",
    "repair",
    "repair_command",
    "repair_plan",
    "verify",
]

DECODE_LIMIT = 128            # chunks decode-checked without deep=True
REPAIRABLE_CODES = frozenset({"footer_invalid"})
SKIPPED_MESSAGE = "no in-place repair for this code; re-convert or rewrite required"
_BATCH_BYTES = 64 * 1024 * 1024  # decoded bytes per kernel call during the decode check
_U8_TAG = 5                      # decode checks view every tile as bytes

Progress = Callable[[int], object]


# ---------------------------------------------------------------------------
# report types


@dataclass(frozen=True)
class Finding:
    """One check result; ``ok=False`` with severity ``error`` makes the report fail."""

    check: str
    severity: str  # "error" | "warning" | "info"
    ok: bool
    detail: str | None = None

    @property
    def failed(self) -> bool:
        return not self.ok and self.severity == "error"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.check, "severity": self.severity, "ok": self.ok}
        if self.detail is not None:
            out["detail"] = self.detail
        return out


def _ok(check: str, detail: str | None = None) -> Finding:
    return Finding(check, "info", True, detail)


def _error(check: str, detail: str) -> Finding:
    return Finding(check, "error", False, detail)


def _warning(check: str, detail: str) -> Finding:
    return Finding(check, "warning", False, detail)


@dataclass(frozen=True)
class Recommendation:
    """What to do about a failing or warning finding; `command` is ready to run."""

    code: str
    message: str
    fix_summary: str
    command: str | None = None
    repairable: bool = False

    def to_dict(self) -> dict[str, Any]:
        fix: dict[str, Any] = {"summary": self.fix_summary}
        if self.command is not None:
            fix["command"] = self.command
        return {"code": self.code, "message": self.message, "fix": fix}


@dataclass
class Report:
    """Everything `verify` found; `to_dict` is the JSON of cli.md §2."""

    ok: bool
    path: str
    file_len: int
    findings: list[Finding] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    summary: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "path": self.path,
            "file_len": self.file_len,
            "findings": [f.to_dict() for f in self.findings],
            "recommendations": [r.to_dict() for r in self.recommendations],
        }
        if self.summary is not None:
            out["summary"] = dict(self.summary)
        return out


@dataclass(frozen=True)
class PlanAction:
    code: str
    repairable: bool
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "repairable": self.repairable, "summary": self.summary}


@dataclass
class RepairPlan:
    """What `tet repair PATH` would offer: one action per recommendation."""

    path: str
    actions: list[PlanAction] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "actions": [a.to_dict() for a in self.actions]}


@dataclass(frozen=True)
class RepairAction:
    code: str
    applied: bool
    dry_run: bool
    message: str
    skipped: bool = False

    @property
    def status(self) -> str:
        """``applied``, ``planned`` (dry run) or ``skipped``."""
        if self.applied:
            return "applied"
        return "skipped" if self.skipped or not self.dry_run else "planned"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "applied": self.applied, "dry_run": self.dry_run,
                "message": self.message}


@dataclass
class RepairReport:
    """The outcome of `repair`; `verify_after_ok` is None for a dry run."""

    path: str
    dry_run: bool
    actions: list[RepairAction] = field(default_factory=list)
    verify_after_ok: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "dry_run": self.dry_run,
                "actions": [a.to_dict() for a in self.actions],
                "verify_after_ok": self.verify_after_ok}


# ---------------------------------------------------------------------------
# recommendations (cli.md §2 table)

_CONVERT = "tet convert <source> <output.tet>"


def _quote(path: str) -> str:
    return shlex.quote(path)


def repair_command(path: str, code: str, *, dry_run: bool = True) -> str:
    """The `tet repair` command line for a code (with ``--dry-run`` by default)."""
    return f"tet repair {_quote(path)} --apply {code}" + (" --dry-run" if dry_run else "")


def _recommendation(finding: Finding, path: str) -> Recommendation | None:
    detail = finding.detail or ""
    check = finding.check
    if (check == "parse" and "footer" in detail) or check == "footer":
        return Recommendation(
            "footer_invalid", "History/metadata footer is present but malformed.",
            "Strip the invalid footer (truncate after chunk payloads).",
            repair_command(path, "footer_invalid"), repairable=True)
    if check in ("parse", "superblock", "dataset_directory", "chunk_index",
                 "dataset_tensor_bytes", "payload_offsets"):
        return Recommendation(
            "invalid_layout", "File layout is invalid or truncated; it cannot be read reliably.",
            "Re-create the .tet file from its source (tet convert or a writer session).",
            _CONVERT)
    if check in ("chunk_payloads", "payload_bounds"):
        return Recommendation(
            "payload_out_of_bounds", "A chunk index entry points outside the file payload region.",
            "Restore the file from a backup or re-create it; do not append to a truncated file.")
    if check == "chunk_dataset_ids":
        return Recommendation(
            "bad_dataset_id", "Chunk index references a non-existent dataset id.",
            "Re-write the file: its chunk index and dataset directory disagree.")
    if check == "chunk_decode":
        return Recommendation(
            "chunk_decode_failed", f"Chunk payload could not be decoded: {detail}",
            "Re-convert the file from its original HDF5, NetCDF or Zarr source.", _CONVERT)
    if check == "dataset_count":
        return Recommendation(
            "dataset_count_mismatch", "Superblock dataset count does not match the catalog blob.",
            "Re-create the file: its superblock and dataset directory disagree.")
    if check == "payload_order" and finding.severity == "warning":
        return Recommendation(
            "non_contiguous_payloads",
            "Chunk payloads are not stored in contiguous read-plan order.",
            "Optional: re-convert for a sequential layout; full-file linear scans may be slower.")
    if check == "chunk_decode_skipped" and finding.severity == "warning":
        return Recommendation(
            "run_deep_verify", "Not all chunks were decode-checked (large file).",
            "Re-run with --deep to decode-check every chunk.",
            f"tet verify --deep {_quote(path)}")
    return None


def _recommendations(findings: Sequence[Finding], path: str) -> list[Recommendation]:
    out: list[Recommendation] = []
    for f in findings:
        if f.ok:
            continue
        rec = _recommendation(f, path)
        if rec is not None and all(r.code != rec.code for r in out):
            out.append(rec)
    return out


def _finish(report: Report) -> Report:
    report.recommendations = _recommendations(report.findings, report.path)
    report.ok = not any(f.failed for f in report.findings)
    return report


# ---------------------------------------------------------------------------
# verify


@contextlib.contextmanager
def _mapped(path: str) -> Iterator[tuple[Any, int]]:
    """(read-only buffer, length) of the file; OS problems become one-line CatalogErrors."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, after the mapping
    except IsADirectoryError:
        raise CatalogError(f"cannot verify {path}: is a directory, not a .tet file") from None
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            buf: Any = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except OSError as exc:
            raise CatalogError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        yield buf, size
    finally:
        if isinstance(buf, mmap.mmap):
            with contextlib.suppress(BufferError):
                buf.close()


def verify(path: str | os.PathLike[str], *, deep: bool = False,
           progress: Progress | None = None) -> Report:
    """Check a file as cli.md §2 orders: layout, per-dataset geometry, payload spans,
    a decode of each chunk (the first 128 unless `deep`), then the footer.

    `progress`, if given, is called with the number of chunks decode-checked since
    the last call.
    """
    where = os.fspath(path)
    with _mapped(where) as (buf, size):
        return _verify(buf, size, where, deep, progress)


def _verify(buf: Any, size: int, path: str, deep: bool, progress: Progress | None) -> Report:
    report = Report(ok=False, path=path, file_len=size)
    try:
        cat = parse_catalog(buf, size)
    except CatalogError as exc:
        report.findings.append(_error("parse", str(exc)))
        return _finish(report)
    findings = report.findings
    findings += [_ok("superblock"), _ok("dataset_directory"), _ok("chunk_index"),
                 _ok("chunk_payloads", "index spans validated during parse")]
    ids = _check_dataset_ids(cat)
    findings.append(ids)
    if not ids.ok:
        return _finish(report)
    ids_sorted = np.argsort(cat.entries["dataset_id"], kind="stable")
    bounds = np.searchsorted(cat.entries["dataset_id"][ids_sorted],
                             np.arange(len(cat.datasets) + 1, dtype=np.uint64))
    per_dataset = [_check_tensor_bytes(cat, i, ids_sorted[bounds[i] : bounds[i + 1]])
                   for i in range(len(cat.datasets))]
    findings += per_dataset
    if any(f.failed for f in per_dataset):
        return _finish(report)
    findings += _check_offsets(cat)
    decode, every_chunk = _check_decode(cat, buf, deep, progress)
    findings += decode
    if cat.dataset_count != len(cat.datasets):
        findings.append(_error("dataset_count", f"superblock dataset_count={cat.dataset_count} "
                                                f"but parsed {len(cat.datasets)} records"))
        return _finish(report)
    findings.append(_ok("dataset_count"))
    footer = _check_footer(cat)
    findings.append(footer)
    if not footer.ok:
        return _finish(report)
    limits = _check_footer_limits(cat, buf)
    findings.append(limits)
    if not limits.ok:
        return _finish(report)
    metadata = cat.metadata
    report.summary = {
        "layout_version": LAYOUT_VERSION,
        "dataset_count": len(cat.datasets),
        "chunk_count": len(cat.entries),
        "history_events": len(cat.history),
        "has_metadata": bool(metadata.get("datasets")) or metadata.get("file") is not None,
        "history_footer": bool(cat.flags & FLAG_FOOTER),
        "deep_chunk_decode": every_chunk,
    }
    return _finish(report)


def _check_dataset_ids(cat: Catalog) -> Finding:
    ids = cat.entries["dataset_id"]
    bad = np.flatnonzero(ids >= np.uint64(len(cat.datasets)))
    if bad.size:
        i = int(bad[0])
        return _error("chunk_dataset_ids",
                      f"chunk {i}: dataset_id {int(ids[i])} >= dataset_count {len(cat.datasets)}")
    return _ok("chunk_dataset_ids")


def _label(dataset_id: int, record: DatasetRecord) -> str:
    return f"dataset {dataset_id} ({json.dumps(record.name, ensure_ascii=False)})"


def _check_tensor_bytes(cat: Catalog, dataset_id: int, rows: np.ndarray[Any, Any]) -> Finding:
    """Chunk count = grid count, every tile present once with its ragged byte size,
    and the sizes adding up to the whole tensor.  `rows`: the dataset's index rows,
    ascending."""
    record = cat.datasets[dataset_id]
    label = _label(dataset_id, record)

    def fail(text: str) -> Finding:
        return _error("dataset_tensor_bytes", text)

    if not dtypes.is_known_tag(record.dtype):
        return fail(f"{label}: {dtypes.unsupported_message(record.dtype)}")
    if len(record.chunk_shape) != record.ndim or 0 in record.shape or 0 in record.chunk_shape:
        return fail(f"{label}: invalid geometry: shape {list(record.shape)}, chunk_shape "
                    f"{list(record.chunk_shape)} (every extent must be >= 1)")
    elem = dtypes.by_tag(record.dtype).size
    total = elem * math.prod(record.shape)
    counts = tile_counts(record.shape, record.chunk_shape)
    expected = math.prod(counts)
    if len(rows) != expected:
        return fail(f"{label}: chunk count {len(rows)} != expected grid {expected}")
    # From here the grid has as many tiles as the index has rows: small numbers.
    coords = cat.entries["chunk_index"][rows, : record.ndim]
    outside = np.flatnonzero(np.any(coords >= np.asarray(counts, dtype=np.uint64), axis=1))
    if outside.size:
        k = int(outside[0])
        return fail(f"{label} chunk {int(rows[k])}: chunk_index "
                    f"{[int(c) for c in coords[k]]} is outside the chunk grid {list(counts)}")
    linear: np.ndarray[Any, Any] = np.asarray(
        np.ravel_multi_index(coords.astype(np.int64).T, counts) if len(rows)
        else np.zeros(0, np.int64))
    order = np.argsort(linear, kind="stable")
    same = np.flatnonzero(linear[order][1:] == linear[order][:-1])
    if same.size:
        first, again = (int(rows[order[j]]) for j in (same[0], same[0] + 1))
        return fail(f"{label} chunk {again}: duplicate chunk_index "
                    f"{[int(c) for c in cat.entries['chunk_index'][again, : record.ndim]]} "
                    f"(also chunk {first})")
    raw = cat.entries["raw_byte_len"][rows]
    tiles = _tile_bytes(coords, record, elem)
    wrong = np.flatnonzero(raw != tiles) if isinstance(tiles, np.ndarray) else np.asarray(
        [k for k, t in enumerate(tiles) if int(raw[k]) != t], dtype=np.int64)
    if wrong.size:
        k = int(wrong[0])
        return fail(f"{label} chunk {int(rows[k])}: raw_byte_len {int(raw[k])} != tile "
                    f"{int(tiles[k])}")
    sizes, repeats = np.unique(raw, return_counts=True)
    summed = sum(int(v) * int(c) for v, c in zip(sizes, repeats))
    if summed != total:
        return fail(f"{label}: sum(raw_byte_len)={summed} != logical tensor {total}")
    return _ok("dataset_tensor_bytes", f"{label}: {expected} chunk(s), {total} B")


def _tile_bytes(coords: np.ndarray[Any, Any], record: DatasetRecord,
                elem: int) -> np.ndarray[Any, Any] | list[int]:
    """Ragged tile sizes in bytes; exact uint64 maths when a full tile fits, else ints."""
    if math.prod(record.chunk_shape) * elem < 2**63:
        shape = np.asarray(record.shape, dtype=np.uint64)
        chunk = np.asarray(record.chunk_shape, dtype=np.uint64)
        start = coords.astype(np.uint64) * chunk  # < shape: no overflow
        ext = np.minimum(chunk, shape - start)
        out: np.ndarray[Any, Any] = np.prod(ext, axis=1, dtype=np.uint64) * np.uint64(elem)
        return out
    return [elem * math.prod(min(c, n - int(i) * c)
                             for i, c, n in zip(row, record.chunk_shape, record.shape))
            for row in coords]


def _check_offsets(cat: Catalog) -> list[Finding]:
    """Duplicate payload offsets (an error) and gaps in index order (a warning)."""
    out: list[Finding] = []
    off = cat.entries["payload_offset"]
    stored = cat.entries["stored_byte_len"]
    if len(off) > 1:
        order = np.argsort(off, kind="stable")
        same = np.flatnonzero(off[order][1:] == off[order][:-1])
        if same.size:
            first, again = sorted(int(order[j]) for j in (same[0], same[0] + 1))
            out.append(_error("payload_offsets", f"duplicate payload_offset {int(off[again])} at "
                                                 f"chunk {again} (also chunk {first})"))
        ends = off[:-1] + stored[:-1]  # parse checked each end fits the file
        gaps = np.flatnonzero(ends != off[1:])
        if gaps.size:
            k = int(gaps[0])
            out.append(_warning(
                "payload_order",
                f"chunk payloads are not contiguous in index order (chunk {k} ends at "
                f"{int(ends[k])}, chunk {k + 1} starts at {int(off[k + 1])}); linear scans "
                f"may not apply"))
    return out


def _check_decode(cat: Catalog, buf: Any, deep: bool,
                  progress: Progress | None) -> tuple[list[Finding], bool]:
    """Decode-check the chunks (all, or the first 128); returns findings and whether
    every chunk was decoded."""
    n = len(cat.entries)
    findings: list[Finding] = []
    every = deep or n <= DECODE_LIMIT
    count = n if every else DECODE_LIMIT
    if not every:
        findings.append(_warning(
            "chunk_decode_skipped",
            f"decode-check skipped for chunks {DECODE_LIMIT}..{n} (limit {DECODE_LIMIT}); "
            f"re-run with --deep or VerifyOptions::deep_decode"))
    rows = np.arange(count, dtype=np.int64)
    budget = resolve_budget() // 2  # a decode holds the tile and the kernel's scratch
    big = rows[(cat.entries["codec"][rows] == 1) & (cat.entries["raw_byte_len"][rows] > budget)]
    if big.size:
        every = False
        rows = rows[~np.isin(rows, big)]
        largest = int(cat.entries["raw_byte_len"][big].max())
        findings.append(_warning(
            "chunk_decode_skipped",
            f"decode-check skipped for {big.size} chunk(s) whose tiles exceed the decode "
            f"memory budget of {budget} bytes (largest {largest} bytes; first chunk "
            f"{int(big[0])})"))
    failures = _decode_failures(cat, buf, rows, budget, progress)
    if failures:
        findings += [_error("chunk_decode", f"chunk {i}: {failures[i]}") for i in sorted(failures)]
    elif len(rows) == n:
        findings.append(_ok("chunk_decode", f"decoded {n} chunk(s)"))
    else:
        findings.append(_ok("chunk_decode", f"decoded {len(rows)} of {n} chunk(s)"))
    return findings, every


def _decode_failures(cat: Catalog, buf: Any, rows: np.ndarray[Any, Any], budget: int,
                     progress: Progress | None) -> dict[int, str]:
    """Row -> error text for every zstd row of `rows` whose frame does not decode to
    exactly ``raw_byte_len`` bytes.  Raw rows need no decode: parse checked their span
    and that stored == raw.

    Rows of equal raw size are decoded as the tiles of one byte matrix, many per kernel
    call (threads above a few MiB); a failure names its tile, and the rows around it
    are decoded again so that every failing row is found.
    """
    e = cat.entries
    zstd = rows[e["codec"][rows] == 1]
    if progress is not None and len(rows) > len(zstd):
        progress(len(rows) - len(zstd))
    failures: dict[int, str] = {}
    if not len(zstd):
        return failures
    sizes = e["raw_byte_len"][zstd]
    for size in np.unique(sizes):
        group = zstd[sizes == size]
        width = int(size)
        table = TileTable(buf, cat.file_len, (len(group), width), (1, width), _U8_TAG, 1,
                          e["payload_offset"][group], e["stored_byte_len"][group],
                          e["raw_byte_len"][group], e["codec"][group])
        try:
            per_call = max(1, min(_BATCH_BYTES, budget) // width)
            scratch = np.empty((min(per_call, len(group)), width), np.uint8)
            for lo in range(0, len(group), per_call):
                hi = min(lo + per_call, len(group))
                for tile, text in _decode_span(table, lo, hi, width, scratch):
                    failures[int(group[tile])] = text
                if progress is not None:
                    progress(hi - lo)
        finally:
            table.release()
    return failures


_MARK = "\x00tile"


def _decode_span(table: TileTable, lo: int, hi: int, width: int,
                 scratch: np.ndarray[Any, Any]) -> list[tuple[int, str]]:
    """(tile, error) for each tile in [lo, hi) of the byte-matrix table that fails."""
    out: list[tuple[int, str]] = []
    todo = [(lo, hi)]
    while todo:
        a, b = todo.pop()
        if a >= b:
            continue
        hit: list[int] = []

        def describe(tile: int, hit: list[int] = hit) -> str:
            hit.append(tile)
            return _MARK

        try:
            table.read((a, 0), (b, width), (1, 1), scratch[: b - a], describe=describe)
        except ChunkError as exc:
            if not hit:
                raise
            text = str(exc)
            out.append((hit[0], text.split(_MARK + ": ", 1)[-1]))
            # with threads, tiles before the failing one may not have been reached
            todo += [(a, hit[0]), (hit[0] + 1, b)]
    return out


def _check_footer(cat: Catalog) -> Finding:
    if not cat.flags & FLAG_FOOTER:
        return _ok("footer", "absent")
    if cat.footer_version is None:  # parse would have refused it; kept for safety
        return _error("footer", "superblock history flag set but footer missing")
    return _ok("footer", "history footer valid")


def _check_footer_limits(cat: Catalog, buf: Any) -> Finding:
    """MetadataLimitsV1 over the history, the (inline or spilled) metadata and the
    footer JSON itself."""
    try:
        if cat.flags & FLAG_FOOTER:
            json_len = struct.unpack_from("<Q", buf, cat.file_len - 16)[0]
            if json_len > LIMITS["footer_json_bytes"]:
                return _error("footer_metadata",
                              f"footer JSON of {json_len} bytes exceeds footer_json_bytes limit "
                              f"({LIMITS['footer_json_bytes']})")
        validate_history(cat.history)
        validate_metadata(cat.metadata)
    except CatalogError as exc:
        return _error("footer_metadata", str(exc))
    return _ok("footer_metadata", "metadata within MetadataLimitsV1")


# ---------------------------------------------------------------------------
# repair


def repair_plan(path: str | os.PathLike[str]) -> RepairPlan:
    """Verify `path` and list one action per recommendation (nothing is written)."""
    where = os.fspath(path)
    return _plan(verify(where))


def _plan(report: Report) -> RepairPlan:
    plan = RepairPlan(report.path)
    for rec in report.recommendations:
        summary = rec.fix_summary
        if rec.repairable:
            summary += f" — try: {repair_command(report.path, rec.code)}"
        plan.actions.append(PlanAction(rec.code, rec.repairable, summary))
    return plan


def repair(path: str | os.PathLike[str], codes: Sequence[str], *,
           dry_run: bool = False) -> RepairReport:
    """Apply (or with `dry_run` describe) the fixes named by `codes`, then verify again.

    Only ``footer_invalid`` has an in-place fix, and only when verify recommends it;
    other codes are reported as skipped.
    """
    where = os.fspath(path)
    before = verify(where)
    recommended = {r.code for r in before.recommendations}
    out = RepairReport(where, dry_run)
    for code in dict.fromkeys(codes):
        if code not in REPAIRABLE_CODES:
            out.actions.append(RepairAction(code, False, dry_run, SKIPPED_MESSAGE, skipped=True))
        elif code not in recommended:
            out.actions.append(RepairAction(
                code, False, dry_run,
                "verify does not report this problem for the file; nothing to repair",
                skipped=True))
        else:
            out.actions.append(_strip_footer(where, dry_run))
    if not dry_run:
        out.verify_after_ok = verify(where).ok
    return out


def footer_payload_end(buf: Any, file_len: int) -> int:
    """Where the chunk payloads end for a footer that is present but malformed:
    file length - 16 - json_len - spill length (layout.md §5.3).

    The fixed tail must be well-formed (``THST`` magic, ``json_len`` inside the file);
    a flagged file with no ``THST`` tail at all ends its payloads at EOF.  The spill
    length comes from ``metadata_ref`` when the footer JSON parses, else 0.
    """
    if file_len < SUPERBLOCK_LEN:
        raise CatalogError(f"file too short for superblock: need 32 bytes, got {file_len}")
    if bytes(buf[file_len - 4 : file_len]) != FOOTER_MAGIC:
        return file_len
    json_len = int(struct.unpack_from("<Q", buf, file_len - 16)[0])
    if json_len > file_len - FOOTER_TAIL_LEN - SUPERBLOCK_LEN:
        raise CatalogError(f"history footer tail is malformed: json_len {json_len} + 16 does "
                           f"not fit after the superblock in a file of {file_len} bytes")
    json_at = file_len - FOOTER_TAIL_LEN - json_len
    spill = 0
    try:  # bounded and depth-checked: a malformed footer may be huge or deeply nested
        doc = load_json_region(buf, json_at, json_len, "footer", LIMITS["footer_json_bytes"])
    except CatalogError:
        doc = None
    ref = doc.get("metadata_ref") if isinstance(doc, dict) else None
    if isinstance(ref, dict):
        length = ref.get("len")
        if isinstance(length, int) and not isinstance(length, bool) and length >= 0:
            if length > json_at - SUPERBLOCK_LEN:
                raise CatalogError(f"history footer tail is malformed: metadata_ref len "
                                   f"{length} reaches before the payloads")
            spill = length
    return json_at - spill


def _strip_footer(path: str, dry_run: bool) -> RepairAction:
    with _mapped(path) as (buf, size):
        try:
            end = footer_payload_end(buf, size)
        except CatalogError as exc:
            return RepairAction("footer_invalid", False, dry_run,
                                f"{exc}; cannot locate the payload end", skipped=True)
        flags = struct.unpack_from("<I", buf, 12)[0]
    if dry_run:
        return RepairAction("footer_invalid", False, True,
                            f"would truncate to {end} bytes and clear history footer flag "
                            f"(from {size} bytes)")
    _rewrite_prefix(Path(path), end, flags & ~FLAG_FOOTER)
    return RepairAction("footer_invalid", True, False,
                        f"truncated to {end} bytes and cleared history footer flag")


def _rewrite_prefix(target: Path, length: int, flags: int) -> None:
    """Replace `target` with its first `length` bytes and new superblock flags.

    The new image is written to a temp file in the same directory and fsynced; the
    original stays reachable under ``<name>.bak-<pid>`` until the rename is done, then
    the backup is removed.  On any failure the original is left as it was.
    """
    folder = target.parent
    tmp = folder / f".{target.name}.repair-{os.getpid()}-{time.time_ns()}.part"
    backup = folder / f"{target.name}.bak-{os.getpid()}"
    made: list[Path] = []
    try:
        with open(target, "rb") as src, open(tmp, "xb") as dst:
            made.append(tmp)
            left = length
            while left:
                block = src.read(min(left, 1 << 20))
                if not block:
                    raise CatalogError(f"{target} shrank while it was being repaired")
                dst.write(block)
                left -= len(block)
            dst.seek(12)
            dst.write(struct.pack("<I", flags))
            dst.flush()
            os.fsync(dst.fileno())
        with contextlib.suppress(OSError):
            shutil.copymode(target, tmp)
        try:
            os.link(target, backup)
        except OSError:
            shutil.copy2(target, backup)
        made.append(backup)
        os.replace(tmp, target)
        made.remove(tmp)
        fsync_dir(folder)
    except OSError as exc:
        raise CatalogError(f"cannot repair {target}: {exc.strerror or exc}") from None
    finally:
        for p in made:
            with contextlib.suppress(OSError):
                p.unlink()

