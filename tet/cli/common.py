"""What every subcommand shares: registration, the failure type, JSON printing."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from tet.errors import TetError

if TYPE_CHECKING:  # the type `add_subparsers` returns; not subscriptable at run time
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers = argparse._SubParsersAction


class CommandFailed(TetError):
    """A command that ran but failed; `main` prints `error: <text>` and exits 1."""


def add_command(sub: Subparsers, name: str, *, help: str, description: str,
                aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """One subcommand parser; `--debug` is accepted after the subcommand too."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, aliases=list(aliases), help=help, description=description)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the Python traceback of a failure (also TET_DEBUG=1)")
    return parser


def refuse_foreign(path: str) -> None:
    """Refuse an HDF5 / NetCDF / Zarr / .npy input of a command that reads .tet files
    with what it is and how to convert it (one line, exit 1)."""
    from tet.convert.sniff import foreign_hint

    hint = foreign_hint(path)
    if hint is not None:
        raise CommandFailed(hint)


def print_json(value: Any) -> None:
    """Pretty JSON (2-space indent) on stdout, the spec's `full` shape."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
