"""tet: many large N-dimensional arrays in one mmap-friendly ``.tet`` file.

Read with `open` / `TetFile`, write with `write_dataset` / `TetWriter`, bring
HDF5 / NetCDF / Zarr v3 in with `convert` and Zarr v3 out with `export`; every
error is a `TetError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tet.convert import ConvertError, ConvertReport, ConvertWarning, convert
from tet.errors import (
    CatalogError,
    ChunkError,
    DiskFullError,
    FileChangedError,
    InvalidPathError,
    InvalidTextError,
    MemoryBudgetError,
    NotRegularFileError,
    PackageError,
    PublishConflictError,
    QueryError,
    SelectionError,
    TetError,
    TetFileNotFoundError,
    TetIndexError,
    TetIsADirectoryError,
    TetNotADirectoryError,
    TetOSError,
    TetPermissionError,
    UnknownAxisError,
    UnknownDatasetError,
    UnsupportedModeError,
)
from tet.export_zarr import ExportDiskFullError, ExportError, ExportReport, export
from tet.file import Dataset, TetFile, open
from tet.package import create, ingest, is_package, pack, publish
from tet.package_admin import log, prune
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
from tet.simd import simd_level
from tet.version import __version__
from tet.writer import DatasetStream, TetWriter, write_dataset

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
    "DiskFullError",
    "ExportDiskFullError",
    "ExportError",
    "ExportReport",
    "FileChangedError",
    "InvalidPathError",
    "InvalidTextError",
    "MemoryBudgetError",
    "NotRegularFileError",
    "NumpyTransformResult",
    "PackageError",
    "PublishConflictError",
    "QueryError",
    "QueryResult",
    "SelectionError",
    "SidecarTransformResult",
    "SpillReadResult",
    "SpillTransformResult",
    "TetError",
    "TetFile",
    "TetFileNotFoundError",
    "TetIndexError",
    "TetIsADirectoryError",
    "TetNotADirectoryError",
    "TetOSError",
    "TetPermissionError",
    "TetWriter",
    "TransformResult",
    "TransformStats",
    "TransformWrite",
    "UnknownAxisError",
    "UnknownDatasetError",
    "UnsupportedModeError",
    "__version__",
    "axis_slice",
    "build_query",
    "convert",
    "core_version",
    "create",
    "export",
    "from_xarray",
    "full_selection",
    "ingest",
    "is_package",
    "log",
    "open",
    "pack",
    "prune",
    "publish",
    "query_many",
    "selection_slices",
    "simd_level",
    "to_dask",
    "to_package",
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


# The integrations import their libraries only when called: `import tet` stays light.
def to_dask(file: TetFile | str | os.PathLike[str], name: str, selection: Any = None, *,
            block_bytes: int | None = None, storage_options: Any = None,
            store: Any = None) -> Any:
    """`tet.dask.to_dask`: a lazy dask array of one dataset of a file or a URL (needs the
    ``dask`` extra)."""
    from tet.dask import to_dask as run

    return run(file, name, selection, block_bytes=block_bytes,
               storage_options=storage_options, store=store)


def from_xarray(ds: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """`tet.xarray_write.from_xarray`: write an xarray Dataset or DataArray (needs the
    ``xarray`` extra)."""
    from tet.xarray_write import from_xarray as run

    return run(ds, path, **kwargs)


def to_package(data: Any, package: str | os.PathLike[str], **kwargs: Any) -> int | list[str]:
    """`tet.package_dask.to_package`: write a dask array or xarray Dataset into a package
    from the dask workers and publish it once (needs the ``dask`` extra)."""
    from tet.package_dask import to_package as run

    return run(data, package, **kwargs)


def query_many(paths: Iterable[str | os.PathLike[str]], doc: Any, client: Any = None,
               **kwargs: Any) -> Any:
    """`tet.many.query_many`: one query on many files (local pool or a distributed Client)."""
    from tet.many import query_many as run

    return run(paths, doc, client, **kwargs)
