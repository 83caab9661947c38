"""`tet info` (cli.md §1): exact text on the upstream fixtures, every flag, filters with
renumbered ids, quiet and JSON forms, and the top-level error handling of `tet`."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tet
import tet.writer
from tests.conftest import INTEROP, UPSTREAM

SAMPLE = UPSTREAM / "tet" / "sample.tet"
LARGE = UPSTREAM / "tet" / "large.tet"

SAMPLE_ALL = """\
file: {p}
size: 368 bytes  layout_version: 1  datasets: 1  chunks: 2

layout:
  layout_version:    1
  dataset_count:     1
  flags:             0 (history_footer=false)
  chunk_index_offset: 104
  chunk_index_length: 240

execution (file defaults):
  (engine defaults — 25% host RAM when unset in query JSON)

datasets:
   id  name                  dtype  shape             chunk_shape   chunks
    0  temperature           f32    2×3               2×2           2

chunks:
     #  dataset       coords           raw      stored  codec  offset
     0  temperature   0,0               16          16    raw  344
     1  temperature   0,1                8           8    raw  360

history:
  (none)
"""


def test_all_sections_on_sample(cli: Any) -> None:
    r = cli("info", SAMPLE, "--all")
    assert (r.rc, r.err) == (0, "")
    assert r.out == SAMPLE_ALL.format(p=SAMPLE)


def test_default_is_the_dataset_table(cli: Any) -> None:
    r = cli("info", SAMPLE)
    assert r.out == (f"file: {SAMPLE}\n"
                     "size: 368 bytes  layout_version: 1  datasets: 1  chunks: 2\n\n"
                     "datasets:\n"
                     "   id  name                  dtype  shape             chunk_shape   chunks\n"
                     "    0  temperature           f32    2×3               2×2           2\n")
    # choosing sections: any combination, always in the file's order
    r = cli("info", SAMPLE, "--history", "--layout")
    assert r.out.split("\n\n")[1].startswith("layout:")
    assert r.out.split("\n\n")[2] == "history:\n  (none)\n"
    assert "datasets:\n" not in r.out
    assert cli("info", SAMPLE, "--execution").out.endswith(
        "execution (file defaults):\n"
        "  (engine defaults — 25% host RAM when unset in query JSON)\n")
    assert cli("info", SAMPLE, "--datasets").out == cli("info", SAMPLE).out


@pytest.mark.parametrize("name,label", [
    ("multichunk_u8.tet", "u8"), ("multichunk_u32.tet", "u32"), ("multichunk_f16.tet", "f16")])
def test_real_dtype_labels(cli: Any, name: str, label: str) -> None:
    row = cli("info", UPSTREAM / "tet" / name).out.splitlines()[-1]
    assert row.split()[2] == label


def test_all_ten_labels(cli: Any, tmp_path: Path) -> None:
    w = tet.TetWriter.create(tmp_path / "all.tet")
    names = ["f32", "f64", "i32", "i64", "u8", "u16", "i16", "u32", "f16", "u64"]
    for n in names:
        w.write_dataset(n, np.zeros(3, dtype={"f32": np.float32, "f64": np.float64,
                                              "i32": np.int32, "i64": np.int64, "u8": np.uint8,
                                              "u16": np.uint16, "i16": np.int16,
                                              "u32": np.uint32, "f16": np.float16,
                                              "u64": np.uint64}[n]))
    w.commit()
    rows = cli("info", tmp_path / "all.tet").out.splitlines()[-10:]
    assert [r.split()[1] for r in rows] == names
    assert [r.split()[2] for r in rows] == names


def test_chunk_limit(cli: Any) -> None:
    out = cli("info", LARGE, "--chunks").out
    assert "  (showing 32 of 144; use -n 0 for all)\n" in out
    assert out.rstrip().splitlines()[-1].split()[0] == "31"
    out = cli("info", LARGE, "--chunks", "-n", "0").out
    assert "showing" not in out
    assert out.rstrip().splitlines()[-1] == \
        "   143  a             8,15              32          32    raw  23776"
    out = cli("info", LARGE, "--all", "--limit", "2").out
    assert "  (showing 2 of 144; use -n 0 for all)\n" in out
    assert cli("info", LARGE, "-n", "-1").rc == 2


def test_quiet_line(cli: Any) -> None:
    r = cli("info", LARGE, "-q")
    assert r.out == f"path={LARGE} file_len=23808 layout=1 datasets=1 chunks=144 history=0\n"
    assert cli("info", LARGE, "--quiet", "--dataset", "zzz").out == \
        f"path={LARGE} file_len=23808 layout=1 datasets=0 chunks=0 history=0\n"


def test_json_is_the_summary(cli: Any) -> None:
    r = cli("info", SAMPLE, "--json")
    doc = json.loads(r.out)
    assert list(doc) == ["path", "file_len", "filter", "summary"]
    assert doc["filter"] is None and doc["file_len"] == 368
    with tet.open(SAMPLE) as f:
        assert doc["summary"] == f.summary()
    assert r.out.startswith('{\n  "path"')


def test_quiet_and_json_conflict(cli: Any) -> None:
    r = cli("info", SAMPLE, "--json", "-q")
    assert r.rc == 2 and "not allowed with argument" in r.err


@pytest.fixture
def rich(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three datasets with attrs, dim names, coords (one axis past the preview cap),
    a long name, a file budget and history with parents and params."""
    monkeypatch.setattr(tet.writer, "_now", lambda: "1700000000")
    w = tet.TetWriter.create(tmp_path / "rich.tet")
    w.write_dataset("temperature", np.arange(20 * 3, dtype=np.float32).reshape(20, 3),
                    chunk_shape=(8, 3), attrs={"units": "K", "long_name": "air temp"},
                    dim_names=["time", "station"],
                    coords={"time": [f"t{i}" for i in range(20)], "station": ["a", "b", "c"]})
    w.write_dataset("pressure", np.ones((4,), dtype=np.int16), attrs={"units": "hPa"})
    w.write_dataset("a_rather_long_dataset_name_indeed", np.zeros((2, 2), dtype=np.uint64))
    w.set_execution(memory_budget_bytes=1 << 20, memory_budget_percent_bps=4050)
    w.push_history_event("derive", "src.tet", parents=["src.tet", "b.tet"],
                         params={"method": "zscore"})
    w.commit()
    return tmp_path / "rich.tet"


