"""The h5py/zarr-shaped surface of a file: `TetFile` as a read-only Mapping of names to
datasets, file-level ``attrs``, ``Dataset.chunks`` and ``.dims``, ``tet.open(path, "r")``,
attribute updates through ``TetWriter.open_append(...).set_attrs``, and handles that
pickle (also into a ``dask.distributed`` worker process).

Where h5py has the same notion, the same arrays are written with h5py and the two are
compared (h5py with ``track_order=True`` keeps creation order, as a ``.tet`` catalog does).
"""

from __future__ import annotations

import copy
import operator
import os
import pickle
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tests.conftest import REPO
from tests.helpers import local_cluster
from tet import Dataset, FileChangedError, TetFile, TetWriter, UnsupportedModeError

h5py: Any = pytest.importorskip("h5py", reason="h5py (the convert extra) is not installed")

NAMES = ("zeta", "alpha", "mid")  # not sorted: iteration follows the catalog


def _arrays() -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(15)
    return {
        "zeta": rng.standard_normal((6, 5)),
        "alpha": np.arange(24, dtype=np.int32).reshape(2, 3, 4),
        "mid": rng.standard_normal(7).astype(np.float32),
    }


CHUNKS = {"zeta": (4, 2), "alpha": (1, 3, 2), "mid": (3,)}


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """The same datasets and file attributes as a .tet file and as an HDF5 file."""
    arrays = _arrays()
    path = tmp_path / "m.tet"
    w = TetWriter.create(path)
    for name in NAMES:
        w.write_dataset(name, arrays[name], chunk_shape=CHUNKS[name],
                        dim_names=["t", "x"] if name == "zeta" else None)
    w.set_file_attrs({"title": "survey", "version": np.int64(3),
                      "scale": np.float32(0.5), "bounds": np.array([1.5, 2.5])})
    w.commit()
    h5 = tmp_path / "m.h5"
    with h5py.File(h5, "w", track_order=True) as h:
        for name in NAMES:
            h.create_dataset(name, data=arrays[name], chunks=CHUNKS[name])
        h.attrs["title"] = "survey"
        h.attrs["version"] = np.int64(3)
        h.attrs["scale"] = np.float32(0.5)
        h.attrs["bounds"] = np.array([1.5, 2.5])
    return path, h5


@pytest.fixture
def opened(pair: tuple[Path, Path]) -> Iterator[tuple[TetFile, Any]]:
    with tet.open(pair[0]) as f, h5py.File(pair[1], "r") as h:
        yield f, h


# ---------------------------------------------------------------------------
# the Mapping


def test_a_file_is_a_mapping_of_names_to_datasets_like_h5py(opened: tuple[TetFile, Any]
                                                             ) -> None:
    f, h = opened
    assert isinstance(f, Mapping)
    assert list(f) == list(f.keys()) == list(h.keys()) == list(NAMES)
    assert len(f) == len(h) == 3
    assert list(reversed(f)) == list(reversed(NAMES))
    assert [k for k, _ in f.items()] == list(NAMES)
    assert all(isinstance(v, Dataset) for v in f.values())
    assert [v.name for v in f.values()] == list(NAMES)
    as_dict = dict(f)
    assert list(as_dict) == list(NAMES)
    for name in NAMES:
        ds, hd = as_dict[name], h[name]
        assert ds is f[name] is f.get(name)
        assert ds.shape == hd.shape
        assert ds.numpy_dtype == hd.dtype
        assert ds.chunks == ds.chunk_shape == hd.chunks == CHUNKS[name]
        np.testing.assert_array_equal(ds[...], hd[...])
        keys = f.keys()
        assert name in keys and (name, ds) in f.items() and ds in f.values()


def test_missing_names_as_h5py_and_dict_have_them(opened: tuple[TetFile, Any]) -> None:
    f, h = opened
    assert f.get("nope") is None and h.get("nope") is None
    assert f.get("nope", 7) == 7
    assert "nope" not in f and "nope" not in h
    assert 0 not in f and f.get(0) is None  # keys are names; f[i] still takes an index
    assert f[0] is f["zeta"] and f[-1] is f["mid"]
    with pytest.raises(tet.UnknownDatasetError, match=r"unknown dataset 'alpah' in .*m\.tet"
                       r"[\s\S]*did you mean: 'alpha'\?") as err:
        f["alpah"]
    assert isinstance(err.value, KeyError)
    with pytest.raises(KeyError):
        h["alpah"]


