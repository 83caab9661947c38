"""What a user's mypy sees of `TetFile`: the query helpers are declared methods with the
types they return (python-api.md), not attributes attached at run time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO

SCRIPT = """
import tet

with tet.open("data.tet") as f:
    reveal_type(f.mean("x"))
    reveal_type(f.nan_mean("x"))
    reveal_type(f.count("x"))
    reveal_type(f.any_nan("x"))
    reveal_type(f.quantile("x", 0.5))
    reveal_type(f["x"].shape)
    reveal_type(f.mean("x", raw=True))
    reveal_type(f.mean("x", axis=0))
"""

WANT = [
    "float",
    "float",
    "int",
    "bool",
    "float",
    "tuple[int, ...]",
    "dict[str, Any]",
    "tet.query.result.QueryResult | float | dict[str, Any]",
]


def test_mypy_sees_the_helpers_and_their_types(tmp_path: Path) -> None:
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
         "--cache-dir", str(REPO / ".mypy_cache"), str(script)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(REPO)})  # the editable install's source
    revealed = re.findall(r'note: Revealed type is "(.*)"', done.stdout)
    assert revealed == WANT, done.stdout
    assert "error:" not in done.stdout, done.stdout
