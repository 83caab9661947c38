"""HDF5 / NetCDF / Zarr v3 → .tet (cli.md §6).

`convert(src, dst)` turns every numeric, 0-d and text array of the source into one
dataset of a new .tet file, keeping the source chunk grid, typed attributes (file-level
ones too), dimension names and coordinate labels, and decoding CF fill values and
packing the way xarray does unless asked not to (`tet.convert.cf`).  The reader
libraries (h5py, netCDF4, zarr) are imported only when a conversion needs them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tet.attrs import encode_value
from tet.convert.sniff import Kind, sniff, uncompressed
from tet.convert.source import ConvertError, ConvertWarning, SourceVar
from tet.convert.write import ProgressFn, fit_footer, tile_shape, write_variables
from tet.dtypes import for_numpy
from tet.paths import checked_path

__all__ = [
    "ConvertError",
    "ConvertReport",
    "ConvertWarning",
    "ConvertedDataset",
    "convert",
    "resolve_jobs",
    "sniff",
]

MAX_JOBS = 64
LABELS = {"h5": "HDF5", "nc": "NetCDF", "zarr": "Zarr"}


class _Source(Protocol):
    def variables(self) -> list[SourceVar]: ...

    def file_attrs(self) -> dict[str, Any]: ...

    def group_attrs(self) -> dict[str, dict[str, Any]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ConvertedDataset:
    """One dataset written: its name, shape, stored dtype and tile shape."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    chunk_shape: tuple[int, ...]


@dataclass(frozen=True)
class ConvertReport:
    """What `convert` wrote; `to_dict()` is the JSON `tet convert` prints."""

    input: str
    output: str
    source: str
    datasets: tuple[ConvertedDataset, ...]
    history: tuple[dict[str, Any], ...]
    elapsed_secs: float

    @property
    def dataset_names(self) -> list[str]:
        return [d.name for d in self.datasets]

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "dataset_count": len(self.datasets),
            "dataset_names": self.dataset_names,
            "datasets": [{"name": d.name, "ndim": len(d.shape), "dims": list(d.shape)}
                         for d in self.datasets],
            "history": [{k: row[k] for k in ("op", "source", "at")} for row in self.history],
            "elapsed_secs": self.elapsed_secs,
        }


def resolve_jobs(jobs: int) -> int:
    """Worker threads for `jobs`: 0 means the host's parallelism; clamped to 1..64."""
    if jobs < 0:
        raise ValueError(f"jobs must be >= 0 (0 = host parallelism), got {jobs}")
    if jobs == 0:
        try:
            jobs = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            jobs = os.cpu_count() or 1
    return max(1, min(MAX_JOBS, jobs))


def _open(kind: Kind, path: Path, keep_packed: bool, remote: Any = None) -> _Source:
    if remote is not None:
        from tet.convert.zarr import ZarrSource

        return ZarrSource(path, keep_packed=keep_packed, remote=remote)
    if kind == "h5":
        from tet.convert.hdf5 import H5Source

        return H5Source(path, keep_packed=keep_packed)
    if kind == "nc":
        from tet.convert.netcdf import NCSource

        return NCSource(path, keep_packed=keep_packed)
    from tet.convert.zarr import ZarrSource

    return ZarrSource(path, keep_packed=keep_packed)