def test_the_existing_methods_keep_their_meaning(opened: tuple[TetFile, Any]) -> None:
    f, _ = opened
    a = _arrays()
    assert f.datasets() == list(NAMES) and f.dataset_names == NAMES
    assert f.dataset_names() == list(NAMES)
    assert [d.name for d in f.iter_datasets()] == list(NAMES)
    assert f.max("alpha") == 23.0 and f.count("zeta") == 30  # not Mapping's mixins
    assert f.sum("mid") == pytest.approx(float(a["mid"].astype(np.float64).sum()), rel=1e-6)
    assert f["alpha"].dtype == 3 and f["alpha"].numpy_dtype == np.int32  # the wire tag


def test_handles_compare_by_identity_and_hash(pair: tuple[Path, Path]) -> None:
    with tet.open(pair[0]) as f, tet.open(pair[0]) as g:
        assert f == f and f != g  # a handle, not its contents
        assert dict(f) == dict(g)  # the contents compare as a dict
        assert len({f, g, f}) == 2


def test_file_attrs_are_typed_and_read_only_as_h5py(opened: tuple[TetFile, Any]) -> None:
    f, h = opened
    assert set(f.attrs) == set(h.attrs) == {"title", "version", "scale", "bounds"}
    for key in h.attrs:
        got, want = f.attrs[key], h.attrs[key]
        assert type(got) is type(want), key
        np.testing.assert_array_equal(got, want)
    assert f.attrs["scale"].dtype == np.float32
    assert list(f.attrs) == list(f.file_attrs)
    with pytest.raises(TypeError):
        f.attrs["title"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        f["zeta"].attrs["k"] = "v"  # type: ignore[index]


def test_dims_are_the_dim_names_else_what_xarray_shows(pair: tuple[Path, Path]) -> None:
    xr = pytest.importorskip("xarray", reason="xarray (the xarray extra) is not installed")
    from tet.xarray_backend import TetBackendEntrypoint

    with tet.open(pair[0]) as f:
        assert f["zeta"].dims == ("t", "x") == f["zeta"].dim_names
        assert f["alpha"].dims == ("dim_0", "dim_1", "dim_2") and f["alpha"].dim_names is None
        assert f["mid"].dims == ("dim_0",)
        one = pair[0].with_name("one.tet")
        tet.write_dataset(one, "alpha", _arrays()["alpha"])
        with xr.open_dataset(one, engine=TetBackendEntrypoint) as x:
            assert x["alpha"].dims == f["alpha"].dims


def test_mypy_sees_the_mapping_types(tmp_path: Path) -> None:
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent("""
        import tet

        with tet.open("data.tet", "r") as f:
            reveal_type(f.keys())
            reveal_type(f.items())
            reveal_type(f.get("x"))
            reveal_type(f.get("x", 0))
            reveal_type(dict(f))
            reveal_type(f.attrs)
            reveal_type(f["x"].dims)
            reveal_type(f["x"].chunks)
    """))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
         "--cache-dir", str(REPO / ".mypy_cache"), str(script)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(REPO)})
    revealed = re.findall(r'note: Revealed type is "(.*)"', done.stdout)
    assert revealed == [
        "typing.KeysView[str]",
        "typing.ItemsView[str, tet.file.Dataset]",
        "tet.file.Dataset | None",
        "tet.file.Dataset | int",
        "dict[str, tet.file.Dataset]",
        "typing.Mapping[str, Any]",
        "tuple[str, ...]",
        "tuple[int, ...]",
    ], done.stdout
    assert "error:" not in done.stdout, done.stdout


# ---------------------------------------------------------------------------
# modes


def test_open_takes_mode_r_as_h5py_and_zarr(pair: tuple[Path, Path]) -> None:
    for f in (tet.open(pair[0], "r"), tet.open(pair[0], mode="r"), TetFile(pair[0], "r"),
              TetFile.open(pair[0], mode="r")):
        with f:
            assert list(f) == list(NAMES)


