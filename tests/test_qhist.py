"""Query history (`tet.cli.history`) and `tet qhist` (cli.md §5)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import REPO, UPSTREAM, CliRun
from tet.cli import history
from tet.query.allow import cache_roots

Cli = Callable[..., CliRun]

SAMPLE = UPSTREAM / "tet" / "sample.tet"
U8 = UPSTREAM / "tet" / "multichunk_u8.tet"
QUERIES = UPSTREAM / "queries"
MEAN_OK = ("dataset=temperature status=ok op=mean mean=3.5 elements=6 "
           "memory_strategy=streaming_fold\n")
MEAN_Q = {"dataset": "temperature", "mean": []}
HEADER = "  #  mode  dataset             op          select    tet"
LEGEND = ["", "mode: x = had -x (execute), p = plan only (no -x)",
          "replay: tet qhist run <#>  (1 = newest)"]
EMPTY = "(empty — run `tet query … -t file.tet -x` to record)"
MODE_ERR = 'error: unknown history mode "{}"; expected x, execute, p, or plan\n'


@pytest.fixture(autouse=True)
def hist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_cache: Path) -> Path:
    """A private history file per test, default settings, and the cache in tmp_path."""
    path = tmp_path / "hist" / "query_history.jsonl"
    monkeypatch.setenv("TET_QUERY_HISTORY_FILE", str(path))
    monkeypatch.delenv("TET_QUERY_HISTORY_MAX", raising=False)
    monkeypatch.delenv("TET_NO_QUERY_HISTORY", raising=False)
    return path


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A settable clock for `at`: history reads time.time() through the time module."""
    now = [1_700_000_000.75]
    monkeypatch.setattr("tet.cli.history.time.time", lambda: now[0])
    return now


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows oldest first, as the file stores them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def disk_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines()]


def row(at: int, tet: str | None, execute: bool, query: dict[str, Any]) -> dict[str, Any]:
    return {"at": at, "tet": tet, "execute": execute, "query": query}


# Five rows, oldest first; listed newest first as #1 = the last one.
KNOWN = [
    row(1_700_000_000, "/data/sample.tet", True, MEAN_Q),
    row(1_700_000_100, "/data/sample.tet", False,
        {"layout_version": 1, "dataset": "temperature",
         "selection": [{"start": 0, "stop": 100, "step": 2},
                       {"start": None, "stop": None, "step": 1}], "mean": []}),
    row(1_700_000_200, None, False,
        {"dataset": "a", "selection": [{"start": 0, "stop": 2}, {"start": 0, "stop": 2}]}),
    row(1_700_000_300, "/other/multichunk_u8.tet", True,
        {"dataset": "a", "quantile": {"q": 0.5, "axis": 0}}),
    row(1_700_000_400, "/data/Large.tet", True,
        {"dataset": "a_very_long_dataset_name", "selection": [], "sum": 0}),
]
KNOWN_LINES = {  # listing line per KNOWN index, with its number filled in later
    4: "{:>3}   x    a_very_long_dataset_name  sum         full      Large.tet",
    3: "{:>3}   x    a                   quantile    full      multichunk_u8.tet",
    2: "{:>3}   p    a                   -           subset    -",
    1: "{:>3}   p    temperature         mean        strided   sample.tet",
    0: "{:>3}   x    temperature         mean        full      sample.tet",
}


def listing(path: Path, indices: list[int], *, keep: int = 50, flt: str | None = None,
            shown: int | None = None) -> str:
    """The expected text listing of KNOWN rows `indices` (newest first)."""
    lines = [f"file: {path}", f"shown: {len(indices) if shown is None else shown}  "
                                f"keep: {keep} on disk"]
    if flt is not None:
        lines.append(f"filter: {flt}")
    lines += ["", HEADER]
    lines += [KNOWN_LINES[k].format(n) for n, k in enumerate(indices, 1)]
    return "\n".join([*lines, *LEGEND]) + "\n"


@pytest.fixture
def known(hist: Path) -> Path:
    write_rows(hist, KNOWN)
    return hist


# -- storage: env ---------------------------------------------------------------------------


def test_history_file_env_overrides(hist: Path) -> None:
    assert history.history_file() == hist


