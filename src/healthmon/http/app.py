"""`HttpApi`: the HTTP face as an ASGI application built from a monitor and its store.

Served by `healthmon run --http` (http/server.py) on the monitor's own loop, or
mounted by an application in its own ASGI server:

    api = HttpApi(monitor, store, HttpSettings(token=...))
    app = Starlette(routes=[Mount("/health", app=api)], lifespan=...)  # await api.start()

Served alone, it follows the ASGI lifespan protocol itself; mounted, the application
calls `await api.start()` and `await api.stop()` (or `async with api:`), as Starlette
does not pass lifespan events to mounted apps.

Read-only: nothing here changes the monitor or the store.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from types import TracebackType
from typing import Self

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from healthmon.errors import ApiError, StorageError
from healthmon.http import routes
from healthmon.http.budget import ReadBudget
from healthmon.http.feed import TransitionFeed
from healthmon.http.metrics import HttpGauges, MetricsPage
from healthmon.http.nodes import ClusterWatch
from healthmon.http.pages import StatusPages
from healthmon.http.settings import HttpSettings
from healthmon.http.shapes import error_response
from healthmon.http.streams import Gate
from healthmon.monitor import HealthMonitor
from healthmon.store import HealthStore

__all__ = ["OPEN_PATHS", "HttpApi"]

log = structlog.get_logger("healthmon.http")

OPEN_PATHS = frozenset({"/livez", "/readyz", "/api/v1/openapi.json"})
"""Paths served without the token: they tell nothing about the services."""


class HttpApi:
    """The ASGI app: JSON API, event stream, metrics, liveness and readiness."""

    def __init__(
        self,
        monitor: HealthMonitor,
        store: HealthStore,
        settings: HttpSettings | None = None,
    ) -> None:
        self.monitor = monitor
        self.store = store
        self.settings = HttpSettings() if settings is None else settings
        self.feed = TransitionFeed(monitor, store)
        self.streams = Gate(self.settings.max_streams)
        self.waiting = Gate(self.settings.max_waiting)
        self.exports = Gate(2)  # raw-results exports at once: each takes the loop's CPU
        # Store reads on clients' behalf: a few at once (the store's connection pool,
        # 15, is shared with the writer, which must never wait behind them), and a
        # bounded share of the time, so that the checks keep theirs (http/budget.py).
        self.reads = ReadBudget(share=self.settings.read_share)
        self.cluster = ClusterWatch(monitor, store)
        self.metrics = MetricsPage(
            monitor,
            self.feed,
            HttpGauges(streams=lambda: self.streams.held, waiting=lambda: self.waiting.held),
            self.settings.metrics_max_age,
            self.cluster,
        )
        self.started = False
        self.handling: set[asyncio.Task[object]] = set()
        """The tasks of the requests being answered (uvicorn runs one per request)."""
        self._cutting = False
        token = self.settings.token
        self._token = None if token is None else token.encode()
        self.pages = StatusPages(self)  # the status page: /, /services/..., /static/...
        self._app = Starlette(
            routes=[
                Route(path, endpoint, methods=["GET"])  # and HEAD: read-only
                for path, endpoint in routes.table(self)
            ]
            + self.pages.routes(),
            exception_handlers={
                ApiError: _api_error,
                StorageError: _storage_error,
                HTTPException: _http_exception,
            },
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start following the store's transitions (the store must be open)."""
        if not self.started:
            self._cutting = False
            await self.feed.start()
            await self.pages.start()
            self.started = True

    async def stop(self) -> None:
        """Stop: event streams and blocked queries end at once. Idempotent."""
        self.started = False
        await self.pages.stop()
        await self.feed.stop()

    async def cut(self, grace: float) -> None:
        """After `stop()`: wait up to `grace` seconds for the requests still being
        answered, then cancel the others and wait for them to end. A request cut
        before its answer began gets a 503; one cut mid-answer (a client reading too
        slowly, a store read queued) has its connection closed by the server, so the
        client sees the answer incomplete, and the cut is logged, without a traceback:
        a stop is no error. (Left to uvicorn, they would be cancelled after its own
        timeout, each with a traceback in the log, and not waited for.)"""
        if self.handling:
            await asyncio.wait(set(self.handling), timeout=grace)
        left = set(self.handling)
        if not left:
            return
        self._cutting = True
        for task in left:
            task.cancel()
        await asyncio.wait(left)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets
        path = scope["path"][len(scope.get("root_path", "")) :] or "/"
        if path not in OPEN_PATHS and not self._authorized(scope):
            await error_response(
                ApiError(401, "unauthorized", "this API needs `Authorization: Bearer <token>`"),
                {"WWW-Authenticate": 'Bearer realm="healthmon"'},
            )(scope, receive, send)
            return
        if not self.started:
            await error_response(
                ApiError(503, "not_started", "the HTTP face is not started (or stopping)"),
                {"Retry-After": "1"},
            )(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        self.handling.add(task)
        began = False

        async def sending(message: Message) -> None:
            nonlocal began
            began = True
            await send(message)

        try:
            await self._app(scope, receive, sending)
        except asyncio.CancelledError:
            if not self._cutting:
                raise  # not ours: the server's, or the client's going
            task.uncancel()
            log.warning("http_request_cut", path=path, answer_begun=began,
                        reason="still running when the server stopped")  # fmt: skip
            if not began:
                await error_response(
                    ApiError(503, "stopping", "the server stopped before answering; retry"),
                    {"Retry-After": "1", "Connection": "close"},
                )(scope, receive, send)
        finally:
            self.handling.discard(task)

    def _authorized(self, scope: Scope) -> bool:
        if self._token is None:
            return True
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                # Constant time: how much of a guess matches is not told by the timing.
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(), self._token
                )
        return False

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- for the routes -----------------------------------------------------------------

    def now(self) -> float:
        return time.time()


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _storage_error(request: Request, exc: Exception) -> Response:
    log.error("http_storage_error", path=request.url.path, error=str(exc))
    return error_response(
        ApiError(503, "storage_unavailable", "the database cannot be read just now; retry"),
        {"Retry-After": "5"},
    )


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
    message = {
        404: f"no such path: {request.url.path} (see /api/v1/openapi.json)",
        405: f"{request.method} is not allowed here; this API is read-only (GET)",
    }.get(exc.status_code, str(exc.detail))
    headers = dict(exc.headers or {})
    return error_response(ApiError(exc.status_code, code, message), headers)
