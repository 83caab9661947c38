"""Health check and in-place repair of ``.tet`` files (cli.md §2 and §3).

`verify` runs the check sequence of cli.md §2 and returns a `Report`; it never
prints and never raises for a bad file (a file that does not parse is a report
with ``ok=False``).  Only problems outside the file's bytes raise: a missing file,
a directory, a FIFO or device (refused at once, never read), no permission, as
`TetOSError` subclasses (`TetFileNotFoundError` is a `FileNotFoundError`, …).
Temp files beside the file that writers which are gone left behind are a warning
(``stale_temp_files``).

`repair` applies the in-place fixes: ``footer_invalid`` cuts the file after its
chunk payloads and clears the history-footer flag, or, when a sound tile checksum
table lies after the payloads, keeps the table and writes a minimal footer naming it
(so ``verify --deep`` still sees a damaged tile after the repair); the repaired image
is built beside the file and renamed over it, so the original is never left
half-written;
``stale_temp_files`` removes those temp files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import mmap
import os
import shlex
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tet import dtypes, kernels
from tet.errors import CatalogError, TetFileNotFoundError, os_error
from tet.guard import watching
from tet.integrity import check_table, read_table, table_length
from tet.layout import (
    CHECKSUMS_KEY,
    ENTRY_DTYPE,
    ENTRY_LEN,
    FLAG_FOOTER,
    FOOTER_MAGIC,
    FOOTER_TAIL_LEN,
    INDEX_HEADER_LEN,
    INDEX_MAGIC,
    LAYOUT_VERSION,
    LIMITS,
    SUPERBLOCK_LEN,
    Catalog,
    DatasetRecord,
    encode_footer,
    load_json_region,
    parse_catalog,
    tile_counts,
    validate_history,
    validate_metadata,
)
from tet.query.budget import WORK_FLOOR, resolve_budget
from tet.safeio import (
    Dir,
    NewFile,
    StaleTemp,
    map_readonly,
    open_regular,
    remove_stale,
    stale_temps,
    temp_name,
)

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
    "footer_table",
    "repair",
    "repair_command",
    "repair_plan",
    "verify",
]

DECODE_LIMIT = 128            # chunks checksum- and decode-checked without deep=True
REPAIRABLE_CODES = frozenset({"footer_invalid", "stale_temp_files"})
STALE_LISTED = 5              # stale temp names a finding spells out
SKIPPED_MESSAGE = "no in-place repair for this code; re-convert or rewrite required"
NO_TABLE = "no checksum table in this file; stored bytes not checksum-verified"
_BATCH_ROWS = 1 << 16            # chunk rows per checksum / decode-check kernel call
_DECODE_WINDOW = 128 * 1024      # decoded bytes per step of a zstd check (one zstd block)
_LISTED = 64                     # failing chunks listed one by one; the rest are counted

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
    if (check == "parse" and ("footer" in detail or "metadata_ref" in detail)) \
            or check == "footer":
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
    if check == "chunk_checksums":
        return Recommendation(
            "checksum_mismatch",
            "Chunk payload bytes differ from the checksums recorded when the file was written.",
            "Restore the file from a backup or re-create it from its source; the tiles named "
            "are damaged.", _CONVERT)
    if check == "checksum_table" and finding.severity == "error":
        return Recommendation(
            "checksum_table_invalid",
            "The tile checksum table is damaged, so tile checksums cannot be checked.",
            "Re-create the file from its source, or rewrite it with a writer session "
            "(TetWriter.open_append) to record a fresh table.")
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
    if check == "stale_temp_files":
        return Recommendation(
            "stale_temp_files", "Temp files left beside the file by writers that are gone "
            "(killed or crashed) take disk space.",
            "Remove them; the file itself is not changed.",
            repair_command(path, "stale_temp_files", dry_run=False), repairable=True)
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
    """(read-only buffer, length) of the file; OS problems become one-line `TetError`s
    ("cannot read P: …"; a directory, FIFO or device: "cannot verify P: is …")."""
    fd, st = open_regular(path, action="cannot read", refusal="cannot verify")
    try:
        size = st.st_size
        mapped = map_readonly(fd, size, path)
    finally:
        os.close(fd)
    buf: Any = mapped if mapped is not None else b""
    try:
        with watching(buf):  # truncated while checked: FileChangedError, not findings
            yield buf, size
    finally:
        if isinstance(buf, mmap.mmap):
            with contextlib.suppress(BufferError):
                buf.close()


def _beside(path: str) -> tuple[Path, str]:
    p = Path(path)
    return p.parent, p.name


def _check_stale_temps(path: str) -> Finding | None:
    """A warning when writers that are gone left temp files of this file beside it."""
    found = stale_temps(*_beside(path))
    if not found:
        return None
    names = ", ".join(t.describe() for t in found[:STALE_LISTED])
    more = f" and {len(found) - STALE_LISTED} more" if len(found) > STALE_LISTED else ""
    total = sum(t.size for t in found)
    return _warning("stale_temp_files", f"{len(found)} stale temp file(s) of {total} bytes "
                                        f"beside the file, their writers gone: {names}{more}")


def _stale_of_missing(path: str) -> list[StaleTemp]:
    """Stale temps beside `path` when `path` itself does not exist (a first write that
    was killed), else none."""
    if os.path.lexists(path):
        return []
    with contextlib.suppress(OSError, ValueError):
        return stale_temps(*_beside(path))
    return []


def _missing(exc: TetFileNotFoundError, path: str) -> TetFileNotFoundError:
    """A missing file stays an error; stale temps of its name beside it are named too,
    with the command that removes them."""
    found = _stale_of_missing(path)
    if not found:
        return exc
    names = ", ".join(t.describe() for t in found[:STALE_LISTED])
    more = f" and {len(found) - STALE_LISTED} more" if len(found) > STALE_LISTED else ""
    total = sum(t.size for t in found)
    return TetFileNotFoundError(
        f"{exc.message}; {len(found)} stale temp file(s) of {total} bytes of that name are "
        f"beside it, their writers gone: {names}{more} (remove them with "
        f"`{repair_command(path, 'stale_temp_files', dry_run=False)}`)",
        errno=exc.errno, strerror=exc.strerror, filename=exc.filename)


def verify(path: str | os.PathLike[str], *, deep: bool = False,
           progress: Progress | None = None) -> Report:
    """Check a file as cli.md §2 orders: layout, per-dataset geometry, payload spans,
    a decode of each chunk (the first 128 unless `deep`), then the footer.

    `progress`, if given, is called with the number of chunks decode-checked since
    the last call.
    """
    where = os.fspath(path)
    try:
        with _mapped(where) as (buf, size):
            report = _verify(buf, size, where, deep, progress)
    except TetFileNotFoundError as exc:
        raise _missing(exc, where) from None
    stale = _check_stale_temps(where)
    if stale is not None:
        report.findings.append(stale)
        _finish(report)
    return report


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
    decode, every_chunk = _check_payloads(cat, buf, deep, progress)
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
        # a raw tile may start at the next multiple of its element size (tet's writer
        # aligns raw tiles that follow zstd frames or smaller elements)
        sizes = np.asarray([dtypes.by_tag(d.dtype).size if dtypes.is_known_tag(d.dtype) else 1
                            for d in cat.datasets] or [1], dtype=np.uint64)
        elem = sizes[np.minimum(cat.entries["dataset_id"][1:], np.uint64(len(sizes) - 1))]
        aligned = (ends + elem - np.uint64(1)) // elem * elem
        padded = (cat.entries["codec"][1:] == 0) & (off[1:] == aligned)
        gaps = np.flatnonzero((ends != off[1:]) & ~padded)
        if gaps.size:
            k = int(gaps[0])
            out.append(_warning(
                "payload_order",
                f"chunk payloads are not contiguous in index order (chunk {k} ends at "
                f"{int(ends[k])}, chunk {k + 1} starts at {int(off[k + 1])}); linear scans "
                f"may not apply"))
    return out


def _check_payloads(cat: Catalog, buf: Any, deep: bool,
                    progress: Progress | None) -> tuple[list[Finding], bool]:
    """Check the chunks' stored bytes (all, or the first 128): against the file's
    checksum table where it has one, and for zstd chunks by decoding them in bounded
    steps.  Returns the findings and whether every chunk was decode-checked."""
    e = cat.entries
    n = len(e)
    findings: list[Finding] = []
    every = deep or n <= DECODE_LIMIT
    count = n if every else DECODE_LIMIT
    if not every:
        findings.append(_warning(
            "chunk_decode_skipped",
            f"decode-check skipped for chunks {DECODE_LIMIT}..{n} (limit {DECODE_LIMIT}); "
            f"re-run with --deep or VerifyOptions::deep_decode"))
    table = read_table(buf, cat)
    expected = None
    if table is None:
        findings.append(_ok("chunk_checksums", NO_TABLE))
    elif table.crc is None:
        problem = f"{table.problem}; tile checksums not checked"
        findings.append(_error("checksum_table", problem) if table.damaged
                        else _warning("checksum_table", problem))
    else:
        expected = table.crc
    # The host's budget, never the file's: a file must not switch its own checks off
    # (memory_budget_bytes = 1 would skip every frame); a bounded check always has room.
    budget = max(resolve_budget(), WORK_FLOOR)
    sums = _Failures("fail their checksum")
    frames = _Failures("fail to decode")
    too_big: list[tuple[int, int]] = []  # (row, decoder bytes it needs)
    for lo in range(0, count, _BATCH_ROWS):
        rows = np.arange(lo, min(count, lo + _BATCH_ROWS), dtype=np.int64)
        if expected is not None:
            found = kernels.crc32c_spans(buf, cat.file_len, e["payload_offset"][rows],
                                         e["stored_byte_len"][rows])
            for k in np.flatnonzero(found != expected[rows]):
                row = int(rows[k])
                sums.add(row, functools.partial(_checksum_text, cat, row, int(found[k]),
                                                int(expected[row])))
        _check_frames(cat, buf, rows[e["codec"][rows] == 1], budget, frames, too_big)
        if progress is not None:
            progress(len(rows))
    if expected is not None:
        checked = f"{count} chunk(s)" if count == n else f"{count} of {n} chunk(s)"
        findings += sums.findings("chunk_checksums") or [
            _ok("chunk_checksums", f"checked {checked} against the checksum table (crc32c)")]
    if too_big:
        every = False
        row, _ = too_big[0]
        findings.append(_warning(
            "chunk_decode_memory",
            f"decode-check skipped for {len(too_big)} chunk(s) whose zstd frames need more "
            f"decoder memory than the budget of {budget} bytes (largest "
            f"{max(need for _, need in too_big)} bytes; first chunk {row})"))
    decoded = count - len(too_big)
    unchecked = f"; {len(too_big)} not decode-checked (chunk_decode_memory)" if too_big else ""
    findings += frames.findings("chunk_decode") or [_ok(
        "chunk_decode", f"decoded {n} chunk(s)" if decoded == n
        else f"decoded {decoded} of {n} chunk(s){unchecked}")]
    return findings, every


class _Failures:
    """Failing chunks of one check in row order: the first `_LISTED` as findings of
    their own (texts built only for those), then one finding counting the rest."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.listed: list[tuple[int, Callable[[], str]]] = []
        self.more = 0

    def add(self, row: int, text: Callable[[], str]) -> None:
        if len(self.listed) < _LISTED:
            self.listed.append((row, text))
        else:
            self.more += 1

    def findings(self, check: str) -> list[Finding]:
        out = [_error(check, f"chunk {row}: {text()}") for row, text in sorted(self.listed)]
        if self.more:
            out.append(_error(check, f"{self.more} more chunk(s) {self.verb} (the first "
                                     f"{_LISTED} are listed)"))
        return out


