"""Shared test settings: where the reference data lives, and Hypothesis profiles
(`default` locally, `ci` under CI=true, `expensive` on request via TET_HYPOTHESIS)."""

from __future__ import annotations

import os
from pathlib import Path

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
