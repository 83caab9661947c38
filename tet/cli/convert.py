"""`tet convert`: HDF5 / NetCDF / Zarr v3 → .tet (cli.md §6). The parser is final; the
importers land with the convert work."""

from __future__ import annotations

import argparse

from tet.cli.common import CommandFailed, Subparsers, add_command


def register(sub: Subparsers) -> None:
    parser = add_command(
        sub, "convert", help="convert an HDF5, NetCDF or Zarr v3 store into a .tet file",
        description="Convert every numeric array of an HDF5 file, a NetCDF file or a Zarr v3 "
                    "directory store into one .tet file (raw payloads, source chunking kept).")
    parser.add_argument("input", metavar="INPUT", help="source file or Zarr v3 directory")
    parser.add_argument("output", metavar="OUTPUT", help="the .tet file to write")
    parser.add_argument("--jobs", type=int, default=0, metavar="N",
                        help="parallel tile-read workers; 0 (default) = host parallelism, "
                             "clamped to 1..64")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise CommandFailed("tet convert is not built yet")
