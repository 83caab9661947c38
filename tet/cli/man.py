"""`tet man [PAGE]`: the installed man pages, without putting a venv's ``bin`` on PATH.

`pip install` puts the pages under ``<prefix>/share/man``, where `man` looks only when
``<prefix>/bin`` is on PATH; this command finds them from the interpreter that runs `tet`
(or the repository's ``man/`` in a source checkout) and shows one through `man` (paged on a
terminal), or prints its source where `man` is not installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tet.cli.common import CommandFailed, Subparsers, add_command

SECTIONS = ("1", "7")


def register(sub: Subparsers) -> None:
    parser = add_command(
        sub, "man", help="show a tet man page",
        description="Show a tet man page: tet(1) by default, a command's page by its name "
                    "(query or tet-query) or the operations reference (ops). The pages are "
                    "found beside the Python that runs tet, so no venv needs to be activated.")
    parser.add_argument("page", metavar="PAGE", nargs="?", default="tet",
                        help="tet (default), a command name, or ops")
    parser.add_argument("--path", action="store_true",
                        help="print where the page is instead of showing it")
    parser.set_defaults(run=run)


def page_dirs() -> list[Path]:
    """Where installed pages are (the interpreter's prefix), then a source checkout's."""
    prefixes = dict.fromkeys([Path(sys.prefix), Path(sys.base_prefix)])
    dirs = [p / "share" / "man" / f"man{s}" for p in prefixes for s in SECTIONS]
    return [*dirs, Path(__file__).resolve().parents[2] / "man"]


def find_page(page: str) -> Path:
    name = page if page.startswith("tet") else f"tet-{page}"
    for d in page_dirs():
        for s in SECTIONS:
            candidate = d / f"{name}.{s}"
            if candidate.is_file():
                return candidate
    known = sorted({p.stem for d in page_dirs() if d.is_dir() for p in d.glob("tet*.[17]")})
    raise CommandFailed(f"no man page {page!r}; the pages are: "
                        f"{', '.join(known) if known else 'none installed'}")


def run(args: argparse.Namespace) -> int:
    path = find_page(args.page)
    if args.path:
        print(path)
        return 0
    sys.stdout.flush()
    man = shutil.which("man")
    if man is not None:
        env = None if sys.stdout.isatty() else {**os.environ, "MANPAGER": "cat"}
        return subprocess.call([man, "-l", str(path)], env=env)
    sys.stdout.write(path.read_text(encoding="utf-8"))
    return 0