def test_metadata_lines(cli: Any, rich: Path) -> None:
    out = cli("info", rich).out
    assert ("file metadata:\n  tool: tet-py\n  library_version: "
            f"{tet.__version__}\n  created_at: 2023-11-14T22:13:20Z\n\n") in out
    assert ("    0  temperature           f32    20×3              8×3           3\n"
            "       dim_names: time, station\n"
            "       coords: station(3 labels), time(20 labels)\n"
            "       long_name: air temp\n"
            "       units: K\n"
            "    1  pressure              i16    4                 4             1\n"
            "       units: hPa\n"
            "    2  a_rather_long_datas…  u64    2×2               2×2           1\n") in out
    verbose = cli("info", rich, "--metadata").out
    assert ("       station: a, b, c\n"
            "       time: t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11 … (+8 more)\n") \
        in verbose
    assert "coords:" not in verbose


def test_execution_and_history_sections(cli: Any, rich: Path) -> None:
    out = cli("info", rich, "--execution", "--history").out
    assert ("execution (file defaults):\n  memory_budget_percent: 40.5\n"
            "  memory_budget_bytes: 1048576\n") in out
    assert out.endswith("history:\n"
                        "    1  derive  src.tet  at=2023-11-14T22:13:20Z\n"
                        "       parents: src.tet, b.tet\n"
                        "       method: zscore\n")