@pytest.mark.parametrize(("mode", "hint"), [
    ("w", "write a new file with tet.TetWriter.create(path) or tet.write_dataset"),
    ("w-", "write a new file with tet.TetWriter.create(path) or tet.write_dataset"),
    ("x", "write a new file with tet.TetWriter.create(path) or tet.write_dataset"),
    ("a", "add datasets or update attributes with tet.TetWriter.open_append(path), which "
          "commits a new version of the file atomically"),
    ("r+", "add datasets or update attributes with tet.TetWriter.open_append(path), which "
           "commits a new version of the file atomically"),
    ("rb", "write with tet.TetWriter.create(path), append with tet.TetWriter.open_append(path)"),
    (1, "write with tet.TetWriter.create(path), append with tet.TetWriter.open_append(path)"),
])
def test_other_modes_point_to_the_writer(tmp_path: Path, mode: Any, hint: str) -> None:
    missing = tmp_path / "new.tet"  # the mode is refused before the path is looked at
    want = f"mode {mode!r} is not supported: tet.open only reads (mode 'r'); {hint}"
    for call in (tet.open, TetFile, TetFile.open):
        with pytest.raises(UnsupportedModeError) as err:
            call(missing, mode)
        assert str(err.value) == want
        assert isinstance(err.value, ValueError) and isinstance(err.value, tet.TetError)
    assert not missing.exists()


# ---------------------------------------------------------------------------
# set_attrs


def test_set_attrs_updates_like_h5py_attrs_update(pair: tuple[Path, Path]) -> None:
    path, h5 = pair
    before = path.read_bytes()
    a = _arrays()
    w = TetWriter.open_append(path)
    w.write_dataset("first", np.ones(3), attrs={"units": "m", "n": 2})
    w.set_attrs("zeta", {"units": "K", "valid": np.array([0.0, 1.0], np.float32)})
    w.set_attrs("zeta", {"long": "é" * 600, "n": np.int16(4)})  # accumulates in a session
    w.set_attrs("first", {"n": 3.5, "flag": True})  # a dataset queued in this session
    assert path.read_bytes() == before  # nothing changes before commit
    w.commit()
    with h5py.File(h5, "a") as h:
        h["zeta"].attrs.update({"units": "K", "valid": np.array([0.0, 1.0], np.float32)})
        h["zeta"].attrs.update({"long": "é" * 600, "n": np.int16(4)})
        want = dict(h["zeta"].attrs)
    with tet.open(path) as f:
        got = dict(f["zeta"].typed_attrs)
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
            assert np.asarray(got[key]).dtype == np.asarray(want[key]).dtype, key
        assert f["zeta"].attrs["units"] == "K"  # the footer's string map
        assert "long" not in f["zeta"].attrs  # over 1024 bytes: typed metadata only
        assert dict(f["first"].typed_attrs) == {"units": "m", "n": 3.5, "flag": True}
        assert f["zeta"].dims == ("t", "x")  # the rest of the entry kept
        assert dict(f["alpha"].typed_attrs) == {} and dict(f.attrs)["title"] == "survey"
        for name in NAMES:  # payload bytes copied as they were
            np.testing.assert_array_equal(f[name][...], a[name])


def test_set_attrs_replace_and_empty(pair: tuple[Path, Path]) -> None:
    path, _ = pair
    w = TetWriter.open_append(path)
    w.set_attrs("alpha", {"a": "1", "b": [1, 2]})
    w.commit()
    w = TetWriter.open_append(path)
    w.set_attrs("alpha", {"c": 3}, replace=True)
    w.commit()
    with tet.open(path) as f:
        assert dict(f["alpha"].typed_attrs) == {"c": 3}
        assert dict(f["alpha"].attrs) == {"c": "3"}
    w = TetWriter.open_append(path)
    w.set_attrs("alpha", {}, replace=True)
    w.commit()
    with tet.open(path) as f:
        assert dict(f["alpha"].typed_attrs) == {} and dict(f["alpha"].attrs) == {}
        assert "alpha" not in f.metadata.get("datasets", {})
        assert "alpha" not in f.metadata.get("tet", {}).get("datasets", {})


