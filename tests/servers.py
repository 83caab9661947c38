"""Real servers on 127.0.0.1 for the remote-file tests: an S3-compatible server (moto's,
behind a counting WSGI layer) and a plain HTTP file server with Range support.

Both count what they serve (`Traffic`: requests and body bytes, per method) and can be
told to misbehave (`Faults`: a status code, a stall, a truncated body), so tests check
request accounting and failure handling at the server, not in a mock.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import logging
import os
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the longest any fault may stall a request: a test never waits longer than this
MAX_STALL_S = 10.0

ACCESS_KEY, SECRET_KEY, REGION = "tet-test-key", "tet-test-secret", "us-east-1"


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    status: int
    sent: int  # body bytes


@dataclass
class Traffic:
    """What a server was asked and what it sent, since the last `reset`."""

    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, req: Request) -> None:
        with self.lock:
            self.requests.append(req)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()

    def of(self, path_part: str = "", method: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if path_part in r.path
                    and (method is None or r.method == method)]

    def count(self, path_part: str = "", method: str | None = None) -> int:
        return len(self.of(path_part, method))

    def bytes(self, path_part: str = "") -> int:
        return sum(r.sent for r in self.of(path_part))


@dataclass
class Faults:
    """Misbehaviour for requests whose path contains `match` (all when empty), for the
    next `times` of them (forever when None)."""

    status: int | None = None  # answer this status instead
    stall_s: float = 0.0  # wait this long before answering (capped at MAX_STALL_S)
    truncate: int | None = None  # send only this many body bytes of a GET
    match: str = ""
    times: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        self.status, self.stall_s, self.truncate, self.match, self.times = (
            None, 0.0, None, "", None)

    def take(self, path: str) -> tuple[int | None, float, int | None] | None:
        """The fault this request gets, if any (consuming one of `times`)."""
        with self.lock:
            active = self.status is not None or self.stall_s or self.truncate is not None
            if not active or self.match not in path:
                return None
            if self.times is not None:
                if self.times <= 0:
                    return None
                self.times -= 1
            return self.status, min(self.stall_s, MAX_STALL_S), self.truncate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _CountingApp:
    """WSGI layer in front of moto: counts, and applies `Faults`."""

    def __init__(self, app: Any, traffic: Traffic, faults: Faults) -> None:
        self.app, self.traffic, self.faults = app, traffic, faults

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        rng = environ.get("HTTP_RANGE")
        fault = self.faults.take(path)
        if fault is not None:
            status, stall, truncate = fault
            if stall:
                time.sleep(stall)
            if status is not None:
                body = f"<Error><Code>Injected</Code><Message>{status}</Message></Error>"
                start_response(f"{status} Injected", [("Content-Length", str(len(body)))])
                self.traffic.add(Request(method, path, rng, status, len(body)))
                return [body.encode()]
        else:
            truncate = None
        seen: dict[str, Any] = {}

        def recording_start(status: str, headers: list[tuple[str, str]],
                            exc_info: Any = None) -> Any:
            seen["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        chunks = b"".join(self.app(environ, recording_start))
        if truncate is not None and method == "GET":
            chunks = chunks[:truncate]
        self.traffic.add(Request(method, path, rng, seen.get("status", 0), len(chunks)))
        return [chunks]


@dataclass
class S3Server:
    endpoint: str
    traffic: Traffic
    faults: Faults
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def options(self) -> dict[str, Any]:
        """`storage_options` that reach this server."""
        return {"endpoint": self.endpoint, "access_key_id": ACCESS_KEY,
                "secret_access_key": SECRET_KEY, "region": REGION, "allow_http": True,
                "timeout": "5s", "connect_timeout": "2s", "max_retries": 2,
                "retry_timeout": 5}

    def create_bucket(self, name: str) -> None:
        req = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def _store(self, bucket: str) -> Any:
        from obstore.store import S3Store
        return S3Store(bucket, endpoint=self.endpoint, access_key_id=ACCESS_KEY,
                       secret_access_key=SECRET_KEY, region=REGION,
                       client_options={"allow_http": True, "timeout": self.options["timeout"]})

    def put(self, bucket: str, key: str, data: bytes) -> None:
        """Store `data` as `bucket/key` (a signed request, as any client sends)."""
        import obstore
        obstore.put(self._store(bucket), key, data)

    def get(self, bucket: str, key: str) -> bytes:
        import obstore
        return bytes(obstore.get(self._store(bucket), key).bytes())

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


def start_s3() -> S3Server:
    """moto's S3 on a free loopback port, counted; stop() when done."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    traffic, faults = Traffic(), Faults()
    app = _CountingApp(DomainDispatcherApplication(create_backend_app), traffic, faults)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True,
                         request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="s3-loopback", daemon=True)
    thread.start()
    return S3Server(f"http://127.0.0.1:{port}", traffic, faults, server, thread)


