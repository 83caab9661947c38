"""`tet.dask.to_dask`: lazy dask arrays whose blocks follow the file's chunk grid.

Covers:

- block boundaries are chunk boundaries (whole, strided and offset selections, 1-3
  axes), blocks stay under ``block_bytes`` unless one chunk is larger by itself;
- every block is exactly one ``read_numpy`` of its box; values equal NumPy for
  ``compute()`` and for reductions (mean, sum, std, var, min, max, per-axis);
- the graph of a 1 GiB dataset (8 MiB chunks) has 16 tasks;
- graphs pickle and compute after unpickling; a process opens a file once however
  many blocks it reads; a file replaced after the graph was built is refused;
- argument errors surface when the array is built, not at compute time;
- ``import tet`` (and ``tet.dask``, ``tet.many``) import neither dask nor xarray.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest

import tet
from tet.dask import block_chunks, cache_info, clear_cache, file_key, open_cached, to_dask
from tet.reader import Reader
from tet.selection import Box

pytestmark = pytest.mark.usefixtures("fresh_cache")


@pytest.fixture
def cube(tmp_path: Path) -> tuple[Path, np.ndarray[Any, Any]]:
    """float64 (37, 29, 11), chunks (5, 7, 4): edge chunks on every axis."""
    a = np.random.default_rng(7).standard_normal((37, 29, 11)) * 10 + 3
    return tet.write_dataset(tmp_path / "cube.tet", "v", a, chunk_shape=(5, 7, 4),
                             dim_names=["t", "y", "x"]), a


class ReadCounter:
    """Every read of a box through a reader, as (dataset name, box-form selection)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, Any]] = []
        original = Reader.read

        def counting(r: Reader, dataset_id: int, box: Box, **kw: Any) -> Any:
            sel = {"start": list(box.start), "stop": list(box.stop), "step": list(box.step)}
            self.calls.append((r.catalog.datasets[dataset_id].name, sel))
            return original(r, dataset_id, box, **kw)

        monkeypatch.setattr(Reader, "read", counting)


def _check_aligned(chunks: tuple[tuple[int, ...], ...], box: Box,
                   chunk_shape: tuple[int, ...]) -> None:
    for d, sizes in enumerate(chunks):
        assert sum(sizes) == box.shape[d]
        edge = 0
        for n in sizes[:-1]:
            edge += n
            before = (box.start[d] + (edge - 1) * box.step[d]) // chunk_shape[d]
            after = (box.start[d] + edge * box.step[d]) // chunk_shape[d]
            assert before != after, f"axis {d}: block edge {edge} splits chunk {before}"


SELECTIONS = [
    None,
    {"start": [3, 0, 1], "stop": [37, 29, 11], "step": [1, 1, 1]},
    {"start": [1, 2, 0], "stop": [36, 27, 11], "step": [3, 2, 5]},
    [{"start": 10, "stop": 11}, {"step": 8}, {}],
]


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("block_bytes", [1, 5 * 7 * 4 * 8 * 3, 20_000, 1 << 30])
def test_blocks_align_with_chunks_and_values_match(
        cube: tuple[Path, np.ndarray[Any, Any]], selection: Any, block_bytes: int) -> None:
    path, a = cube
    x: Any = to_dask(path, "v", selection, block_bytes=block_bytes)
    with tet.open(path) as f:
        _, box = f.resolve("v", selection)
    _check_aligned(x.chunks, box, (5, 7, 4))
    one_chunk = [max(n for n in _native(box, d)) for d in range(3)]
    for index in np.ndindex(*x.numblocks):
        shape = [x.chunks[d][i] for d, i in enumerate(index)]
        nbytes = int(np.prod(shape)) * 8
        assert nbytes <= max(block_bytes, int(np.prod(one_chunk)) * 8)
    want = a[tuple(slice(s, e, k) for s, e, k in zip(box.start, box.stop, box.step))]
    got = x.compute(scheduler="sync")
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)


