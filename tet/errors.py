"""One exception hierarchy: every error the package raises derives from `TetError`.

Subclasses also inherit the builtin a caller would reach for (`KeyError` for an
unknown dataset name, `ValueError` for a bad axis or selection), so generic
``except`` clauses keep working.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__ = [
    "CatalogError",
    "ChunkError",
    "MemoryBudgetError",
    "QueryError",
    "SelectionError",
    "TetError",
    "UnknownAxisError",
    "UnknownDatasetError",
]


class TetError(Exception):
    """Base of every error raised by `tet`."""


class CatalogError(TetError):
    """The file's layout, catalog or footer is invalid, or a writer refused its input."""


class ChunkError(CatalogError):
    """A chunk payload could not be decoded into its tile (corrupt or truncated data)."""


class QueryError(TetError, ValueError):
    """A query document that cannot be parsed or does not validate (engine text)."""


class SelectionError(TetError, ValueError):
    """A selection does not fit the dataset (bounds, steps, labels, arity)."""


class MemoryBudgetError(TetError, MemoryError):
    """A dense result would exceed the memory budget."""


class UnknownDatasetError(KeyError, TetError):
    """No dataset of that name in the file; the message lists what is there."""

    def __init__(self, name: str, *, path: object = None, available: Sequence[str] = ()) -> None:
        self.name = name
        self.path = path
        self.available = tuple(available)
        lines = [f"unknown dataset {name!r} in {path}"]
        lines.append(f"available datasets ({len(self.available)}):")
        lines.extend(f"  - {a!r}" for a in self.available)
        close = difflib.get_close_matches(name, self.available, n=3, cutoff=0.5)
        if close:
            lines.append("did you mean: " + ", ".join(repr(c) for c in close) + "?")
        self.message = "\n".join(lines)
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.message


class UnknownAxisError(ValueError, TetError):
    """An axis index or name that the dataset does not have."""

    def __init__(
        self,
        axis: object,
        *,
        dataset: str,
        path: object,
        ndim: int,
        shape: Sequence[int],
        dim_names: Sequence[str] | None,
    ) -> None:
        self.axis = axis
        self.dataset = dataset
        self.path = path
        self.ndim = ndim
        self.shape = tuple(shape)
        self.dim_names = tuple(dim_names) if dim_names is not None else None
        lines = [
            f"invalid axis {axis!r} for dataset {dataset!r} in {path}",
            f"ndim={ndim}, shape={self.shape}",
        ]
        if isinstance(axis, int):
            lines.append(f"valid integer axis indices: 0..{ndim - 1} (or negative indexing)")
        elif self.dim_names is None:
            lines.append(
                "this dataset has no dim_names in footer metadata; "
                f"use integer axis indices 0..{ndim - 1}"
            )
        else:
            lines.append("dim_names (index → name):")
            lines.extend(f"  {i} → {n!r}" for i, n in enumerate(self.dim_names))
            close = difflib.get_close_matches(str(axis), self.dim_names, n=3, cutoff=0.5)
            if close:
                lines.append("did you mean: " + ", ".join(repr(c) for c in close) + "?")
        super().__init__("\n".join(lines))
