"""`tet info` (being built)."""

from __future__ import annotations

import argparse

from tet.cli.common import CommandFailed, Subparsers, add_command


def register(sub: Subparsers) -> None:
    parser = add_command(sub, "info", help="info (being built)", description="info (being built)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise CommandFailed("tet info is not built yet")
