"""The CLI with URLs and `--storage-option KEY=VALUE`, on the loopback S3 server: convert
uploads, export reads a downloaded copy, verify, info and query read the URL with ranged
requests, parse errors are one `error:` line, and query history never keeps a
credential."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("obstore", reason="obstore (the remote extra) is not installed")

import tet
from tests.servers import ACCESS_KEY, SECRET_KEY
from tests.test_remote_write import contents, download, leftovers
from tet.cli.targets import SECRET_KEYS, option_keys, parse_storage_options

T = (np.arange(4 * 6, dtype=np.float64).reshape(4, 6) - 3.5) / 7


def flags(options: dict[str, Any]) -> list[str]:
    out = []
    for k, v in options.items():
        out += ["--storage-option", f"{k}={json.dumps(v) if isinstance(v, bool) else v}"]
    return out


def _h5(path: Path) -> Path:
    h5py = pytest.importorskip("h5py", reason="h5py is not installed")
    with h5py.File(path, "w") as h:
        h.create_dataset("t", data=T, chunks=(2, 3))
    return path


def test_values_parse_as_json_scalars_else_text() -> None:
    got = parse_storage_options(["a=1", "b=true", "c=us-east-1", "d=1.5", "e=null", "f=",
                                 "g=[1]", "endpoint=http://h:9/x=y"])
    assert got == {"a": 1, "b": True, "c": "us-east-1", "d": 1.5, "e": "null", "f": "",
                   "g": "[1]", "endpoint": "http://h:9/x=y"}
    assert option_keys({"z": 1, "secret_access_key": "s"}) == ["secret_access_key", "z"]


@pytest.mark.parametrize(("word", "message"), [
    ("novalue", "error: --storage-option `novalue`: expected KEY=VALUE "
                "(e.g. --storage-option region=us-east-1)\n"),
    ("=x", "error: --storage-option `=…`: expected KEY=VALUE "
           "(e.g. --storage-option region=us-east-1)\n"),
])
def test_a_malformed_option_is_one_error_line(cli: Any, word: str, message: str) -> None:
    for argv in (["info", "s3://tet/x.tet"], ["verify", "s3://tet/x.tet"],
                 ["export", "s3://tet/x.tet", "out"],
                 ["query", '{"dataset": "t"}', "-t", "s3://tet/x.tet"],
                 ["convert", "s3://tet/x.h5", "s3://tet/x.tet"]):
        r = cli(*argv, "--storage-option", word)
        assert (r.rc, r.err) == (1, message), argv


def test_a_repeated_key_and_options_on_a_path(cli: Any, tmp_path: Path) -> None:
    r = cli("info", "s3://tet/x.tet", "--storage-option", "region=a",
            "--storage-option", "region=b")
    assert (r.rc, r.err) == (1, "error: --storage-option `region` is given twice\n")
    path = tmp_path / "local.tet"
    tet.write_dataset(path, "t", T)
    r = cli("info", path, "--storage-option", "region=a")
    assert (r.rc, r.err) == (1, f"error: --storage-option applies to URLs, not to the path "
                                f"{path}\n")


def test_convert_to_s3(cli: Any, s3: Any, private_cache: Path, tmp_path: Path) -> None:
    src = _h5(tmp_path / "x.h5")
    r = cli("convert", src, "s3://tet/cli/x.tet", *flags(s3.options))
    assert r.rc == 0, r.err
    assert json.loads(r.out)["output"] == "s3://tet/cli/x.tet"
    np.testing.assert_array_equal(contents(download(s3, "cli/x.tet", tmp_path))["t"], T)
    r = cli("convert", src, "s3://tet/cli/x.tet", *flags(s3.options))
    assert (r.rc, r.err) == (1, "error: convert output `s3://tet/cli/x.tet` exists (pass "
                                "--force to replace it)\n")
    assert cli("convert", src, "s3://tet/cli/x.tet", "--force", *flags(s3.options)).rc == 0
    assert leftovers(private_cache) == []


def test_convert_from_s3(cli: Any, s3: Any, private_cache: Path, tmp_path: Path) -> None:
    s3.put("tet", "cli/in.h5", _h5(tmp_path / "in.h5").read_bytes())
    out = tmp_path / "out.tet"
    r = cli("convert", "s3://tet/cli/in.h5", out, *flags(s3.options))
    assert r.rc == 0, r.err
    assert json.loads(r.out)["input"] == "s3://tet/cli/in.h5"
    np.testing.assert_array_equal(contents(out)["t"], T)


def test_verify_and_export_a_remote_file(cli: Any, s3: Any, private_cache: Path,
                                         tmp_path: Path) -> None:
    tet.write_dataset("s3://tet/cli/v.tet", "t", T, storage_options=s3.options)
    r = cli("verify", "s3://tet/cli/v.tet", "-q", *flags(s3.options))
    assert r.rc == 0, r.err
    assert r.out == "path=s3://tet/cli/v.tet status=ok datasets=1 chunks=1 recommendations=0\n"
    r = cli("verify", "s3://tet/cli/v.tet", "--repair", *flags(s3.options))
    assert (r.rc, r.err) == (1, "error: --repair rewrites a local file in place; "
                                "`s3://tet/cli/v.tet` is a URL\n")
    zarr = pytest.importorskip("zarr", reason="zarr is not installed")
    r = cli("export", "s3://tet/cli/v.tet", tmp_path / "v.zarr", *flags(s3.options))
    assert r.rc == 0, r.err
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "v.zarr"), mode="r")["t"][...],
                                  T)
    assert leftovers(private_cache) == []


def test_verify_of_a_url_reads_ranges_and_reports_damage(cli: Any, s3: Any, private_cache: Path,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "d.tet"
    tet.write_dataset(path, "t", T)
    s3.put("tet", "cli/d.tet", path.read_bytes())
    s3.traffic.reset()
    r = cli("verify", "s3://tet/cli/d.tet", "--deep", "-q", *flags(s3.options))
    assert r.rc == 0, r.err
    assert r.out == "path=s3://tet/cli/d.tet status=ok datasets=1 chunks=1 recommendations=0\n"
    gets = s3.traffic.of("cli/d.tet", "GET")
    assert gets and all(g.range is not None for g in gets)  # ranged reads, no download
    assert leftovers(private_cache) == []
    with tet.open(path) as f:
        offset = int(f.reader.catalog.entries["payload_offset"][0])
    damaged = bytearray(path.read_bytes())
    damaged[offset] ^= 0xFF  # one payload byte: the checksum table no longer matches
    path.write_bytes(bytes(damaged))
    s3.put("tet", "cli/d.tet", bytes(damaged))
    local = json.loads(cli("verify", path, "--json").out)
    r = cli("verify", "s3://tet/cli/d.tet", "--json", *flags(s3.options))
    assert (r.rc, r.err) == (1, "error: verification failed\n")
    remote = json.loads(r.out)
    assert remote["path"] == "s3://tet/cli/d.tet" and not remote["ok"]
    assert remote["findings"] == local["findings"]
    assert [x["code"] for x in remote["recommendations"]] == \
        [x["code"] for x in local["recommendations"]] != []
    assert all("command" in x["fix"] for x in local["recommendations"])
    assert all("command" not in x["fix"] for x in remote["recommendations"])  # no repair


def test_export_to_a_url_is_refused(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "local.tet"
    tet.write_dataset(path, "t", T)
    r = cli("export", path, "s3://tet/cli/out.zarr")
    assert (r.rc, r.err) == (1, "error: export output `s3://tet/cli/out.zarr` is a URL; "
                                "export writes a local directory store (write it locally, "
                                "then upload the directory)\n")


def test_info_of_a_url(cli: Any, s3: Any) -> None:
    tet.write_dataset("s3://tet/cli/i.tet", "t", T, storage_options=s3.options)
    r = cli("info", "s3://tet/cli/i.tet", "-q", *flags(s3.options))
    assert r.rc == 0, r.err
    assert r.out.startswith("path=s3://tet/cli/i.tet file_len=")


def test_query_history_keeps_no_secret(cli: Any, s3: Any) -> None:
    tet.write_dataset("s3://tet/cli/q.tet", "t", T, storage_options=s3.options)
    doc = '{"dataset": "t", "mean": []}'
    r = cli("query", doc, "-t", "s3://tet/cli/q.tet", "-x", "-q", *flags(s3.options))
    assert r.rc == 0, r.err
    assert f"mean={T.mean():g}"[:9] in r.out, r.out
    text = Path(os.environ["TET_QUERY_HISTORY_FILE"]).read_text(encoding="utf-8")
    assert SECRET_KEY not in text and ACCESS_KEY not in text
    row = json.loads(text.splitlines()[-1])
    assert row["tet"] == "s3://tet/cli/q.tet"
    assert row["storage_option_keys"] == sorted(s3.options)
    assert {"access_key_id", "secret_access_key"} <= SECRET_KEYS
    # the replay needs the options again: history never had them
    r = cli("qhist", "run", "1", "-q", *flags(s3.options))
    assert r.rc == 0, r.err
    assert f"mean={T.mean():g}"[:9] in r.out, r.out
    text = Path(os.environ["TET_QUERY_HISTORY_FILE"]).read_text(encoding="utf-8")
    assert SECRET_KEY not in text and ACCESS_KEY not in text


def test_history_redacts_a_url_s_credentials() -> None:
    from tet.cli import history

    history.record("https://user:hunter2@127.0.0.1:9/k.tet", True, {"dataset": "t"},
                   ["bearer_token"])
    text = Path(os.environ["TET_QUERY_HISTORY_FILE"]).read_text(encoding="utf-8")
    assert "hunter2" not in text and "user" not in text
    row = json.loads(text.splitlines()[-1])
    assert (row["tet"], row["storage_option_keys"]) == ("https://127.0.0.1:9/k.tet",
                                                        ["bearer_token"])
    rows, warnings = history.load()
    assert warnings == [] and rows[0].storage_option_keys == ("bearer_token",)
