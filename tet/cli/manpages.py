"""The man pages, generated from what the program is: `tet(1)` and `tet-<command>(1)`
from the argparse parser `tet` runs, `tet-ops(7)` from the operation registry.

`python -m tet.cli.manpages man/` rewrites the pages; `--check` fails when a committed
page differs from what the code would generate (a test runs it, so pages cannot drift).
Needs the `argparse-manpage` package (a test and build dependency, not a runtime one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tet import __version__
from tet.cli.main import build_parser
from tet.query.ops import OPS, TRANSFORM_METHODS, OpSpec

MAN_DATE = "2026-11-21"
"""The date on every page: fixed, so regenerating gives identical bytes."""

MANUAL = "tet manual"
SOURCE = f"tet {__version__}"
_TIER = {"A": "A/B (streaming fold: scalar with [], partial with axes)",
         "C": "C (materialised: in memory up to the budget, else a temp spill)",
         "T": "T (transform: a statistics pass, then a rewrite pass)"}
_PARAM_EXAMPLE: dict[str, Any] = {"fill": -9999}

ENVIRONMENT = [
    ("TET_DEBUG", "1 shows the Python traceback of a failure (as --debug does)."),
    ("TET_SIMD", "scalar or avx2: force a kernel body (default: the best the CPU has)."),
    ("TET_NO_PROGRESS", "set: no progress bar even when stderr is a terminal."),
    ("TET_QUERY_HISTORY_FILE", "where tet query records history (default "
                               "<platform cache>/tetration/query_history.jsonl)."),
    ("TET_QUERY_HISTORY_MAX", "rows of history kept, 1..10000 (default 50)."),
    ("TET_NO_QUERY_HISTORY", "1, true or yes: record no history."),
    ("AWS_ENDPOINT_URL", "with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and the "
                         "other standard AWS_*, GOOGLE_* and AZURE_* variables: how s3://, "
                         "gs:// and az:// URLs are reached when no --storage-option says."),
    ("TETRATION_S3_ENDPOINT", "with TETRATION_S3_REGION, _ACCESS_KEY and _SECRET_KEY: the "
                              "reference's names, used for what the AWS_* variables leave "
                              "unset."),
]


def _esc(text: str) -> str:
    """Roff-safe text: backslashes and hyphens escaped, no line starting with a control
    character."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line
                     for line in out.split("\n"))


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str,
                                                                    argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand, aliases left out."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield choice.dest, choice.help or "", action.choices[choice.dest]


def _page(parser: argparse.ArgumentParser, name: str, summary: str,
          sections: Sequence[tuple[str, str]]) -> str:
    from argparse_manpage.manpage import Manpage

    page = Manpage(parser)
    page.prog, page.date, page.source, page.manual = name, MAN_DATE, SOURCE, MANUAL
    page.description = summary
    for heading, content in sections:
        page.add_section(heading, ">", content)
    text: str = str(page)
    return text


def _see_also(exclude: str) -> str:
    names = ["tet(1)", *(f"tet-{n}(1)" for n, _, _ in _subcommands(build_parser())),
             "tet-ops(7)"]
    return _esc(", ".join(n for n in names if not n.startswith(exclude + "(")))


def _tagged(items: Sequence[tuple[str, str]]) -> str:
    return "\n".join(f".TP\n.B {_esc(k)}\n{_esc(v)}" for k, v in items)


EXIT_STATUS = [("0", "success"),
               ("1", "the command failed; one line `error: <message>` on stderr"),
               ("2", "usage error (unknown flag, missing argument, conflicting flags)")]


def command_pages() -> dict[str, str]:
    """`tet.1` and one `tet-<command>.1` per subcommand."""
    parser = build_parser()
    pages = {"tet.1": _page(parser, "tet", "many N-dimensional arrays in one mmap-friendly "
                            "file: inspect, verify, query, convert",
                            [("exit status", _tagged(EXIT_STATUS)),
                             ("environment", _tagged(ENVIRONMENT)),
                             ("see also", _see_also("tet"))])}
    for name, help_text, sub in _subcommands(parser):
        pages[f"tet-{name}.1"] = _page(sub, f"tet-{name}", help_text, [
            ("exit status", _tagged(EXIT_STATUS)), ("see also", _see_also(f"tet-{name}"))])
    return pages


