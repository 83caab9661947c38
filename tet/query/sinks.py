"""Where results land for Python callers (python-api.md §5): result classes of the
spill and transform sinks, and the ``f.transform.to_<sink>.<method>`` namespace.

Spill files are headerless row-major little-endian arrays; their readers decode
them with the dataset's real dtype and the logical selection shape.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from io import FileIO
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from tet import dtypes
from tet.errors import FileChangedError, os_error
from tet.paths import open_regular
from tet.query.budget import allocate, resolve_budget
from tet.query.ops import TRANSFORM_METHODS
from tet.query.transform import output_dtype

if TYPE_CHECKING:
    from tet.file import TetFile

__all__ = [
    "METHODS",
    "NumpyTransformResult",
    "SidecarTransformResult",
    "SpillReadResult",
    "SpillTransformResult",
    "TransformNamespace",
    "TransformResult",
    "TransformStats",
    "TransformWrite",
    "load_spill",
    "write_to_wire",
]

METHODS = TRANSFORM_METHODS
Arr = np.ndarray[Any, Any]


class TransformWrite(StrEnum):
    NUMPY = "ram"
    SPILL = "spill"
    SIDECAR = "sidecar"


def write_to_wire(w: TransformWrite, path: str | Path | None = None) -> Any:
    """The ``write`` value of a document: the token, or an object carrying the path."""
    return w.value if path is None else {"target": w.value, "path": str(path)}


def load_spill(path: Path, shape: Sequence[int], dtype: np.dtype[Any]) -> Arr:
    """A spill file as an array of the dataset dtype shaped like the selection.

    The file is opened once, as a regular file that cannot block (a FIFO or device put
    in its place is refused at once), and read through that descriptor; a missing file,
    one of another size (changed since it was written) or a failed read is a `TetError`
    naming the path."""
    want = math.prod(shape)
    nbytes = want * dtype.itemsize
    fd, st = open_regular(path, action="cannot read spill file", what="a spill file")
    try:
        if st.st_size != nbytes:
            raise FileChangedError(
                f"spill file {path} has {st.st_size} bytes, expected {nbytes} ({want} "
                f"elements of {dtype.name} for shape {tuple(shape)}); it changed after it "
                "was written")
        out = allocate(tuple(shape), dtype.newbyteorder("<"), budget=resolve_budget(),
                       what=f"reading spill file {path} ({nbytes} bytes)",
                       hint="map or read the file in pieces")
        view = memoryview(out.reshape(-1).data).cast("B") if nbytes else memoryview(b"")
        with FileIO(fd, "rb", closefd=False) as fh:
            done = 0
            while done < nbytes:
                n = fh.readinto(view[done:])
                if not n:
                    raise FileChangedError(f"spill file {path} ended at byte {done} of "
                                           f"{nbytes}; it changed while it was read")
                done += n
    except OSError as exc:
        raise os_error(exc, "cannot read spill file", path) from exc
    finally:
        os.close(fd)
    return out.astype(dtype, copy=False)


def _shape(raw: dict[str, Any]) -> tuple[int, ...]:
    plan = raw.get("read_plan") or {}
    shape = plan.get("logical_selection_shape") or (raw.get("catalog") or {}).get("shape")
    return tuple(shape or ())


@dataclass(frozen=True)
class TransformStats:
    """Pass-1 statistics of a scalar transform (None where the method takes none)."""

    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    var: float | None = None

    @classmethod
    def from_execution(cls, ex: dict[str, Any]) -> TransformStats:
        std = ex.get("operation_std")
        return cls(mean=ex.get("operation_mean"), std=std, min=ex.get("operation_min"),
                   max=ex.get("operation_max"), var=None if std is None else std * std)


@dataclass(frozen=True)
class TransformResult:
    method: str
    stats: TransformStats
    shape: tuple[int, ...]
    dtype_tag: int
    accepted: bool
    message: str | None
    memory_strategy: str | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The output dtype: the source's for f32/f64, float64 for promoted inputs."""
        return output_dtype(dtypes.by_tag(self.dtype_tag))

    @staticmethod
    def _base(raw: dict[str, Any], method: str) -> dict[str, Any]:
        ex = raw.get("execution") or {}
        return {"method": method, "stats": TransformStats.from_execution(ex),
                "shape": _shape(raw), "dtype_tag": int(raw["catalog"]["dtype"]),
                "accepted": bool(raw.get("accepted", True)), "message": raw.get("message"),
                "memory_strategy": ex.get("memory_strategy"), "raw": raw}


@dataclass(frozen=True)
class NumpyTransformResult(TransformResult):
    preview: list[float] | None = None
    preview_truncated: bool = False


@dataclass(frozen=True)
class SpillTransformResult(TransformResult):
    path: Path = Path()
    byte_len: int | None = None

    @classmethod
    def from_response(cls, raw: dict[str, Any], method: str) -> SpillTransformResult:
        ex = raw.get("execution") or {}
        where = ex.get("spill_f32_path") or ex.get("spill_f64_path")
        if not where:
            raise ValueError("transform spill result missing spill path in execution")
        return cls(**cls._base(raw, method), path=Path(where),  # the engine's canonical path
                   byte_len=ex.get("spill_f32_bytes"))

    def to_numpy(self) -> Arr:
        return load_spill(self.path, self.shape, self.dtype)


