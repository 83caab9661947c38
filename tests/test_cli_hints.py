"""Golden tests of the CLI's hints: what a non-.tet input is and how to convert it,
did-you-mean for misspelt op keys and dataset names, a stray .tet path after the query,
`convert` refusing an existing output, readable times, and the device fallback warning
(exact stderr and exit status of each); plus the same hints in the Python API."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import tet
from tests.conftest import UPSTREAM
from tet.cli.info import utc_time
from tet.query.document import parse_value

SAMPLE = UPSTREAM / "tet" / "sample.tet"
USAGE_TAIL = "tet query: error: "
MEAN = '{"dataset": "temperature", "mean": []}'


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path so the hints name short relative paths."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _h5(path: Path) -> Path:
    with h5py.File(path, "w") as h:
        h["a"] = np.arange(4.0)
    return path


def _last_line(text: str) -> str:
    return text.splitlines()[-1]


# ---------------------------------------------------------------------------
# not a .tet file


HDF5_HINT = "error: x.h5 is HDF5, not a .tet file; convert it with `tet convert x.h5 x.tet`\n"


@pytest.mark.parametrize("argv", [
    ("info", "x.h5"), ("verify", "x.h5"), ("verify", "--deep", "x.h5"),
    ("query", MEAN, "-t", "x.h5"), ("query", MEAN, "-t", "x.h5", "-x"),
])
def test_hdf5_input_names_its_format_and_the_convert_command(cli: Any, here: Path,
                                                             argv: tuple[str, ...]) -> None:
    _h5(here / "x.h5")
    r = cli(*argv)
    assert (r.rc, r.out, r.err) == (1, "", HDF5_HINT)


def test_each_foreign_format(cli: Any, here: Path) -> None:
    shutil.copy(_h5(here / "x.h5"), here / "four.nc")  # NetCDF-4 is HDF5 inside
    (here / "three.nc").write_bytes(b"CDF\x01" + bytes(60))
    (here / "classic.cdf").write_bytes(b"CDF\x02" + bytes(60))
    np.save(here / "a.npy", np.arange(3))
    shutil.copytree(UPSTREAM / "zarr" / "groups_3d", here / "store.zarr")
    (here / "v2").mkdir()
    (here / "v2" / ".zgroup").write_text('{"zarr_format": 2}')
    (here / "odd name.h5").write_bytes((here / "x.h5").read_bytes())
    want = {
        "four.nc": "four.nc is NetCDF-4 (HDF5), not a .tet file; convert it with "
                   "`tet convert four.nc four.tet`",
        "three.nc": "three.nc is NetCDF-3, not a .tet file; convert it with "
                    "`tet convert three.nc three.tet`",
        "classic.cdf": "classic.cdf is NetCDF-3, not a .tet file; convert it with "
                       "`tet convert classic.cdf classic.tet`",
        "a.npy": "a.npy is a NumPy .npy file, not a .tet file; load it with numpy.load and "
                 "write it into one with tet.TetWriter",
        "store.zarr": "store.zarr is a Zarr v3 store, not a .tet file; convert it with "
                      "`tet convert store.zarr store.tet`",
        "v2": "v2 is a Zarr v2 store, not a .tet file; convert it with `tet convert v2 v2.tet`",
        "odd name.h5": "odd name.h5 is HDF5, not a .tet file; convert it with "
                       "`tet convert 'odd name.h5' 'odd name.tet'`",
    }
    for name, hint in want.items():
        r = cli("info", name)
        assert (r.rc, r.out, r.err) == (1, "", f"error: {hint}\n"), name


def test_other_bad_inputs_keep_their_errors(cli: Any, here: Path) -> None:
    (here / "nope.tet").write_bytes(b"NOPE" + bytes(60))
    r = cli("info", "nope.tet")
    assert (r.rc, r.err) == (1, "error: bad magic: expected TETR, got [78, 79, 80, 69]\n")
    (here / "plain").mkdir()
    r = cli("info", "plain")  # a directory that is no Zarr store: the usual refusal
    assert (r.rc, r.err) == (1, "error: cannot open plain: is a directory, not a .tet file\n")
    r = cli("info", "missing.h5")
    assert r.rc == 1 and "is HDF5" not in r.err and "missing.h5" in r.err
    os.mkfifo(here / "fifo.h5")  # never opened for reading: nothing blocks
    r = cli("info", "fifo.h5")
    assert (r.rc, r.err) == (1, "error: cannot open fifo.h5: is a FIFO, not a .tet file\n")


def test_python_open_keeps_the_class_and_gains_the_hint(here: Path) -> None:
    _h5(here / "x.h5")
    with pytest.raises(tet.CatalogError) as err:
        tet.open("x.h5")
    assert str(err.value) == ("bad magic: expected TETR, got [137, 72, 68, 70] (x.h5 is HDF5, "
                              "not a .tet file; convert it with `tet convert x.h5 x.tet`)")
    assert isinstance(err.value, tet.TetError)


# ---------------------------------------------------------------------------
# did you mean


def test_misspelt_op_key(cli: Any) -> None:
    r = cli("query", '{"dataset": "temperature", "maen": []}')
    assert (r.rc, r.out, r.err) == (
        1, "", "error: validation: unknown field `maen` (did you mean `mean`?)\n")
    r = cli("query", '{"dataset": "temperature", "histogram": {"bin": 4}}', "-t", SAMPLE)
    assert (r.rc, r.err) == (
        1, "error: validation: unknown field `histogram.bin` (did you mean `histogram.bins`?)\n")
    r = cli("query", '{"dataset": "temperature", "execution": {"devise": "cpu"}}')
    assert (r.rc, r.err) == (
        1, "error: validation: unknown field `execution.devise` (did you mean "
           "`execution.device`?)\n")
    r = cli("query", '{"dataset": "temperature", "bogus": []}')  # nothing close: no guess
    assert (r.rc, r.err) == (1, "error: validation: unknown field `bogus`\n")


def test_misspelt_op_key_in_python() -> None:
    with pytest.raises(tet.QueryError) as err:
        parse_value({"dataset": "a", "nan_maen": []})
    assert str(err.value) == "validation: unknown field `nan_maen` (did you mean `nan_mean`?)"
    with pytest.raises(tet.QueryError) as err:  # a key already there is not suggested
        parse_value({"dataset": "a", "null_count": {"fill": 1, "fil": 2}})
    assert str(err.value) == "validation: unknown field `null_count.fil`"
    with tet.open(SAMPLE) as f, pytest.raises(tet.QueryError) as err:
        f.query({"dataset": "temperature", "sdt": []})
    assert str(err.value) == "validation: unknown field `sdt` (did you mean `std`?)"


def test_misspelt_dataset_name(cli: Any) -> None:
    r = cli("query", '{"dataset": "temperatur", "mean": []}', "-t", SAMPLE, "-x", "-q")
    assert r.rc == 1
    assert r.err == ('hint: dataset "temperatur" not found in this .tet\n'
                     "available datasets:\n  temperature\n"
                     'did you mean "temperature"?\n'
                     f"tip: run `tet info {SAMPLE}` to list catalog datasets\n")
    with tet.open(SAMPLE) as f, pytest.raises(tet.UnknownDatasetError) as err:
        f.mean("temperatur")
    assert str(err.value).endswith("did you mean: 'temperature'?")


# ---------------------------------------------------------------------------
# stray .tet after the query


def test_stray_tet_path_after_the_query_suggests_t(cli: Any, here: Path) -> None:
    r = cli("query", MEAN, "obs.tet")
    assert r.rc == 2 and r.out == ""
    assert _last_line(r.err) == (USAGE_TAIL + "unrecognized arguments: obs.tet (pass the .tet "
                                 "file with -t: `tet query QUERY -t obs.tet`)")
    r = cli("query", MEAN, "a", "b")  # not one path: the plain usage error
    assert (r.rc, _last_line(r.err)) == (2, USAGE_TAIL + "unrecognized arguments: a b")
    r = cli("query", MEAN, "-t", SAMPLE, "obs.tet")  # -t given: nothing to point at
    assert (r.rc, _last_line(r.err)) == (2, USAGE_TAIL + "unrecognized arguments: obs.tet")
    shutil.copy(SAMPLE, here / "s.tet")
    r = cli("query", "s.tet")  # the file where the query belongs
    assert (r.rc, _last_line(r.err)) == (
        2, USAGE_TAIL + "QUERY s.tet is a .tet file; give the query document first and the "
                        "file with -t: `tet query QUERY -t s.tet`")
    r = cli("info", "s.tet", "extra")
    assert (r.rc, _last_line(r.err)) == (2, "tet: error: unrecognized arguments: extra")


# ---------------------------------------------------------------------------
# convert


def test_convert_refuses_an_existing_output_unless_force(cli: Any, here: Path) -> None:
    src = UPSTREAM / "h5" / "groups_3d.h5"
    (here / "o.tet").write_bytes(b"keep me")
    r = cli("convert", src, "o.tet")
    assert (r.rc, r.out, r.err) == (
        1, "", "error: convert output `o.tet` exists (pass --force to replace it)\n")
    assert (here / "o.tet").read_bytes() == b"keep me"
    r = cli("convert", src, "o.tet", "--force")
    assert r.rc == 0 and r.out.startswith("{\n") and r.err == ""
    assert json.loads(r.out)["dataset_count"] == 5
    with tet.open(here / "o.tet") as f:
        assert len(f.datasets()) == 5
    (here / "dir.tet").mkdir()
    r = cli("convert", src, "dir.tet")
    assert (r.rc, r.err) == (
        1, "error: convert output `dir.tet` exists (pass --force to replace it)\n")


def test_convert_json_has_no_leading_blank_line(cli: Any, here: Path) -> None:
    r = cli("convert", UPSTREAM / "zarr" / "groups_3d", "n.tet")
    assert r.rc == 0 and r.out[0] == "{"
    assert json.loads(r.out)["history"][0]["at"].isdigit()  # JSON keeps the raw value


# ---------------------------------------------------------------------------
# times


def test_created_at_and_history_times_are_utc_iso(cli: Any, here: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tet.writer._now", lambda: "1717000000")
    r = cli("convert", UPSTREAM / "h5" / "groups_3d.h5", "t.tet")
    assert r.rc == 0
    r = cli("info", "t.tet", "--datasets", "--history")
    assert r.rc == 0
    assert "  created_at: 2024-05-29T16:26:40Z\n" in r.out
    assert "    1  convert  h5  at=2024-05-29T16:26:40Z\n" in r.out
    r = cli("info", "t.tet", "--json")
    assert "1717000000" in r.out and "2024-05-29" not in r.out


@pytest.mark.parametrize("value,want", [
    ("0", "1970-01-01T00:00:00Z"), (1700000000, "2023-11-14T22:13:20Z"),
    ("yesterday", "yesterday"), ("1e9", "1e9"), ("9" * 40, "9" * 40), ("²", "²"),
    ("-1", "1969-12-31T23:59:59Z"),
])
def test_utc_time(value: Any, want: str) -> None:
    assert utc_time(value) == want


# ---------------------------------------------------------------------------
# device fallback


CUDA_NOTE = ("device `cuda` requested; ran on the CPU: this build of tet has no GPU support "
             "(gpu_feature_disabled)")


def test_device_fallback_warns_on_stderr(cli: Any) -> None:
    r = cli("query", MEAN, "-t", SAMPLE, "-x", "-q", "--device", "cuda")
    assert (r.rc, r.err) == (0, f"warning: {CUDA_NOTE}\n")
    r = cli("query", '{"dataset": "temperature", "mean": [], "execution": {"device": "cuda:1"}}',
            "-t", SAMPLE, "-x", "-q")
    assert (r.rc, r.err) == (0, "warning: device `cuda:1` requested; ran on the CPU: this "
                                "build of tet has no GPU support (gpu_feature_disabled)\n")
    for quiet in ("cpu", "auto"):
        r = cli("query", MEAN, "-t", SAMPLE, "-x", "-q", "--device", quiet)
        assert (r.rc, r.err) == (0, "")


def test_device_fallback_runtime_warning_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tet.query.api._WARNED_FALLBACKS", set())
    with tet.open(SAMPLE) as f:
        with pytest.warns(RuntimeWarning) as caught:
            f.mean("temperature", device="cuda")
        assert [str(w.message) for w in caught] == [CUDA_NOTE]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the same fallback again: silent
            f.mean("temperature", device="cuda")
            f.query({"dataset": "temperature", "sum": [], "execution": {"device": "cuda"}})
            f.mean("temperature", device="auto")
            f.mean("temperature", device="cpu")
        with pytest.warns(RuntimeWarning, match=r"tier C operations run on the CPU "
                                                r"\(tier_c_materialize\)$"):
            f.median("temperature", device="metal")