@pytest.mark.parametrize("value", [None, ""])
def test_history_file_defaults_to_first_cache_root(
        value: str | None, monkeypatch: pytest.MonkeyPatch, private_cache: Path) -> None:
    if value is None:
        monkeypatch.delenv("TET_QUERY_HISTORY_FILE")
    else:
        monkeypatch.setenv("TET_QUERY_HISTORY_FILE", value)
    expected = (private_cache / "tetration").resolve() / "query_history.jsonl"
    assert history.history_file() == expected == cache_roots()[0] / "query_history.jsonl"


@pytest.mark.parametrize(("value", "expected"), [
    (None, 50), ("1", 1), ("7", 7), ("+7", 7), ("10000", 10000), ("0", 50), ("10001", 50),
    ("-3", 50), ("abc", 50), ("", 50), (" 5", 50), ("5.0", 50), ("99999999999999999999", 50),
])
def test_history_max(value: str | None, expected: int,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    if value is not None:
        monkeypatch.setenv("TET_QUERY_HISTORY_MAX", value)
    assert history.history_max() == expected


@pytest.mark.parametrize(("value", "off"), [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), ("YES", True),
    ("0", False), ("True", False), ("no", False), ("", False), (None, False),
])
def test_disable_env(value: str | None, off: bool, hist: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    if value is not None:
        monkeypatch.setenv("TET_NO_QUERY_HISTORY", value)
    assert history.disabled() is off
    history.record("/d/x.tet", True, MEAN_Q)
    assert hist.exists() is not off


# -- storage: record ------------------------------------------------------------------------


def test_record_row_shape_and_absolute_tet(hist: Path, clock: list[float], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    history.record("rel/x.tet", True, MEAN_Q)
    history.record(None, False, {"dataset": "é"})
    text = hist.read_text(encoding="utf-8")
    absolute = os.path.join(os.getcwd(), "rel", "x.tet")
    assert text == (
        '{"at":1700000000,"tet":' + json.dumps(absolute) + ',"execute":true,'
        '"query":{"dataset":"temperature","mean":[]}}\n'
        '{"at":1700000000,"tet":null,"execute":false,"query":{"dataset":"é"}}\n')


def test_record_dedupes_only_against_newest(hist: Path, clock: list[float]) -> None:
    history.record("/d/x.tet", True, MEAN_Q)
    clock[0] += 10
    history.record("/d/x.tet", True, dict(MEAN_Q))
    assert disk_rows(hist) == [row(1_700_000_010, "/d/x.tet", True, MEAN_Q)]
    history.record("/d/x.tet", False, MEAN_Q)  # other execute flag
    history.record("/d/y.tet", False, MEAN_Q)  # other file
    history.record("/d/y.tet", False, {"mean": [], "dataset": "temperature"})  # other text
    clock[0] += 5
    history.record("/d/x.tet", True, MEAN_Q)  # equal to an older row, not the newest
    rows = disk_rows(hist)
    assert [(r["tet"], r["execute"], list(r["query"]), r["at"]) for r in rows] == [
        ("/d/x.tet", True, ["dataset", "mean"], 1_700_000_010),
        ("/d/x.tet", False, ["dataset", "mean"], 1_700_000_010),
        ("/d/y.tet", False, ["dataset", "mean"], 1_700_000_010),
        ("/d/y.tet", False, ["mean", "dataset"], 1_700_000_010),
        ("/d/x.tet", True, ["dataset", "mean"], 1_700_000_015),
    ]


def test_record_trims_oldest_beyond_max(hist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TET_QUERY_HISTORY_MAX", "3")
    for i in range(5):
        history.record(f"/d/{i}.tet", True, MEAN_Q)
    assert [r["tet"] for r in disk_rows(hist)] == ["/d/2.tet", "/d/3.tet", "/d/4.tet"]
    rows, warnings = history.load()
    assert [r.tet for r in rows] == ["/d/4.tet", "/d/3.tet", "/d/2.tet"] and warnings == []


def test_invalid_max_keeps_default_fifty(hist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TET_QUERY_HISTORY_MAX", "0")
    for i in range(52):
        history.record(f"/d/{i}.tet", False, MEAN_Q)
    tets = [r["tet"] for r in disk_rows(hist)]
    assert len(tets) == 50 and tets[0] == "/d/2.tet" and tets[-1] == "/d/51.tet"


def test_record_failure_only_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    monkeypatch.setenv("TET_QUERY_HISTORY_FILE", str(blocker / "h.jsonl"))
    history.record("/d/x.tet", True, MEAN_Q)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("warning: query history not saved: ")
    assert err.count("\n") == 1 and str(blocker) in err


def test_unserialisable_query_only_warns(known: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    before = known.read_bytes()
    history.record("/d/x.tet", True, {"dataset": "t", "mean": object()})
    assert capsys.readouterr().err == (
        "warning: query history not saved: Object of type object is not JSON serializable\n")
    assert known.read_bytes() == before


def test_failed_rewrite_keeps_old_file_and_no_temp(known: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    before = known.read_bytes()

    def full_disk(src: str, dst: str, **kw: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", dst)

    monkeypatch.setattr("tet.cli.history.os.replace", full_disk)
    history.record("/d/x.tet", True, MEAN_Q)
    assert capsys.readouterr().err == (
        f"warning: query history not saved: No space left on device: {known}\n")
    assert known.read_bytes() == before
    assert sorted(p.name for p in known.parent.iterdir()) == [
        "query_history.jsonl", "query_history.jsonl.lock"]


def test_record_creates_missing_directory(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a" / "b" / "h.jsonl"
    monkeypatch.setenv("TET_QUERY_HISTORY_FILE", str(path))
    history.record(None, False, MEAN_Q)
    assert [r["query"] for r in disk_rows(path)] == [MEAN_Q]


@pytest.mark.skipif(os.name != "posix", reason="symlinks need privileges on Windows")
def test_symlinked_history_file_is_written_through(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real.jsonl"
    write_rows(real, [KNOWN[0]])
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    monkeypatch.setenv("TET_QUERY_HISTORY_FILE", str(link))
    history.record(None, False, {"dataset": "z"})
    assert link.is_symlink()
    assert [r["query"]["dataset"] for r in disk_rows(real)] == ["temperature", "z"]


def test_concurrent_recorders_lose_no_row(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    go = tmp_path / "go"
    script = textwrap.dedent("""
        import os, sys, time
        from tet.cli.history import record
        w, go = int(sys.argv[1]), sys.argv[2]
        open(go + f".ready{w}", "w").close()
        while not os.path.exists(go):
            time.sleep(0.001)
        for i in range(20):
            record(f"/w/{w}.tet", i % 2 == 0, {"dataset": f"w{w}", "sum": [], "i": i})
    """)
    env = {**os.environ, "TET_QUERY_HISTORY_FILE": str(path),
           "TET_QUERY_HISTORY_MAX": "10000"}
    env.pop("TET_NO_QUERY_HISTORY", None)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w), str(go)], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for w in range(6)]
    deadline = time.monotonic() + 120  # start all writers together, once all are loaded
    while (not all(Path(f"{go}.ready{w}").exists() for w in range(6))
           and time.monotonic() < deadline and all(p.poll() is None for p in procs)):
        time.sleep(0.01)
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert (p.returncode, out, err) == (0, "", "")
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(ln) for ln in lines]  # every line is valid JSON
    assert len(rows) == 120
    assert sorted((r["query"]["dataset"], r["query"]["i"]) for r in rows) == sorted(
        (f"w{w}", i) for w in range(6) for i in range(20))
    for w in range(6):  # each writer's rows stay in its own order
        assert [r["query"]["i"] for r in rows if r["tet"] == f"/w/{w}.tet"] == list(range(20))


# -- storage: load and clear ----------------------------------------------------------------


def corrupt_file(path: Path) -> None:
    good = [json.dumps(r).encode() for r in KNOWN[:3]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join([
        good[0],
        b"{not json",
        b"",
        good[1],
        b"[1, 2]",
        b"\xff\xfe",
        b'{"at": "soon", "tet": null, "execute": true, "query": {}}',
        b'{"at": 1, "tet": 5, "execute": true, "query": {}}',
        b'{"at": 1, "tet": null, "execute": "yes", "query": {}}',
        b'{"at": 1, "tet": null, "execute": true, "query": []}',
        good[2] + b"\r",
    ]) + b"\n")


CORRUPT_WARNINGS = [
    "warning: query history line 2 skipped: invalid JSON (Expecting property name enclosed "
    "in double quotes at column 2)",
    "warning: query history line 5 skipped: not a JSON object",
    "warning: query history line 6 skipped: not valid UTF-8",
    "warning: query history line 7 skipped: `at` must be a non-negative integer "
    "(unix seconds)",
    "warning: query history line 8 skipped: `tet` must be a string or null",
    "warning: query history line 9 skipped: `execute` must be true or false",
    "warning: query history line 10 skipped: `query` must be a JSON object",
]


def test_load_skips_corrupt_lines(hist: Path) -> None:
    corrupt_file(hist)
    rows, warnings = history.load()
    assert [r.to_json() for r in rows] == [KNOWN[2], KNOWN[1], KNOWN[0]]
    assert warnings == CORRUPT_WARNINGS


def test_list_with_corrupt_lines_warns_and_lists_the_rest(hist: Path, cli: Cli) -> None:
    corrupt_file(hist)
    r = cli("qhist", "list")
    assert r.rc == 0
    assert r.err == "".join(w + "\n" for w in CORRUPT_WARNINGS)
    assert r.out == listing(hist, [2, 1, 0])


def test_record_keeps_corrupt_lines(hist: Path) -> None:
    corrupt_file(hist)
    history.record(None, True, {"dataset": "new"})
    lines = hist.read_bytes().split(b"\n")
    assert b"{not json" in lines and b"\xff\xfe" in lines
    assert json.loads(lines[-2])["query"] == {"dataset": "new"}


def test_load_missing_file_is_empty() -> None:
    assert history.load() == ([], [])


def test_unreadable_history_is_an_error(hist: Path, cli: Cli) -> None:
    hist.mkdir(parents=True)  # a directory where the file should be
    r = cli("qhist")
    assert r.rc == 1
    assert r.err.startswith(f"error: cannot read query history {hist}: ")


def test_clear_function(known: Path) -> None:
    assert history.clear() is True
    assert not known.exists()
    assert history.clear() is False


@pytest.mark.parametrize("argv", [("qhist", "--clear"), ("hist", "--clear")])
def test_clear_flag(argv: tuple[str, ...], known: Path, cli: Cli) -> None:
    r = cli(*argv)
    assert (r.rc, r.out, r.err) == (0, "", "query history cleared\n")
    assert not known.exists()
    r = cli(*argv)  # nothing left to clear: same message
    assert (r.rc, r.out, r.err) == (0, "", "query history cleared\n")
    r = cli("qhist")
    assert r.out.endswith(f"\n\n{EMPTY}\n")


def test_clear_with_subcommand_is_usage_error(known: Path, cli: Cli) -> None:
    r = cli("qhist", "--clear", "list")
    assert r.rc == 2 and "--clear cannot be combined with `list`" in r.err
    assert known.exists()


# -- list -----------------------------------------------------------------------------------


def test_list_text_exact(known: Path, cli: Cli) -> None:
    r = cli("qhist", "list")
    assert (r.rc, r.err) == (0, "")
    assert r.out == listing(known, [4, 3, 2, 1, 0])
    assert r.out.splitlines()[3] == HEADER


def test_bare_qhist_lists_up_to_env_max(known: Path, cli: Cli,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("qhist").out == cli("qhist", "list").out == cli("hist").out
    monkeypatch.setenv("TET_QUERY_HISTORY_MAX", "2")
    assert cli("qhist").out == listing(known, [4, 3], keep=2)
    # `list` has its own default (-n 50), independent of the on-disk cap
    assert cli("qhist", "list").out == listing(known, [4, 3, 2, 1, 0], keep=2)


def test_list_n_and_all(known: Path, cli: Cli) -> None:
    assert cli("qhist", "list", "-n", "2").out == listing(known, [4, 3])
    assert cli("qhist", "list", "-n", "1", "--all").out == listing(known, [4, 3, 2, 1, 0])
    r = cli("qhist", "list", "-n", "0")
    assert r.rc == 2 and "must be >= 1, got 0" in r.err


def test_list_default_limit_is_fifty(hist: Path, cli: Cli) -> None:
    write_rows(hist, [row(i, f"/d/{i}.tet", True, MEAN_Q) for i in range(60)])
    assert cli("qhist", "list").out.splitlines()[1] == "shown: 50  keep: 50 on disk"
    out = cli("qhist", "list", "--all").out.splitlines()
    assert out[1] == "shown: 60  keep: 50 on disk"
    assert out[4].endswith("59.tet") and out[63].endswith(" 0.tet")


def test_list_empty(hist: Path, cli: Cli) -> None:
    expected = f"file: {hist}\nshown: 0  keep: 50 on disk\n\n{EMPTY}\n"
    assert cli("qhist").out == expected
    r = cli("qhist", "list", "--dataset", "x")
    assert r.out == (f"file: {hist}\nshown: 0  keep: 50 on disk\nfilter: dataset~x\n\n"
                     f"{EMPTY}\n")


def test_list_no_match(known: Path, cli: Cli) -> None:
    r = cli("qhist", "list", "--dataset", "nope", "--grep", "z")
    assert (r.rc, r.err) == (0, "")
    assert r.out == (f"file: {known}\nshown: 0  keep: 50 on disk\n"
                     "filter: dataset~nope grep~z\n\n(no rows match filter)\n")


@pytest.mark.parametrize(("flags", "indices", "shown"), [
    (["--dataset", "TEMP"], [1, 0], "dataset~TEMP"),
    (["--dataset", "a"], [4, 3, 2, 1, 0], "dataset~a"),  # "temperature" contains "a"
    (["--tet", "large"], [4], "tet~large"),
    (["--tet", "/data/"], [4, 1, 0], "tet~/data/"),
    (["--tet", ""], [4, 3, 1, 0], "tet~"),  # rows without a .tet never match --tet
    (["--mode", "x"], [4, 3, 0], "mode=x"),
    (["--mode", "execute"], [4, 3, 0], "mode=x"),
    (["--mode", "p"], [2, 1], "mode=p"),
    (["--mode", "PLAN"], [2, 1], "mode=p"),
    (["--grep", "QUANT"], [3], "grep~QUANT"),  # op key
    (["--grep", "other"], [3], "grep~other"),  # tet path
    (["--grep", "very_long"], [4], "grep~very_long"),  # dataset
    (["--grep", "mean"], [1, 0], "grep~mean"),
    (["--dataset", "temp", "--mode", "p"], [1], "dataset~temp mode=p"),
    (["--dataset", "a", "--tet", "sample", "--mode", "x", "--grep", "mean"], [0],
     "dataset~a tet~sample mode=x grep~mean"),
])
def test_list_filters(flags: list[str], indices: list[int], shown: str, known: Path,
                      cli: Cli) -> None:
    r = cli("qhist", "list", *flags)
    assert (r.rc, r.err) == (0, "")
    assert r.out == listing(known, indices, flt=shown)


@pytest.mark.parametrize("mode", ["z", "executed", ""])
def test_unknown_mode(mode: str, known: Path, cli: Cli) -> None:
    for argv in (("qhist", "list", "--mode", mode), ("qhist", "run", "1", "--mode", mode)):
        r = cli(*argv)
        assert (r.rc, r.out, r.err) == (1, "", MODE_ERR.format(mode))


def test_list_json(known: Path, cli: Cli) -> None:
    r = cli("qhist", "list", "--json", "-n", "2")
    assert (r.rc, r.err) == (0, "")
    assert r.out.startswith('{\n  "path": ')  # pretty, 2-space indent
    assert json.loads(r.out) == {
        "path": str(known),
        "settings": {"cli_query_max": 50, "history_max_cap": 10000,
                     "history_file_name": "query_history.jsonl"},
        "shown": 2,
        "filter": {"dataset": None, "tet": None, "mode": None, "grep": None},
        "mode_key": {"x": "execute (-x was set)", "p": "plan only (no -x)"},
        "entries": [
            {"at": 1_700_000_400, "mode": "x", "tet": "/data/Large.tet",
             "query": KNOWN[4]["query"]},
            {"at": 1_700_000_300, "mode": "x", "tet": "/other/multichunk_u8.tet",
             "query": KNOWN[3]["query"]},
        ],
    }


def test_list_json_filters_and_env_max(known: Path, cli: Cli,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TET_QUERY_HISTORY_MAX", "7")
    doc = json.loads(cli("qhist", "list", "--json", "--all", "--mode", "plan",
                         "--dataset", "A", "--tet", "s", "--grep", "e").out)
    assert doc["settings"]["cli_query_max"] == 7
    assert doc["filter"] == {"dataset": "A", "tet": "s", "mode": "p", "grep": "e"}
    assert doc["shown"] == 1
    assert doc["entries"] == [{"at": 1_700_000_100, "mode": "p", "tet": "/data/sample.tet",
                               "query": KNOWN[1]["query"]}]
    empty = json.loads(cli("qhist", "list", "--json", "--grep", "zzz").out)
    assert (empty["shown"], empty["entries"]) == (0, [])


def test_list_flags_belong_to_list(known: Path, cli: Cli) -> None:
    assert cli("qhist", "-n", "3").rc == 2
    assert cli("qhist", "--json").rc == 2


# -- run: index errors (no query needed) ----------------------------------------------------


def test_run_index_zero(known: Path, cli: Cli) -> None:
    r = cli("qhist", "run", "0")
    assert (r.rc, r.out, r.err) == (1, "", "error: history index must be >= 1 (1 = newest)\n")
    assert cli("qhist", "run", "-2").err == "error: history index must be >= 1 (1 = newest)\n"


def test_run_out_of_range(known: Path, cli: Cli) -> None:
    r = cli("qhist", "run", "6")
    assert (r.rc, r.out, r.err) == (
        1, "", "error: history entry 6 not found (have 5 matching entries)\n")
    r = cli("qhist", "run", "2", "--tet-filter", "large")
    assert r.err == "error: history entry 2 not found (have 1 matching entry)\n"
    r = cli("qhist", "run", "1", "--grep", "zzz")
    assert r.err == "error: history entry 1 not found (have 0 matching entries)\n"
    assert known.read_text(encoding="utf-8").count("\n") == 5  # nothing recorded


def test_run_usage_errors(known: Path, cli: Cli) -> None:
    assert cli("qhist", "run").rc == 2
    assert cli("qhist", "run", "one").rc == 2
    r = cli("qhist", "run", "1", "-x", "--plan")
    assert r.rc == 2 and "not allowed with argument" in r.err
    r = cli("qhist", "run", "3", "-x")  # row 3 was validated without a .tet
    assert r.rc == 2
    assert "-x / --execute requires -t / --tet: history entry 3 has no .tet path" in r.err


# -- run: replay through `tet query` --------------------------------------------------------


def newest(path: Path) -> dict[str, Any]:
    return disk_rows(path)[-1]


def test_run_replays_recorded_query(hist: Path, cli: Cli) -> None:
    r = cli("query", QUERIES / "mean_temperature.json", "-t", SAMPLE, "-x")
    assert r.rc == 0, r.err
    assert disk_rows(hist) == [row(newest(hist)["at"], str(SAMPLE), True, MEAN_Q)]
    r = cli("qhist", "run", "1", "-q")
    assert (r.rc, r.out, r.err) == (0, MEAN_OK, "")
    assert len(disk_rows(hist)) == 1  # the replay was recorded: same row, `at` refreshed
    r = cli("hist", "run", "1", "--format", "quiet")
    assert (r.rc, r.out) == (0, MEAN_OK)


def test_run_plan_override(hist: Path, cli: Cli) -> None:
    assert cli("query", QUERIES / "mean_temperature.json", "-t", SAMPLE, "-x").rc == 0
    r = cli("qhist", "run", "1", "--plan", "-q")
    assert r.rc == 0, r.err
    assert r.out.startswith("dataset=temperature status=planned chunks=")
    assert [x["execute"] for x in disk_rows(hist)] == [True, False]  # recorded as plan-only
    assert cli("qhist", "run", "1", "-q").out == r.out  # saved flag of the new row: plan


def test_run_execute_override(hist: Path, cli: Cli) -> None:
    assert cli("query", QUERIES / "mean_temperature.json", "-t", SAMPLE).rc == 0
    assert newest(hist)["execute"] is False
    assert cli("qhist", "run", "1", "-q").out.startswith("dataset=temperature status=planned")
    r = cli("qhist", "run", "1", "--execute", "-q")
    assert (r.rc, r.out) == (0, MEAN_OK)
    assert newest(hist)["execute"] is True


def test_run_tet_override(hist: Path, cli: Cli, tmp_path: Path) -> None:
    moved = tmp_path / "moved.tet"
    shutil.copyfile(SAMPLE, moved)
    assert cli("query", QUERIES / "mean_temperature.json", "-t", moved, "-x").rc == 0
    moved.unlink()
    r = cli("qhist", "run", "1", "-q")
    assert r.rc == 1 and r.err.startswith("error: ")
    r = cli("qhist", "run", "1", "--tet", SAMPLE, "--quiet")
    assert (r.rc, r.out) == (0, MEAN_OK)
    assert newest(hist)["tet"] == str(SAMPLE)


def test_relative_tet_replays_from_another_directory(hist: Path, cli: Cli, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SAMPLE.parent)
    assert cli("query", QUERIES / "mean_temperature.json", "-t", "sample.tet", "-x").rc == 0
    assert newest(hist)["tet"] == os.path.join(os.getcwd(), "sample.tet")
    monkeypatch.chdir(tmp_path)
    assert cli("qhist", "run", "1", "-q").out == MEAN_OK


def test_run_numbering_follows_filters(hist: Path, cli: Cli) -> None:
    assert cli("query", QUERIES / "mean_temperature.json", "-t", SAMPLE, "-x").rc == 0
    assert cli("query", QUERIES / "sum_a.json", "-t", U8, "-x").rc == 0
    assert cli("query", QUERIES / "var_a.json", "-t", U8).rc == 0
    sum_ok = "dataset=a status=ok op=sum sum=21 elements=6 memory_strategy=streaming_fold\n"
    assert cli("qhist", "run", "3", "-q").out == MEAN_OK
    assert cli("qhist", "run", "1", "--dataset", "TEMP", "-q").out == MEAN_OK
    assert cli("qhist", "run", "2", "--tet-filter", "u8", "-q").out == sum_ok
    assert cli("qhist", "run", "1", "--mode", "x", "-q").out == sum_ok
    assert cli("qhist", "run", "2", "--mode", "execute", "-q").out == MEAN_OK
    assert cli("qhist", "run", "1", "--grep", "mean", "-q").out == MEAN_OK
    r = cli("qhist", "run", "1", "--mode", "p", "-q")
    assert r.out.startswith("dataset=a status=planned")


def test_run_output_flags(hist: Path, cli: Cli, tmp_path: Path) -> None:
    assert cli("query", QUERIES / "slice_full_temperature.json", "-t", SAMPLE, "-x").rc == 0
    r = cli("qhist", "run", "1", "--format", "json")
    assert r.rc == 0, r.err
    assert r.out.count("\n") == 1
    doc = json.loads(r.out)
    assert doc["dataset"] == "temperature"
    capped = cli("qhist", "run", "1", "--format", "quiet", "--preview", "2")
    assert capped.rc == 0, capped.err
    assert capped.out == ("dataset=temperature status=preview read_bytes=24 "
                          "memory_strategy=capped_in_memory preview=2 f32 truncated=true "
                          "sample=[1,2]\n")
    alias = cli("qhist", "run", "1", "-q", "--preview-f32", "2")
    assert alias.out == capped.out
    r = cli("qhist", "run", "1", "--format", "json", "-q")
    assert r.rc == 2


def test_run_spill_allow(hist: Path, cli: Cli, tmp_path: Path) -> None:
    extra = tmp_path / "extra-root"
    target = extra / "out.bin"
    doc = json.dumps({"dataset": "temperature", "spill": str(target)})
    r = cli("query", doc, "-t", SAMPLE, "-x", "-q", "--spill-allow", extra)
    assert r.rc == 0, r.err
    target.unlink()
    r = cli("qhist", "run", "1", "-q")  # today's flags only: the extra root is not saved
    assert r.rc == 1 and "is not under an allowed root" in r.err
    assert not target.exists()
    r = cli("qhist", "run", "1", "-q", "--spill-allow", extra)
    assert r.rc == 0, r.err
    assert target.read_bytes() == np.arange(1, 7, dtype="<f4").tobytes()


def test_run_validate_only_row(hist: Path, cli: Cli) -> None:
    assert cli("query", QUERIES / "mean_temperature.json").rc == 0
    assert newest(hist)["tet"] is None
    r = cli("qhist", "run", "1", "-q")
    assert r.rc == 0, r.err
    assert r.out.startswith("dataset=temperature validated")
    r = cli("qhist", "run", "1", "-t", SAMPLE, "-x", "-q")
    assert (r.rc, r.out) == (0, MEAN_OK)


def test_run_with_history_disabled_records_nothing(hist: Path, cli: Cli,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("query", QUERIES / "mean_temperature.json", "-t", SAMPLE, "-x").rc == 0
    before = hist.read_bytes()
    monkeypatch.setenv("TET_NO_QUERY_HISTORY", "1")
    monkeypatch.setattr("tet.cli.history.time.time", lambda: 4e9)  # `at` would move
    assert cli("qhist", "run", "1", "-q").out == MEAN_OK
    assert hist.read_bytes() == before
