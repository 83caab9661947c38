"""In-place repair of ``.tet`` files (cli.md §3).

``footer_invalid`` cuts the file after its chunk payloads and clears the history-footer
flag, or, when a sound tile checksum table lies after the payloads, keeps the table and
writes a minimal footer naming it (so ``verify --deep`` still sees a damaged tile after
the repair); the repaired image is built beside the file and renamed over it, so the
original is never left half-written; ``stale_temp_files`` removes those temp files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tet.errors import CatalogError, TetFileNotFoundError, os_error
from tet.footer import (
    CHECKSUMS_KEY,
    FOOTER_MAGIC,
    FOOTER_TAIL_LEN,
    encode_footer,
    load_json_region,
)
from tet.integrity import check_table, table_length
from tet.layout import (
    ENTRY_DTYPE,
    ENTRY_LEN,
    FLAG_FOOTER,
    INDEX_HEADER_LEN,
    INDEX_MAGIC,
    SUPERBLOCK_LEN,
)
from tet.limits import LIMITS
from tet.safedir import Dir
from tet.safeio import NewFile
from tet.tempnames import remove_stale, stale_temps, temp_name
from tet.verify_checks import BATCH_ROWS, beside, mapped, stale_of_missing, verify
from tet.verify_report import (
    PlanAction,
    RepairAction,
    RepairPlan,
    RepairReport,
    Report,
    repair_command,
)

REPAIRABLE_CODES = frozenset({"footer_invalid", "stale_temp_files"})
SKIPPED_MESSAGE = "no in-place repair for this code; re-convert or rewrite required"


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
        if "stale_temp_files" not in codes or not stale_of_missing(where):
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
    for lo in range(0, rows, BATCH_ROWS):  # the end of the last payload, a block at a time
        off = entries["payload_offset"][lo : lo + BATCH_ROWS]
        stored = entries["stored_byte_len"][lo : lo + BATCH_ROWS]
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
    with mapped(path) as (buf, size):
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
        found = stale_temps(*beside(path))
        return RepairAction("stale_temp_files", False, True,
                            f"would remove {len(found)} stale temp file(s) "
                            f"({sum(t.size for t in found)} bytes)")
    gone = remove_stale(*beside(path))
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
