"""The least an HTTP/1.1 client can cost: one keep-alive connection over asyncio streams.

The fleet part times the server's answers from a client process. httpx spends
0.3-1 ms of Python on each response; with forty streams and long-polls woken by one
commit in one client process, the last of them was read ~15 ms after it arrived, and
a probe's round trip carried a millisecond or two of the client: figures of the
client, not of the server. This client parses a status line, the headers and a
Content-Length or chunked body, nothing more (no redirects, no compression, no TLS,
no reconnection: a connection idle past the server's keep-alive timeout, 5 s, fails).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

__all__ = ["RawConnection"]


class RawConnection:
    """One connection to `host:port`, its requests one after another."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self._host, self._port = host, port
        self._auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Self:
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()

    async def get(self, target: str) -> tuple[int, dict[str, str], bytes]:
        """GET `target` (path and query): the status, the headers (names in lower
        case) and the whole body."""
        status, headers = await self._request(target)
        return status, headers, b"".join([chunk async for chunk in self._body(headers)])

    async def stream(self, target: str) -> AsyncIterator[bytes]:
        """GET `target` and hand over its body's pieces as they come (an event stream's
        chunks: the server sends each write as one); a status other than 200 raises."""
        status, headers = await self._request(target)
        if status != 200:
            body = b"".join([chunk async for chunk in self._body(headers)])
            raise RuntimeError(f"GET {target}: {status} {body[:200]!r}")
        async for chunk in self._body(headers):
            yield chunk

    async def _request(self, target: str) -> tuple[int, dict[str, str]]:
        assert self._reader is not None, "not connected"
        assert self._writer is not None
        self._writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n{self._auth}\r\n".encode()
        )
        await self._writer.drain()
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def _body(self, headers: dict[str, str]) -> AsyncIterator[bytes]:
        assert self._reader is not None
        if "content-length" in headers:
            yield await self._reader.readexactly(int(headers["content-length"]))
            return
        if headers.get("transfer-encoding", "").lower() != "chunked":
            raise ValueError(f"a body of unknown length: {headers}")
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await self._reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailer fields (uvicorn sends none)
                return
            chunk = await self._reader.readexactly(size + 2)  # with its CRLF
            yield chunk[:-2]
