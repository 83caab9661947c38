"""The check sequence of `tet verify` (cli.md §2): a `Report` of findings for a file,
never raising for a bad file; only problems outside the file's bytes raise (a missing
file, a directory, a FIFO or device, no permission) as `TetOSError` subclasses.  Temp
files beside the file that writers which are gone left behind are a warning
(``stale_temp_files``)."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import mmap
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tet import dtypes, kernels, kernels_integrity
from tet.errors import CatalogError, TetFileNotFoundError
from tet.footer import validate_history, validate_metadata
from tet.guard import watching
from tet.integrity import read_table
from tet.layout import (
    FLAG_FOOTER,
    LAYOUT_VERSION,
    RAW,
    ZSTD,
    Catalog,
    DatasetRecord,
    parse_catalog,
    tile_counts,
)
from tet.limits import LIMITS
from tet.objstore import is_url, locate
from tet.paths import map_readonly, open_regular
from tet.query.budget import WORK_FLOOR, resolve_budget
from tet.remote import RangedSource, split_options
from tet.tempnames import StaleTemp, stale_temps
from tet.verify_report import Finding, Report, failed, finish, passed, repair_command, warned

DECODE_LIMIT = 128            # chunks checksum- and decode-checked without deep=True
STALE_LISTED = 5              # stale temp names a finding spells out
NO_TABLE = "no checksum table in this file; stored bytes not checksum-verified"
# how a remote file's checks fetch: (the source's hold, its window in bytes)
Fetch = tuple[Callable[[Any], contextlib.AbstractContextManager[None]], int]
BATCH_ROWS = 1 << 16            # chunk rows per checksum / decode-check kernel call
_DECODE_WINDOW = 128 * 1024      # decoded bytes per step of a zstd check (one zstd block)
_LISTED = 64                     # failing chunks listed one by one; the rest are counted

Progress = Callable[[int], object]



# ---------------------------------------------------------------------------
# verify


@contextlib.contextmanager
def mapped(path: str) -> Iterator[tuple[Any, int]]:
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


def beside(path: str) -> tuple[Path, str]:
    p = Path(path)
    return p.parent, p.name


def _check_stale_temps(path: str) -> Finding | None:
    """A warning when writers that are gone left temp files of this file beside it."""
    found = stale_temps(*beside(path))
    if not found:
        return None
    names = ", ".join(t.describe() for t in found[:STALE_LISTED])
    more = f" and {len(found) - STALE_LISTED} more" if len(found) > STALE_LISTED else ""
    total = sum(t.size for t in found)
    return warned("stale_temp_files", f"{len(found)} stale temp file(s) of {total} bytes "
                                        f"beside the file, their writers gone: {names}{more}")


def stale_of_missing(path: str) -> list[StaleTemp]:
    """Stale temps beside `path` when `path` itself does not exist (a first write that
    was killed), else none."""
    if os.path.lexists(path):
        return []
    with contextlib.suppress(OSError, ValueError):
        return stale_temps(*beside(path))
    return []


def _missing(exc: TetFileNotFoundError, path: str) -> TetFileNotFoundError:
    """A missing file stays an error; stale temps of its name beside it are named too,
    with the command that removes them."""
    found = stale_of_missing(path)
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
           progress: Progress | None = None,
           storage_options: Mapping[str, Any] | None = None) -> Report:
    """Check a file as cli.md §2 orders: layout, per-dataset geometry, payload spans,
    a decode of each chunk (the first 128 unless `deep`), then the footer.

    `progress`, if given, is called with the number of chunks decode-checked since
    the last call.  A URL is checked through ranged reads (`storage_options` as for
    `tet.open`), the chunks fetched a window at a time.
    """
    where = os.fspath(path)
    if is_url(where):
        store_options, tuning = split_options(storage_options)
        source = RangedSource(locate(where, store_options), tuning)
        try:
            return _verify(source.buffer(), source.size, where, deep, progress,
                           (source.hold, tuning.window_bytes))
        finally:
            source.close()
    try:
        with mapped(where) as (buf, size):
            report = _verify(buf, size, where, deep, progress)
    except TetFileNotFoundError as exc:
        raise _missing(exc, where) from None
    stale = _check_stale_temps(where)
    if stale is not None:
        report.findings.append(stale)
        finish(report)
    return report


def _verify(buf: Any, size: int, path: str, deep: bool, progress: Progress | None,
            fetch: Fetch | None = None) -> Report:
    report = Report(ok=False, path=path, file_len=size)
    try:
        cat = parse_catalog(buf, size)
    except CatalogError as exc:
        report.findings.append(failed("parse", str(exc)))
        return finish(report)
    findings = report.findings
    findings += [passed("superblock"), passed("dataset_directory"), passed("chunk_index"),
                 passed("chunk_payloads", "index spans validated during parse")]
    ids = _check_dataset_ids(cat)
    findings.append(ids)
    if not ids.ok:
        return finish(report)
    ids_sorted = np.argsort(cat.entries["dataset_id"], kind="stable")
    bounds = np.searchsorted(cat.entries["dataset_id"][ids_sorted],
                             np.arange(len(cat.datasets) + 1, dtype=np.uint64))
    per_dataset = [_check_tensor_bytes(cat, i, ids_sorted[bounds[i] : bounds[i + 1]])
                   for i in range(len(cat.datasets))]
    findings += per_dataset
    if any(f.failed for f in per_dataset):
        return finish(report)
    findings += _check_offsets(cat)
    decode, every_chunk = _check_payloads(cat, buf, deep, progress, fetch)
    findings += decode
    if cat.dataset_count != len(cat.datasets):
        findings.append(failed("dataset_count", f"superblock dataset_count={cat.dataset_count} "
                                                f"but parsed {len(cat.datasets)} records"))
        return finish(report)
    findings.append(passed("dataset_count"))
    footer = _check_footer(cat)
    findings.append(footer)
    if not footer.ok:
        return finish(report)
    limits = _check_footer_limits(cat, buf)
    findings.append(limits)
    if not limits.ok:
        return finish(report)
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
    return finish(report)


def _check_dataset_ids(cat: Catalog) -> Finding:
    ids = cat.entries["dataset_id"]
    bad = np.flatnonzero(ids >= np.uint64(len(cat.datasets)))
    if bad.size:
        i = int(bad[0])
        return failed("chunk_dataset_ids",
                      f"chunk {i}: dataset_id {int(ids[i])} >= dataset_count {len(cat.datasets)}")
    return passed("chunk_dataset_ids")


def _label(dataset_id: int, record: DatasetRecord) -> str:
    return f"dataset {dataset_id} ({json.dumps(record.name, ensure_ascii=False)})"


def _check_tensor_bytes(cat: Catalog, dataset_id: int, rows: np.ndarray[Any, Any]) -> Finding:
    """Chunk count = grid count, every tile present once with its ragged byte size,
    and the sizes adding up to the whole tensor.  `rows`: the dataset's index rows,
    ascending."""
    record = cat.datasets[dataset_id]
    label = _label(dataset_id, record)

    def fail(text: str) -> Finding:
        return failed("dataset_tensor_bytes", text)

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
    return passed("dataset_tensor_bytes", f"{label}: {expected} chunk(s), {total} B")


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
            out.append(failed("payload_offsets", f"duplicate payload_offset {int(off[again])} at "
                                                 f"chunk {again} (also chunk {first})"))
        ends = off[:-1] + stored[:-1]  # parse checked each end fits the file
        # a raw tile may start at the next multiple of its element size (tet's writer
        # aligns raw tiles that follow zstd frames or smaller elements)
        sizes = np.asarray([dtypes.by_tag(d.dtype).size if dtypes.is_known_tag(d.dtype) else 1
                            for d in cat.datasets] or [1], dtype=np.uint64)
        elem = sizes[np.minimum(cat.entries["dataset_id"][1:], np.uint64(len(sizes) - 1))]
        aligned = (ends + elem - np.uint64(1)) // elem * elem
        padded = (cat.entries["codec"][1:] == RAW) & (off[1:] == aligned)
        gaps = np.flatnonzero((ends != off[1:]) & ~padded)
        if gaps.size:
            k = int(gaps[0])
            out.append(warned(
                "payload_order",
                f"chunk payloads are not contiguous in index order (chunk {k} ends at "
                f"{int(ends[k])}, chunk {k + 1} starts at {int(off[k + 1])}); linear scans "
                f"may not apply"))
    return out


def _batches(cat: Catalog, count: int, fetch: Fetch | None) -> Iterator[np.ndarray[Any, Any]]:
    """Row batches of the payload checks: `BATCH_ROWS` rows, or for a remote file
    (`fetch`) as many as fit its window."""
    if fetch is None:
        for lo in range(0, count, BATCH_ROWS):
            yield np.arange(lo, min(count, lo + BATCH_ROWS), dtype=np.int64)
        return
    ends = np.cumsum(cat.entries["stored_byte_len"][:count].astype(np.int64))
    lo = 0
    while lo < count:
        base = int(ends[lo - 1]) if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, base + fetch[1], side="right")))
        yield np.arange(lo, min(count, hi, lo + BATCH_ROWS), dtype=np.int64)
        lo = min(count, hi, lo + BATCH_ROWS)


def _check_payloads(cat: Catalog, buf: Any, deep: bool, progress: Progress | None,
                    fetch: Fetch | None = None) -> tuple[list[Finding], bool]:
    """Check the chunks' stored bytes (all, or the first 128): against the file's
    checksum table where it has one, and for zstd chunks by decoding them in bounded
    steps.  Returns the findings and whether every chunk was decode-checked."""
    e = cat.entries
    n = len(e)
    findings: list[Finding] = []
    every = deep or n <= DECODE_LIMIT
    count = n if every else DECODE_LIMIT
    if not every:
        findings.append(warned(
            "chunk_decode_skipped",
            f"decode-check skipped for chunks {DECODE_LIMIT}..{n} (limit {DECODE_LIMIT}); "
            f"re-run with --deep or VerifyOptions::deep_decode"))
    table = read_table(buf, cat)
    expected = None
    if table is None:
        findings.append(passed("chunk_checksums", NO_TABLE))
    elif table.crc is None:
        problem = f"{table.problem}; tile checksums not checked"
        findings.append(failed("checksum_table", problem) if table.damaged
                        else warned("checksum_table", problem))
    else:
        expected = table.crc
    # The host's budget, never the file's: a file must not switch its own checks off
    # (memory_budget_bytes = 1 would skip every frame); a bounded check always has room.
    budget = max(resolve_budget(), WORK_FLOOR)
    sums = _Failures("fail their checksum")
    frames = _Failures("fail to decode")
    too_big: list[tuple[int, int]] = []  # (row, decoder bytes it needs)
    for rows in _batches(cat, count, fetch):
        off = e["payload_offset"][rows].astype(np.int64)
        spans = list(zip(off.tolist(), (off + e["stored_byte_len"][rows]).tolist()))
        with fetch[0](spans) if fetch is not None else contextlib.nullcontext():
            _check_batch(cat, buf, rows, expected, budget, sums, frames, too_big)
        if progress is not None:
            progress(len(rows))
    if expected is not None:
        checked = f"{count} chunk(s)" if count == n else f"{count} of {n} chunk(s)"
        findings += sums.findings("chunk_checksums") or [
            passed("chunk_checksums", f"checked {checked} against the checksum table (crc32c)")]
    if too_big:
        every = False
        row, _ = too_big[0]
        findings.append(warned(
            "chunk_decode_memory",
            f"decode-check skipped for {len(too_big)} chunk(s) whose zstd frames need more "
            f"decoder memory than the budget of {budget} bytes (largest "
            f"{max(need for _, need in too_big)} bytes; first chunk {row})"))
    decoded = count - len(too_big)
    unchecked = f"; {len(too_big)} not decode-checked (chunk_decode_memory)" if too_big else ""
    findings += frames.findings("chunk_decode") or [passed(
        "chunk_decode", f"decoded {n} chunk(s)" if decoded == n
        else f"decoded {decoded} of {n} chunk(s){unchecked}")]
    return findings, every


def _check_batch(cat: Catalog, buf: Any, rows: np.ndarray[Any, Any],
                 expected: np.ndarray[Any, Any] | None, budget: int, sums: _Failures,
                 frames: _Failures, too_big: list[tuple[int, int]]) -> None:
    """The checksum and decode checks of one batch of rows."""
    e = cat.entries
    if expected is not None:
        found = kernels_integrity.crc32c_spans(buf, cat.file_len, e["payload_offset"][rows],
                                     e["stored_byte_len"][rows])
        for k in np.flatnonzero(found != expected[rows]):
            row = int(rows[k])
            sums.add(row, functools.partial(_checksum_text, cat, row, int(found[k]),
                                            int(expected[row])))
    _check_frames(cat, buf, rows[e["codec"][rows] == ZSTD], budget, frames, too_big)


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
        out = [failed(check, f"chunk {row}: {text()}") for row, text in sorted(self.listed)]
        if self.more:
            out.append(failed(check, f"{self.more} more chunk(s) {self.verb} (the first "
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
        return kernels_integrity.check_frames(buf, cat.file_len, off[sel], stored[sel], raw[sel],
                                    window=_DECODE_WINDOW, threads=threads,
                                    max_need=max(0, budget // threads - _DECODE_WINDOW))

    status, detail = run(np.arange(len(rows)), threads)
    again = np.flatnonzero(status == kernels_integrity.FRAME_TOO_BIG)
    if again.size and threads > 1:
        status[again], detail[again] = run(again, 1)
    for k in np.flatnonzero(status != kernels_integrity.FRAME_OK):
        row = int(rows[k])
        if status[k] == kernels_integrity.FRAME_TOO_BIG:
            too_big.append((row, int(detail[k])))
            continue
        failures.add(row, functools.partial(kernels_integrity.frame_problem, int(status[k]),
                                            int(detail[k]), int(off[k]), int(stored[k]),
                                            int(raw[k])))


def _check_footer(cat: Catalog) -> Finding:
    if not cat.flags & FLAG_FOOTER:
        return passed("footer", "absent")
    if cat.footer_version is None:  # parse would have refused it; kept for safety
        return failed("footer", "superblock history flag set but footer missing")
    return passed("footer", "history footer valid")


def _check_footer_limits(cat: Catalog, buf: Any) -> Finding:
    """MetadataLimitsV1 over the history, the (inline or spilled) metadata and the
    footer JSON itself."""
    try:
        if cat.flags & FLAG_FOOTER:
            json_len = struct.unpack_from("<Q", buf, cat.file_len - 16)[0]
            if json_len > LIMITS["footer_json_bytes"]:
                return failed("footer_metadata",
                              f"footer JSON of {json_len} bytes exceeds footer_json_bytes limit "
                              f"({LIMITS['footer_json_bytes']})")
        validate_history(cat.history)
        validate_metadata(cat.metadata)
    except CatalogError as exc:
        return failed("footer_metadata", str(exc))
    return passed("footer_metadata", "metadata within MetadataLimitsV1")
