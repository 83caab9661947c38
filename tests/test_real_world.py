"""Real-world data end to end: every producer-style source (tests/producers.py) goes
through `tet convert`, the xarray backend, the engine's statistics, `tet export` and
`from_xarray`, and each view equals xarray's own reading of the source."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import tet
from tests.producers import PRODUCERS, assert_same_as_source, expected, nan_stats

KINDS = sorted(PRODUCERS)


@pytest.fixture(scope="module")
def converted(real_sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("converted")
    paths = {}
    for kind in KINDS:
        paths[kind] = out / f"{kind}.tet"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tet.ConvertWarning)
            tet.convert(real_sources[kind], paths[kind])
    return paths


def _open_tet(path: Path, **kwargs: Any) -> xr.Dataset:
    with xr.open_dataset(path, engine="tet", **kwargs) as ds:
        return ds.load()


@pytest.mark.parametrize("kind", KINDS)
def test_the_converted_file_opens_as_the_source_does(
        kind: str, real_sources: dict[str, Path], converted: dict[str, Path]) -> None:
    want = expected(real_sources[kind])
    got = _open_tet(converted[kind])
    assert_same_as_source(got, want)


@pytest.mark.parametrize("kind", KINDS)
def test_the_engine_statistics_agree_with_xarray_skipna(
        kind: str, real_sources: dict[str, Path], converted: dict[str, Path]) -> None:
    want = expected(real_sources[kind])
    checked = 0
    with tet.open(converted[kind]) as f:
        names = set(f.datasets())
        for var in want.variables:
            if want[var].dtype.kind != "f" or want[var].ndim == 0 or str(var) not in names:
                continue
            stats = nan_stats(want, var)
            got_count = f.query({"dataset": str(var), "nan_count": []}, preview=0)
            got_mean = f.query({"dataset": str(var), "nan_mean": []}, preview=0)
            got_std = f.query({"dataset": str(var), "nan_std": []}, preview=0)
            assert got_count["execution"]["operation_nan_count"] == stats["nan_count"], var
            mean = got_mean["execution"]["operation_nan_mean"]
            std = got_std["execution"]["operation_nan_std"]
            if math.isnan(stats["nan_mean"]):
                assert mean is None or math.isnan(mean)
            else:
                assert mean == pytest.approx(stats["nan_mean"], rel=2e-6, abs=1e-9), var
                # xarray reduces float32 in float32, where a variance of values near 1e37
                # overflows; the engine accumulates in float64
                std64 = float(np.nanstd(want[var].values.astype(np.float64)))
                assert std == pytest.approx(std64, rel=2e-5, abs=1e-9), var
                if math.isfinite(stats["nan_std"]):
                    assert std == pytest.approx(stats["nan_std"], rel=2e-5, abs=1e-9), var
            checked += 1
    assert checked, "no float variable was checked"


@pytest.mark.parametrize("kind", KINDS)
def test_the_export_reads_back_in_xarray_equal(
        kind: str, converted: dict[str, Path], tmp_path: Path) -> None:
    """Group by group: the store's tree equals the backend's tree (a plain
    ``open_dataset`` of a .tet file shows every dataset, nested names included)."""
    store = tmp_path / f"{kind}.zarr"
    tet.export(converted[kind], store, fsync=False)
    with xr.open_datatree(store, engine="zarr", consolidated=False) as z:
        got = z.load()
    with xr.open_datatree(converted[kind], engine="tet") as t:
        want = t.load()
    # the one key the store adds: which tet version exported it
    assert got.attrs.pop("tetration_export") == tet.__version__
    xr.testing.assert_identical(got, want)
    if "/" not in "".join(map(str, want.to_dataset().variables)) and not want.children:
        with xr.open_zarr(store, consolidated=False) as z:
            flat = z.load()
        flat.attrs.pop("tetration_export")
        xr.testing.assert_identical(flat, _open_tet(converted[kind]))


@pytest.mark.parametrize("kind", KINDS)
def test_from_xarray_round_trips_the_source(
        kind: str, real_sources: dict[str, Path], tmp_path: Path) -> None:
    want = expected(real_sources[kind])
    path = tmp_path / f"{kind}.tet"
    tet.from_xarray(want, path)
    got = _open_tet(path)
    xr.testing.assert_identical(got, want)


def test_cmip_missing_values_are_nan_after_a_default_convert(
        real_sources: dict[str, Path], converted: dict[str, Path]) -> None:
    with tet.open(converted["cmip"]) as f:
        tas = f.read_numpy("tas")
        assert tas.dtype == np.float32
        assert int(np.isnan(tas).sum()) == 35
        assert not (tas == np.float32(1e20)).any()
        assert f.nan_count("tas") == 35
        assert np.nanmax(tas) < 400  # no fill value left to skew the statistics


def test_group_label_coordinates_align_with_the_root(
        real_sources: dict[str, Path], converted: dict[str, Path]) -> None:
    """HDF5 dimension scales at the root label the axes of datasets in groups: the labels
    keep the scales' dtype, so a group's coordinate equals (and aligns with) the root's."""
    with tet.open(converted["hdf5"]) as f:
        assert f.metadata["tet"]["coords"]["x"] == {"dtype": "float64"}
    with xr.open_datatree(converted["hdf5"], engine="tet") as tree:
        child = tree["filters"].to_dataset()
        assert child["x"].dtype == np.float64
        np.testing.assert_array_equal(child["x"].values, tree["x"].values)
        assert child["gzip"].dims == ("y", "x")
