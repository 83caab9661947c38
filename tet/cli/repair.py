"""`tet repair`: plan or apply the in-place fixes verify recommends (cli.md §3)."""

from __future__ import annotations

import argparse
import shlex
import sys

from tet.cli.common import CommandFailed, Subparsers, add_command, print_json
from tet.verify import RepairPlan, RepairReport, repair, repair_plan


def register(sub: Subparsers) -> None:
    parser = add_command(
        sub, "repair", help="plan or apply in-place fixes for a damaged .tet file",
        description="Without --apply, verify the file and print a repair plan (nothing is "
                    "written). With --apply CODE, apply that fix and verify again; the "
                    "in-place fixes are footer_invalid (strip a malformed history footer) "
                    "and stale_temp_files (remove temp files that killed writers left "
                    "beside the file). The file is rewritten through a temp file and a "
                    "rename, never in place.")
    parser.add_argument("path", metavar="PATH", help="the .tet file")
    parser.add_argument("--apply", action="append", metavar="CODE", default=[],
                        help="apply the fix for this recommendation code (repeatable); "
                             "codes without an in-place fix are reported as skipped")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --apply: say what would change, write nothing")
    parser.add_argument("--json", action="store_true",
                        help="pretty JSON plan, or JSON report with --apply")
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    path: str = args.path
    if not args.apply:
        if args.dry_run:
            args.parser.error("--dry-run needs --apply CODE (without --apply nothing is "
                              "written anyway)")
        plan = repair_plan(path)
        if args.json:
            print_json(plan.to_dict())
        else:
            sys.stdout.write(plan_text(plan))
        return 0
    report = repair(path, args.apply, dry_run=args.dry_run)
    if args.json:
        print_json(report.to_dict())
    else:
        sys.stdout.write(report_text(report) + "\n")
    if not report.dry_run and report.verify_after_ok is False:
        raise CommandFailed("repair finished but verification still failed")
    return 0


def plan_text(plan: RepairPlan) -> str:
    lines = [f"file: {plan.path}", "repair plan:"]
    if not plan.actions:
        lines.append("  (no recommendations — run tet verify first or file is ok)")
        return "\n".join(lines) + "\n"
    for a in plan.actions:
        lines.append(f"  [{'repairable' if a.repairable else 'manual'}] {a.code} — {a.summary}")
    lines += ["", f"Use: tet repair {shlex.quote(plan.path)} --apply <code>"]
    return "\n".join(lines) + "\n"


def report_text(report: RepairReport) -> str:
    """The repair report of cli.md §3, without a trailing newline."""
    lines = [f"file: {report.path}", f"mode: {'dry-run' if report.dry_run else 'apply'}"]
    lines += [f"  [{a.code}] {a.status}: {a.message}" for a in report.actions]
    if report.verify_after_ok is not None:
        lines.append(f"verify_after: {'ok' if report.verify_after_ok else 'failed'}")
    return "\n".join(lines)
