"""Text UTF-8 cannot hold, from a file or a query document: a footer whose JSON escapes
a lone surrogate (``"\\ud800"``, valid JSON) is refused at parse as an invalid footer,
so verify, repair, export and info never meet such text; query documents with lone
surrogates in dataset names, axis names, labels, keys or parameters fail as the
`TetError` the same text would without the surrogate, in Python and from the CLI,
never as a ``UnicodeEncodeError``.  (Output paths are checked by the path rules.)"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import tet
import tet.verify
from tests.conftest import REPO, CliRun

Cli = Callable[..., CliRun]
PREFIX = "invalid one-chunk write spec: footer JSON parse: lone surrogate escape in a string at "


def _tet(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child: its own stdout/stderr encoding, as a shell gives it."""
    return subprocess.run([sys.executable, "-m", "tet.cli.main", *map(str, argv)],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False)


def _footer_at(data: bytes) -> int:
    return len(data) - 16 - int.from_bytes(data[-16:-8], "little")


def _with_escape(path: Path, placeholder: bytes, escape: bytes) -> bytes:
    """Swap a placeholder string in the footer JSON for an escape of the same length
    (so the footer's json_len still holds)."""
    data = path.read_bytes()
    assert len(placeholder) == len(escape) and data.count(placeholder) == 1
    data = data.replace(placeholder, escape)
    path.write_bytes(data)
    return data


def _written(path: Path, **kwargs: object) -> Path:
    tet.write_dataset(path, "a", np.arange(4.0), chunk_shape=(2,), **kwargs)  # type: ignore[arg-type]
    return path


# where the escape goes -> (writer arguments, placeholder, escape, where the message says)
PLACES = {
    "history op": ({"history_op": "OPOPOP", "history_source": "src"}, b'"OPOPOP"',
                   b'"\\ud800"', "/history/0/op: \\ud800"),
    "attr value": ({"attrs": {"units": "KKKKKK"}}, b'"KKKKKK"', b'"\\ud800"',
                   "/metadata/datasets/a/attrs/units: \\ud800"),
    "attr key": ({"attrs": {"NNNNNN": "v"}}, b'"NNNNNN"', b'"\\udc80"',
                 "/metadata/datasets/a/attrs/\\udc80 (a key): \\udc80"),
    "dim name": ({"dim_names": ["XXXXXX"]}, b'"XXXXXX"', b'"\\udbff"',
                 "/metadata/datasets/a/dim_names/0: \\udbff"),
    "coord label": ({"dim_names": ["x"], "coords": {"x": ["p", "q", "LLLLLL", "s"]}},
                    b'"LLLLLL"', b'"\\ud800"', "/metadata/datasets/a/coords/x/labels/2: \\ud800"),
}


@pytest.mark.parametrize("place", list(PLACES))
def test_a_lone_surrogate_escape_makes_the_footer_invalid(tmp_path: Path, place: str) -> None:
    kwargs, placeholder, escape, where = PLACES[place]
    path = _written(tmp_path / "s.tet", **kwargs)
    data = _with_escape(path, placeholder, escape)
    text = f"{PREFIX}{where} (footer at {_footer_at(data)})"
    with pytest.raises(tet.InvalidTextError) as info:
        tet.open(path)
    assert str(info.value) == text
    assert isinstance(info.value, tet.CatalogError) and isinstance(info.value, ValueError)
    report = tet.verify.verify(path, deep=True)
    assert not report.ok
    assert [(f.check, f.detail) for f in report.findings] == [("parse", text)]
    assert [(r.code, r.repairable) for r in report.recommendations] == [("footer_invalid", True)]


