"""`tet repair` (being built)."""

from __future__ import annotations

import argparse

from tet.cli.common import CommandFailed, Subparsers, add_command


def register(sub: Subparsers) -> None:
    parser = add_command(sub, "repair", help="repair (being built)", description="repair (being built)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise CommandFailed("tet repair is not built yet")
