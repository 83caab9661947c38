"""tet.objstore against real loopback servers: URLs, options, ranged reads, conditional
writes and the errors each failure becomes."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("obstore", reason="obstore (the remote extra) is not installed")

from tests.servers import env
from tet import objstore
from tet.errors import FileChangedError, TetFileNotFoundError


def test_urls_and_paths() -> None:
    assert objstore.is_url("s3://b/k.tet") and objstore.is_url("HTTPS://h/k")
    assert not objstore.is_url("file:///tmp/x.tet") and not objstore.is_url("/tmp/x.tet")
    assert objstore.local_path("file:///tmp/a%20b.tet") == Path("/tmp/a b.tet")
    assert objstore.redact("https://u:secret@h:8443/k.tet?X-Amz-Signature=s") == \
        "https://h:8443/k.tet"
    loc = objstore.locate("s3://bucket/dir/k.tet")
    assert (loc.url, loc.key) == ("s3://bucket/dir/k.tet", "dir/k.tet")
    with pytest.raises(objstore.RemoteConfigError, match="names no object"):
        objstore.locate("s3://bucket/")
    with pytest.raises(objstore.RemoteConfigError, match="not a URL tet can open"):
        objstore.locate("ftp://h/k")


def test_tetration_aliases_fill_only_what_is_unset() -> None:
    with env(TETRATION_S3_ENDPOINT="http://127.0.0.1:9", TETRATION_S3_ACCESS_KEY="ak",
             TETRATION_S3_SECRET_KEY="sk", TETRATION_S3_REGION="r1", AWS_REGION="r2",
             AWS_ENDPOINT_URL=None, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None):
        got = objstore.s3_env_aliases({"access_key_id": "given"})
    assert got == {"endpoint": "http://127.0.0.1:9", "secret_access_key": "sk"}


def _upload(s3: Any, key: str, data: bytes) -> objstore.Location:
    s3.put("tet", key, data)
    return objstore.locate(f"s3://tet/{key}", s3.options)


def test_ranged_reads_count_one_request_each(s3: Any) -> None:
    data = bytes(range(256)) * 64
    loc = _upload(s3, "ranged.bin", data)
    s3.traffic.reset()
    head, meta = objstore.read_head(loc, 100)
    assert head == data[:100] and meta.size == len(data) and meta.etag
    part, _ = objstore.read_range(loc, 1000, 1010, etag=meta.etag)
    assert part == data[1000:1010]
    assert s3.traffic.count("ranged.bin", "GET") == 2
    assert s3.traffic.bytes("ranged.bin") == 110


def test_changed_object_is_file_changed(s3: Any) -> None:
    loc = _upload(s3, "changes.bin", b"a" * 100)
    _, meta = objstore.read_head(loc, 10)
    s3.put("tet", "changes.bin", b"b" * 100)
    with pytest.raises(FileChangedError, match="changed while it was being read"):
        objstore.read_range(loc, 0, 10, etag=meta.etag)


def test_missing_object_and_denied(s3: Any) -> None:
    loc = objstore.locate("s3://tet/absent.tet", s3.options)
    with pytest.raises(TetFileNotFoundError, match=r"no such object: `s3://tet/absent\.tet`"):
        objstore.read_head(loc, 10)
    assert issubclass(TetFileNotFoundError, FileNotFoundError)
    s3.faults.status, s3.faults.match = 403, "denied.bin"
    with pytest.raises(objstore.RemoteError, match="access denied"):
        objstore.read_head(objstore.locate("s3://tet/denied.bin", s3.options), 10)


def test_truncated_body_is_an_error(s3: Any) -> None:
    loc = _upload(s3, "short.bin", b"x" * 5000)
    s3.faults.truncate, s3.faults.match = 10, "short.bin"
    with pytest.raises(objstore.RemoteError, match=r"short\.bin"):
        objstore.read_range(loc, 0, 4000)


def test_conditional_put(s3: Any, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(b"one")
    loc = objstore.locate("s3://tet/cas.bin", s3.options)
    first = objstore.put_file(loc, src, create=True)
    with pytest.raises(objstore.RemoteConflictError, match="concurrent writer"):
        objstore.put_file(loc, src, create=True)
    src.write_bytes(b"two")
    second = objstore.put_file(loc, src, if_match=first.etag)
    with pytest.raises(objstore.RemoteConflictError):
        objstore.put_file(loc, src, if_match=first.etag)
    out = tmp_path / "back.bin"
    with out.open("wb") as fh:
        meta = objstore.download(loc, fh)
    assert out.read_bytes() == b"two" and meta.etag == second.etag


def test_location_pickles_without_a_live_store(s3: Any) -> None:
    loc = _upload(s3, "p.bin", b"abc")
    loc.reach()
    back = pickle.loads(pickle.dumps(loc))
    assert back == loc and back.store is None
    assert objstore.read_head(back, 3)[0] == b"abc"


def test_http_server_ranges_and_if_match(http: Any) -> None:
    (http.root / "h.bin").write_bytes(b"0123456789" * 10)
    loc = objstore.locate(f"{http.url}/h.bin", http.options)
    data, meta = objstore.read_head(loc, 5)
    assert data == b"01234" and meta.size == 100 and meta.etag
    assert objstore.read_range(loc, 95, 200, etag=meta.etag)[0] == b"56789"
    (http.root / "h.bin").write_bytes(b"x" * 100)
    with pytest.raises(FileChangedError):
        objstore.read_range(loc, 0, 5, etag=meta.etag)
    with pytest.raises(TetFileNotFoundError):
        objstore.read_head(objstore.locate(f"{http.url}/nope.bin", http.options), 5)


def test_refused_connection_is_bounded() -> None:
    from tests.servers import free_port
    loc = objstore.locate(f"http://127.0.0.1:{free_port()}/x.tet",
                          {"connect_timeout": "1s", "timeout": "2s", "max_retries": 1,
                           "retry_timeout": 3})
    with pytest.raises(objstore.RemoteError, match=r"reading `http://127\.0\.0\.1:\d+/x\.tet`"):
        objstore.read_head(loc, 10)
