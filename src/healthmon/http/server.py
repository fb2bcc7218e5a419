"""`HttpServer`: uvicorn serving an `HttpApi` on the running (the monitor's) event loop.

The socket is bound here, so that an address in use is a ServeError naming it, and
port 0 gives a free port (`server.port` tells which). Stopping ends the event streams
and blocked queries first (the app's stop), then lets uvicorn close the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from types import TracebackType
from typing import Self

import structlog
import uvicorn

from healthmon.errors import ServeError
from healthmon.http.app import HttpApi

__all__ = ["HttpServer"]

log = structlog.get_logger("healthmon.http")


class HttpServer:
    """Serve `api` on host:port (from its settings) until stopped."""

    def __init__(self, api: HttpApi, *, shutdown_timeout: int = 1) -> None:
        self.api = api
        self._shutdown_timeout = shutdown_timeout
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._ticks: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self) -> None:
        if self._server is not None:
            return
        settings = self.api.settings
        try:
            settings.check_exposure()
        except ValueError as exc:
            raise ServeError(str(exc)) from None
        sock = _bind(settings.host, settings.port)
        config = uvicorn.Config(
            self.api,
            lifespan="off",  # the app is started here, with the monitor's loop already running
            log_config=None,
            access_log=False,
            server_header=False,
            limit_concurrency=settings.max_connections,
            # A backstop only: the app cuts its own requests after shutdown_timeout
            # (HttpApi.cut), cleanly; uvicorn's would be cancelled with a traceback each.
            timeout_graceful_shutdown=self._shutdown_timeout + 5,
            timeout_keep_alive=5,
        )
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        server = uvicorn.Server(config)
        try:
            await self.api.start()
            config.load()
            server.lifespan = config.lifespan_class(config)
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            await self.api.stop()
            raise
        self._server, self._socket = server, sock
        self.port = sock.getsockname()[1]
        # uvicorn's own loop ticks the Date header each second and notices should_exit.
        self._ticks = asyncio.create_task(server.main_loop(), name="healthmon-http-ticks")
        log.info("http_listening", host=settings.host, port=self.port,
                 auth="bearer token" if settings.token else "none")  # fmt: skip

    async def stop(self) -> None:
        """End streams and waits, close every connection, release the port. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        await self.api.stop()  # event streams and blocked queries end now
        server.should_exit = True
        if self._ticks is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticks
            self._ticks = None
        try:
            # uvicorn closes the listening socket and the idle connections and waits
            # for the others; meanwhile the app cuts what still runs after the grace.
            await asyncio.gather(
                server.shutdown(sockets=[self._socket] if self._socket else None),
                self.api.cut(self._shutdown_timeout),
            )
        finally:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
        log.info("http_stopped")

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


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    # With the protocol given (IPPROTO_TCP), asyncio sets TCP_NODELAY on accepted
    # connections; with 0 it does not, and Nagle's algorithm then holds a response's
    # body behind its head for the client's delayed ACK: 40 ms a request.
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock
