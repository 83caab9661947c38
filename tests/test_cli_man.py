"""`tet man`: the pages found beside the interpreter, shown through man or as source."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _tet(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    # the kernels are not needed, and an ASan preload (make asan) must not reach man's groff
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "TET_NATIVE")}
    env.update(MANPAGER="cat", MANWIDTH="80")
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "tet.cli.main", "man", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO, env=env)


def test_path_names_the_installed_page() -> None:
    for page, name in (("query", "tet-query.1"), ("tet-query", "tet-query.1"),
                       ("ops", "tet-ops.7"), ("tet", "tet.1")):
        r = _tet(page, "--path")
        assert r.returncode == 0, r.stderr
        where = Path(r.stdout.strip())
        assert where.name == name and where.is_file()
        assert where.read_bytes() == (REPO / "man" / name).read_bytes()
    assert Path(_tet("--path").stdout.strip()).name == "tet.1"


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed here")
def test_a_page_is_shown_through_man() -> None:
    r = _tet("ops")
    assert r.returncode == 0, r.stderr
    assert "tet-ops - the operations of a tet query document" in r.stdout
    assert not r.stdout.lstrip().startswith(".TH")


def test_without_man_the_page_source_is_printed(tmp_path: Path) -> None:
    r = _tet("query", path=str(tmp_path))  # an empty PATH: no man to run
    assert r.returncode == 0, r.stderr
    assert r.stdout == (REPO / "man" / "tet-query.1").read_text(encoding="utf-8")


def test_an_unknown_page_lists_the_pages() -> None:
    r = _tet("nope")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (
        "error: no man page 'nope'; the pages are: tet, tet-convert, tet-export, tet-info, "
        "tet-man, tet-ops, tet-pkg, tet-qhist, tet-query, tet-repair, tet-verify\n")
