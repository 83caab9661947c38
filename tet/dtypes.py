"""The one table of element types: wire tag <-> name <-> NumPy dtype."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tet.errors import CatalogError

__all__ = ["DTYPES", "DType", "by_name", "by_tag", "for_numpy", "unsupported_message"]


@dataclass(frozen=True, slots=True)
class DType:
    tag: int
    name: str
    numpy: np.dtype[np.generic]

    @property
    def size(self) -> int:
        return int(self.numpy.itemsize)


DTYPES: tuple[DType, ...] = (
    DType(1, "f32", np.dtype("<f4")),
    DType(2, "f64", np.dtype("<f8")),
    DType(3, "i32", np.dtype("<i4")),
    DType(4, "i64", np.dtype("<i8")),
    DType(5, "u8", np.dtype("u1")),
    DType(6, "u16", np.dtype("<u2")),
    DType(7, "i16", np.dtype("<i2")),
    DType(8, "u32", np.dtype("<u4")),
    DType(9, "f16", np.dtype("<f2")),
    DType(10, "u64", np.dtype("<u8")),
)
_BY_TAG = {d.tag: d for d in DTYPES}
_BY_NAME = {d.name: d for d in DTYPES}
_BY_KIND = {(d.numpy.kind, d.numpy.itemsize): d for d in DTYPES}


def unsupported_message(tag: int) -> str:
    listing = ", ".join(f"{d.name}={d.tag}" for d in DTYPES)
    return f"unsupported dataset dtype {tag} (supported: {listing})"


def by_tag(tag: int) -> DType:
    """The dtype of a wire tag; an unknown tag is a `CatalogError`."""
    try:
        return _BY_TAG[tag]
    except KeyError:
        raise CatalogError(unsupported_message(tag)) from None


def by_name(name: str) -> DType:
    return _BY_NAME[name]


def is_known_tag(tag: int) -> bool:
    return tag in _BY_TAG


def for_numpy(dtype: np.dtype[np.generic] | type | str) -> DType:
    """The wire dtype that stores a NumPy dtype (bool is stored as u8 0/1).

    Raises `TypeError` for dtypes the format cannot hold (int8, complex, strings, …).
    """
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return _BY_NAME["u8"]
    found = _BY_KIND.get((dt.kind, dt.itemsize))
    if found is None:
        names = ", ".join(str(d.numpy.newbyteorder("=")) for d in DTYPES)
        raise TypeError(f"unsupported numpy dtype {dt.name!r} for write (supported: {names}, bool)")
    return found
