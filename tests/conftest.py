"""Shared test settings: where the reference data lives, and Hypothesis profiles
(`default` locally, `ci` under CI=true, `expensive` on request via TET_HYPOTHESIS)."""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
INTEROP = SHARED / "interop" / "files"
UPSTREAM = SHARED / "upstream-fixtures"

settings.register_profile("default", max_examples=60, deadline=None)
settings.register_profile("ci", max_examples=120, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("expensive", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("TET_HYPOTHESIS", "ci" if os.environ.get("CI") else "default"))


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the platform cache and temp dirs into tmp_path: engine temp files land
    where a test can inspect them, and never in the real home."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.setenv(var, str(tmp_path / "tmp"))
    return cache


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    """The per-process cache of open files (dask, xarray) empty before and after the test,
    so no test sees another's open files."""
    from tet.opencache import clear_cache

    clear_cache()
    yield
    clear_cache()


_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def decode_special(v: Any) -> Any:
    """A cases.jsonl value with its "NaN"/"Infinity"/"-Infinity" strings as floats."""
    if isinstance(v, list):
        return [decode_special(e) for e in v]
    return _SPECIAL.get(v, v) if isinstance(v, str) else v


@pytest.fixture(autouse=True)
def _history_in_tmp(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`tet query` records history; tests must never write the user's real cache."""
    if "TET_QUERY_HISTORY_FILE" not in os.environ:
        where = tmp_path_factory.mktemp("qhist") / "query_history.jsonl"
        monkeypatch.setenv("TET_QUERY_HISTORY_FILE", str(where))


class CliRun(NamedTuple):
    rc: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliRun]:
    """Run `tet ARGV…` in-process: exit status (2 for usage errors), stdout, stderr."""
    from tet.cli.main import main

    def run(*argv: str | os.PathLike[str], stdin: str | None = None) -> CliRun:
        capsys.readouterr()
        old = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            rc = main([os.fspath(a) for a in argv])
        except SystemExit as exc:  # argparse: --help, --version, usage errors
            rc = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdin = old
        out, err = capsys.readouterr()
        return CliRun(rc, out, err)

    return run


@pytest.fixture(scope="session")
def real_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every producer-style source of tests/producers.py, written once per session
    ({kind: path}, the keys of `producers.PRODUCERS` and `EXTRA_PRODUCERS`). Shared: read
    them, never modify them."""
    from tests.producers import all_sources

    return all_sources(tmp_path_factory.mktemp("real_sources"), extra=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """An S3-compatible server on 127.0.0.1 for the whole session, with a bucket `tet`;
    traffic and faults are reset by `s3`."""
    pytest.importorskip("moto", reason="moto[server] (the test extra) is not installed")
    from tests.servers import start_s3
    server = start_s3()
    try:
        server.create_bucket("tet")
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: Any) -> Iterator[Any]:
    """The session's S3 server with its counters and faults cleared."""
    s3_server.traffic.reset()
    s3_server.faults.clear()
    yield s3_server
    s3_server.faults.clear()


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Range-capable HTTP file server on 127.0.0.1 serving a session folder."""
    from tests.servers import start_http
    server = start_http(tmp_path_factory.mktemp("http-root"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http(http_server: Any) -> Iterator[Any]:
    """The session's HTTP server with its counters and faults cleared."""
    http_server.traffic.reset()
    http_server.faults.clear()
    yield http_server
    http_server.faults.clear()
