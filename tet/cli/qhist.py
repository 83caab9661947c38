"""`tet qhist` (being built)."""

from __future__ import annotations

import argparse

from tet.cli.common import CommandFailed, Subparsers, add_command


def register(sub: Subparsers) -> None:
    parser = add_command(sub, "qhist", help="qhist (being built)", description="qhist (being built)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise CommandFailed("tet qhist is not built yet")
