"""Local HTTP targets for examples, demos and tests: a real server on 127.0.0.1.

Routes (each answers with Content-Length and keeps the connection alive)::

    /healthy              200 application/json {"status": "ok"}
    /fail                 500
    /text                 200 text/plain
    /status/<code>        <code>
    /slow?ms=N            200 JSON after N milliseconds
    /flip?period=S        200 JSON for S seconds, then 503 for S seconds, and so on
    /hang                 accepts and never answers (until the server stops)

The server runs in a thread, so it serves while the event loop under test runs.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit

__all__ = ["TargetServer"]

_HANG_LIMIT_S = 120.0  # a hanging handler gives up by itself even if stop() is never called


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    routes: ClassVar[dict[str, str]] = {
        "/healthy": "_healthy",
        "/fail": "_fail",
        "/text": "_text",
        "/slow": "_slow",
        "/flip": "_flip",
        "/hang": "_hang",
    }

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

    def _hang(self, _query: dict[str, str]) -> None:
        self.server.stopping.wait(_HANG_LIMIT_S)
        self.close_connection = True

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a hanging handler must not hold up stop()

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()

    def count(self, path: str) -> None:
        with self._lock:
            self.hits[path] = self.hits.get(path, 0) + 1


class TargetServer:
    """A threaded HTTP server on 127.0.0.1 with the routes above."""

    def __init__(self) -> None:
        self._server = _Server()
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
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> int:
        """How many requests `path` has received."""
        with self._server._lock:
            return self._server.hits.get(path, 0)

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
