"""`tet export`: .tet → Zarr v3 directory store (cli.md §7). The parser is final; the
exporter lands with the convert work."""

from __future__ import annotations

import argparse

from tet.cli.common import CommandFailed, Subparsers, add_command


def register(sub: Subparsers) -> None:
    parser = add_command(
        sub, "export", help="export a .tet file as a Zarr v3 directory store",
        description="Write every dataset of a .tet file into a new (or empty) Zarr v3 "
                    "directory store; slash-separated names become nested groups.")
    parser.add_argument("input", metavar="INPUT", help="the .tet file to read")
    parser.add_argument("output", metavar="OUTPUT_DIR",
                        help="directory to create (must not exist or be empty)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise CommandFailed("tet export is not built yet")
