"""What `tet verify` and `tet repair` return: findings, recommendations (the fix each
failing check calls for) and the reports and plans built from them (cli.md §2, §3)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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


def passed(check: str, detail: str | None = None) -> Finding:
    return Finding(check, "info", True, detail)


def failed(check: str, detail: str) -> Finding:
    return Finding(check, "error", False, detail)


def warned(check: str, detail: str) -> Finding:
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


def finish(report: Report) -> Report:
    report.recommendations = _recommendations(report.findings, report.path)
    report.ok = not any(f.failed for f in report.findings)
    return report
