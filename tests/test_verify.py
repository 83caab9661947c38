"""`tet verify` and `tet repair` (cli.md §2, §3) and the `tet.verify` library.

- Every reference file verifies ok (exact text for sample.tet); large.tet warns in
  quick mode and decodes all 144 chunks with --deep.
- plan.tet fails on its footer; its repair plan, dry run, apply (atomic, on a copy)
  and `verify --repair` give the exact texts and a file that reads like sample.tet.
- Hand-built layouts: payload gaps (warning), duplicate offsets, bad dataset ids,
  wrong raw sizes, duplicate/outside tile coordinates, unknown dtypes, footer limits.
- The corruption corpus of tests/test_corruption.py: truncations at every region
  boundary fail cleanly with exit 1; random flips pass or fail cleanly; zstd payload
  damage that a read detects is a chunk_decode failure in deep mode.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
import tet.cli.verify
import tet.verify
import tet.verify_checks
from tests.conftest import INTEROP, UPSTREAM, CliRun
from tests.helpers import with_footer
from tests.test_corruption import (
    CORPUS_NAMES,
    INTEROP_FILES,
    _write_ours,
    apply,
    cut_points,
    flip_cases,
    regions,
)
from tet.layout import encode_header, parse_catalog

Cli = Callable[..., CliRun]

SAMPLE = UPSTREAM / "tet" / "sample.tet"
LARGE = UPSTREAM / "tet" / "large.tet"
PLAN = UPSTREAM / "tet" / "plan.tet"
FAILED = "error: verification failed\n"
SKIP_TEXT = ("decode-check skipped for chunks 128..144 (limit 128); re-run with --deep or "
             "VerifyOptions::deep_decode")
SUMMARY_KEYS = {"layout_version", "dataset_count", "chunk_count", "history_events",
                "has_metadata", "history_footer", "deep_chunk_decode"}
REPORT_KEYS = {"ok", "path", "file_len", "findings", "recommendations", "summary"}

FIXTURES = sorted(p for p in (UPSTREAM / "tet").glob("*.tet") if p.name != "plan.tet")
INTEROP_TETS = sorted(p for p in INTEROP.glob("*.tet") if p.name != "plan.tet")


def _copy(src: Path, dst_dir: Path, name: str | None = None) -> Path:
    dst = dst_dir / (name or src.name)
    dst.write_bytes(src.read_bytes())
    return dst


def _checks(report: dict[str, Any]) -> list[str]:
    return [f["check"] for f in report["findings"]]


def _finding(report: dict[str, Any], check: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [f for f in report["findings"] if f["check"] == check]
    assert len(found) == 1, found
    return found[0]


def _json(cli: Cli, *argv: str | os.PathLike[str]) -> tuple[int, dict[str, Any]]:
    r = cli("verify", "--json", *argv)
    assert r.err in ("", FAILED)
    return r.rc, json.loads(r.out)


# ---------------------------------------------------------------------------
# good files


SAMPLE_TEXT = """\
file: {p}
size: 368 bytes
status: ok
checks:
  superblock             ok
  dataset_directory      ok
  chunk_index            ok
  chunk_payloads         ok (index spans validated during parse)
  chunk_dataset_ids      ok
  dataset_tensor_bytes   ok (dataset 0 ("temperature"): 2 chunk(s), 24 B)
  chunk_checksums        ok (no checksum table in this file; stored bytes not checksum-verified)
  chunk_decode           ok (decoded 2 chunk(s))
  dataset_count          ok
  footer                 ok (absent)
  footer_metadata        ok (metadata within MetadataLimitsV1)
recommendations:
  (none)