def test_set_attrs_refusals(pair: tuple[Path, Path]) -> None:
    path, _ = pair
    before = path.read_bytes()
    w = TetWriter.open_append(path)
    with pytest.raises(tet.UnknownDatasetError) as err:
        w.set_attrs("alhpa", {"k": 1})
    assert str(err.value) == (f"unknown dataset 'alhpa' in {path}\navailable datasets (3):\n"
                              "  - 'zeta'\n  - 'alpha'\n  - 'mid'\ndid you mean: 'alpha'?")
    with pytest.raises(TypeError, match=r"dataset 'alpha': attribute 'k'"):
        w.set_attrs("alpha", {"k": object()})
    with pytest.raises(TypeError, match=r"attribute names must be non-empty strings"):
        w.set_attrs("alpha", {"": 1})
    w.abort()
    with pytest.raises(RuntimeError, match="already committed or aborted"):
        w.set_attrs("alpha", {"k": 1})
    # an exception in the session: nothing written
    with pytest.raises(ZeroDivisionError), TetWriter.open_append(path) as w2:
        w2.set_attrs("alpha", {"k": 1})
        raise ZeroDivisionError
    assert path.read_bytes() == before


def test_set_file_attrs_in_an_append_session(pair: tuple[Path, Path]) -> None:
    path, _ = pair
    w = TetWriter.open_append(path)  # kept when not set
    w.set_attrs("mid", {"k": "v"})
    w.commit()
    with tet.open(path) as f:
        assert set(f.attrs) == {"title", "version", "scale", "bounds"}
    w = TetWriter.open_append(path)
    w.set_file_attrs({"title": "renamed", "extra": b"\x00\x01"})
    w.commit()
    with tet.open(path) as f:
        assert dict(f.attrs) == {"title": "renamed", "extra": b"\x00\x01"}  # replaced
        assert dict(f["mid"].typed_attrs) == {"k": "v"} and list(f) == list(NAMES)


# ---------------------------------------------------------------------------
# pickling


def test_file_and_dataset_pickle_and_read(pair: tuple[Path, Path]) -> None:
    a = _arrays()
    with tet.open(pair[0], spill_allow=[pair[0].parent / "spills"]) as f:
        g = pickle.loads(pickle.dumps(f))
        assert repr(g) == f"<tet.TetFile {str(pair[0])!r} (not opened yet)>"
        assert g.path == pair[0] and g.spill_allow == (str(pair[0].parent / "spills"),)
        assert list(g) == list(NAMES) and g is not f
        np.testing.assert_array_equal(g["alpha"][1, ::2], a["alpha"][1, ::2])
        assert repr(g).endswith(f"({pair[0].stat().st_size} bytes)>")
        ds = pickle.loads(pickle.dumps(f["zeta"]))
        assert ds == f["zeta"] and ds.dims == ("t", "x")
        assert isinstance(ds.attrs, Mapping) and dict(ds.typed_attrs) == {}
        np.testing.assert_array_equal(ds[2:5], a["zeta"][2:5])
        np.testing.assert_array_equal(np.asarray(ds), a["zeta"])
        f2, d1, d2 = pickle.loads(pickle.dumps((f, f["mid"], f["alpha"])))
        assert f2["mid"] == d1
        assert f2.mean("mid") == pytest.approx(float(a["mid"].astype(np.float64).mean()),
                                               rel=1e-6)
        np.testing.assert_array_equal(d2.to_numpy(f2), a["alpha"])
        deep = copy.deepcopy(f["alpha"])
        np.testing.assert_array_equal(deep[...], a["alpha"])


def test_typed_attrs_survive_a_pickle(tmp_path: Path) -> None:
    path = tet.write_dataset(tmp_path / "t.tet", "v", np.zeros((2, 2)),
                             attrs={"units": "m", "valid": np.array([1, 2], np.int8)},
                             dim_names=["y", "x"], coords={"x": ["a", "b"]})
    with tet.open(path) as f:
        ds = pickle.loads(pickle.dumps(f["v"]))
    assert ds.typed_attrs["valid"].dtype == np.int8 and ds.attrs["units"] == "m"
    assert dict(ds.coords) == {"x": ("a", "b")}
    np.testing.assert_array_equal(ds[:, 1], [0.0, 0.0])


def test_a_closed_handle_pickles_and_its_copy_is_open(pair: tuple[Path, Path]) -> None:
    with tet.open(pair[0]) as f:
        ds = f["mid"]
    with pytest.raises(tet.TetError, match="is closed"):
        ds[0]
    copy_ = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(copy_[...], _arrays()["mid"])