def test_every_command_on_such_a_footer_says_one_line(tmp_path: Path) -> None:
    path = _written(tmp_path / "s.tet", attrs={"units": "KKKKKK"})
    data = _with_escape(path, b'"KKKKKK"', b'"\\ud800"')
    text = f"{PREFIX}/metadata/datasets/a/attrs/units: \\ud800 (footer at {_footer_at(data)})"
    for argv in (("info", path), ("info", "--json", path), ("export", path, tmp_path / "z"),
                 ("query", '{"dataset": "a", "mean": []}', "-t", path, "-x")):
        r = _tet(*argv)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", f"error: {text}\n"), argv
    assert not (tmp_path / "z").exists()
    r = _tet("verify", "--deep", "--json", path)
    assert r.returncode == 1 and "internal error" not in r.stderr
    report = json.loads(r.stdout)
    assert report["findings"] == [{"check": "parse", "severity": "error", "ok": False,
                                   "detail": text}]
    assert report["recommendations"][0]["code"] == "footer_invalid"
    r = _tet("verify", path)
    assert r.returncode == 1 and "[footer_invalid]" in r.stdout and "internal" not in r.stderr
    r = _tet("repair", path)
    assert r.returncode == 0 and "[repairable] footer_invalid" in r.stdout, r.stdout + r.stderr
    r = _tet("repair", path, "--apply", "footer_invalid")
    assert r.returncode == 0, r.stdout + r.stderr
    with tet.open(path) as f:  # the footer is gone; the data and its checksum table stay
        assert f.read_numpy("a").tolist() == [0.0, 1.0, 2.0, 3.0]
        assert f.metadata == {} and f.history == []
        assert tet.footer.CHECKSUMS_KEY in f.catalog.footer_refs
    assert tet.verify.verify(path, deep=True).ok


def test_surrogate_in_a_metadata_spill(tmp_path: Path) -> None:
    path = tmp_path / "s.tet"
    with tet.TetWriter.create(path) as w:  # too much metadata to inline: a metadata_ref spill
        w.write_dataset("a", np.arange(4.0), chunk_shape=(2,),
                        attrs={"units": "KKKKKK", **{f"k{i}": "v" * 1000 for i in range(60)}})
        w.write_dataset("b", np.arange(3.0), attrs={f"k{i}": "w" * 1000 for i in range(60)})
    with tet.open(path) as f:
        spill = f.catalog.footer_refs["metadata_ref"]
    _with_escape(path, b'"KKKKKK"', b'"\\udfff"')
    with pytest.raises(tet.InvalidTextError) as info:
        tet.open(path)
    assert str(info.value) == ("invalid one-chunk write spec: metadata_ref JSON parse: lone "
                               "surrogate escape in a string at /datasets/a/attrs/units: \\udfff")
    report = tet.verify.verify(path)
    assert [r.code for r in report.recommendations] == ["footer_invalid"]
    tet.verify.repair(path, ["footer_invalid"])
    with tet.open(path) as f:
        assert f.metadata == {} and f.read_numpy("a").tolist() == [0.0, 1.0, 2.0, 3.0]
        assert f.catalog.file_len < spill[0] + spill[1]  # the spill was cut off


@pytest.mark.parametrize(("escape", "value"), [
    (b'"\\ud83d\\ude00"', "\U0001f600"),  # a valid pair is one code point
    (b'"\\\\ud800 \\\\x"', "\\ud800 \\x"),  # an escaped backslash: no escape at all
    (b'"\\u00e9\\u4e2d\\u0041z"', "\u00e9\u4e2dAz"),
])
def test_escapes_that_are_valid_text_still_open(tmp_path: Path, escape: bytes,
                                                value: str) -> None:
    placeholder = b'"' + b"K" * (len(escape) - 2) + b'"'
    path = _written(tmp_path / "s.tet", attrs={"units": placeholder[1:-1].decode()})
    _with_escape(path, placeholder, escape)
    with tet.open(path) as f:
        assert f["a"].attrs["units"] == value
    assert tet.verify.verify(path, deep=True).ok


# ---------------------------------------------------------------------------
# query documents


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    path = tmp_path / "n.tet"
    tet.write_dataset(path, "a", np.arange(12.0).reshape(3, 4), chunk_shape=(2, 2),
                      dim_names=["x", "y"], coords={"x": ["p", "q", "r"]})
    return path