def example_body(op: OpSpec) -> Any:
    """The operation's value in the example document of its man page entry."""
    if op.object_example:
        return json.loads(op.object_example)
    if op.single_axis:
        return 0
    if op.params:
        return {**{p: _PARAM_EXAMPLE[p] for p in sorted(op.params)}, "axis": 0}
    return []


def example_json(op: OpSpec) -> str:
    return json.dumps({"dataset": "temperature", op.key: example_body(op)})


def example_toml(op: OpSpec) -> str:
    body = example_body(op)
    if isinstance(body, dict):
        return "\n".join(['dataset = "temperature"', "", f"[{op.key}]",
                          *(f"{k} = {json.dumps(v)}" for k, v in body.items())])
    return f'dataset = "temperature"\n{op.key} = {json.dumps(body)}'


def _fields(op: OpSpec) -> list[str]:
    if op.tier == "T":
        return ["transform_method and the statistics of the first pass: scalar "
                "operation_mean / _std / _min / _max / _norm_l1 / _norm_l2 (those the method "
                "uses), partial operation_reduced_* (all six) with operation_reduced_shape; "
                "transform_div_by_zero_count and _indices when divisors were invalid"]
    out = []
    if op.scalar_field:
        out.append(", ".join([op.scalar_field, *op.extra_fields]) + " (scalar)")
    if op.reduced_field:
        out.append(f"{op.reduced_field} with operation_reduced_shape (partial)")
    return out


def _op_entry(op: OpSpec) -> str:
    if op.single_axis:
        params = "exactly one axis: the observation axis"
    else:
        params = "axis spec: [] for a scalar; an index, a dimension name or a list of them"
    if op.params:
        params += "; object form with " + ", ".join(sorted(op.params | {"axis"}))
    if op.key == "transform":
        params += "; methods " + ", ".join(TRANSFORM_METHODS) + "; optional top-level write"
    return "\n".join([
        f".SS {_esc(op.key)}",
        _esc(op.summary),
        ".TP\n.B Tier\n" + _esc(_TIER[op.tier]),
        ".TP\n.B Parameters\n" + _esc(params),
        ".TP\n.B Response fields\n" + _esc("; ".join(_fields(op)) + "; every op also sets "
                                           "operation_element_count"),
        ".TP\n.B Example (JSON)\n.nf\n" + _esc(example_json(op)) + "\n.fi",
        ".TP\n.B Example (TOML)\n.nf\n" + _esc(example_toml(op)) + "\n.fi",
    ])


_OPS_INTRO = """\
A query document is flat JSON or TOML: a dataset name, an optional selection, an optional \
execution block and at most one operation key. Run one with \
`tet query DOC -t FILE.tet -x`, or from Python with TetFile.query.

An axis spec names the axes to reduce: [] reduces everything to one value (a scalar); a \
non-empty list reduces those axes and keeps the others (a partial result, flat and row-major \
over the kept axes, its shape in operation_reduced_shape). Axes count in the selection, not \
the dataset; names are the dataset's dim_names.

Every dtype is promoted to f64 to accumulate; non-finite results are JSON null. Semantics \
are NumPy's on the same array."""


def ops_page() -> str:
    """`tet-ops.7`: every operation of the registry with its parameters, response fields
    and one example in JSON and TOML."""
    lines = [f'.TH TET\\-OPS "7" "{_esc(MAN_DATE)}" "{_esc(SOURCE)}" "{MANUAL}"',
             ".SH NAME", "tet\\-ops \\- the operations of a tet query document",
             ".SH SYNOPSIS", ".nf", _esc('{"dataset": "NAME", "OPERATION": AXES}'), ".fi",
             ".SH DESCRIPTION"]
    lines.extend(_esc(p) + "\n.PP" for p in _OPS_INTRO.split("\n\n"))
    lines.append(".SH OPERATIONS")
    lines.extend(_op_entry(op) for op in OPS.values())
    lines.extend([".SH SEE ALSO", _see_also("tet-ops")])
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    """Every page by file name (usage lines wrapped at 80 columns whatever the terminal)."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"
    try:
        return {**command_pages(), "tet-ops.7": ops_page()}
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python -m tet.cli.manpages",
                                  description="write (or --check) the tet man pages")
    cli.add_argument("directory", nargs="?", default="man")
    cli.add_argument("--check", action="store_true",
                     help="exit 1 when a page in DIRECTORY differs from the generated one")
    args = cli.parse_args(argv)
    out = Path(args.directory)
    stale = []
    for name, text in pages().items():
        path = out / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale man pages (run `make man`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
