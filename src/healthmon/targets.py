"""Local HTTP targets for examples, demos and tests: a real server on 127.0.0.1.

Routes (each answers with Content-Length and keeps the connection alive)::

    /healthy              200 application/json {"status": "ok"}
    /fail                 500
    /text                 200 text/plain
    /status/<code>        <code>
    /slow?ms=N            200 JSON after N milliseconds
    /flip?period=S        200 JSON for S seconds, then 503 for S seconds, and so on
    /hang                 accepts and never answers (until the server stops)
    /json?status=X        200 application/json {"status": X}
    /health+json?status=X 200 application/health+json {"status": X} (IETF draft)
    /actuator?status=X    200 Spring Boot Actuator's media type, {"status": X}
    /badjson              200 application/json that does not parse
    /big?bytes=N          200 with an N-byte body (Content-Length announced)
    /endless              200 chunked, a body that never ends
    /drip?interval=S      200, Content-Length 100, one byte every S seconds
    /gzipbomb?mb=N        200 gzip-encoded: a few kB that expand to N MB of zeros
    /gzipped?status=X     200 application/json {"status": X} (default "ok"), gzip-encoded
    /redirect             302 to /healthy
    /redirect-loop        302 to itself
    /auth                 200 with `Authorization: Bearer letmein` or user:hunter2, else 401
    /reset                headers, part of the body, then a connection reset
    /scripted             the next status code of `TargetServer.script(...)` (200 when done)
    /ramp?ms=N&period=S   200 JSON, ever slower: 0 to N milliseconds over S seconds, repeating

The server runs in a thread, so it serves while the event loop under test runs.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import select
import socket
import ssl
import struct
import sys
import threading
import time
from collections import deque
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit

__all__ = ["TargetServer"]

_HANG_LIMIT_S = 120.0  # a hanging handler gives up by itself even if stop() is never called


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm
    # holds the body back until the client's delayed ACK (~40 ms a request).
    disable_nagle_algorithm = True
    server: _Server
    routes: ClassVar[dict[str, str]] = {
        "/healthy": "_healthy",
        "/fail": "_fail",
        "/text": "_text",
        "/slow": "_slow",
        "/flip": "_flip",
        "/hang": "_hang",
        "/ramp": "_ramp",
        "/json": "_json",
        "/health+json": "_health_json",
        "/actuator": "_actuator",
        "/badjson": "_badjson",
        "/big": "_big",
        "/endless": "_endless",
        "/drip": "_drip",
        "/gzipbomb": "_gzipbomb",
        "/gzipped": "_gzipped",
        "/redirect": "_redirect",
        "/redirect-loop": "_redirect_loop",
        "/auth": "_auth",
        "/reset": "_reset",
        "/scripted": "_scripted",
        "/cookie": "_cookie",
    }
    accepted_credentials: ClassVar[set[str]] = {"Bearer letmein", "Basic dXNlcjpodW50ZXIy"}

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        self.server.count(parts.path)
        if parts.path.startswith("/status/"):
            self._send(int(parts.path.removeprefix("/status/")), b"", "text/plain")
            return
        handler = self.routes.get(parts.path)
        if handler is None:
            self._send(404, b"no such target", "text/plain")
            return
        getattr(self, handler)(query)

    def _healthy(self, _query: dict[str, str]) -> None:
        self._send_json(200, {"status": "ok"})

    def _fail(self, _query: dict[str, str]) -> None:
        self._send_json(500, {"status": "fail"})

    def _text(self, _query: dict[str, str]) -> None:
        self._send(200, b"OK", "text/plain")

    def _slow(self, query: dict[str, str]) -> None:
        time.sleep(float(query.get("ms", "200")) / 1000.0)
        self._send_json(200, {"status": "ok"})

    def _flip(self, query: dict[str, str]) -> None:
        period = float(query.get("period", "1.0"))
        phase = int((time.monotonic() - self.server.started) / period) % 2
        if phase == 0:
            self._send_json(200, {"status": "ok"})
        else:
            self._send_json(503, {"status": "fail"})

    def _ramp(self, query: dict[str, str]) -> None:
        period = float(query.get("period", "10.0"))
        elapsed = (time.monotonic() - self.server.started) % period
        time.sleep(float(query.get("ms", "200")) / 1000.0 * elapsed / period)
        self._send_json(200, {"status": "ok"})

    def _hang(self, _query: dict[str, str]) -> None:
        # Never answer, but let go once the client gives up, so that abandoned
        # requests do not pile up sockets and threads in the server.
        deadline = time.monotonic() + _HANG_LIMIT_S
        while not self.server.stopping.wait(0.05) and time.monotonic() < deadline:
            if self._client_left():
                break
        self.close_connection = True

    def _client_left(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            peeked: bytes = self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True
        return not peeked

    def _json(self, query: dict[str, str]) -> None:
        self._send_json(200, {"status": query.get("status", "ok")})

    def _health_json(self, query: dict[str, str]) -> None:
        body = json.dumps({"status": query.get("status", "pass")}).encode()
        self._send(200, body, "application/health+json")

    def _actuator(self, query: dict[str, str]) -> None:
        body = json.dumps({"status": query.get("status", "UP")}).encode()
        self._send(200, body, "application/vnd.spring-boot.actuator.v3+json")

    def _badjson(self, _query: dict[str, str]) -> None:
        self._send(200, b'{"status": "ok"', "application/json")

    def _big(self, query: dict[str, str]) -> None:
        size = int(query.get("bytes", "100000"))
        self._start(200, "text/plain", length=size)
        chunk = b"x" * 65536
        with contextlib.suppress(ConnectionError):  # the check hung up: capped or timed out
            while size > 0:
                self.wfile.write(chunk[:size])
                size -= len(chunk)

    def _endless(self, _query: dict[str, str]) -> None:
        self._start(200, "text/plain", chunked=True)
        chunk = b"%x\r\n%s\r\n" % (4096, b"x" * 4096)
        with contextlib.suppress(ConnectionError):  # the check hung up: capped or timed out
            while not self.server.stopping.is_set():
                self.wfile.write(chunk)
        self.close_connection = True

    def _drip(self, query: dict[str, str]) -> None:
        interval = float(query.get("interval", "1.0"))
        self._start(200, "text/plain", length=100)
        with contextlib.suppress(ConnectionError):  # the check hung up: capped or timed out
            for _ in range(100):
                if self.server.stopping.wait(interval):
                    break
                self.wfile.write(b"x")
                self.wfile.flush()
        self.close_connection = True

    def _gzipbomb(self, query: dict[str, str]) -> None:
        body = _zeros_gzipped(int(query.get("mb", "100")))
        self._start(200, "text/plain", length=len(body), encoding="gzip")
        with contextlib.suppress(ConnectionError):  # the check hung up: capped or timed out
            self.wfile.write(body)

    def _gzipped(self, query: dict[str, str]) -> None:
        body = gzip.compress(json.dumps({"status": query.get("status", "ok")}).encode())
        self._start(200, "application/json", length=len(body), encoding="gzip")
        self.wfile.write(body)

    def _redirect(self, _query: dict[str, str]) -> None:
        self._redirect_to("/healthy")

    def _redirect_loop(self, _query: dict[str, str]) -> None:
        self._redirect_to("/redirect-loop")

    def _auth(self, _query: dict[str, str]) -> None:
        if self.headers.get("Authorization") in self.accepted_credentials:
            self._send_json(200, {"status": "ok"})
        else:
            self._send_json(401, {"status": "unauthorized"})

    def _reset(self, _query: dict[str, str]) -> None:
        self._start(200, "text/plain", length=1000)
        self.wfile.write(b"x" * 10)
        self.wfile.flush()
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _cookie(self, _query: dict[str, str]) -> None:
        # Sets a session cookie, and fails a request that brings one back.
        if self.headers.get("Cookie"):
            self._send_json(409, {"status": "cookie came back", "cookie": self.headers["Cookie"]})
            return
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Set-Cookie", "session=pinned; Path=/")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _scripted(self, _query: dict[str, str]) -> None:
        self._send_json(self.server.next_scripted(), {"status": "scripted"})

    def _redirect_to(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _start(
        self,
        code: int,
        content_type: str,
        *,
        length: int | None = None,
        chunked: bool = False,
        encoding: str | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        if encoding is not None:
            self.send_header("Content-Encoding", encoding)
        self.end_headers()

    def _send_json(self, code: int, body: dict[str, Any]) -> None:
        self._send(code, json.dumps(body).encode(), "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a target at 20 Hz would flood stderr


@cache
def _zeros_gzipped(megabytes: int) -> bytes:
    return gzip.compress(b"\0" * (megabytes * 1024 * 1024), compresslevel=9)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a hanging handler must not hold up stop()
    # socketserver's default listen backlog is 5: when more clients connect at once
    # than the one accepting thread takes (a cluster node starting ten checks of
    # services taken over), Linux drops the extra SYNs and each client retries only
    # after TCP's first retransmission timeout, one second later. Real servers queue
    # hundreds (somaxconn); so does this one.
    request_queue_size = 1024

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self.hits: dict[str, int] = {}
        self.scripted: deque[int] = deque()
        self._lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A check that gave up (timeout, body cap) hangs up on us: expected, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def next_scripted(self) -> int:
        with self._lock:
            return self.scripted.popleft() if self.scripted else 200

    def count(self, path: str) -> None:
        with self._lock:
            self.hits[path] = self.hits.get(path, 0) + 1


class TargetServer:
    """A threaded HTTP server on 127.0.0.1 with the routes above (HTTPS with `tls`)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._scheme = "http" if tls is None else "https"
        self._server = _Server(tls)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="healthmon-targets",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> int:
        """How many requests `path` has received."""
        with self._server._lock:
            return self._server.hits.get(path, 0)

    def script(self, *codes: int) -> None:
        """Queue the status codes that /scripted answers, one per request."""
        with self._server._lock:
            self._server.scripted.extend(codes)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release hanging requests, stop serving and close the listening socket."""
        self._server.stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
