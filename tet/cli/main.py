"""The `tet` command: one parser, one module per subcommand, one place that turns
failures into `error: <text>` on stderr and an exit status (cli.md: 0 ok, 1 failed,
2 usage)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from tet import __version__, simd
from tet.cli import convert, export, info, man, pkg, qhist, query, repair, verify
from tet.errors import TetError

COMMANDS = (info, verify, repair, query, qhist, convert, export, pkg, man)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; the man pages are generated from this same parser."""
    parser = argparse.ArgumentParser(
        prog="tet",
        description="Inspect, verify, repair, query, convert and export .tet files "
                    "(many N-dimensional arrays in one mmap-friendly file).")
    parser.add_argument("--version", action="version",
                        version=f"tet {__version__} (simd: {simd.simd_level()})")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of a failure (also TET_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _tolerant_output() -> None:
    """Names that are not valid text (a lone surrogate: file names that are not UTF-8,
    or escapes in a footer) print as backslash escapes instead of failing the command."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    _tolerant_output()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # what parse_args would refuse, with a command's own hint where it has one
        explain = getattr(args, "unrecognized", None)
        if explain is None:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.parser.error(explain(args, extra))
    debug = getattr(args, "debug", False) or os.environ.get("TET_DEBUG") == "1"
    try:
        status: int = args.run(args)
        sys.stdout.flush()
    except BrokenPipeError:  # `tet … | head`: the reader left; not our failure
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except (TetError, OSError) as exc:
        if debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug in tet: still one line, with the way to see more
        if debug:
            raise
        print(f"error: internal error ({type(exc).__name__}): {_one_line(exc)}; "
              "run with --debug for the traceback", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
