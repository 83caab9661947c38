"""`tet.xrmodel`: the one set of rules by which the xarray backend and the Zarr export
show a file, and the cases where the two used to read a file differently (each kept a
copy of the rules): both now show the same Dataset."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
from tet import xrmodel

xr = pytest.importorskip("xarray")
pytest.importorskip("zarr")


def _both(src: Path, out: Path) -> tuple[Any, Any]:
    """(``xr.open_dataset(src, engine="tet")``, ``xr.open_zarr`` of its export), loaded,
    any warning an error."""
    tet.export(src, out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend = xr.open_dataset(src, engine="tet").load()
        exported = xr.open_zarr(out, consolidated=False).load()
    assert exported.attrs.pop("tetration_export") == tet.__version__
    return backend, exported


def test_marks_that_do_not_parse_read_alike(tmp_path: Path) -> None:
    """A legacy type the value does not fit (int8 of 1000) leaves the footer text; a
    ``_tet_coord`` mark whose attrs are not an object is ignored (string labels)."""
    src = tmp_path / "odd.tet"
    with tet.TetWriter.create(src) as w:
        w.write_dataset("v", np.arange(4.0).reshape(2, 2), dim_names=["x", "y"],
                        attrs={"_tet_types": json.dumps({"n": "int8", "k": "int16"}),
                               "n": "1000", "k": "7",
                               "_tet_coord:x": json.dumps({"dtype": "float64", "attrs": 5})},
                        coords={"x": ["0.5", "1.5"]})
        w.commit()
    backend, exported = _both(src, tmp_path / "out.zarr")
    expected = xr.Dataset(
        {"v": (("x", "y"), np.arange(4.0).reshape(2, 2), {"n": "1000", "k": np.int16(7)})},
        coords={"x": np.array(["0.5", "1.5"])})
    xr.testing.assert_identical(backend, expected)
    xr.testing.assert_identical(exported, expected)


def test_an_integer_cf_number_that_does_not_fit_stays_a_python_int(tmp_path: Path) -> None:
    src = tmp_path / "mv.tet"
    with tet.TetWriter.create(src) as w:
        w.write_dataset("v", np.array([1, 2, 3], np.uint8), attrs={"valid_max": "9",
                                                                   "missing_value": "1000"})
        w.commit()
    with tet.open(src) as f:
        v = xrmodel.describe(f.dataset("v"), "v", has_ext=False, converted=False,
                             fail=AssertionError)
    assert v.attrs == {"valid_max": "9", "missing_value": 1000}
    assert type(v.attrs["missing_value"]) is int
    assert xrmodel.cf_number(" -3 ", np.dtype(np.int8)) == np.int8(-3)
    assert type(xrmodel.cf_number("-3", np.dtype(np.int8))) is np.int8
    assert xrmodel.cf_number("1e40", np.dtype(np.float32)) == np.float32(np.inf)
    assert xrmodel.cf_number("2.5", np.dtype(np.int16)) == 2.5
    assert xrmodel.cf_number("K", np.dtype(np.float64)) is None


def test_dims_of_datasets_without_dim_names(tmp_path: Path) -> None:
    """``dim_i``, or ``<variable>_dim_i`` where ``dim_i`` already has another length;
    footer names claim their lengths first, whatever the order."""
    src = tmp_path / "dims.tet"
    with tet.TetWriter.create(src) as w:
        w.write_dataset("a", np.zeros((2, 3)))
        w.write_dataset("b", np.zeros((2, 5)))
        w.write_dataset("c", np.zeros(4), dim_names=["dim_0"])
        w.commit()
    with tet.open(src) as f:
        vs = [xrmodel.describe(f.dataset(n), n, has_ext=False, converted=False,
                               fail=AssertionError) for n in ("a", "b", "c")]
    xrmodel.assign_dims(vs)
    assert [v.dims for v in vs] == [("a_dim_0", "dim_1"), ("b_dim_0", "b_dim_1"), ("dim_0",)]
    assert xrmodel.axis_dim("1", vs[0]) == "dim_1"
    assert xrmodel.axis_dim("2", vs[0]) is None
    assert xrmodel.axis_dim("dim_0", vs[2]) == "dim_0"
    assert xrmodel.axis_dim("١", vs[0]) is None  # an Arabic-Indic digit is not an index


def test_marks_that_do_not_fit_the_stored_shape_are_refused_as_each_caller_words_it(
        tmp_path: Path) -> None:
    src = tmp_path / "bad.tet"
    with tet.TetWriter.create(src) as w:
        w.write_dataset("s", np.zeros((2, 3), np.uint8), extra={"text": {"width": 4,
                                                                          "kind": "str"}})
        w.write_dataset("z", np.zeros(2, np.int32), extra={"shape": []})
        w.commit()
    with tet.open(src) as f:
        for name, what in (("s", "is marked as text 4 bytes wide but holds uint8 values of "
                                 "shape [2, 3]"),
                           ("z", "is marked 0-d but holds shape [2]")):
            with pytest.raises(ValueError) as info:
                xrmodel.describe(f.dataset(name), name, has_ext=True, converted=False,
                                 fail=ValueError)
            assert str(info.value) == what
            v = xrmodel.describe(f.dataset(name), name, has_ext=True, converted=False,
                                 fail=ValueError, strict=False)
            assert (v.shape, v.text, v.scalar) == (f.dataset(name).shape, None, False)
    with pytest.raises(tet.CatalogError, match=r"dataset 's' is marked as text 4 bytes wide"):
        xr.open_dataset(src, engine="tet")
    with pytest.raises(tet.ExportError) as info:
        tet.export(src, tmp_path / "out.zarr")
    assert str(info.value) == ("Zarr export failed: dataset `s` is marked as text 4 bytes wide "
                               "but holds uint8 values of shape [2, 3]")
