"""`tet verify`: a health report of one .tet file, as text, one line or JSON (cli.md §2)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import struct
import sys
from collections.abc import Iterator
from typing import Any

from tet import objstore
from tet.cli.common import CommandFailed, Subparsers, add_command, print_json, refuse_foreign
from tet.cli.progress import progress
from tet.cli.repair import report_text as repair_text
from tet.cli.targets import add_storage_option, check_local, shown_target, storage_options
from tet.errors import TetError
from tet.paths import open_regular
from tet.verify import Progress, Report, repair, verify


def register(sub: Subparsers) -> None:
    parser = add_command(
        sub, "verify", help="check a .tet file's layout, chunk payloads and footer",
        description="Check the layout, the chunk index against each dataset's geometry, the "
                    "chunk payloads (against the file's tile checksum table when it has "
                    "one, and zstd tiles decoded: all of them when there are at most 128, "
                    "else the first 128 unless --deep) and the history footer. Exits 1 when "
                    "a check fails; warnings alone do not fail.")
    parser.add_argument("path", metavar="PATH",
                        help="the .tet file (a URL is checked with ranged reads)")
    add_storage_option(parser)
    parser.add_argument("--deep", action="store_true",
                        help="checksum- and decode-check every chunk, however many there are")
    parser.add_argument("--repair", action="store_true",
                        help="if verification fails, apply the in-place fixes `tet repair` "
                             "supports (report on stderr), then verify again")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="pretty JSON report")
    form.add_argument("-q", "--quiet", action="store_true",
                      help="one line: path, status, datasets, chunks, recommendations")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = storage_options(args)
    if objstore.is_url(args.path):
        if args.repair:
            raise CommandFailed(f"--repair rewrites a local file in place; "
                                f"`{shown_target(args.path)}` is a URL")
        return _run(args, args.path, options)
    return _run(args, check_local(args.path, options))


def _run(args: argparse.Namespace, path: str,
         options: dict[str, Any] | None = None) -> int:
    url = objstore.is_url(path)
    if not url:
        refuse_foreign(path)
    report = _verify(path, args.deep, options)
    if url:  # name the object (credentials redacted); no in-place repair of a URL
        report.path = shown_target(path)
        report.recommendations = [dataclasses.replace(r, command=None, repairable=False)
                                  for r in report.recommendations]
    if args.repair and not report.ok:
        codes = [r.code for r in report.recommendations if r.repairable]
        talk = not (args.json or args.quiet)
        if codes:
            outcome = repair(path, codes)
            if talk:
                sys.stderr.write(repair_text(outcome) + "\n")
            report = _verify(path, args.deep)
        elif talk:
            listed = ", ".join(r.code for r in report.recommendations) or "none"
            print(f"repair: no in-place fix applies (recommendations: {listed})",
                  file=sys.stderr)
    if args.json:
        print_json(report.to_dict())
    elif args.quiet:
        print(quiet_line(report))
    else:
        sys.stdout.write(verify_text(report))
    if not report.ok:
        raise CommandFailed("verification failed")
    return 0


def _verify(path: str, deep: bool, options: dict[str, Any] | None = None) -> Report:
    if objstore.is_url(path):  # ranged reads, a window of chunks at a time
        return verify(path, deep=deep, storage_options=options)
    if not deep:
        return verify(path)
    with _bar(path) as update:
        return verify(path, deep=True, progress=update)


@contextlib.contextmanager
def _bar(path: str) -> Iterator[Progress | None]:
    """A decode progress bar sized from the TIDX entry count (none when unreadable)."""
    total = _entry_count(path)
    if total <= 0:
        yield None
        return
    with progress(total, "verify") as bar:
        yield bar.update


def _entry_count(path: str) -> int:
    """TIDX entry_count read straight from the header, without parsing the catalog."""
    try:
        fd, _ = open_regular(path)  # a FIFO is refused, not waited on; verify then says so
    except TetError:
        return 0
    try:
        head = os.pread(fd, 32, 0)
        if len(head) < 32 or head[:4] != b"TETR":
            return 0
        index = os.pread(fd, 16, struct.unpack_from("<Q", head, 16)[0])
    except (OSError, OverflowError, ValueError):
        return 0
    finally:
        os.close(fd)
    if len(index) < 16 or index[:4] != b"TIDX":
        return 0
    count: int = struct.unpack_from("<Q", index, 8)[0]
    return count


def quiet_line(report: Report) -> str:
    s = report.summary
    datasets = str(s["dataset_count"]) if s else "?"
    chunks = str(s["chunk_count"]) if s else "?"
    status = "ok" if report.ok else "failed"
    return (f"path={report.path} status={status} datasets={datasets} chunks={chunks} "
            f"recommendations={len(report.recommendations)}")


def verify_text(report: Report) -> str:
    """The human report of cli.md §2."""
    lines = [f"file: {report.path}", f"size: {report.file_len} bytes",
             f"status: {'ok' if report.ok else 'failed'}", "checks:"]
    for f in report.findings:
        mark = "ok" if f.ok else ("warn" if f.severity == "warning" else "FAIL")
        tail = f" ({f.detail})" if f.detail is not None else ""
        lines.append(f"  {f.check:<22} {mark}{tail}")
    lines.append("recommendations:")
    if not report.recommendations:
        lines.append("  (none)")
    for r in report.recommendations:
        lines.append(f"  [{r.code}] {r.message}")
        lines.append(f"       → {r.fix_summary}")
        if r.command is not None:
            lines.append(f"       → {r.command}")
    s = report.summary
    if s is not None:
        flag = {True: "true", False: "false"}
        lines.append(
            f"summary: layout={s['layout_version']} datasets={s['dataset_count']} "
            f"chunks={s['chunk_count']} history={s['history_events']} "
            f"metadata={flag[s['has_metadata']]} footer={flag[s['history_footer']]} "
            f"deep_decode={flag[s['deep_chunk_decode']]}")
    return "\n".join(lines) + "\n"