def _checksum_text(cat: Catalog, row: int, found: int, expected: int) -> str:
    e = cat.entries
    dataset_id = int(e["dataset_id"][row])
    record = cat.datasets[dataset_id]
    coords = [int(c) for c in e["chunk_index"][row][: record.ndim]]
    a = int(e["payload_offset"][row])
    b = a + int(e["stored_byte_len"][row])
    return (f"{_label(dataset_id, record)} chunk_index {coords}: stored bytes [{a}, {b}) have "
            f"crc32c 0x{found:08x}, the checksum table recorded 0x{expected:08x}")


def _check_frames(cat: Catalog, buf: Any, rows: np.ndarray[Any, Any], budget: int,
                  failures: _Failures, too_big: list[tuple[int, int]]) -> None:
    """Decode the zstd `rows` in bounded steps (threads share the memory budget; a frame
    too big for its share is tried again alone with the whole budget) and note every
    frame that does not yield exactly ``raw_byte_len`` bytes with a good checksum."""
    if not len(rows):
        return
    e = cat.entries
    off, stored, raw = (e[k][rows] for k in ("payload_offset", "stored_byte_len",
                                             "raw_byte_len"))
    threads = kernels.thread_count()

    def run(sel: np.ndarray[Any, Any], threads: int) -> tuple[Any, Any]:
        return kernels.check_frames(buf, cat.file_len, off[sel], stored[sel], raw[sel],
                                    window=_DECODE_WINDOW, threads=threads,
                                    max_need=max(0, budget // threads - _DECODE_WINDOW))

    status, detail = run(np.arange(len(rows)), threads)
    again = np.flatnonzero(status == kernels.FRAME_TOO_BIG)
    if again.size and threads > 1:
        status[again], detail[again] = run(again, 1)
    for k in np.flatnonzero(status != kernels.FRAME_OK):
        row = int(rows[k])
        if status[k] == kernels.FRAME_TOO_BIG:
            too_big.append((row, int(detail[k])))
            continue
        failures.add(row, functools.partial(kernels.frame_problem, int(status[k]),
                                            int(detail[k]), int(off[k]), int(stored[k]),
                                            int(raw[k])))


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
    other codes are reported as skipped.  A file that does not exist is an error as
    for `verify`, except that ``stale_temp_files`` still removes the temps a killed
    first write of it left (then there is nothing to verify: ``verify_after_ok`` is
    None).
    """
    where = os.fspath(path)
    try:
        before = verify(where)
    except TetFileNotFoundError:
        if "stale_temp_files" not in codes or not _stale_of_missing(where):
            raise
        return _repair_missing(where, codes, dry_run)
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
        elif code == "stale_temp_files":
            out.actions.append(_remove_stale_temps(where, dry_run))
        else:
            out.actions.append(_strip_footer(where, dry_run))
    if not dry_run:
        out.verify_after_ok = verify(where).ok
    return out


def footer_payload_end(buf: Any, file_len: int) -> int:
    """Where the chunk payloads end for a footer that is present but malformed: the
    lowest offset of the out-of-line regions (every top-level ``*_ref``: the checksum
    table, the metadata spill, a reference writer's indexes) when the footer JSON
    parses, else the footer JSON itself (layout.md §5.3).

    The fixed tail must be well-formed (``THST`` magic, ``json_len`` inside the file);
    a flagged file with no ``THST`` tail at all ends its payloads at EOF.  A region
    that does not lie between the superblock and the footer JSON is an error: cutting
    there could lose payloads.
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
    try:  # bounded and depth-checked: a malformed footer may be huge or deeply nested
        doc = load_json_region(buf, json_at, json_len, "footer", LIMITS["footer_json_bytes"])
    except CatalogError:
        doc = None
    end = json_at
    for key, ref in (doc.items() if isinstance(doc, dict) else ()):
        if not key.endswith("_ref") or not isinstance(ref, dict):
            continue
        start, length = ref.get("offset"), ref.get("len")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for v in (start, length)):
            continue
        assert isinstance(start, int) and isinstance(length, int)
        if start < SUPERBLOCK_LEN or length > json_at - start:
            raise CatalogError(f"history footer tail is malformed: {key} [{start}, "
                               f"{start + length}) is not between the payloads and the "
                               f"footer JSON at {json_at}")
        end = min(end, start)
    return end


def footer_table(buf: Any, file_len: int) -> tuple[int, int] | None:
    """(offset, length) of a sound tile checksum table in a file whose footer is
    malformed, or None.  The table must lie after every chunk payload and before the
    footer JSON, frame itself correctly (``TCRC``, its own crc32c) and have been written
    for exactly these chunk index rows (their crc32c), so keeping it can only keep damage
    visible.  Looked for where a writer puts it: where the footer still points, right
    after the payloads (up to 7 bytes of alignment), or right before the footer JSON."""
    if file_len < SUPERBLOCK_LEN + FOOTER_TAIL_LEN or \
            bytes(buf[file_len - 4 : file_len]) != FOOTER_MAGIC:
        return None
    json_len = int(struct.unpack_from("<Q", buf, file_len - 16)[0])
    if json_len > file_len - FOOTER_TAIL_LEN - SUPERBLOCK_LEN:
        return None
    json_at = file_len - FOOTER_TAIL_LEN - json_len
    index_at, index_len = struct.unpack_from("<QQ", buf, 16)
    if index_len < INDEX_HEADER_LEN or index_at > json_at or index_len > json_at - index_at \
            or bytes(buf[index_at : index_at + 4]) != INDEX_MAGIC:
        return None
    rows = int(struct.unpack_from("<Q", buf, index_at + 8)[0])
    if (index_len - INDEX_HEADER_LEN) // ENTRY_LEN < rows or \
            INDEX_HEADER_LEN + rows * ENTRY_LEN != index_len:
        return None
    length = table_length(rows)
    entries = np.frombuffer(buf, dtype=ENTRY_DTYPE, count=rows, offset=index_at + INDEX_HEADER_LEN)
    bound = np.uint64(json_at)
    payload_end = index_at + index_len
    for lo in range(0, rows, _BATCH_ROWS):  # the end of the last payload, a block at a time
        off = entries["payload_offset"][lo : lo + _BATCH_ROWS]
        stored = entries["stored_byte_len"][lo : lo + _BATCH_ROWS]
        if np.any(off > bound) or np.any(stored > bound - np.minimum(off, bound)):
            return None  # a row past the footer: the index itself is not sound
        if len(off):
            payload_end = max(payload_end, int((off + stored).max()))
    candidates = [*range(payload_end, payload_end + 8), json_at - length]
    try:
        doc = load_json_region(buf, json_at, json_len, "footer", LIMITS["footer_json_bytes"])
    except CatalogError:
        doc = None
    ref = doc.get(CHECKSUMS_KEY) if isinstance(doc, dict) else None
    if isinstance(ref, dict) and type(ref.get("offset")) is int:
        candidates.insert(0, ref["offset"])
    for at in dict.fromkeys(candidates):
        if payload_end <= at and length <= json_at - at and \
                check_table(buf, at, length, index_at, rows).crc is not None:
            return at, length
    return None


def _strip_footer(path: str, dry_run: bool) -> RepairAction:
    with _mapped(path) as (buf, size):
        try:
            end = footer_payload_end(buf, size)
        except CatalogError as exc:
            return RepairAction("footer_invalid", False, dry_run,
                                f"{exc}; cannot locate the payload end", skipped=True)
        flags = struct.unpack_from("<I", buf, 12)[0]
        table = footer_table(buf, size)
        if table is not None:  # keep it, or damage to a tile would be laundered
            end, length = table
            footer = encode_footer([], {}, end, bytes(buf[end : end + length]))
    if table is None:
        if dry_run:
            return RepairAction("footer_invalid", False, True,
                                f"would truncate to {end} bytes and clear history footer flag "
                                f"(from {size} bytes)")
        _rewrite_prefix(Path(path), end, flags & ~FLAG_FOOTER)
        return RepairAction("footer_invalid", True, False,
                            f"truncated to {end} bytes and cleared history footer flag")
    kept = (f"the tile checksum table [{end}, {end + length}) and a minimal footer naming it "
            f"({len(footer)} bytes in all)")
    if dry_run:
        return RepairAction("footer_invalid", False, True,
                            f"would truncate to {end} bytes and write back {kept} "
                            f"(from {size} bytes)")
    _rewrite_prefix(Path(path), end, flags | FLAG_FOOTER, footer)
    return RepairAction("footer_invalid", True, False,
                        f"truncated to {end} bytes and wrote back {kept}")


def _repair_missing(path: str, codes: Sequence[str], dry_run: bool) -> RepairReport:
    out = RepairReport(path, dry_run)
    for code in dict.fromkeys(codes):
        if code == "stale_temp_files":
            action = _remove_stale_temps(path, dry_run)
            out.actions.append(dataclasses.replace(
                action, message=f"{action.message}; {path} itself does not exist"))
        else:
            out.actions.append(RepairAction(
                code, False, dry_run, f"{path} does not exist; nothing to repair",
                skipped=True))
    return out


def _remove_stale_temps(path: str, dry_run: bool) -> RepairAction:
    if dry_run:
        found = stale_temps(*_beside(path))
        return RepairAction("stale_temp_files", False, True,
                            f"would remove {len(found)} stale temp file(s) "
                            f"({sum(t.size for t in found)} bytes)")
    gone = remove_stale(*_beside(path))
    return RepairAction("stale_temp_files", True, False,
                        f"removed {len(gone)} stale temp file(s) "
                        f"({sum(t.size for t in gone)} bytes)")


def _rewrite_prefix(target: Path, length: int, flags: int, suffix: bytes = b"") -> None:
    """Replace `target` with its first `length` bytes (then `suffix`) and new superblock
    flags.

    The new image is written beside the file (space reserved first, so a full disk
    fails before anything changes), fsynced and renamed over it relative to the
    directory; the original stays reachable under a hidden backup name
    (``TEMP_NAMES["backup"]``) until the rename is done, then the backup is removed.
    On any failure the original is left as it was and no temp file remains.
    """
    action = "cannot repair"
    try:
        folder = Dir.of(target.parent)
    except OSError as exc:
        raise os_error(exc, action, target) from None
    backup: str | None = None
    with folder:
        try:
            src = folder.open(target.name, os.O_RDONLY)
        except OSError as exc:
            raise os_error(exc, action, target) from None
        try:
            with NewFile(folder, target.name, shown=target, action=action, kind="repair") as out:
                out.reserve(length + len(suffix))
                pos = 0
                while pos < length:
                    block = os.pread(src, min(length - pos, 1 << 20), pos)
                    if not block:
                        raise CatalogError(f"{target} shrank while it was being repaired")
                    out.write(block, pos)
                    pos += len(block)
                if suffix:
                    out.write(suffix, length)
                out.write(struct.pack("<I", flags), 12)
                name = temp_name("backup", target.name)
                try:
                    os.link(target.name, name, src_dir_fd=folder.fd, dst_dir_fd=folder.fd)
                    backup = name
                except OSError:  # no hard links here: the rename alone is atomic
                    backup = None
        except OSError as exc:
            raise os_error(exc, action, target) from None
        finally:
            os.close(src)
            if backup is not None:
                with contextlib.suppress(OSError):
                    folder.unlink(backup)
