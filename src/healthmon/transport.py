"""The HTTP transport under every check: a cap on how much of a body is read.

The cap sits below `httpx.AsyncClient.get` (the seed's contract patches that call),
as a transport that wraps httpx's own. A body larger than the cap, announced or
not, ends the read with `BodyTooLarge`: memory never grows with what a target
sends. Compressed bodies are decompressed here, under the same cap, so a gzip
bomb of a few kilobytes cannot expand into gigabytes in httpx's decoder.

The body is read whole (it is capped) before the response is handed up, even to
`client.stream()`: a health check always reads its answer, and a response that
already holds its content spares httpx's stream layers a third of their work.
"""

from __future__ import annotations

import contextlib
import ssl
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from functools import cache
from urllib.parse import urlsplit

import certifi
import httpx

__all__ = ["BodyTooLarge", "CappedTransport", "proxy_for", "responded", "ssl_context"]

_RESPONDED: ContextVar[bool] = ContextVar("healthmon_responded", default=False)


@contextlib.contextmanager
def responded() -> Iterator[Callable[[], bool]]:
    """Around one request: `responded()()` says whether a response's status line and
    headers arrived through a `CappedTransport`, even when reading its body failed
    after (the body over the cap, the connection closed mid-body, a bad encoding)."""
    token = _RESPONDED.set(False)
    try:
        yield _RESPONDED.get
    finally:
        _RESPONDED.reset(token)


_DECOMPRESSED = ("gzip", "x-gzip", "deflate")


class BodyTooLarge(Exception):  # noqa: N818 - a condition, named as the error text reads
    """The response body is larger than the cap."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body over {limit} bytes")
        self.limit = limit


class CappedTransport(httpx.AsyncBaseTransport):
    """Wraps a transport so that no response body beyond `max_body_bytes` is read."""

    def __init__(self, inner: httpx.AsyncBaseTransport, max_body_bytes: int) -> None:
        self._inner = inner
        self.max_body_bytes = max_body_bytes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # Read the (empty) body of a check first: httpx-aiohttp sends a stream it finds
        # unread, as a redirect's is, chunked, and the server then reads the chunked
        # terminator as a request of its own.
        await request.aread()
        if request.url.userinfo:
            # httpx has turned the URL's credentials into an Authorization header;
            # aiohttp refuses a request that carries both.
            request.url = request.url.copy_with(userinfo=b"")
        response = await self._inner.handle_async_request(request)
        _RESPONDED.set(True)  # the target answered, whatever its body does next
        try:
            limit = self.max_body_bytes
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise BodyTooLarge(limit)
            headers = response.headers
            decoder = None
            if headers.get("content-encoding", "").strip().lower() in _DECOMPRESSED:
                # Decode here, capped; httpx must then not decode again.
                decoder = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # gzip or zlib header
                headers = httpx.Headers(
                    [
                        (k, v)
                        for k, v in headers.multi_items()
                        if k.lower() not in ("content-encoding", "content-length")
                    ]
                )
            body = await _read_capped(response.stream, limit, decoder)
        finally:
            await response.aclose()
        # The body is read here, so the response holds it as content: httpx's own
        # stream layers (four nested async generators per body) have nothing to do.
        return httpx.Response(
            status_code=response.status_code,
            headers=headers,
            content=body,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _read_capped(
    stream: httpx.SyncByteStream | httpx.AsyncByteStream,
    limit: int,
    decoder: zlib._Decompress | None,
) -> bytes:
    assert isinstance(stream, httpx.AsyncByteStream)  # what httpx's async transports give
    chunks: list[bytes] = []
    received = 0
    async for raw in stream:
        chunk = raw
        if decoder is not None:
            # Ask for one byte more than the room left: getting it means "over".
            chunk = _decompress(decoder, raw, limit - received + 1)
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    if decoder is not None:
        tail = _decompress(decoder, b"", limit - received + 1, final=True)
        if received + len(tail) > limit:
            raise BodyTooLarge(limit)
        chunks.append(tail)
    return b"".join(chunks)


def _decompress(
    decoder: zlib._Decompress, data: bytes, max_length: int, *, final: bool = False
) -> bytes:
    try:
        return decoder.flush(max_length) if final else decoder.decompress(data, max_length)
    except zlib.error as exc:
        raise httpx.DecodingError(f"invalid compressed body: {exc}") from exc


@cache
def ssl_context(verify: bool) -> ssl.SSLContext:
    """One context per setting, shared by every client: building one loads the CA bundle."""
    context = ssl.create_default_context(cafile=certifi.where())
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def proxy_for(url: str) -> str | None:
    """The proxy the environment (HTTP_PROXY, NO_PROXY, ...) names for `url`, if any."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy is None or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy
