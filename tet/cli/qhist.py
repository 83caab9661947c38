"""`tet qhist` (alias `hist`): list, filter and replay the queries `tet query` recorded
(cli.md §5).  Storage lives in `tet.cli.history`; a replay goes through the same
`run_query` as `tet query`, so it validates, prints and is recorded exactly like one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tet.cli import history
from tet.cli.common import CommandFailed, Subparsers, add_command, print_json
from tet.cli.history import Row
from tet.cli.query import add_output_flags, output_format, run_query
from tet.cli.targets import storage_options
from tet.query.ops import OPS

LIST_DEFAULT = 50
_ROW = "{:>3}  {:^4}  {:<18}  {:<10}  {:<8}  {}"
_MODES = {"x": "x", "execute": "x", "p": "p", "plan": "p"}
MODE_KEY = {"x": "execute (-x was set)", "p": "plan only (no -x)"}
EMPTY = "(empty — run `tet query … -t file.tet -x` to record)"
NO_MATCH = "(no rows match filter)"


def _at_least_one(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _add_filters(parser: argparse.ArgumentParser, tet_flag: str) -> None:
    parser.add_argument("--dataset", metavar="S",
                        help="only queries whose dataset name contains S (case-insensitive)")
    parser.add_argument(tet_flag, dest="tet_filter", metavar="S",
                        help="only queries whose .tet path contains S (case-insensitive)")
    parser.add_argument("--mode", metavar="M",
                        help="only executed queries (x, execute) or plan-only ones (p, plan)")
    parser.add_argument("--grep", metavar="S",
                        help="only queries whose dataset, .tet path or operation key "
                             "contains S (case-insensitive)")


def register(sub: Subparsers) -> None:
    parser = add_command(
        sub, "qhist", aliases=("hist",),
        help="list and replay recorded queries",
        description="List the queries `tet query` recorded (newest first) and replay one. "
                    "Without a subcommand, list up to TET_QUERY_HISTORY_MAX rows. History "
                    "lives in the platform cache (TET_QUERY_HISTORY_FILE overrides; "
                    "TET_NO_QUERY_HISTORY=1 stops recording).")
    parser.add_argument("--clear", action="store_true",
                        help="delete the history file (no subcommand allowed with it)")
    # argparse would print the optional subcommand as required
    parser.usage = "%(prog)s [-h] [--debug] [--clear] [{list,run} ...]"
    parser.set_defaults(run=run, qhist_parser=parser)
    commands = parser.add_subparsers(dest="qhist_command", metavar="SUBCOMMAND",
                                     required=False)

    lister = add_command(
        commands, "list", help="list recorded queries, newest first",
        description="List recorded queries, newest first, numbered for `tet qhist run`. "
                    "Filters combine with AND and match case-insensitive substrings.")
    lister.add_argument("-n", dest="limit", type=_at_least_one, default=LIST_DEFAULT,
                        metavar="N", help=f"show at most N rows (default {LIST_DEFAULT})")
    lister.add_argument("--all", action="store_true", help="show every row (ignores -n)")
    lister.add_argument("--json", action="store_true",
                        help="print the listing as one JSON document")
    _add_filters(lister, "--tet")

    replay = add_command(
        commands, "run", help="replay a recorded query",
        description="Replay history row N (1 = newest, numbered after the filters) through "
                    "`tet query`: with the saved .tet path and -x flag unless overridden, "
                    "and today's output flags. The replay is recorded again.")
    replay.add_argument("index", type=int, metavar="N",
                        help="row to replay: 1 = newest (after filters)")
    replay.add_argument("-t", "--tet", dest="tet_path", metavar="PATH",
                        help="use this .tet file instead of the saved path")
    force = replay.add_mutually_exclusive_group()
    force.add_argument("-x", "--execute", dest="force_execute", action="store_const",
                       const=True, help="execute, even if the row was plan-only")
    force.add_argument("--plan", dest="force_execute", action="store_const", const=False,
                       help="plan only, even if the row was executed")
    add_output_flags(replay)  # the very flags (and help texts) of `tet query`
    _add_filters(replay, "--tet-filter")
    replay.set_defaults(qhist_run_parser=replay)


@dataclass(frozen=True)
class Filter:
    """The `list` / `run` row filters; None = not given."""

    dataset: str | None = None
    tet: str | None = None
    mode: str | None = None  # normalised: "x" or "p"
    grep: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Filter:
        mode = getattr(args, "mode", None)
        if mode is not None:
            if mode.lower() not in _MODES:
                raise CommandFailed(
                    f'unknown history mode "{mode}"; expected x, execute, p, or plan')
            mode = _MODES[mode.lower()]
        return cls(getattr(args, "dataset", None), getattr(args, "tet_filter", None), mode,
                   getattr(args, "grep", None))

    def active(self) -> bool:
        return any(v is not None for v in (self.dataset, self.tet, self.mode, self.grep))

    def describe(self) -> str:
        """`dataset~x tet~y mode=x grep~z`, the parts that are set."""
        parts = [f"dataset~{self.dataset}" if self.dataset is not None else "",
                 f"tet~{self.tet}" if self.tet is not None else "",
                 f"mode={self.mode}" if self.mode is not None else "",
                 f"grep~{self.grep}" if self.grep is not None else ""]
        return " ".join(p for p in parts if p)

    def to_json(self) -> dict[str, str | None]:
        return {"dataset": self.dataset, "tet": self.tet, "mode": self.mode, "grep": self.grep}

    def matches(self, row: Row) -> bool:
        dataset = _dataset(row).casefold()
        tet = (row.tet or "").casefold()
        op = (op_key(row.query) or "").casefold()
        if self.dataset is not None and self.dataset.casefold() not in dataset:
            return False
        if self.tet is not None and (row.tet is None or self.tet.casefold() not in tet):
            return False
        if self.mode is not None and self.mode != mode_of(row):
            return False
        if self.grep is not None:
            needle = self.grep.casefold()
            return needle in dataset or needle in tet or needle in op
        return True


def op_key(query: dict[str, Any]) -> str | None:
    """The query's operation key (a document has at most one), None without one."""
    return next((k for k in query if k in OPS), None)


def select_kind(query: dict[str, Any]) -> str:
    """`full` (no or empty selection), `strided` (any step > 1), else `subset`.  Both the
    per-axis array and the box form (`{"step": [...]}`) are understood."""
    sel = query.get("selection")
    if not sel:
        return "full"
    steps: list[Any] = []
    if isinstance(sel, list):
        steps = [a.get("step") for a in sel if isinstance(a, dict)]
    elif isinstance(sel, dict):
        step = sel.get("step")
        steps = step if isinstance(step, list) else [step]
    strided = any(isinstance(s, int) and not isinstance(s, bool) and s > 1 for s in steps)
    return "strided" if strided else "subset"


def mode_of(row: Row) -> str:
    return "x" if row.execute else "p"


def _dataset(row: Row) -> str:
    ds = row.query.get("dataset")
    return ds if isinstance(ds, str) else ""


def _tet_name(tet: str | None) -> str:
    if tet is None:
        return "-"
    return Path(tet).name or tet


def _load(flt: Filter) -> tuple[list[Row], list[Row]]:
    """(all rows, rows passing the filter), newest first; skipped-line warnings printed."""
    rows, warnings = history.load()
    for w in warnings:
        print(w, file=sys.stderr)
    return rows, [r for r in rows if flt.matches(r)]


def _list(limit: int | None, flt: Filter, as_json: bool) -> int:
    path = history.history_file()
    keep = history.history_max()
    rows, matched = _load(flt)
    shown = matched if limit is None else matched[:limit]
    if as_json:
        print_json({
            "path": str(path),
            "settings": {"cli_query_max": keep, "history_max_cap": history.MAX_CAP,
                         "history_file_name": history.FILE_NAME},
            "shown": len(shown),
            "filter": flt.to_json(),
            "mode_key": MODE_KEY,
            "entries": [{"at": r.at, "mode": mode_of(r), "tet": r.tet, "query": r.query}
                        for r in shown],
        })
        return 0
    out = [f"file: {path}", f"shown: {len(shown)}  keep: {keep} on disk"]
    if flt.active():
        out.append(f"filter: {flt.describe()}")
    out.append("")
    if not rows:
        out.append(EMPTY)
    elif not shown:
        out.append(NO_MATCH)
    else:
        out.append(_ROW.format("#", "mode", "dataset", "op", "select", "tet"))
        out += [_ROW.format(i, mode_of(r), _dataset(r) or "-", op_key(r.query) or "-",
                            select_kind(r.query), _tet_name(r.tet))
                for i, r in enumerate(shown, 1)]
        out += ["", "mode: x = had -x (execute), p = plan only (no -x)",
                "replay: tet qhist run <#>  (1 = newest)"]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _entries(n: int) -> str:
    return f"{n} matching {'entry' if n == 1 else 'entries'}"


def _replay(args: argparse.Namespace) -> int:
    flt = Filter.from_args(args)
    n: int = args.index
    if n < 1:
        raise CommandFailed("history index must be >= 1 (1 = newest)")
    _, matched = _load(flt)
    if n > len(matched):
        raise CommandFailed(f"history entry {n} not found (have {_entries(len(matched))})")
    row = matched[n - 1]
    tet = args.tet_path if args.tet_path is not None else row.tet
    execute = row.execute if args.force_execute is None else bool(args.force_execute)
    # An explicit -x with no path anywhere is a usage error, as for `tet query`; a saved
    # execute flag without a path (a hand-edited row) is left to run_query to refuse.
    if args.force_execute and tet is None:
        args.qhist_run_parser.error(
            f"-x / --execute requires -t / --tet: history entry {n} has no .tet path")
    spill_allow: Sequence[str] = args.spill_allow or ()
    return run_query(row.query, tet=tet, execute=execute, fmt=output_format(args),
                     preview=args.preview, device=None, spill_allow=spill_allow,
                     max_chunks=args.max_chunks, storage_options=storage_options(args))


def run(args: argparse.Namespace) -> int:
    command = args.qhist_command
    if args.clear:
        if command is not None:
            args.qhist_parser.error(f"--clear cannot be combined with `{command}`")
        history.clear()
        print("query history cleared", file=sys.stderr)
        return 0
    if command is None:
        return _list(history.history_max(), Filter(), as_json=False)
    if command == "list":
        return _list(None if args.all else args.limit, Filter.from_args(args), args.json)
    return _replay(args)