def _native(box: Box, d: int) -> list[int]:
    """Selected elements per file chunk along axis d (the smallest possible blocks)."""
    chunk = (5, 7, 4)[d]
    ids = [(box.start[d] + i * box.step[d]) // chunk for i in range(box.shape[d])]
    return [ids.count(c) for c in dict.fromkeys(ids)]


def test_block_grouping_rows_first() -> None:
    # 1 GiB float32, 1024² chunks (4 MiB): 16 chunks a row make one 64 MiB block.
    chunks = block_chunks(Box.full((16384, 16384)), (1024, 1024), 4, 64 << 20)
    assert chunks == ((1024,) * 16, (16384,))
    # chunks larger than the target stay whole, one per block
    assert block_chunks(Box.full((10, 10)), (4, 10), 8, 16) == ((4, 4, 2), (10,))
    # the innermost axis is grouped first, then the next once it is whole
    assert block_chunks(Box.full((8, 6)), (2, 3), 1, 24) == ((4, 4), (6,))
    assert block_chunks(Box.full((8, 6)), (2, 3), 1, 7) == ((2, 2, 2, 2), (3, 3))


def test_each_block_is_one_read(cube: tuple[Path, np.ndarray[Any, Any]],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    path, a = cube
    reads = ReadCounter(monkeypatch)
    x: Any = to_dask(path, "v", block_bytes=5 * 29 * 11 * 8)
    assert x.chunks == ((5,) * 7 + (2,), (29,), (11,))
    assert reads.calls == []  # building reads nothing
    np.testing.assert_array_equal(x.compute(scheduler="threads"), a)
    assert len(reads.calls) == 8
    sels = sorted((sel for _, sel in reads.calls), key=lambda s: s["start"][0])
    assert [s["start"][0] for s in sels] == [0, 5, 10, 15, 20, 25, 30, 35]
    assert sels[0] == {"start": [0, 0, 0], "stop": [5, 29, 11], "step": [1, 1, 1]}
    assert sels[-1] == {"start": [35, 0, 0], "stop": [37, 29, 11], "step": [1, 1, 1]}


@pytest.mark.parametrize("op", ["mean", "sum", "std", "var", "min", "max"])
def test_reductions_equal_numpy(cube: tuple[Path, np.ndarray[Any, Any]], op: str) -> None:
    path, a = cube
    x: Any = to_dask(path, "v", block_bytes=4096)
    assert x.npartitions > 10
    got = getattr(x, op)().compute()
    np.testing.assert_allclose(got, getattr(a, op)(), rtol=1e-12)
    per_axis = getattr(x, op)(axis=(0, 2)).compute()
    np.testing.assert_allclose(per_axis, getattr(a, op)(axis=(0, 2)), rtol=1e-12)


def test_integer_dataset_and_label_selection(tmp_path: Path) -> None:
    a = np.arange(40 * 6, dtype=np.int32).reshape(40, 6)
    path = tet.write_dataset(tmp_path / "i.tet", "n", a, chunk_shape=(8, 3),
                             dim_names=["row", "col"],
                             coords={"col": ["a", "b", "c", "d", "e", "f"]})
    x: Any = to_dask(path, "n", [{}, {"start_label": "b", "stop_label": "e"}], block_bytes=48)
    assert x.dtype == np.int32
    assert x.chunks == ((8,) * 5, (2, 1))
    np.testing.assert_array_equal(x.compute(), a[:, 1:4])
    assert int(x.sum().compute()) == int(a[:, 1:4].sum())


def test_one_gib_graph_is_small(tmp_path: Path) -> None:
    # A 1 GiB float32 dataset of zeros, never written block by block: the stream
    # fills every tile with zeros and zstd keeps the file small.
    path = tmp_path / "big.tet"
    w = tet.TetWriter.create(path)
    w.create_dataset("z", (16384, 16384), np.float32, codec="zstd")
    w.commit()
    x: Any = to_dask(path, "z")
    assert x.nbytes == 1 << 30
    with tet.open(path) as f:
        assert f.dataset("z").chunk_shape == (1024, 2048)  # 8 MiB tiles
    assert x.chunks == ((1024,) * 16, (16384,))
    assert len(dict(x.__dask_graph__())) == 16
    assert float(x[5000:5003, 100:200].sum().compute()) == 0.0


def test_pickles_and_computes_after_unpickling(cube: tuple[Path, np.ndarray[Any, Any]]
                                               ) -> None:
    path, a = cube
    x: Any = to_dask(path, "v", {"start": [2, 0, 0], "stop": [30, 29, 11], "step": [2, 1, 1]},
                block_bytes=10_000)
    clear_cache()
    y: Any = pickle.loads(pickle.dumps(x))
    assert y.name == x.name
    np.testing.assert_array_equal(y.compute(scheduler="sync"), a[2:30:2])


def test_file_opened_once_per_process(cube: tuple[Path, np.ndarray[Any, Any]]) -> None:
    path, a = cube
    x: Any = to_dask(path, "v", block_bytes=1)
    assert x.npartitions == 8 * 5 * 3
    with dask.config.set(scheduler="threads", num_workers=4):
        np.testing.assert_array_equal(x.compute(), a)
        whole: Any = to_dask(path, "v")
        np.testing.assert_allclose(whole.mean().compute(), a.mean(), rtol=1e-12)
    assert cache_info() == {str(path): 1}


def test_accepts_an_open_file(cube: tuple[Path, np.ndarray[Any, Any]]) -> None:
    path, a = cube
    with tet.open(path) as f:
        x: Any = to_dask(f, "v", block_bytes=100_000)
    np.testing.assert_array_equal(x.compute(), a)


def test_replaced_file_is_refused(cube: tuple[Path, np.ndarray[Any, Any]]) -> None:
    path, a = cube
    x: Any = to_dask(path, "v")
    tet.write_dataset(path, "v", a + 1, chunk_shape=(5, 7, 4))
    clear_cache()  # as on a worker that never opened the old file
    with pytest.raises(tet.TetError, match=r"changed after it was opened for dask/xarray"):
        x.compute(scheduler="sync")
    # a new array sees the new file
    fresh: Any = to_dask(path, "v")
    np.testing.assert_array_equal(fresh.compute(), a + 1)


def test_errors_at_build_time(cube: tuple[Path, np.ndarray[Any, Any]]) -> None:
    path, _ = cube
    with pytest.raises(tet.UnknownDatasetError, match="unknown dataset 'w'"):
        to_dask(path, "w")
    with pytest.raises(tet.SelectionError, match=r"selection\[0\]\.stop must be <= shape\[0\]"):
        to_dask(path, "v", [{"stop": 99}, {}, {}])
    with pytest.raises(ValueError, match="block_bytes must be >= 1, got 0"):
        to_dask(path, "v", block_bytes=0)
    with pytest.raises(FileNotFoundError):
        to_dask(path.with_name("missing.tet"), "v")


def test_cache_key_tracks_the_file(cube: tuple[Path, np.ndarray[Any, Any]]) -> None:
    path, a = cube
    key = file_key(path)
    assert key.path == str(path) and key.size == path.stat().st_size
    f = open_cached(key)
    assert open_cached(key) is f
    tet.write_dataset(path, "v", a, chunk_shape=(5, 7, 4))  # same bytes, new inode
    assert file_key(path) != key
    assert open_cached(file_key(path)) is not f


def test_import_tet_imports_no_optional_packages() -> None:
    code = ("import sys, tet, tet.dask, tet.many; "
            "bad = [m for m in ('dask', 'xarray', 'distributed') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