def test_a_relative_path_pickles_as_absolute(pair: tuple[Path, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(pair[0].parent)
    with tet.open("m.tet") as f:
        blob = pickle.dumps(f["alpha"])
    monkeypatch.chdir("/")
    np.testing.assert_array_equal(pickle.loads(blob)[...], _arrays()["alpha"])


def _changed(path: Path) -> str:
    return (rf"{re.escape(str(path))} changed since this handle was pickled \(then \d+ bytes, "
            r"inode \d+, mtime -?\d+ ns; now \d+ bytes, inode \d+, mtime \d+ ns\); "
            "open it again")


def test_a_replaced_file_is_file_changed_error_on_first_use(pair: tuple[Path, Path]) -> None:
    path = pair[0]
    with tet.open(path) as f:
        blob, blob_ds = pickle.dumps(f), pickle.dumps(f["zeta"])
    tet.write_dataset(path, "zeta", np.zeros((6, 5)))  # renamed into place: a new inode
    g = pickle.loads(blob)  # unpickling does not touch the file
    ds = pickle.loads(blob_ds)
    for _ in range(2):  # and every use after the first
        with pytest.raises(FileChangedError, match=_changed(path)):
            list(g)
        with pytest.raises(FileChangedError, match=_changed(path)):
            ds[0]


def test_a_rewrite_in_place_or_a_touch_is_file_changed_error(pair: tuple[Path, Path]
                                                             ) -> None:
    path = pair[0]
    with tet.open(path) as f:
        blob = pickle.dumps(f["alpha"])
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same inode and size
    with pytest.raises(FileChangedError, match=_changed(path)):
        pickle.loads(blob)[0]
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same file again: it reads
    np.testing.assert_array_equal(pickle.loads(blob)[...], _arrays()["alpha"])


def test_a_file_replaced_before_the_pickle_is_refused(pair: tuple[Path, Path]) -> None:
    path = pair[0]
    with tet.open(path) as f:
        tet.write_dataset(path, "zeta", np.zeros((6, 5)))  # after open, before pickling
        blob = pickle.dumps(f)
        np.testing.assert_array_equal(f["zeta"][...], _arrays()["zeta"])  # f reads its map
    with pytest.raises(FileChangedError, match=_changed(path)):
        pickle.loads(blob)["zeta"]


def test_a_removed_file_is_file_not_found_on_first_use(pair: tuple[Path, Path]) -> None:
    with tet.open(pair[0]) as f:
        blob = pickle.dumps(f)
    pair[0].unlink()
    g = pickle.loads(blob)
    with pytest.raises(tet.TetFileNotFoundError, match=r"cannot open .*m\.tet"):
        g.datasets()


def test_a_detached_dataset_pickles() -> None:
    ds = Dataset(name="v", shape=(2,), dtype=2, chunk_shape=(2,))
    back = pickle.loads(pickle.dumps(ds))
    assert back == ds
    with pytest.raises(tet.TetError, match="not attached to an open file"):
        back[0]


# ---------------------------------------------------------------------------
# a pickled dataset in a dask.distributed worker process


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with local_cluster(1) as c:
        yield c


def test_a_pickled_dataset_reads_in_a_worker_process(client: Any, tmp_path: Path) -> None:
    a = np.random.default_rng(3).standard_normal((40, 30))
    path = tet.write_dataset(tmp_path / "w.tet", "a", a, chunk_shape=(8, 8))
    with tet.open(path) as f:
        ds = f["a"]
        whole = client.submit(np.asarray, ds, pure=False).result(timeout=60)
        part = client.submit(operator.getitem, ds, np.s_[3:17, 5], pure=False)
        mean = client.submit(operator.methodcaller("mean", "a", axis=0), f, pure=False)
        np.testing.assert_array_equal(whole, a)
        np.testing.assert_array_equal(part.result(timeout=60), a[3:17, 5])
        np.testing.assert_allclose(mean.result(timeout=60).value, a.mean(axis=0), rtol=1e-12)
        assert client.submit(os.getpid).result(timeout=60) != os.getpid()
        blob = pickle.dumps(ds)
    tet.write_dataset(path, "a", a + 1)  # replaced: the worker's first use refuses it
    stale = client.submit(operator.getitem, pickle.loads(blob), 0, pure=False)
    with pytest.raises(FileChangedError, match=_changed(path)):
        stale.result(timeout=60)