def test_filters_renumber_and_keep_metadata(cli: Any, rich: Path) -> None:
    out = cli("info", rich, "--dataset", "PRESS", "--chunks", "--datasets").out
    assert "filter: dataset~PRESS\n" in out
    assert "    0  pressure              i16" in out
    assert "     0  pressure      0                  8           8    raw" in out
    assert "temperature" not in out
    doc = json.loads(cli("info", rich, "--json", "--dataset", "press").out)
    assert doc["filter"] == "dataset~press"
    assert [d["name"] for d in doc["summary"]["datasets"]] == ["pressure"]
    assert [c["dataset_id"] for c in doc["summary"]["chunks"]] == [0]
    assert list(doc["summary"]["metadata"]["datasets"]) == ["pressure"]
    assert doc["summary"]["metadata"]["file"]["tool"] == "tet-py"
    # grep: name, dtype label, dim names, attr keys and values, coord axes and labels
    for term, want in [("u64", ["a_rather_long_dataset_name_indeed"]),
                       ("HPA", ["pressure"]), ("long_name", ["temperature"]),
                       ("station", ["temperature"]), ("t17", ["temperature"]),
                       ("e", ["temperature", "pressure", "a_rather_long_dataset_name_indeed"])]:
        doc = json.loads(cli("info", rich, "--json", "--grep", term).out)
        assert [d["name"] for d in doc["summary"]["datasets"]] == want, term
    both = json.loads(cli("info", rich, "--json", "--grep", "k", "--dataset", "temp").out)
    assert both["filter"] == "dataset~temp grep~k"
    assert len(both["summary"]["datasets"]) == 1
    out = cli("info", rich, "--grep", "nothing-like-this", "--all").out
    assert "datasets: (no rows match filter)" in out and "chunks: (none)" in out


def test_empty_file(cli: Any, tmp_path: Path) -> None:
    # a catalog with no datasets: superblock only, an empty index span
    (tmp_path / "e.tet").write_bytes(b"TETR" + struct.pack("<IIIQQ", 1, 0, 0, 32, 0))
    out = cli("info", tmp_path / "e.tet", "--all").out
    assert "datasets: (empty file)" in out and "chunks: (none)" in out


def test_errors_are_one_line(cli: Any, tmp_path: Path) -> None:
    r = cli("info", tmp_path / "missing.tet")
    assert r.rc == 1 and r.out == ""
    assert r.err.startswith("error: ") and r.err.count("\n") == 1
    r = cli("info", UPSTREAM / "tet" / "plan.tet")
    assert r.rc == 1
    assert r.err.startswith("error: invalid one-chunk write spec: footer JSON parse")
    bad = tmp_path / "bad.tet"
    bad.write_bytes(b"NOPE" + bytes(40))
    r = cli("info", bad)
    assert (r.rc, r.err) == (1, "error: bad magic: expected TETR, got [78, 79, 80, 69]\n")
    assert cli("info").rc == 2
    assert cli("nonsense").rc == 2


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.tet")
    for argv, env in (([missing, "--debug"], {}), ([missing], {"TET_DEBUG": "1"})):
        p = subprocess.run([sys.executable, "-m", "tet.cli.main", "info", *argv],
                           capture_output=True, text=True, env={**_env(), **env}, check=False)
        assert p.returncode == 1 and "Traceback" in p.stderr
    p = subprocess.run([sys.executable, "-m", "tet.cli.main", "--debug", "info", missing],
                       capture_output=True, text=True, env=_env(), check=False)
    assert "Traceback" in p.stderr
    p = subprocess.run([sys.executable, "-m", "tet.cli.main", "info", missing],
                       capture_output=True, text=True, env=_env(), check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "TET_DEBUG"}


def test_version_and_help(cli: Any) -> None:
    r = cli("--version")
    assert r.rc == 0 and r.out.startswith(f"tet {tet.__version__} (simd: ")
    r = cli("--help")
    assert r.rc == 0
    for name in ("info", "verify", "repair", "query", "qhist", "convert", "export"):
        assert name in r.out


def test_interop_files_all_list(cli: Any) -> None:
    """Every reference-written file: the table has one row per catalog dataset."""
    for path in sorted(set(INTEROP.glob("*.tet")) - {INTEROP / "plan.tet"}):
        r = cli("info", path, "-q")
        assert r.rc == 0, (path, r.err)
        with tet.open(path) as f:
            assert f"datasets={len(f.datasets())} " in r.out
            assert f"chunks={len(f.summary()['chunks'])} " in r.out


def test_a_chunk_row_with_a_bad_dataset_id_is_not_counted(cli: Any, tmp_path: Path) -> None:
    buf = bytearray(SAMPLE.read_bytes())
    struct.pack_into("<Q", buf, 0xF0, 5)  # second row: dataset_id 5 (verify reports it)
    p = tmp_path / "bad.tet"
    p.write_bytes(bytes(buf))
    r = cli("info", p)
    assert (r.rc, r.err) == (0, "")
    assert r.out.splitlines()[-1] == (
        "    0  temperature           f32    2×3               2×2           1")
