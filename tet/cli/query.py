"""`tet query` (alias `q`): parse, plan or execute, print in one of six formats, record
history (cli.md §4)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from tet.cli.common import CommandFailed, Subparsers, add_command

FORMATS = ("full", "json", "stats", "plan", "quiet", "table")


def register(sub: Subparsers) -> None:
    parser = add_command(sub, "query", aliases=("q",), help="query (being built)",
                         description="query (being built)")
    parser.set_defaults(run=run)


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """`--format F | -q`, `--preview N` (`--preview-f32`) and `--spill-allow DIR`:
    shared by `tet query` and `tet qhist run`."""
    raise NotImplementedError


def output_format(args: argparse.Namespace) -> str:
    """The format the flags of `add_output_flags` chose (`-q` means `quiet`)."""
    raise NotImplementedError


def run_query(query: Mapping[str, Any], *, tet: str | None, execute: bool, fmt: str,
              preview: int | None, device: str | None, spill_allow: Sequence[str]) -> int:
    """Validate, plan or execute, print, hint, and record history; the exit status."""
    raise NotImplementedError


def run(args: argparse.Namespace) -> int:
    raise CommandFailed("tet query is not built yet")
