"""The `tet` console script (``[project.scripts]``): a module outside the `tet` package.

Importing `tet` loads its compiled kernels, and on a machine without a library they
link (``libzstd.so.1``) that import raises one clear `ImportError`
(`tet.native.missing_library`).  Run through this module, the command still answers
as a command does instead of showing a traceback:

- ``tet --version`` prints ``tet VERSION (simd: LEVEL)`` when the kernels load, else
  ``tet VERSION (kernels not loaded: WHY)`` with the version of the installed
  distribution (`importlib.metadata`), and exits 0;
- every other command runs `tet.cli.main.main`; when that import fails it prints one
  line ``error: WHY`` on stderr and exits 1, the status of any failed command
  (cli.md: 0 ok, 1 failed, 2 usage).  ``--debug`` or ``TET_DEBUG=1`` shows the
  traceback instead.

``python -m tet.cli.main`` runs the same command without this guard.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["DISTRIBUTION", "main"]

DISTRIBUTION = "tet-arrays"


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _before_command(args: Sequence[str]) -> list[str]:
    """The options given before the subcommand (where ``--version`` and ``--debug`` go)."""
    out: list[str] = []
    for arg in args:
        if not arg.startswith("-"):
            break
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        from tet.cli.main import main as run
    except ImportError as exc:
        if "--debug" in _before_command(args) or os.environ.get("TET_DEBUG") == "1":
            raise
        why = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        if "--version" in _before_command(args):
            print(f"tet {_version()} (kernels not loaded: {why})")
            return 0
        print(f"error: {why}", file=sys.stderr)
        return 1
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