_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files under the server's root: HEAD, GET with one byte range, ETag and
    If-Match (412 when it differs), as object stores do."""

    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _file(self) -> Path | None:
        rel = urllib.request.url2pathname(self.path.split("?", 1)[0]).lstrip("/")
        p = (self.server.root / rel).resolve()
        if self.server.root.resolve() not in p.parents or not p.is_file():
            return None
        return p

    def _send(self, status: int, headers: dict[str, str], body: bytes,
              truncate: int | None = None) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        out = body if truncate is None else body[:truncate]
        # counted before the body goes out: a client that has its bytes sees the count
        self.server.traffic.add(Request(self.command, self.path, self.headers.get("Range"),
                                        status, 0 if self.command == "HEAD" else len(out)))
        if self.command != "HEAD":
            self.wfile.write(out)
        if truncate is not None:
            self.close_connection = True

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        fault = self.server.faults.take(self.path)
        truncate = None
        if fault is not None:
            status, stall, truncate = fault
            if stall:
                time.sleep(stall)
            if status is not None:
                self._send(status, {}, b"injected")
                return
        p = self._file()
        if p is None:
            self._send(404, {}, b"not found")
            return
        st = p.stat()
        etag = '"' + hashlib.sha1(f"{st.st_mtime_ns}-{st.st_size}-{st.st_ino}".encode()
                                  ).hexdigest()[:16] + '"'
        headers = {"ETag": etag, "Accept-Ranges": "bytes",
                   "Last-Modified": self.date_time_string(int(st.st_mtime))}
        want = self.headers.get("If-Match")
        if want is not None and want not in ("*", etag):
            self._send(412, {}, b"precondition failed")
            return
        data = p.read_bytes()
        rng = self.headers.get("Range")
        if rng is None:
            self._send(200, headers, data, truncate)
            return
        m = _RANGE.match(rng.strip())
        if m is None:
            self._send(416, {"Content-Range": f"bytes */{len(data)}"}, b"")
            return
        start = int(m.group(1))
        end = min(int(m.group(2)) + 1 if m.group(2) else len(data), len(data))
        if start >= len(data) or start >= end:
            self._send(416, {"Content-Range": f"bytes */{len(data)}"}, b"")
            return
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        self._send(206, headers, data[start:end], truncate)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    traffic: Traffic
    faults: Faults


@dataclass
class HTTPServer:
    url: str
    root: Path
    traffic: Traffic
    faults: Faults
    _server: _HTTPServer
    _thread: threading.Thread

    @property
    def options(self) -> dict[str, Any]:
        return {"allow_http": True, "timeout": "5s", "connect_timeout": "2s",
                "max_retries": 2, "retry_timeout": 5}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def start_http(root: Path) -> HTTPServer:
    """An HTTP server for the files under `root` on a free loopback port."""
    server = _HTTPServer(("127.0.0.1", 0), _RangeHandler)
    server.root, server.traffic, server.faults = root, Traffic(), Faults()
    thread = threading.Thread(target=server.serve_forever, name="http-loopback", daemon=True)
    thread.start()
    port = server.server_address[1]
    return HTTPServer(f"http://127.0.0.1:{port}", root, server.traffic, server.faults,
                      server, thread)


@contextlib.contextmanager
def env(**values: str | None) -> Iterator[None]:
    """Set (or, with None, unset) environment variables for the block."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
