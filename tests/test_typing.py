"""What a user's mypy sees of `TetFile`: the query helpers are declared methods with the
types they return (python-api.md), not attributes attached at run time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO
from tet import TetFile
from tet.query.api import HELPER_OPS, reduction

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


def test_every_reduction_op_has_a_declared_helper() -> None:
    declared = {name for name, v in vars(TetFile).items() if isinstance(v, reduction)}
    assert declared == set(HELPER_OPS)


def test_a_helper_declared_with_the_wrong_scalar_type_is_refused() -> None:
    # Python 3.11 wraps an error of __set_name__ in a RuntimeError; 3.12 raises it as is
    with pytest.raises((RuntimeError, TypeError)) as info:
        type("Bad", (), {"count": reduction(float)})
    err = info.value if isinstance(info.value, TypeError) else info.value.__cause__
    assert isinstance(err, TypeError)
    assert str(err) == "the 'count' helper returns int, not float"
