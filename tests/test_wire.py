"""tet.wire: the one float formatter (three styles, one rule for NaN and infinities)
and the JSON-value helpers the selection, document and CLI layers share."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import tet
from tet.wire import (
    FloatStyle,
    format_float,
    is_axis_index,
    is_json_int,
    json_float,
    unexpected,
)


@pytest.mark.parametrize("style", ["debug", "display", "fixed"])
def test_non_finite_floats_read_the_same_in_every_style(style: FloatStyle) -> None:
    assert format_float(math.nan, style) == "NaN"
    assert format_float(-math.inf, style) == "-inf"
    assert format_float(np.float32(np.inf), style) == "inf"


@pytest.mark.parametrize(("value", "debug", "display", "fixed"), [
    (2.0, "2.0", "2", "2"),
    (-9999.0, "-9999.0", "-9999", "-9999"),
    (-0.0, "-0.0", "-0", "-0"),
    (1e-7, "1e-7", "0.0000001", "0"),
    (1.5e16, "1.5e+16", "15000000000000000", "15000000000000000"),
    (2.9166666666666665, "2.9166666666666665", "2.9166666666666665", "2.916667"),
])
def test_the_three_styles_of_a_finite_float(value: float, debug: str, display: str,
                                            fixed: str) -> None:
    assert format_float(value) == debug
    assert format_float(value, "display") == display
    assert format_float(value, "fixed") == fixed


def test_display_keeps_the_digits_of_the_values_own_width() -> None:
    assert format_float(np.float32(0.1), "display") == "0.1"
    assert format_float(float(np.float32(0.1)), "display") == "0.10000000149011612"
    assert format_float(np.float16(0.1), "display") == "0.1"  # f16 digits, not f64 ones


def test_fixed_rounds_to_the_places_asked_for() -> None:
    assert format_float(12.5, "fixed", places=2) == "12.5"
    assert format_float(0.125, "fixed", places=2) == "0.12"
    assert format_float(33.333333, "fixed", places=2) == "33.33"


def test_json_integers_are_those_of_the_typed_reader() -> None:
    assert is_json_int(-(2**63)) and is_json_int(2**64 - 1) and is_json_int(np.uint64(7))
    assert not is_json_int(2**64) and not is_json_int(True) and not is_json_int(1.0)
    assert json_float(2**64) == 2.0**64 and json_float(10**400) == math.inf
    assert json_float(3) is None and json_float(np.bool_(True)) is None
    assert unexpected(2**64) == "floating point `1.8446744073709552e+19`"
    assert unexpected(np.float32(0.5)) == "floating point `0.5`"


def test_axis_index_tokens_are_ascii_digits_everywhere(tmp_path: Path) -> None:
    """"²" and "٣" are digits to str.isdigit but not to int(): a name, never an index."""
    assert [is_axis_index(t) for t in ("0", "12", "²", "٣", "-1", "", "x")] == [
        True, True, False, False, False, False, False]
    a = np.arange(6.0).reshape(2, 3)
    with pytest.raises(tet.CatalogError, match="coords key '²' is neither a dim name nor an "
                                               "axis index"):
        tet.write_dataset(tmp_path / "bad.tet", "v", a, coords={"²": ["p", "q"]})
    path = tet.write_dataset(tmp_path / "ok.tet", "v", a, coords={"1": ["p", "q", "r"]})
    with tet.open(path) as f:
        assert f["v"].axis_index("1") == 1
        with pytest.raises(tet.UnknownAxisError):
            f["v"].axis_index("²")
        with pytest.raises(tet.QueryError) as info:
            f.query({"dataset": "v", "mean": ["²"]})
        assert str(info.value) == ('validation: invalid axis label "²" (use a non-negative '
                                   'decimal index or a dimension name)')