AXIS = 'validation: invalid axis label "{}" (use a non-negative decimal index or a dimension name)'
DOCS = [
    ('{"dataset": "a", "mean": ["x\\ud800"]}', tet.QueryError, AXIS.format("x\ud800")),
    ('{"dataset": "a", "mean": "\\udc80"}', tet.QueryError, AXIS.format("\udc80")),
    ('{"dataset": "a", "histogram": {"bins": 3, "axis": ["\\ud800"]}}', tet.QueryError,
     AXIS.format("\ud800")),
    ('{"dataset": "a", "covariance": {"axis": ["\\ud800"]}}', tet.QueryError,
     AXIS.format("\ud800")),
    ('{"dataset": "a", "selection": [{"start_label": "p\\ud800"}, {}], "mean": []}',
     tet.SelectionError, 'validation: unknown coordinate label "p\ud800" (axis has 3 labels)'),
    ('{"dataset": "a", "selection": [{}, {"stop_label": "\\udfff"}], "sum": []}',
     tet.SelectionError, "validation: selection[1] coordinate labels require `coords` for "
                         "this axis in footer metadata"),
    ('{"dataset": "a", "transform": {"method": "z\\ud800", "axis": []}}', tet.QueryError,
     "validation: unknown transform method `z\ud800` (expected zscore, minmax, l1, l2, "
     "center, scale, log1p, sqrt, or softmax)"),
    ('{"dataset": "a", "mean\\ud800": []}', tet.QueryError,
     "validation: unknown field `mean\ud800` (did you mean `mean`?)"),
    ('{"dataset": "a", "execution": {"device": "c\\ud800"}, "mean": []}', tet.QueryError,
     "validation: unknown device `c\ud800` (expected cpu, auto, metal, cuda[:N| :multi], or "
     "rocm[:N| :multi])"),
    ('{"dataset": "a", "transform": {"method": "l2", "axis": []}, "write": '
     '{"target": "r\\ud800"}}', tet.QueryError,
     "validation: unknown write target `r\ud800` (expected switch, spill, sidecar, or ram)"),
    ('{"dataset": "a", "selection": {"x\\ud800": [0]}, "mean": []}', tet.SelectionError,
     "invalid query JSON: unknown field `x\ud800` in box selection, expected `start`, `stop` "
     "or `step` arrays"),
]


@pytest.mark.parametrize(("doc", "cls", "message"), DOCS)
def test_surrogates_in_a_document_are_query_errors(labelled: Path, doc: str,
                                                   cls: type[tet.TetError],
                                                   message: str) -> None:
    with tet.open(labelled) as f:
        for run in (f.query, f.query_execute, f.plan_only):
            for form in (doc, json.loads(doc)):
                with pytest.raises(tet.TetError) as info:
                    run(form)
                assert type(info.value) is cls and str(info.value) == message, run


def test_a_dataset_name_with_a_surrogate_is_not_found(labelled: Path) -> None:
    with tet.open(labelled) as f:
        for call in (lambda: f.query('{"dataset": "a\\ud800", "mean": []}'),
                     lambda: f.mean("a\ud800"), lambda: f.read_numpy("\udc80"),
                     lambda: f.dataset("a\ud800"), lambda: tet.to_dask(f, "a\ud800")):
            with pytest.raises(tet.UnknownDatasetError) as info:
                call()
            assert "available datasets (1):\n  - 'a'" in str(info.value)
        with pytest.raises(tet.UnknownAxisError, match=r"invalid axis 'x\\ud800' for dataset "):
            f.mean("a", axes=["x\ud800"])
        with pytest.raises(tet.SelectionError, match='unknown coordinate label "\ud800"'):
            f.read_numpy("a", [{"start_label": "\ud800"}, {}])
    with pytest.raises(tet.TetError, match=r"unknown dataset 'a\\ud800' in "):
        tet.query_many([labelled], '{"dataset": "a\\ud800", "mean": []}')


@pytest.mark.parametrize(("doc", "cls", "message"), [d for d in DOCS if "selection" not in d[0]
                                                     or "label" in d[0]])
def test_surrogates_in_a_document_from_the_cli(labelled: Path, doc: str,
                                               cls: type[tet.TetError], message: str) -> None:
    for extra in ((), ("-x",), ("-x", "--format", "table")):
        r = _tet("query", doc, "-t", labelled, *extra)
        shown = message.encode("utf-8", "backslashreplace").decode()
        assert (r.returncode, r.stdout, r.stderr) == (1, "", f"error: {shown}\n"), extra
    r = _tet("query", '{"dataset": "a\\ud800", "mean": []}', "-t", labelled, "-x", "-q")
    assert r.returncode == 1 and "internal error" not in r.stderr
    assert r.stdout == "dataset=a\\ud800 status=not_found available=[a]\n"
    assert r.stderr.startswith('hint: dataset "a\\ud800" not found in this .tet\n')