summary: layout=1 datasets=1 chunks=2 history=0 metadata=false footer=false deep_decode=true
"""


def test_sample_text_exact(cli: Cli) -> None:
    r = cli("verify", SAMPLE)
    assert (r.rc, r.err) == (0, "")
    assert r.out == SAMPLE_TEXT.format(p=SAMPLE)


def test_sample_json_exact(cli: Cli) -> None:
    rc, d = _json(cli, SAMPLE)
    assert rc == 0
    assert d == {
        "ok": True, "path": str(SAMPLE), "file_len": 368,
        "findings": [
            {"check": "superblock", "severity": "info", "ok": True},
            {"check": "dataset_directory", "severity": "info", "ok": True},
            {"check": "chunk_index", "severity": "info", "ok": True},
            {"check": "chunk_payloads", "severity": "info", "ok": True,
             "detail": "index spans validated during parse"},
            {"check": "chunk_dataset_ids", "severity": "info", "ok": True},
            {"check": "dataset_tensor_bytes", "severity": "info", "ok": True,
             "detail": 'dataset 0 ("temperature"): 2 chunk(s), 24 B'},
            {"check": "chunk_checksums", "severity": "info", "ok": True,
             "detail": "no checksum table in this file; stored bytes not checksum-verified"},
            {"check": "chunk_decode", "severity": "info", "ok": True,
             "detail": "decoded 2 chunk(s)"},
            {"check": "dataset_count", "severity": "info", "ok": True},
            {"check": "footer", "severity": "info", "ok": True, "detail": "absent"},
            {"check": "footer_metadata", "severity": "info", "ok": True,
             "detail": "metadata within MetadataLimitsV1"},
        ],
        "recommendations": [],
        "summary": {"layout_version": 1, "dataset_count": 1, "chunk_count": 2,
                    "history_events": 0, "has_metadata": False, "history_footer": False,
                    "deep_chunk_decode": True},
    }


def test_sample_quiet(cli: Cli) -> None:
    for flag in ("-q", "--quiet"):
        r = cli("verify", flag, SAMPLE)
        assert (r.rc, r.err) == (0, "")
        assert r.out == (f"path={SAMPLE} status=ok datasets=1 chunks=2 recommendations=0\n")


@pytest.mark.parametrize("path", FIXTURES + INTEROP_TETS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_reference_files_verify_ok(cli: Cli, path: Path) -> None:
    r = cli("verify", path)
    assert (r.rc, r.err) == (0, ""), r.out
    assert "status: ok\n" in r.out
    rc, d = _json(cli, path)
    assert rc == 0 and d["ok"] is True
    assert set(d) == REPORT_KEYS and set(d["summary"]) == SUMMARY_KEYS
    assert all(set(f) <= {"check", "severity", "ok", "detail"} for f in d["findings"])
    assert not [f for f in d["findings"] if not f["ok"] and f["severity"] == "error"]
    with tet.open(path) as f:
        s = f.summary()
    assert d["summary"]["dataset_count"] == len(s["datasets"])
    assert d["summary"]["chunk_count"] == len(s["chunks"])
    assert d["summary"]["history_events"] == len(s["history"])
    assert d["summary"]["history_footer"] == bool(s["superblock"]["flags"] & 1)
    tensor = [f["detail"] for f in d["findings"] if f["check"] == "dataset_tensor_bytes"]
    assert len(tensor) == len(s["datasets"])
    for i, ds in enumerate(s["datasets"]):
        with tet.open(path) as f:
            nbytes = f[ds["name"]].nbytes
        n = sum(1 for c in s["chunks"] if c["dataset_id"] == i)
        assert tensor[i] == f"dataset {i} ({json.dumps(ds['name'])}): {n} chunk(s), {nbytes} B"
    r = cli("verify", "--deep", path)
    assert r.rc == 0 and "deep_decode=true" in r.out


def test_interop_footer_files_summary(cli: Cli) -> None:
    rc, d = _json(cli, INTEROP / "metadata_spill.tet")
    assert rc == 0
    assert d["summary"]["has_metadata"] is True and d["summary"]["history_footer"] is True
    assert _finding(d, "footer")["detail"] == "history footer valid"


def test_large_quick_mode_warns_but_passes(cli: Cli) -> None:
    r = cli("verify", LARGE)
    assert (r.rc, r.err) == (0, "")
    lines = r.out.splitlines()
    assert "status: ok" in lines
    assert f"  chunk_decode_skipped   warn ({SKIP_TEXT})" in lines
    assert "  chunk_decode           ok (decoded 128 of 144 chunk(s))" in lines
    rec = lines[lines.index("recommendations:") + 1:]
    assert rec == [
        "  [run_deep_verify] Not all chunks were decode-checked (large file).",
        "       → Re-run with --deep to decode-check every chunk.",
        f"       → tet verify --deep {LARGE}",
        "summary: layout=1 datasets=1 chunks=144 history=0 metadata=false footer=false "
        "deep_decode=false",
    ]
    rc, d = _json(cli, LARGE)
    assert rc == 0 and d["ok"] is True
    assert _finding(d, "chunk_decode_skipped") == {
        "check": "chunk_decode_skipped", "severity": "warning", "ok": False, "detail": SKIP_TEXT}
    assert d["recommendations"] == [{
        "code": "run_deep_verify", "message": "Not all chunks were decode-checked (large file).",
        "fix": {"summary": "Re-run with --deep to decode-check every chunk.",
                "command": f"tet verify --deep {LARGE}"}}]
    assert d["summary"]["deep_chunk_decode"] is False
    r = cli("verify", "-q", LARGE)
    assert r.out == f"path={LARGE} status=ok datasets=1 chunks=144 recommendations=1\n"


def test_large_deep_decodes_everything(cli: Cli) -> None:
    rc, d = _json(cli, "--deep", LARGE)
    assert rc == 0
    assert "chunk_decode_skipped" not in _checks(d)
    assert _finding(d, "chunk_decode")["detail"] == "decoded 144 chunk(s)"
    assert d["recommendations"] == [] and d["summary"]["deep_chunk_decode"] is True
    r = cli("verify", "--deep", LARGE)
    assert r.rc == 0 and "recommendations:\n  (none)\n" in r.out


def test_library_report_and_progress(tmp_path: Path) -> None:
    steps: list[int] = []
    report = tet.verify.verify(LARGE, deep=True, progress=steps.append)
    assert report.ok and sum(steps) == 144
    assert report.to_dict()["summary"]["deep_chunk_decode"] is True
    a = np.arange(40 * 40, dtype=np.float64).reshape(40, 40)
    path = tmp_path / "z.tet"
    tet.write_dataset(path, "z", a, chunk_shape=(8, 8), codec="zstd")
    steps.clear()
    report = tet.verify.verify(path, deep=True, progress=steps.append)
    assert report.ok and sum(steps) == 25
    steps.clear()
    assert tet.verify.verify(path).ok and steps == []  # no callback, nothing called


def test_cli_deep_progress_bar(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {"updates": 0}

    class Bar:
        def update(self, n: int = 1) -> None:
            seen["updates"] += n

    @contextlib.contextmanager
    def fake(total: int, desc: str, unit: str = "chunk") -> Iterator[Bar]:
        seen["total"], seen["desc"] = total, desc
        yield Bar()

    monkeypatch.setattr(tet.cli.verify, "progress", fake)
    assert cli("verify", "--deep", LARGE).rc == 0
    assert seen == {"updates": 144, "total": 144, "desc": "verify"}
    seen.clear()
    assert cli("verify", LARGE).rc == 0
    assert seen == {}  # quick mode draws no bar


def test_empty_file_verifies(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "empty.tet"
    path.write_bytes(struct.pack("<4sIIIQQ", b"TETR", 1, 0, 0, 32, 0))
    rc, d = _json(cli, path)
    assert rc == 0
    assert _finding(d, "chunk_decode")["detail"] == "decoded 0 chunk(s)"
    assert "dataset_tensor_bytes" not in _checks(d)
    assert d["summary"]["dataset_count"] == 0 and d["summary"]["chunk_count"] == 0


# ---------------------------------------------------------------------------
# plan.tet: a malformed footer and its repair

PLAN_DETAIL = ("invalid one-chunk write spec: footer JSON parse: Expecting value: line 1 "
               "column 1 (char 0) (footer at 360)")


def test_plan_fails_on_footer(cli: Cli) -> None:
    r = cli("verify", PLAN)
    assert (r.rc, r.err) == (1, FAILED)
    assert r.out == (
        f"file: {PLAN}\n"
        "size: 404 bytes\n"
        "status: failed\n"
        "checks:\n"
        f"  parse                  FAIL ({PLAN_DETAIL})\n"
        "recommendations:\n"
        "  [footer_invalid] History/metadata footer is present but malformed.\n"
        "       → Strip the invalid footer (truncate after chunk payloads).\n"
        f"       → tet repair {PLAN} --apply footer_invalid --dry-run\n"
    )
    rc, d = _json(cli, PLAN)
    assert rc == 1
    assert "summary" not in d and d["ok"] is False
    assert d["findings"] == [{"check": "parse", "severity": "error", "ok": False,
                              "detail": PLAN_DETAIL}]
    assert d["recommendations"][0]["fix"]["command"] == (
        f"tet repair {PLAN} --apply footer_invalid --dry-run")
    r = cli("verify", "-q", PLAN)
    assert (r.rc, r.err) == (1, FAILED)
    assert r.out == f"path={PLAN} status=failed datasets=? chunks=? recommendations=1\n"


def test_repair_plan_text_and_json(cli: Cli, tmp_path: Path) -> None:
    p = _copy(PLAN, tmp_path)
    r = cli("repair", p)
    assert (r.rc, r.err) == (0, "")
    assert r.out == (
        f"file: {p}\n"
        "repair plan:\n"
        "  [repairable] footer_invalid — Strip the invalid footer (truncate after chunk "
        f"payloads). — try: tet repair {p} --apply footer_invalid --dry-run\n"
        "\n"
        f"Use: tet repair {p} --apply <code>\n"
    )
    r = cli("repair", "--json", p)
    assert r.rc == 0
    assert json.loads(r.out) == {"path": str(p), "actions": [{
        "code": "footer_invalid", "repairable": True,
        "summary": "Strip the invalid footer (truncate after chunk payloads). — try: "
                   f"tet repair {p} --apply footer_invalid --dry-run"}]}
    assert p.read_bytes() == PLAN.read_bytes()


def test_repair_plan_for_healthy_file(cli: Cli) -> None:
    r = cli("repair", SAMPLE)
    assert r.rc == 0
    assert r.out == (f"file: {SAMPLE}\nrepair plan:\n"
                     "  (no recommendations — run tet verify first or file is ok)\n")
    assert json.loads(cli("repair", "--json", SAMPLE).out) == {"path": str(SAMPLE),
                                                               "actions": []}


def test_repair_plan_lists_manual_codes(cli: Cli, tmp_path: Path) -> None:
    buf = bytearray(SAMPLE.read_bytes())
    struct.pack_into("<Q", buf, 0xF0, 5)  # second row: dataset_id 5
    p = tmp_path / "bad.tet"
    p.write_bytes(bytes(buf))
    r = cli("repair", p)
    assert r.out == (
        f"file: {p}\nrepair plan:\n"
        "  [manual] bad_dataset_id — Re-write the file: its chunk index and dataset "
        "directory disagree.\n\n"
        f"Use: tet repair {p} --apply <code>\n")


def test_repair_dry_run_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    p = _copy(PLAN, tmp_path)
    r = cli("repair", p, "--apply", "footer_invalid", "--dry-run")
    assert (r.rc, r.err) == (0, "")
    assert r.out == (
        f"file: {p}\n"
        "mode: dry-run\n"
        "  [footer_invalid] planned: would truncate to 360 bytes and clear history footer "
        "flag (from 404 bytes)\n"
    )
    r = cli("repair", p, "--apply", "footer_invalid", "--dry-run", "--json")
    assert r.rc == 0
    assert json.loads(r.out) == {
        "path": str(p), "dry_run": True,
        "actions": [{"code": "footer_invalid", "applied": False, "dry_run": True,
                     "message": "would truncate to 360 bytes and clear history footer flag "
                                "(from 404 bytes)"}],
        "verify_after_ok": None}
    assert p.read_bytes() == PLAN.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["plan.tet"]


def _assert_repaired(p: Path) -> None:
    data = p.read_bytes()
    assert len(data) == 360 and data == bytes(
        bytearray(PLAN.read_bytes()[:12]) + struct.pack("<I", 0) + PLAN.read_bytes()[16:360])
    assert struct.unpack_from("<I", data, 12)[0] & 1 == 0
    with tet.open(p) as f, tet.open(SAMPLE) as s:
        (name,) = f.dataset_names
        assert np.array_equal(f.read_numpy(name), s.read_numpy("temperature"))
        assert f.history == [] and f.metadata == {}
    assert sorted(os.listdir(p.parent)) == [p.name]  # no temp file, no backup left


def _applied(p: Path) -> str:
    """The report of the footer_invalid repair of a copy of PLAN at `p`."""
    return (f"file: {p}\n"
            "mode: apply\n"
            "  [footer_invalid] applied: truncated to 360 bytes and cleared history footer flag\n"
            "verify_after: ok\n")


def test_repair_apply(cli: Cli, tmp_path: Path) -> None:
    p = _copy(PLAN, tmp_path)
    r = cli("repair", p, "--apply", "footer_invalid")
    assert (r.rc, r.err) == (0, "")
    assert r.out == _applied(p)
    _assert_repaired(p)
    assert cli("verify", p).rc == 0


def test_repair_apply_json(cli: Cli, tmp_path: Path) -> None:
    p = _copy(PLAN, tmp_path)
    r = cli("repair", "--json", "--apply", "footer_invalid", "--apply", "nonsense", p)
    assert r.rc == 0
    assert json.loads(r.out) == {
        "path": str(p), "dry_run": False,
        "actions": [
            {"code": "footer_invalid", "applied": True, "dry_run": False,
             "message": "truncated to 360 bytes and cleared history footer flag"},
            {"code": "nonsense", "applied": False, "dry_run": False,
             "message": "no in-place repair for this code; re-convert or rewrite required"}],
        "verify_after_ok": True}
    _assert_repaired(p)


def test_verify_repair_flag(cli: Cli, tmp_path: Path) -> None:
    p = _copy(PLAN, tmp_path)
    r = cli("verify", "--repair", p)
    assert r.rc == 0
    assert r.err == _applied(p)
    assert r.out.startswith(f"file: {p}\nsize: 360 bytes\nstatus: ok\n")
    _assert_repaired(p)
    # a healthy file is left alone
    r = cli("verify", "--repair", p)
    assert (r.rc, r.err) == (0, "")


def test_verify_repair_json_and_quiet_are_silent_on_stderr(cli: Cli, tmp_path: Path) -> None:
    p = _copy(PLAN, tmp_path)
    r = cli("verify", "--repair", "--json", "--deep", p)
    assert (r.rc, r.err) == (0, "")
    d = json.loads(r.out)
    assert d["ok"] is True and d["file_len"] == 360
    _assert_repaired(p)
    q = _copy(PLAN, tmp_path, "q.tet")
    r = cli("verify", "--repair", "-q", q)
    assert (r.rc, r.err) == (0, "")
    assert r.out == f"path={q} status=ok datasets=1 chunks=2 recommendations=0\n"


def test_verify_repair_without_an_in_place_fix(cli: Cli, tmp_path: Path) -> None:
    buf = bytearray(SAMPLE.read_bytes())
    struct.pack_into("<Q", buf, 0xF0, 5)
    p = tmp_path / "bad.tet"
    p.write_bytes(bytes(buf))
    r = cli("verify", "--repair", p)
    assert r.rc == 1
    assert r.err == ("repair: no in-place fix applies (recommendations: bad_dataset_id)\n"
                     + FAILED)
    assert p.read_bytes() == bytes(buf)


def test_unknown_code_is_skipped(cli: Cli, tmp_path: Path) -> None:
    p = _copy(SAMPLE, tmp_path)
    r = cli("repair", p, "--apply", "chunk_decode_failed")
    assert (r.rc, r.err) == (0, "")
    assert r.out == (
        f"file: {p}\nmode: apply\n"
        "  [chunk_decode_failed] skipped: no in-place repair for this code; re-convert or "
        "rewrite required\n"
        "verify_after: ok\n")
    r = cli("repair", p, "--apply", "whatever", "--dry-run")
    assert r.out == (
        f"file: {p}\nmode: dry-run\n"
        "  [whatever] skipped: no in-place repair for this code; re-convert or rewrite "
        "required\n")
    assert p.read_bytes() == SAMPLE.read_bytes()


def test_unknown_code_on_broken_file_fails(cli: Cli, tmp_path: Path) -> None:
    p = _copy(PLAN, tmp_path)
    r = cli("repair", p, "--apply", "invalid_layout")
    assert r.rc == 1
    assert r.err == "error: repair finished but verification still failed\n"
    assert r.out.endswith("verify_after: failed\n")
    assert p.read_bytes() == PLAN.read_bytes()


def test_footer_fix_refused_on_healthy_footer(cli: Cli, tmp_path: Path) -> None:
    p = _copy(INTEROP / "f32_2d_edge.tet", tmp_path)
    before = p.read_bytes()
    r = cli("repair", p, "--apply", "footer_invalid")
    assert r.rc == 0
    assert ("  [footer_invalid] skipped: verify does not report this problem for the file; "
            "nothing to repair\n") in r.out
    assert p.read_bytes() == before


def test_repair_strips_spilled_metadata(cli: Cli, tmp_path: Path) -> None:
    """A footer whose JSON parses but is invalid: the spill it references goes too; the
    sound checksum table stays, named by a minimal footer (tests/test_repair_table.py)."""
    src = tmp_path / "spill.tet"
    _write_ours(src, "raw", spill=True)
    buf = src.read_bytes()
    cat = parse_catalog(buf, len(buf))
    json_len = struct.unpack_from("<Q", buf, len(buf) - 16)[0]
    doc = json.loads(buf[len(buf) - 16 - json_len : len(buf) - 16])
    assert "metadata_ref" in doc and "tet_checksums_ref" in doc
    refs = {k: v for k, v in doc.items() if k.endswith("_ref")}
    bad = json.dumps({"history": 5, **refs}).encode()
    broken = with_footer(buf[: len(buf) - 16 - json_len], bad)
    p = tmp_path / "broken.tet"
    p.write_bytes(broken)
    rc, d = _json(cli, p)
    assert rc == 1 and d["recommendations"][0]["code"] == "footer_invalid"
    r = cli("repair", p, "--apply", "footer_invalid")
    assert r.rc == 0
    end = cat.payload_bound
    start, length = refs["tet_checksums_ref"]["offset"], refs["tet_checksums_ref"]["len"]
    assert start == end
    stub = json.dumps({"history": [], "tet_checksums_ref": {"offset": end, "len": length}},
                      separators=(",", ":")).encode()
    assert (f"truncated to {end} bytes and wrote back the tile checksum table [{end}, "
            f"{end + length}) and a minimal footer naming it ({length + len(stub) + 16} bytes "
            "in all)") in r.out
    assert p.read_bytes() == buf[: end + length] + stub + struct.pack("<QI4s", len(stub), 1,
                                                                       b"THST")
    with tet.open(p) as f, tet.open(src) as g:
        for name in g.dataset_names:
            assert np.array_equal(f.read_numpy(name), g.read_numpy(name))


def test_repair_flag_without_footer(cli: Cli, tmp_path: Path) -> None:
    b = bytearray(SAMPLE.read_bytes())
    struct.pack_into("<I", b, 12, 1)
    p = tmp_path / "flag.tet"
    p.write_bytes(bytes(b))
    rc, d = _json(cli, p)
    assert rc == 1
    assert d["findings"][0]["detail"] == "superblock history flag set but footer missing"
    r = cli("repair", p, "--apply", "footer_invalid")
    assert r.rc == 0 and "truncated to 368 bytes" in r.out
    assert p.read_bytes() == SAMPLE.read_bytes()


def test_repair_refuses_malformed_tail(cli: Cli, tmp_path: Path) -> None:
    p = tmp_path / "tail.tet"
    data = with_footer(SAMPLE.read_bytes(), b"{}", json_len=10_000)
    p.write_bytes(data)
    rc, d = _json(cli, p)
    assert rc == 1 and d["recommendations"][0]["code"] == "footer_invalid"
    r = cli("repair", p, "--apply", "footer_invalid", "--dry-run")
    assert r.rc == 0
    assert r.out == (
        f"file: {p}\nmode: dry-run\n"
        "  [footer_invalid] skipped: history footer tail is malformed: json_len 10000 + 16 "
        "does not fit after the superblock in a file of 386 bytes; cannot locate the "
        "payload end\n")
    r = cli("repair", p, "--apply", "footer_invalid")
    assert (r.rc, r.err) == (1, "error: repair finished but verification still failed\n")
    assert p.read_bytes() == data


def test_repair_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The original survives a failed rename untouched, and a backup exists while the
    new image is renamed into place."""
    p = _copy(PLAN, tmp_path)
    seen: list[list[str]] = []
    real = os.replace

    def failing(src: Any, dst: Any, **kw: Any) -> None:
        seen.append(sorted(os.listdir(tmp_path)))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(tet.DiskFullError) as info:
        tet.verify.repair(p, ["footer_invalid"])
    data = PLAN.read_bytes()
    end = tet.verify.footer_payload_end(data, len(data))
    assert str(info.value) == f"cannot repair {p}: No space left on device ({end} bytes)"
    assert p.read_bytes() == PLAN.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["plan.tet"]
    (names,) = seen
    owner = rf"{os.getpid()}-\d+-[0-9a-f]{{8}}\.\d+"
    assert sum(bool(re.fullmatch(rf"\.plan\.tet\.{owner}\.bak", n)) for n in names) == 1
    assert sum(bool(re.fullmatch(rf"\.plan\.tet\.{owner}\.repair", n)) for n in names) == 1

    def recording(src: Any, dst: Any, **kw: Any) -> None:
        seen.append(sorted(os.listdir(tmp_path)))
        real(src, dst, **kw)

    monkeypatch.setattr(os, "replace", recording)
    out = tet.verify.repair(p, ["footer_invalid"])
    assert out.verify_after_ok is True and out.actions[0].status == "applied"
    assert any(n.endswith(".bak") for n in seen[-1])
    assert sorted(os.listdir(tmp_path)) == ["plan.tet"]
    _assert_repaired(p)


