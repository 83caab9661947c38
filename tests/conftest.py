"""Shared test settings: where the reference data lives, and Hypothesis profiles
(`default` locally, `ci` under CI=true, `expensive` on request via TET_HYPOTHESIS)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
INTEROP = SHARED / "interop" / "files"
UPSTREAM = SHARED / "upstream-fixtures"

settings.register_profile("default", max_examples=60, deadline=None)
settings.register_profile("ci", max_examples=120, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("expensive", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("TET_HYPOTHESIS", "ci" if os.environ.get("CI") else "default"))


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the platform cache and temp dirs into tmp_path: engine temp files land
    where a test can inspect them, and never in the real home."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.setenv(var, str(tmp_path / "tmp"))
    return cache


_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def decode_special(v: Any) -> Any:
    """A cases.jsonl value with its "NaN"/"Infinity"/"-Infinity" strings as floats."""
    if isinstance(v, list):
        return [decode_special(e) for e in v]
    return _SPECIAL.get(v, v) if isinstance(v, str) else v