def _check_output(src: Path, dst: Path) -> None:
    if dst.is_dir():
        raise ConvertError(f"output `{dst}` is a directory")
    if not dst.parent.is_dir():
        raise ConvertError(f"output directory `{dst.parent}` does not exist")
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise ConvertError(f"output `{dst}` is the input file")


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    jobs: int = 0,
    codec: str = "raw",
    keep_packed: bool = False,
    progress: ProgressFn | None = None,
    timestamp: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    store: Any = None,
) -> ConvertReport:
    """Convert an HDF5 file, a NetCDF file or a Zarr v3 store into a new .tet file.

    Parameters
    ----------
    src : the source file or Zarr directory (`.gz .bz2 .xz .zst .zip` layers around a
        file are undone first, into temp files beside `dst`).
    dst : the .tet file to write; built beside and renamed into place, so a failed
        conversion leaves nothing behind (an existing file stays as it was).
    jobs : parallel block readers; 0 = host parallelism, clamped to 1..64.
    codec : "raw" or "zstd" payloads.
    keep_packed : store every variable's values as stored, with `_FillValue`,
        `missing_value`, `scale_factor`, `add_offset` and `_Unsigned` kept as attributes,
        instead of decoding them as xarray does (fills → NaN, packing applied, the
        moved keys kept as the dataset's encoding).
    progress : called as ``progress(dataset, tiles_done, tiles_total)`` after each block.
    timestamp : Unix seconds to record as the history row's `at` and the file's
        `created_at` instead of now (reproducible output).
    storage_options, store : for a URL `dst` (or a key with `store`), the file is built
        in the platform cache and uploaded (`tet.remote_write`); a URL `src` is read
        with the same options: a Zarr store through zarr's `ObjectStore` (obstore), an
        HDF5 or NetCDF object downloaded to the cache first (`tet.convert.remote`).

    Returns
    -------
    ConvertReport

    Raises
    ------
    ConvertError
        Unsupported input, missing reader library, no numeric arrays, or a variable
        that failed (the message names it).

    Warns
    -----
    ConvertWarning
        For each array left out (compounds, references, empty arrays, …), for
        attributes or footer metadata the format's limits cannot hold, and for CF
        attributes xarray would warn about too.
    """
    from tet.convert.remote import remote_input
    from tet.file import TetFile
    from tet.remote_write import is_remote, staged
    from tet.writer import TetWriter

    started = time.perf_counter()
    if codec not in ("raw", "zstd"):
        raise ValueError(f"unknown codec {codec!r} (use 'raw' or 'zstd')")
    workers = resolve_jobs(jobs)
    if is_remote(dst, store):  # built in the cache, then uploaded
        with staged(os.fspath(dst), storage_options, store) as target:
            report = convert(src, target.local, jobs=jobs, codec=codec,
                             keep_packed=keep_packed, progress=progress,
                             timestamp=timestamp, storage_options=storage_options)
            target.upload()
        return dataclasses.replace(report, output=target.url)
    with ExitStack() as stack:
        src_p, remote, label = stack.enter_context(remote_input(src, storage_options))
        dst_p = Path(os.path.expanduser(checked_path(dst, "cannot write")))
        kind = "zarr" if remote is not None else sniff(src_p)
        _check_output(src_p, dst_p)
        path = src_p if kind == "zarr" else stack.enter_context(uncompressed(src_p, dst_p.parent))
        source = _open(kind, path, keep_packed, remote)
        stack.callback(source.close)
        variables = source.variables()
        if not variables:
            raise ConvertError(f"no supported numeric datasets found in {label}")
        globals_ = source.file_attrs()
        groups = source.group_attrs()
        typed = [{k: encode_value(v) for k, v in attrs.items()}
                 for attrs in (globals_, *groups.values())]
        fit_footer(variables, reserved=len(json.dumps(typed, ensure_ascii=False).encode()))
        stamp = None if timestamp is None else str(int(timestamp))
        writer = TetWriter.create(dst_p, tool="tet convert",
                                  clock=None if stamp is None else lambda: stamp)
        try:
            writer.push_history_event("convert", kind)
            if globals_:
                writer.set_file_attrs(globals_)
            for group, attrs in groups.items():
                writer.set_group_attrs(group, attrs)
            write_variables(writer, variables, codec=codec, jobs=workers, progress=progress)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
    with TetFile(dst_p) as written:
        history = tuple(dict(row) for row in written.history)
    datasets = tuple(ConvertedDataset(v.name, v.shape, for_numpy(v.dtype).name, tile_shape(v))
                     for v in variables)
    return ConvertReport(input=label, output=str(dst_p), source=kind, datasets=datasets,
                         history=history,
                         elapsed_secs=round(time.perf_counter() - started, 6))