def test_repair_keeps_permissions(tmp_path: Path) -> None:
    p = _copy(PLAN, tmp_path)
    p.chmod(0o640)
    tet.verify.repair(p, ["footer_invalid"])
    assert p.stat().st_mode & 0o777 == 0o640


def test_library_repair_plan(tmp_path: Path) -> None:
    p = _copy(PLAN, tmp_path)
    plan = tet.verify.repair_plan(p)
    assert [(a.code, a.repairable) for a in plan.actions] == [("footer_invalid", True)]
    report = tet.verify.repair(p, ["footer_invalid", "footer_invalid"], dry_run=True)
    assert [a.status for a in report.actions] == ["planned"]  # codes are deduplicated
    assert report.verify_after_ok is None


# ---------------------------------------------------------------------------
# usage and operating-system errors


def test_usage_errors(cli: Cli, tmp_path: Path) -> None:
    r = cli("verify", "-q", "--json", SAMPLE)
    assert r.rc == 2 and "not allowed with argument" in r.err
    r = cli("repair", SAMPLE, "--dry-run")
    assert r.rc == 2 and "--dry-run needs --apply CODE" in r.err
    assert cli("verify").rc == 2
    assert cli("repair", SAMPLE, "--apply").rc == 2


def test_missing_file_and_directory(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.tet"
    r = cli("verify", missing)
    assert (r.rc, r.out) == (1, "")
    assert r.err == f"error: cannot read {missing}: No such file or directory\n"
    r = cli("verify", tmp_path)
    assert r.err == f"error: cannot verify {tmp_path}: is a directory, not a .tet file\n"
    r = cli("repair", missing)
    assert r.rc == 1 and r.err.startswith("error: cannot read")
    with pytest.raises(tet.TetFileNotFoundError) as info:
        tet.verify.verify(missing)
    assert isinstance(info.value, FileNotFoundError) and info.value.filename == str(missing)
    with pytest.raises(tet.TetIsADirectoryError) as dinfo:
        tet.verify.verify(tmp_path)
    assert str(dinfo.value) == f"cannot verify {tmp_path}: is a directory, not a .tet file"


def test_short_file_is_a_report_not_an_exception(tmp_path: Path) -> None:
    p = tmp_path / "short.tet"
    p.write_bytes(b"TET")
    report = tet.verify.verify(p)
    assert not report.ok and report.summary is None
    assert [(f.check, f.detail) for f in report.findings] == [
        ("parse", "file too short for superblock: need 32 bytes, got 3")]
    assert [r.code for r in report.recommendations] == ["invalid_layout"]
    assert report.recommendations[0].command == "tet convert <source> <output.tet>"


# ---------------------------------------------------------------------------
# hand-built layouts


def _parts(path: Path) -> tuple[list[Any], np.ndarray[Any, Any], list[bytes]]:
    """Records, index rows and payload bytes of a file our writer made."""
    buf = path.read_bytes()
    cat = parse_catalog(buf, len(buf))
    blobs = [buf[int(o) : int(o) + int(s)]
             for o, s in zip(cat.entries["payload_offset"], cat.entries["stored_byte_len"])]
    return list(cat.datasets), cat.entries.copy(), blobs


def _assemble(records: list[Any], entries: np.ndarray[Any, Any], blobs: list[bytes],
              offsets: list[int]) -> bytes:
    """A footer-less file with each payload at the given offset (zeros in between)."""
    entries = entries.copy()
    entries["payload_offset"] = offsets
    head = encode_header(records, entries, flags=0)
    out = bytearray(max([len(head)] + [o + len(b) for o, b in zip(offsets, blobs)]))
    out[: len(head)] = head
    for o, b in zip(offsets, blobs):
        out[o : o + len(b)] = b
    return bytes(out)


@pytest.fixture
def square(tmp_path: Path) -> tuple[list[Any], np.ndarray[Any, Any], list[bytes], int]:
    """A 4x4 f32 dataset in four 2x2 tiles (all 16 bytes): records, rows, blobs, start."""
    src = tmp_path / "square.tet"
    tet.write_dataset(src, "sq", np.arange(16, dtype=np.float32).reshape(4, 4),
                      chunk_shape=(2, 2))
    records, entries, blobs = _parts(src)
    return records, entries, blobs, int(entries["payload_offset"][0])


def test_payload_gap_is_a_warning(cli: Cli, tmp_path: Path, square: Any) -> None:
    records, entries, blobs, at = square
    p = tmp_path / "gap.tet"
    p.write_bytes(_assemble(records, entries, blobs, [at, at + 16, at + 40, at + 56]))
    r = cli("verify", p)
    assert (r.rc, r.err) == (0, "")
    assert ("  payload_order          warn (chunk payloads are not contiguous in index order "
            f"(chunk 1 ends at {at + 32}, chunk 2 starts at {at + 40}); linear scans may not "
            "apply)\n") in r.out
    assert ("  [non_contiguous_payloads] Chunk payloads are not stored in contiguous read-plan "
            "order.\n       → Optional: re-convert for a sequential layout; full-file linear "
            "scans may be slower.\n") in r.out
    assert "status: ok\n" in r.out
    with tet.open(p) as f:
        assert np.array_equal(f.read_numpy("sq"), np.arange(16, dtype=np.float32).reshape(4, 4))


def test_reordered_payloads_warn(cli: Cli, tmp_path: Path, square: Any) -> None:
    records, entries, blobs, at = square
    p = tmp_path / "order.tet"
    p.write_bytes(_assemble(records, entries, blobs, [at + 48, at + 32, at + 16, at]))
    rc, d = _json(cli, p)
    assert rc == 0
    assert _finding(d, "payload_order")["severity"] == "warning"
    assert [r["code"] for r in d["recommendations"]] == ["non_contiguous_payloads"]


def test_duplicate_offsets_fail(cli: Cli, tmp_path: Path, square: Any) -> None:
    records, entries, blobs, at = square
    p = tmp_path / "dup.tet"
    p.write_bytes(_assemble(records, entries, [blobs[0], blobs[0], blobs[2], blobs[3]],
                            [at, at, at + 32, at + 48]))
    r = cli("verify", p)
    assert (r.rc, r.err) == (1, FAILED)
    assert (f"  payload_offsets        FAIL (duplicate payload_offset {at} at chunk 1 "
            "(also chunk 0))\n") in r.out
    rc, d = _json(cli, p)
    assert rc == 1
    assert [r["code"] for r in d["recommendations"]] == ["invalid_layout",
                                                         "non_contiguous_payloads"]
    assert "summary" in d  # the structure was complete; only the offsets are wrong


def _sample_patched(tmp_path: Path, *edits: tuple[int, str, int]) -> Path:
    b = bytearray(SAMPLE.read_bytes())
    for at, fmt, value in edits:
        struct.pack_into("<" + fmt, b, at, value)
    p = tmp_path / "patched.tet"
    p.write_bytes(bytes(b))
    return p


E0, E1 = 0x88, 0xF0  # index rows of sample.tet (layout.md §9)


def test_bad_dataset_id(cli: Cli, tmp_path: Path) -> None:
    p = _sample_patched(tmp_path, (E1, "Q", 5))
    r = cli("verify", p)
    assert (r.rc, r.err) == (1, FAILED)
    assert "  chunk_dataset_ids      FAIL (chunk 1: dataset_id 5 >= dataset_count 1)\n" in r.out
    assert ("  [bad_dataset_id] Chunk index references a non-existent dataset id.\n"
            "       → Re-write the file: its chunk index and dataset directory disagree.\n"
            ) in r.out
    rc, d = _json(cli, p)
    assert rc == 1
    assert _checks(d)[-1] == "chunk_dataset_ids" and "summary" not in d  # it stops there


@pytest.mark.parametrize("edits,detail", [
    ([(E0 + 80, "Q", 12), (E0 + 88, "Q", 12)],
     'dataset 0 ("temperature") chunk 0: raw_byte_len 12 != tile 16'),
    ([(E1 + 80, "Q", 16), (E1 + 88, "Q", 16), (E1 + 72, "Q", 352)],
     'dataset 0 ("temperature") chunk 1: raw_byte_len 16 != tile 8'),
    ([(E1 + 16, "Q", 0), (E1 + 72, "Q", 0x158), (E1 + 80, "Q", 16), (E1 + 88, "Q", 16)],
     'dataset 0 ("temperature") chunk 1: duplicate chunk_index [0, 0] (also chunk 0)'),
    ([(E1 + 16, "Q", 7)],
     'dataset 0 ("temperature") chunk 1: chunk_index [0, 7] is outside the chunk grid [1, 2]'),
    ([(0x48, "Q", 4)], 'dataset 0 ("temperature"): chunk count 2 != expected grid 4'),
    ([(0x58 + 8, "Q", 0)],
     'dataset 0 ("temperature"): invalid geometry: shape [2, 3], chunk_shape [2, 0] '
     "(every extent must be >= 1)"),
    ([(0x2C, "I", 5), (0x48, "Q", 2**61), (0x58, "Q", 2**61)],
     'dataset 0 ("temperature") chunk 0: raw_byte_len 16 != tile 4611686018427387904'),
    ([(0x2C, "I", 99)],
     'dataset 0 ("temperature"): unsupported dataset dtype 99 (supported: f32=1, f64=2, '
     "i32=3, i64=4, u8=5, u16=6, i16=7, u32=8, f16=9, u64=10)"),
], ids=["raw-short", "raw-long", "duplicate-tile", "outside-grid", "count", "zero-chunk",
        "huge-tile", "dtype-99"])
def test_dataset_tensor_bytes_failures(cli: Cli, tmp_path: Path,
                                       edits: list[tuple[int, str, int]], detail: str) -> None:
    p = _sample_patched(tmp_path, *edits)
    r = cli("verify", p)
    assert (r.rc, r.err) == (1, FAILED)
    assert f"  dataset_tensor_bytes   FAIL ({detail})\n" in r.out
    rc, d = _json(cli, p)
    assert rc == 1
    assert _checks(d)[-1] == "dataset_tensor_bytes" and "summary" not in d
    assert [x["code"] for x in d["recommendations"]] == ["invalid_layout"]


def test_tensor_bytes_per_dataset(cli: Cli, tmp_path: Path) -> None:
    p = tmp_path / "ours.tet"
    _write_ours(p, "zstd")
    rc, d = _json(cli, p)
    assert rc == 0
    assert [f["detail"] for f in d["findings"] if f["check"] == "dataset_tensor_bytes"] == [
        'dataset 0 ("temperature"): 9 chunk(s), 280 B',
        'dataset 1 ("counts"): 12 chunk(s), 480 B',
        'dataset 2 ("mask"): 3 chunk(s), 13 B',
        'dataset 3 ("half"): 4 chunk(s), 18 B',
    ]


def test_footer_metadata_limits(cli: Cli, tmp_path: Path) -> None:
    meta = {"history": [], "metadata": {"datasets": {"temperature": {"attrs": {"k": "v" * 1025}}}}}
    p = tmp_path / "meta.tet"
    p.write_bytes(with_footer(SAMPLE.read_bytes(), json.dumps(meta).encode()))
    rc, d = _json(cli, p)
    assert rc == 1
    assert _finding(d, "footer")["detail"] == "history footer valid"
    f = _finding(d, "footer_metadata")
    assert f["ok"] is False and "exceeds attr_string_bytes limit" in f["detail"]
    assert "summary" not in d
    rows = [{"op": "x" * 1000, "source": "s", "at": "1"}] * 70
    text = json.dumps({"history": rows}).encode()
    p.write_bytes(with_footer(SAMPLE.read_bytes(), text))
    rc, d = _json(cli, p)
    assert rc == 1  # an over-long footer is refused before it is read: a repairable footer
    assert _finding(d, "parse")["detail"] == (
        f"invalid one-chunk write spec: footer JSON of {len(text)} bytes exceeds "
        f"footer_json_bytes limit (65536) (footer at 368)")
    assert [r["code"] for r in d["recommendations"]] == ["footer_invalid"]


def test_decode_budget_below_the_decoder_state(cli: Cli, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles are decoded in bounded steps whatever their size (tests/test_integrity.py);
    only a budget smaller than a frame's decoder itself leaves frames unchecked, and
    says so.  (The budget never drops below WORK_FLOOR in use; lowered here to reach the
    case without a frame that needs 64 MiB of decoder.)"""
    p = tmp_path / "z.tet"
    tet.write_dataset(p, "z", np.arange(24, dtype=np.float32).reshape(4, 6),
                      chunk_shape=(2, 4), codec="zstd")  # tiles of 32 and 16 bytes
    monkeypatch.setattr(tet.verify_checks, "resolve_budget", lambda **kw: 40)
    monkeypatch.setattr(tet.verify_checks, "WORK_FLOOR", 0)
    rc, d = _json(cli, "--deep", p)
    assert rc == 0
    need = 256 * 1024 + 32  # the decoder's fixed state + the largest tile's history
    assert _finding(d, "chunk_decode_memory") == {
        "check": "chunk_decode_memory", "severity": "warning", "ok": False,
        "detail": "decode-check skipped for 4 chunk(s) whose zstd frames need more decoder "
                  f"memory than the budget of 40 bytes (largest {need} bytes; first chunk 0)"}
    assert _finding(d, "chunk_decode")["detail"] == (
        "decoded 0 of 4 chunk(s); 4 not decode-checked (chunk_decode_memory)")
    assert _finding(d, "chunk_checksums")["detail"] == (
        "checked 4 chunk(s) against the checksum table (crc32c)")
    assert d["recommendations"] == [] and d["summary"]["deep_chunk_decode"] is False


@pytest.mark.parametrize("file_budget", [1, 40, 1 << 20])
def test_the_file_does_not_set_the_verify_budget(cli: Cli, tmp_path: Path,
                                                 file_budget: int) -> None:
    """A file's TIDX memory_budget_bytes sets what its queries may use, never how much
    verify may spend checking it: a hostile budget of 1 byte must not switch the decode
    check off (and report the damaged frame's file as ok)."""
    p = tmp_path / "z.tet"
    data = np.random.default_rng(3).random(8192)
    with tet.TetWriter.create(p) as w:
        w.write_dataset("z", data, chunk_shape=(4096,), codec="zstd")
        w.set_execution(memory_budget_bytes=file_budget)
    with tet.open(p) as f:
        assert f.file_execution["memory_budget_bytes"] == file_budget
        frame = int(f.catalog.entries["payload_offset"][1])
        stored = int(f.catalog.entries["stored_byte_len"][1])
        table = f.catalog.footer_refs[tet.footer.CHECKSUMS_KEY]
    rc, d = _json(cli, "--deep", p)
    assert rc == 0 and d["ok"] and _finding(d, "chunk_decode")["detail"] == "decoded 2 chunk(s)"
    assert not [x for x in d["findings"] if x["check"] == "chunk_decode_memory"]
    # damage the middle of frame 1 and drop the checksum table: only the decode sees it
    buf = bytearray(p.read_bytes())
    buf[frame + stored // 2] ^= 0x10
    buf[table[0] : table[0] + 4] = b"XXXX"
    p.write_bytes(bytes(buf))
    rc, d = _json(cli, "--deep", p)
    assert rc == 1 and not d["ok"]
    assert _finding(d, "chunk_decode")["detail"].startswith("chunk 1: zstd decode failed: ")


# ---------------------------------------------------------------------------
# chunk decode


def _flip_frames(path: Path, rows: list[int]) -> Path:
    buf = bytearray(path.read_bytes())
    cat = parse_catalog(bytes(buf), len(buf))
    for k in rows:
        buf[int(cat.entries["payload_offset"][k])] ^= 0x01  # the zstd magic
    out = path.with_name("flipped.tet")
    out.write_bytes(bytes(buf))
    return out


def test_each_bad_frame_reported(cli: Cli, tmp_path: Path) -> None:
    p = tmp_path / "z.tet"
    tet.write_dataset(p, "z", np.arange(64 * 64, dtype=np.int32).reshape(64, 64),
                      chunk_shape=(8, 8), codec="zstd")
    bad = _flip_frames(p, [0, 5, 63])
    r = cli("verify", bad)
    assert (r.rc, r.err) == (1, FAILED)
    lines = [ln for ln in r.out.splitlines() if ln.startswith("  chunk_decode ")]
    assert lines == [f"  chunk_decode           FAIL (chunk {k}: zstd decode failed: Unknown "
                     "frame descriptor)" for k in (0, 5, 63)]
    assert ("  [chunk_decode_failed] Chunk payload could not be decoded: chunk 0: zstd decode "
            "failed: Unknown frame descriptor\n"
            "       → Re-convert the file from its original HDF5, NetCDF or Zarr source.\n"
            "       → tet convert <source> <output.tet>\n") in r.out
    assert "summary: layout=1 datasets=1 chunks=64 " in r.out  # structure was complete


@pytest.mark.parametrize("threads", ["1", "4"])
def test_bad_frames_in_threaded_batches(cli: Cli, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, threads: str) -> None:
    """Batches above 4 MiB decode on several threads; every bad frame is still found."""
    monkeypatch.setenv("TET_THREADS", threads)
    a = np.random.default_rng(0).standard_normal((2048, 1024)).astype(np.float32)
    p = tmp_path / "big.tet"
    tet.write_dataset(p, "x", a, chunk_shape=(256, 256), codec="zstd")
    bad = _flip_frames(p, [30, 5, 21, 6])
    rc, d = _json(cli, bad)
    assert rc == 1
    assert [f["detail"] for f in d["findings"] if f["check"] == "chunk_decode"] == [
        f"chunk {k}: zstd decode failed: Unknown frame descriptor" for k in (5, 6, 21, 30)]


def test_quick_mode_decodes_only_first_128(cli: Cli, tmp_path: Path) -> None:
    p = tmp_path / "z.tet"
    tet.write_dataset(p, "z", np.arange(160, dtype=np.float64), chunk_shape=(1,), codec="zstd")
    bad = _flip_frames(p, [150])
    rc, d = _json(cli, bad)
    assert rc == 0 and _finding(d, "chunk_decode")["detail"] == "decoded 128 of 160 chunk(s)"
    rc, d = _json(cli, "--deep", bad)
    assert rc == 1 and _finding(d, "chunk_decode")["detail"] == (
        "chunk 150: zstd decode failed: Unknown frame descriptor")
    bad = _flip_frames(p, [127])
    rc, d = _json(cli, bad)
    assert rc == 1 and _finding(d, "chunk_decode")["detail"].startswith("chunk 127: ")


def test_frame_with_wrong_content_size(cli: Cli, tmp_path: Path) -> None:
    """A valid frame of another tile's size: the decode length check catches it."""
    p = tmp_path / "z.tet"
    tet.write_dataset(p, "z", np.arange(6, dtype=np.float32).reshape(2, 3),
                      chunk_shape=(2, 2), codec="zstd")
    records, entries, blobs = _parts(p)
    short = tmp_path / "short.tet"
    tet.write_dataset(short, "s", np.arange(2, dtype=np.float32), chunk_shape=(2,), codec="zstd")
    frame = _parts(short)[2][0]
    at = int(entries["payload_offset"][0])
    entries["stored_byte_len"][0] = len(frame)
    q = tmp_path / "lie.tet"
    q.write_bytes(_assemble(records, entries, [frame, blobs[1]],
                            [at, at + len(frame)]))
    rc, d = _json(cli, q)
    assert rc == 1
    assert _finding(d, "chunk_decode")["detail"] == (
        "chunk 0: decoded payload length 8 != raw_byte_len 16")


# ---------------------------------------------------------------------------
# the corruption corpus of tests/test_corruption.py


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("verify-corpus")
    _write_ours(d / "ours_raw.tet", "raw")
    _write_ours(d / "ours_zstd.tet", "zstd")
    _write_ours(d / "ours_spill.tet", "raw", spill=True)
    return {name: (INTEROP / name if name in INTEROP_FILES else d / name).read_bytes()
            for name in CORPUS_NAMES}


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_files_verify_ok(cli: Cli, tmp_path: Path, corpus: dict[str, bytes],
                                name: str) -> None:
    p = tmp_path / name
    p.write_bytes(corpus[name])
    r = cli("verify", "--deep", p)
    assert (r.rc, r.err) == (0, ""), r.out


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_truncations_fail_cleanly(cli: Cli, tmp_path: Path, corpus: dict[str, bytes],
                                  name: str) -> None:
    buf = corpus[name]
    p = tmp_path / "cut.tet"
    points = cut_points(buf)
    assert len(points) > 20
    for n in points:
        p.write_bytes(buf[:n])
        r = cli("verify", p)
        assert (r.rc, r.err) == (1, FAILED), (n, r.out, r.err)
        assert r.out.startswith(f"file: {p}\nsize: {n} bytes\nstatus: failed\nchecks:\n")
        q = cli("verify", "-q", "--deep", p)
        assert q.rc == 1 and "status=failed" in q.out


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_random_flips_pass_or_fail_cleanly(cli: Cli, tmp_path: Path, corpus: dict[str, bytes],
                                           name: str) -> None:
    buf = corpus[name]
    p = tmp_path / "flip.tet"
    outcomes = {0: 0, 1: 0}
    for flips in flip_cases(buf, seed=77 + CORPUS_NAMES.index(name), per_region=12):
        p.write_bytes(apply(buf, flips))
        r = cli("verify", "--deep", "--json", p)
        assert r.rc in (0, 1) and r.err == ("" if r.rc == 0 else FAILED), (flips, r.err)
        d = json.loads(r.out)
        assert d["ok"] is (r.rc == 0)
        outcomes[r.rc] += 1
    assert outcomes[1] > 0  # header flips are caught


def test_zstd_payload_flips_are_all_caught(cli: Cli, tmp_path: Path,
                                           corpus: dict[str, bytes]) -> None:
    """Every flip inside a zstd payload fails deep verify, naming the row through the
    checksum table; when reading the tile fails too (the frame checksum, or a broken
    frame), chunk_decode names the same row and nothing else."""
    buf = corpus["ours_zstd.tet"]
    cat = parse_catalog(buf, len(buf))
    lo, hi = regions(buf)["payload"]
    rng = random.Random(5)
    p = tmp_path / "z.tet"
    caught = 0
    for _ in range(60):
        at = rng.randrange(lo, hi)
        row = int(np.flatnonzero((cat.entries["payload_offset"] <= at)
                                 & (cat.entries["payload_offset"]
                                    + cat.entries["stored_byte_len"] > at))[0])
        p.write_bytes(apply(buf, [(at, rng.randrange(1, 256))]))
        name = cat.datasets[int(cat.entries["dataset_id"][row])].name
        with tet.open(p) as f:
            try:
                f.read_numpy(name)
                read_failed = False
            except tet.ChunkError:
                read_failed = True
        rc, d = _json(cli, "--deep", p)
        decode = [f["detail"] for f in d["findings"]
                  if f["check"] == "chunk_decode" and not f["ok"]]
        sums = [f["detail"] for f in d["findings"]
                if f["check"] == "chunk_checksums" and not f["ok"]]
        assert rc == 1 and len(sums) == 1 and sums[0].startswith(f"chunk {row}: ")
        assert d["recommendations"][0]["code"] == "checksum_mismatch"
        if read_failed:
            caught += 1
            assert decode == [decode[0]] and decode[0].startswith(f"chunk {row}: ")
            assert d["recommendations"][1]["code"] == "chunk_decode_failed"
        else:
            assert decode == []
    assert caught > 40
