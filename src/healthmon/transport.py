"""The HTTP transport under every check: aiohttp's connection pool, a capped body.

`CheckTransport` is what `httpx.AsyncClient.get` (the seed's contract patches that
call) sends a check through: an httpx transport over one aiohttp `ClientSession`
(1.7x less CPU per check than httpx's own pool, bench/README.md). A body larger
than the cap, announced or not, ends the read with `BodyTooLarge`: memory never
grows with what a target sends. Compressed bodies are decompressed here, under the
same cap, so a gzip bomb of a few kilobytes cannot expand into gigabytes in httpx's
decoder.

The body is read whole (it is capped) before the response is handed up, even to
`client.stream()`: a health check always reads its answer, and a response that
already holds its content spares httpx's stream layers their work.

It does in one layer what httpx-aiohttp's `AiohttpTransport` under a capping wrapper
did in two, and per request only what a request needs: aiohttp's timeout settings
are made once per value, the headers go over as plain pairs, the body is read
straight from aiohttp's stream (issue 16: ~60 us less CPU per check,
bench/README.md).
"""

from __future__ import annotations

import ssl
import urllib.request
import zlib
from collections.abc import AsyncIterable, Callable, Mapping
from contextvars import ContextVar
from functools import cache, lru_cache
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import certifi
import httpx

__all__ = [
    "BodyTooLarge",
    "CappedTransport",
    "CheckTransport",
    "proxy_for",
    "responded",
    "ssl_context",
]

_RESPONDED: ContextVar[bool] = ContextVar("healthmon_responded", default=False)


def responded() -> _Responded:
    """Around one request (`with responded() as arrived:`): `arrived()` says whether a
    response's status line and headers arrived through a `CheckTransport`, even when
    reading its body failed after (the body over the cap, the connection closed
    mid-body, a bad encoding)."""
    return _Responded()


class _Responded:
    """`responded()`'s context manager: a class, as it is on every check's path
    (contextlib's generator-based one costs ~3 us more)."""

    __slots__ = ("_token",)

    def __enter__(self) -> Callable[[], bool]:
        self._token = _RESPONDED.set(False)
        return _RESPONDED.get

    def __exit__(self, *exc_info: object) -> None:
        _RESPONDED.reset(self._token)


_DECOMPRESSED = ("gzip", "x-gzip", "deflate")
_HTTP_11 = {"http_version": b"HTTP/1.1"}


class BodyTooLarge(Exception):  # noqa: N818 - a condition, named as the error text reads
    """The response body is larger than the cap."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body over {limit} bytes")
        self.limit = limit


class CheckTransport(httpx.AsyncBaseTransport):
    """httpx's transport interface over one aiohttp session, reading at most
    `max_body_bytes` of a body. TLS as `verify` says; a proxy only if given."""

    def __init__(
        self,
        max_body_bytes: int,
        *,
        verify: ssl.SSLContext,
        proxy: httpx.Proxy | None = None,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self._verify = verify
        self._proxy: dict[str, Any] = {}
        if proxy is not None:  # its credentials, if any, go as aiohttp's proxy auth
            auth = None if proxy.auth is None else aiohttp.BasicAuth(*proxy.auth)
            self._proxy = {
                "proxy": str(proxy.url),
                "proxy_auth": auth,
                "proxy_headers": proxy.headers,
            }
        self._session: aiohttp.ClientSession | None = None  # made in the loop, when first used

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # Read the (empty) body of a check first: a redirect's request comes with a
        # stream not read yet, which aiohttp would send chunked.
        body = await request.aread() or None
        url = request.url
        if url.userinfo:
            # httpx has turned the URL's credentials into an Authorization header;
            # aiohttp refuses a request that carries both.
            url = url.copy_with(userinfo=b"")
        extensions = request.extensions
        session = self._session
        if session is None:
            session = self._session = _new_session(self._verify)
        limit = self.max_body_bytes
        try:
            async with session.request(
                request.method,
                str(url),
                headers=[
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                ],
                data=body,
                allow_redirects=False,
                auto_decompress=False,
                timeout=_client_timeout(extensions.get("timeout")),
                server_hostname=extensions.get("sni_hostname"),
                **self._proxy,
            ) as response:
                _RESPONDED.set(True)  # the target answered, whatever its body does next
                headers: Any = response.raw_headers
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise BodyTooLarge(limit)
                decoder = None
                encoding = response.headers.get("Content-Encoding", "")
                if encoding and encoding.strip().lower() in _DECOMPRESSED:
                    # Decode here, capped; httpx must then not decode again.
                    decoder = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # gzip or zlib
                    headers = [
                        (k, v)
                        for k, v in headers
                        if k.lower() not in (b"content-encoding", b"content-length")
                    ]
                content = await _read_capped(response.content.iter_any(), limit, decoder)
                reason = response.reason
        except aiohttp.ClientError as exc:
            raise _as_httpx(exc) from exc
        return _read_response(
            response.status,
            headers,
            content,
            _HTTP_11 if not reason else {**_HTTP_11, "reason_phrase": reason.encode()},
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _read_response(
    status: int, headers: Any, content: bytes, extensions: dict[str, Any]
) -> httpx.Response:
    """A response holding its body, read and decoded here: as `httpx.Response(content=...)`
    leaves it, without reading that content again through httpx's decoders and
    chunkers (15 us of CPU per check, ~5 % of it). httpx's client then finds it read."""
    response = httpx.Response(
        status, headers=headers, stream=httpx.ByteStream(content), extensions=extensions
    )
    # httpx (pinned <0.29) keeps a read body in `_content`; tests/integration/test_probe.py
    # checks that such a response reads as one made with `content=`.
    response._content = content
    response.is_stream_consumed = response.is_closed = True
    return response


