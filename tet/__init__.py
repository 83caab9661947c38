"""tet: many large N-dimensional arrays in one mmap-friendly ``.tet`` file.

Read with `open` / `TetFile`, write with `write_dataset` / `TetWriter`, bring
HDF5 / NetCDF / Zarr v3 in with `convert` and Zarr v3 out with `export`; every
error is a `TetError`.
"""

from __future__ import annotations

from tet.convert import ConvertError, ConvertReport, ConvertWarning, convert
from tet.errors import (
    CatalogError,
    ChunkError,
    MemoryBudgetError,
    QueryError,
    SelectionError,
    TetError,
    UnknownAxisError,
    UnknownDatasetError,
)
from tet.export_zarr import ExportError, ExportReport, export
from tet.file import Dataset, TetFile, open
from tet.kernels import simd_level
from tet.query.document import build_query
from tet.query.ops import QUERY_OP_KEYS, REDUCTION_OPS
from tet.query.result import QueryResult
from tet.query.sinks import (
    NumpyTransformResult,
    SidecarTransformResult,
    SpillReadResult,
    SpillTransformResult,
    TransformResult,
    TransformStats,
    TransformWrite,
    write_to_wire,
)
from tet.selection import axis_slice, full_selection, selection_slices
from tet.writer import DatasetStream, TetWriter, write_dataset

__version__ = "0.1.0"
FORMAT_VERSION = "layout-v1"

__all__ = [
    "QUERY_OP_KEYS",
    "REDUCTION_OPS",
    "CatalogError",
    "ChunkError",
    "ConvertError",
    "ConvertReport",
    "ConvertWarning",
    "Dataset",
    "DatasetStream",
    "ExportError",
    "ExportReport",
    "MemoryBudgetError",
    "NumpyTransformResult",
    "QueryError",
    "QueryResult",
    "SelectionError",
    "SidecarTransformResult",
    "SpillReadResult",
    "SpillTransformResult",
    "TetError",
    "TetFile",
    "TetWriter",
    "TransformResult",
    "TransformStats",
    "TransformWrite",
    "UnknownAxisError",
    "UnknownDatasetError",
    "__version__",
    "axis_slice",
    "build_query",
    "convert",
    "core_version",
    "export",
    "full_selection",
    "open",
    "selection_slices",
    "simd_level",
    "typing_stub",
    "write_dataset",
    "write_to_wire",
]


def core_version() -> str:
    """Version of the engine core and the layout it reads and writes."""
    return f"{__version__} ({FORMAT_VERSION}, simd={simd_level()})"


def typing_stub(path: str) -> str:
    """`TetFile.typing_stub` of the file at `path`."""
    with open(path) as f:
        return f.typing_stub()
