"""Streamed responses that cost bounded memory: each write waits for the client
to take the previous ones (the server's flow control) at most `send_timeout`
seconds, and the response ends when the client goes away.

Used for the event stream and the raw-results export. A client that stops reading
holds one task and the server's write buffer (64 KiB), never a growing queue; after
`send_timeout` its response is abandoned and its connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Iterator

import structlog
from starlette.types import Message, Receive, Send

__all__ = ["Gate", "stream"]

log = structlog.get_logger("healthmon.http")


class Gate:
    """At most `limit` holders at once (event streams, blocked queries)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def full(self) -> bool:
        return self.held >= self.limit

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


async def stream(
    send: Send,
    receive: Receive,
    *,
    status: int,
    headers: list[tuple[bytes, bytes]],
    chunks: Callable[[], AsyncGenerator[bytes]],
    send_timeout: float,
    what: str,
    head: bool = False,
) -> None:
    """Send a response whose body is `chunks()`, until it ends or the client leaves;
    for a HEAD request, only the head (a stream would otherwise run on, unsent)."""

    async def body() -> None:
        await _send(send, {"type": "http.response.start", "status": status, "headers": headers})
        if head:
            await _send(send, {"type": "http.response.body", "body": b"", "more_body": False})
            return
        async with contextlib.aclosing(chunks()) as produced:
            async for chunk in produced:
                await _send(send, {"type": "http.response.body", "body": chunk, "more_body": True})
        await _send(send, {"type": "http.response.body", "body": b"", "more_body": False})

    async def _send(send: Send, message: Message) -> None:
        async with asyncio.timeout(send_timeout):
            await send(message)

    work = asyncio.ensure_future(body())
    watcher = asyncio.ensure_future(_until_disconnect(receive))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, watcher):
            task.cancel()
        await asyncio.gather(work, watcher, return_exceptions=True)
    if work.done() and not work.cancelled() and (error := work.exception()) is not None:
        if isinstance(error, TimeoutError):
            # The client reads nothing: its response is abandoned (the server closes
            # the connection), so it holds no task or buffer any longer.
            log.warning("http_client_too_slow", what=what, send_timeout_s=send_timeout)
            return
        raise error
