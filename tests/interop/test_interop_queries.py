"""Every `op` case and every `error` case of the interop corpus, through
`TetFile.query` (the whole engine: document, plan, C fold or materialisation,
response).

Matrix: cases.jsonl kind "op" (2,129 tier A/B cases and 516 tier C cases, the
`disagreement` ones included: they hold NumPy's answer) × tolerance rules of the
corpus README; every kind "error" document must raise a TetError.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

import tet
from tests.conftest import INTEROP, decode_special
from tet.query.ops import OPS

CASES = [json.loads(line) for line in (INTEROP / "cases.jsonl").read_text().splitlines()]


def _op(case: dict[str, Any]) -> str | None:
    keys = [k for k in case["query"] if k in OPS]
    return keys[0] if keys else None


def _tier(case: dict[str, Any]) -> str:
    op = _op(case)
    return "A" if op is None else OPS[op].tier


OP_CASES = [c for c in CASES if c["kind"] == "op"]
ERROR_CASES = [c for c in CASES if c["kind"] == "error"]


def same(got: Any, want: Any, rtol: float, atol: float) -> bool:
    if isinstance(want, list):
        return (isinstance(got, list) and len(got) == len(want)
                and all(same(g, w, rtol, atol) for g, w in zip(got, want)))
    if isinstance(want, bool):
        return got is want
    if isinstance(want, float) and not math.isfinite(want):
        return got is None  # the wire writes every non-finite float as null
    return got is not None and abs(got - want) <= atol + rtol * abs(want)


@pytest.fixture(scope="module")
def files() -> dict[str, tet.TetFile]:
    return {}


def _open(files: dict[str, tet.TetFile], name: str) -> tet.TetFile:
    if name not in files:
        files[name] = tet.open(INTEROP / name)
    return files[name]


def test_corpus_has_the_expected_cases() -> None:
    tiers = [_tier(c) for c in OP_CASES]
    assert (tiers.count("A"), tiers.count("C")) == (2129, 516)
    assert len(ERROR_CASES) == 191


@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c["id"])
def test_op_case(case: dict[str, Any], files: dict[str, tet.TetFile]) -> None:
    f = _open(files, case["file"])
    execution = f.query(case["query"])["execution"]
    for key, want in case["expect"].items():
        exact = key in case.get("exact_keys", [])
        rtol, atol = (0.0, 0.0) if exact else (case["rtol"], case["atol"])
        assert same(execution[key], decode_special(want), rtol, atol), (key, execution[key], want)


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda c: c["id"])
def test_error_case(case: dict[str, Any], files: dict[str, tet.TetFile]) -> None:
    f = _open(files, case["file"])
    with pytest.raises(tet.TetError):
        f.query(case["query"])