def _new_session(verify: ssl.SSLContext) -> aiohttp.ClientSession:
    # httpx's default limits: 100 connections, idle ones kept 5 s.
    connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=5.0, ssl=verify)
    return aiohttp.ClientSession(connector=connector, trust_env=False)


@lru_cache(maxsize=64)
def _timeout(
    connect: float | None, read: float | None, pool: float | None
) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(sock_connect=connect, sock_read=read, connect=pool)


def _client_timeout(timeouts: Mapping[str, float | None] | None) -> aiohttp.ClientTimeout:
    """httpx's timeouts (connect, read, pool) as aiohttp's; write has no match there."""
    if not timeouts:
        return _timeout(None, None, None)
    return _timeout(timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool"))


_MAPPED: tuple[tuple[type[aiohttp.ClientError], type[httpx.HTTPError]], ...] = (
    # First match wins: the specific kinds before the ones they belong to. The probe's
    # words come from the cause (chained); what matters here is which are timeouts.
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.TimeoutException),
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.InvalidUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS
    (aiohttp.ClientPayloadError, httpx.ReadError),  # the body cut short
    (aiohttp.ClientConnectionError, httpx.ReadError),  # closed or reset once connected
)


def _as_httpx(exc: aiohttp.ClientError) -> Exception:
    """aiohttp's error as httpx's (chained by the caller); one it has no kind for
    (e.g. an invalid response) goes up as it is."""
    for kind, mapped in _MAPPED:
        if isinstance(exc, kind):
            return mapped(str(exc))
    return exc


class CappedTransport(httpx.AsyncBaseTransport):
    """Wraps any httpx transport so that no response body beyond `max_body_bytes` is
    read (for an application's own client; healthmon's use `CheckTransport`)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, max_body_bytes: int) -> None:
        self._inner = inner
        self.max_body_bytes = max_body_bytes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # A redirect's request comes with a stream not read yet, which some transports
        # (httpx-aiohttp's) would send chunked: read it first.
        await request.aread()
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
            stream = response.stream
            assert isinstance(stream, httpx.AsyncByteStream)  # what async transports give
            body = await _read_capped(stream, limit, decoder)
        finally:
            await response.aclose()
        return _read_response(response.status_code, headers, body, response.extensions)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _read_capped(
    chunks: AsyncIterable[bytes], limit: int, decoder: zlib._Decompress | None
) -> bytes:
    """The body, decoded if `decoder`, or BodyTooLarge once it is over `limit`."""
    kept: list[bytes] = []
    received = 0
    async for raw in chunks:
        chunk = raw
        if decoder is not None:
            # Ask for one byte more than the room left: getting it means "over".
            chunk = _decompress(decoder, raw, limit - received + 1)
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge(limit)
        kept.append(chunk)
    if decoder is not None:
        tail = _decompress(decoder, b"", limit - received + 1, final=True)
        if received + len(tail) > limit:
            raise BodyTooLarge(limit)
        kept.append(tail)
    return b"".join(kept)


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
