"""Hypothesis strategies for orthogonal keys, shared by the indexing and the tile-cache
tests."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st


@st.composite
def axis_keys(draw: st.DrawFn, n: int, max_indices: int | None = None) -> Any:
    """One axis (of length `n`) of a key: an int, a slice (any nonzero step), an index
    list or array (any order, repeats, negative; at most `max_indices`, default 2n + 2),
    or a boolean mask.  Arrays take integer dtypes that hold every index of the axis."""
    kind = draw(st.sampled_from(("int", "slice", "list", "array", "mask")))
    if kind == "int":
        return draw(st.integers(-n, n - 1))
    if kind == "slice":
        bound = st.none() | st.integers(-n - 2, n + 2)
        step = draw(st.none() | st.integers(-n - 1, n + 1).filter(lambda k: k != 0))
        return slice(draw(bound), draw(bound), step)
    size = 2 * n + 2 if max_indices is None else max_indices
    values = draw(st.lists(st.integers(-n, n - 1), max_size=size))
    if kind == "list":
        return values
    if kind == "mask":
        return np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    signed = [t for t in ("int64", "int32", "int8", "intp") if np.iinfo(t).max >= n]
    dtype = draw(st.sampled_from(signed))
    if all(v >= 0 for v in values) and draw(st.booleans()):
        dtype = draw(st.sampled_from([t for t in ("uint64", "uint16")
                                      if np.iinfo(t).max >= n]))
    return np.array(values, dtype=dtype)
