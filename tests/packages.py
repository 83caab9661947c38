"""Shared by the package tests: small part files and the reference binding, tet-py 0.8.3,
driven as a subprocess (its environment is `make interop`'s ``.venv-ref``; for a git
worktree, the main checkout's; ``TET_REF_PYTHON`` names another)."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet

REPO = Path(__file__).resolve().parent.parent


def _candidates() -> list[Path]:
    found = [Path(os.environ["TET_REF_PYTHON"])] if os.environ.get("TET_REF_PYTHON") else []
    found.append(REPO / ".venv-ref" / "bin" / "python")
    try:
        common = subprocess.run(["git", "rev-parse", "--git-common-dir"], cwd=REPO,
                                capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        common = ""
    if common:
        found.append((REPO / common).resolve().parent / ".venv-ref" / "bin" / "python")
    return found


def ref_python() -> Path:
    for path in _candidates():
        if path.exists():
            return path
    pytest.skip("the reference tet-py 0.8.3 is not installed in .venv-ref "
                "(`make interop` installs it)")


def run_ref(script: str, cwd: Path) -> Any:
    """Run `script` under tet-py (isolated, from `cwd`); it prints one JSON value last."""
    out = subprocess.run([str(ref_python()), "-I", "-c", textwrap.dedent(script)], cwd=cwd,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def part(path: Path, name: str, array: np.ndarray[Any, Any], **kw: Any) -> Path:
    tet.write_dataset(path, name, array, **kw)
    return path