@dataclass(frozen=True)
class SidecarTransformResult(TransformResult):
    path: Path | None = None
    # What `open` opens the sidecar as: `TetFile`, which tet.file sets when it is defined
    # (tet.file declares the query API and so sits above this module).
    file_class: ClassVar[type[TetFile] | None] = None

    @classmethod
    def from_response(cls, raw: dict[str, Any], method: str) -> SidecarTransformResult:
        where = (raw.get("execution") or {}).get("spill_f32_path")
        return cls(**cls._base(raw, method), path=Path(where) if where else None)

    def open(self, source: TetFile | str | Path) -> TetFile:
        """The published sidecar (a relative path is taken beside the source)."""
        tet_file = self.file_class
        assert tet_file is not None, "tet.file sets SidecarTransformResult.file_class"
        if self.path is None:
            raise ValueError("sidecar path not set in transform execution")
        where = source.path if isinstance(source, tet_file) else source
        base = Path(cast("str | PathLike[str]", where)).parent
        return tet_file(self.path if self.path.is_absolute() else base / self.path)

    def to_numpy(self, source: TetFile | str | Path, *, dataset: str | None = None) -> Arr:
        with self.open(source) as side:
            names = side.datasets()
            if dataset is None:
                mine = [n for n in names if n.endswith(f"-{self.method}")]
                if len(names) == 1:
                    dataset = names[0]
                elif len(mine) == 1:
                    dataset = mine[0]
                else:
                    raise ValueError("sidecar has multiple datasets; pass dataset= explicitly "
                                     f"(available: {names})")
            out: Arr = side.read_numpy(dataset)
            return out


@dataclass(frozen=True)
class SpillReadResult:
    path: Path
    shape: tuple[int, ...]
    dtype_tag: int
    byte_len: int | None
    memory_strategy: str | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_response(cls, raw: dict[str, Any]) -> SpillReadResult:
        ex = raw.get("execution") or {}
        tag = int(raw["catalog"]["dtype"])
        if isinstance(ex.get("mask_fill_dtype"), str):  # masked: an integer spill is f64
            tag = dtypes.by_name(ex["mask_fill_dtype"]).tag
        return cls(path=Path(ex["spill_f32_path"]), shape=_shape(raw),  # canonical already
                   dtype_tag=tag,
                   byte_len=ex.get("spill_f32_bytes"), memory_strategy=ex.get("memory_strategy"),
                   raw=raw)

    def to_numpy(self) -> Arr:
        return load_spill(self.path, self.shape, dtypes.by_tag(self.dtype_tag).numpy)


Runner = Callable[..., Any]


class _Methods:
    """One attribute per transform method, each running through `run(method, ...)`."""

    def __init__(self, run: Runner, sink: TransformWrite) -> None:
        self._run = run
        self._sink = sink

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method not in METHODS:
            raise AttributeError(f"unknown transform method {method!r} (expected one of "
                                 f"{', '.join(METHODS)})")
        sink, run = self._sink, self._run

        def to_ram(dataset: str, axes: Any = None, *, axis: Any = None, selection: Any = None,
                   device: str | None = None, raw: bool = False, mask_fill: bool = False) -> Any:
            return run(sink, method, dataset, axes, axis=axis, selection=selection,
                       device=device, raw=raw, mask_fill=mask_fill)

        def to_spill(dataset: str, axes: Any = None, *, axis: Any = None,
                     selection: Any = None, device: str | None = None, raw: bool = False,
                     path: str | PathLike[str] | None = None, mask_fill: bool = False) -> Any:
            return run(sink, method, dataset, axes, axis=axis, selection=selection,
                       device=device, raw=raw, path=path, mask_fill=mask_fill)

        def to_sidecar(dataset: str, axes: Any = None, *, axis: Any = None,
                       selection: Any = None, device: str | None = None, raw: bool = False,
                       path: str | PathLike[str] | None = None,
                       timestamp: bool | None = None, mask_fill: bool = False) -> Any:
            return run(sink, method, dataset, axes, axis=axis, selection=selection,
                       device=device, raw=raw, path=path, timestamp=timestamp,
                       mask_fill=mask_fill)

        call = {TransformWrite.NUMPY: to_ram, TransformWrite.SPILL: to_spill,
                TransformWrite.SIDECAR: to_sidecar}[sink]
        call.__name__ = call.__qualname__ = method
        return call

    def __dir__(self) -> list[str]:
        return list(METHODS)


class TransformNamespace:
    """``f.transform.to_numpy.zscore(...)``, ``.to_spill.*``, ``.to_sidecar.*``."""

    def __init__(self, run: Runner) -> None:
        self.to_numpy = _Methods(run, TransformWrite.NUMPY)
        self.to_spill = _Methods(run, TransformWrite.SPILL)
        self.to_sidecar = _Methods(run, TransformWrite.SIDECAR)
