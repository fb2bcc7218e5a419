"""One HTTP health check: a GET through an `httpx.AsyncClient`, judged by a policy.

The probe knows HTTP and nothing of scheduling or storage. It never raises for a
failed check: every outcome is a `HealthCheckResult` whose error is short, stable
and good for grouping: `HTTP 503`, `timeout after 500 ms`, `connection refused`,
`body over 65536 bytes`, `health+json status fail`, `TLS: certificate verify failed`,
`connection closed mid-body`.

A result says whether the target `answered`: an HTTP response's status line and
headers arrived before the timeout. So every HTTP status, a body's verdict
(`body status DOWN`), `body over N bytes`, `too many redirects`, `connection closed
mid-body` and `body could not be decoded` are answered; a timeout (even mid-body),
a refused, reset or closed connection without a response, TLS and DNS errors are not.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
import ssl
import time
from collections.abc import Mapping
from http.cookiejar import CookieJar
from importlib.metadata import version
from typing import Any

import aiohttp
import httpx

from healthmon.formats import read_body
from healthmon.log import guard_http_logs
from healthmon.model import HealthCheckResult, HealthStatus, redact_urls_in
from healthmon.policy import CheckPolicy
from healthmon.transport import BodyTooLarge, CheckTransport, proxy_for, responded, ssl_context

__all__ = ["CheckClient", "describe_error", "new_http_client", "probe_http"]

guard_http_logs()

# The cookie forms httpx accepts (its own alias, `CookieTypes`, is private).
_CookieTypes = httpx.Cookies | CookieJar | dict[str, str] | list[tuple[str, str]]

DEFAULT_POLICY = CheckPolicy()
_HEADERS = {
    "User-Agent": f"healthmon/{version('healthmon')}",
    # A health check has no use for compression; asking for none also spares the cap.
    "Accept-Encoding": "identity",
}


def new_http_client(
    policy: CheckPolicy = DEFAULT_POLICY, url: str | None = None
) -> httpx.AsyncClient:
    """A client for checks under `policy` (of `url`, when it serves one service).

    A health check goes straight to its target: proxies from the environment only
    with `trust_env`, redirects only with `follow_redirects`, TLS verified unless
    `verify_tls` is off, and never more than `max_body_bytes` of a body read.
    """
    guard_http_logs()  # the HTTP stack's loggers, some made as it is first used
    proxy = proxy_for(url) if policy.trust_env and url is not None else None
    # httpx's client (the seed's contract patches its `get`) over aiohttp's connection
    # pool: 1.7x less CPU per check than over httpcore (bench/README.md).
    transport = CheckTransport(
        policy.max_body_bytes,
        verify=ssl_context(policy.verify_tls),
        proxy=None if proxy is None else httpx.Proxy(proxy),
    )
    return CheckClient(
        transport=transport,
        follow_redirects=policy.follow_redirects,
        trust_env=False,  # the proxy, if any, is chosen above, under the cap
        headers=_HEADERS,
        timeout=policy.timeout,
    )


class _UnkeptCookies(httpx.Cookies):
    """Cookies set on the client are sent; cookies a target sets are not kept.

    A check must see the service as the first check did: a kept session cookie would
    pin every check to one backend behind a sticky load balancer. (Keeping them is
    also a tenth of a check's CPU: httpx builds a urllib request per response.)
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class CheckClient(httpx.AsyncClient):
    """httpx's client, whose cookie jar never takes a target's cookies."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cookies = kwargs.get("cookies")

    @property
    def cookies(self) -> httpx.Cookies:
        return self._unkept_cookies

    @cookies.setter
    def cookies(self, cookies: _CookieTypes | None) -> None:
        self._unkept_cookies = _UnkeptCookies(cookies)


async def probe_http(
    client: httpx.AsyncClient,
    service_name: str,
    url: str,
    policy: CheckPolicy = DEFAULT_POLICY,
    headers: Mapping[str, str] | None = None,
) -> HealthCheckResult:
    """GET `url` and judge the answer by `policy`.

    `policy.timeout` bounds the whole check, not only each network phase, so a
    target that drips its answer cannot hold the check longer than that.
    """
    started = time.perf_counter()
    details = None
    status = HealthStatus.UNHEALTHY
    error: str | None = None
    response: httpx.Response | None = None
    answered = True  # an HTTP response arrived (and the check did not time out)
    with responded() as arrived:
        try:
            async with asyncio.timeout(policy.timeout):
                response = await client.get(
                    _parsed(url),
                    headers=headers,
                    timeout=policy.timeout,
                    follow_redirects=policy.follow_redirects,
                )
        except BodyTooLarge as exc:  # the headers came: the body is over the cap
            error = str(exc)
        # The transport lets aiohttp's errors that have no httpx kind through unchanged.
        except (TimeoutError, httpx.HTTPError, aiohttp.ClientError) as exc:
            error = describe_error(exc, policy.timeout)
            # A timeout's time is the timeout's, not the service's.
            answered = not isinstance(exc, TimeoutError | httpx.TimeoutException) and (
                arrived() or _after_a_response(exc)
            )
        except Exception as exc:  # a check never raises: the error says what went wrong
            # Something the HTTP stack was not expected to raise: still a result, whose
            # error names it (credentials scrubbed below), rather than a traceback in
            # the log that may quote the URL.
            error = f"{type(exc).__name__}: {_first_line(exc)}"
            answered = arrived()
    if response is not None:
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        if response.status_code not in policy.codes:
            error = f"HTTP {response.status_code}"
        else:
            report = read_body(response)
            details = report.details
            status, error = HealthStatus.HEALTHY, None
            if report.status is not None and report.status is not HealthStatus.HEALTHY:
                status, error = report.status, report.said
            elif policy.degraded_after_ms is not None and elapsed_ms > policy.degraded_after_ms:
                status = HealthStatus.DEGRADED
                error = f"slow: {elapsed_ms:.0f} ms over {policy.degraded_after_ms:.0f} ms"
    return HealthCheckResult(
        service_name=service_name,
        status=status,
        response_time_ms=(time.perf_counter() - started) * 1000.0,
        timestamp=time.time(),
        details=details,
        error=None if error is None else _without_credentials(error),
        answered=answered,
    )


def describe_error(exc: BaseException, timeout: float) -> str:
    """A short, stable description of a failed request, for grouping and for people.

    httpx (and aiohttp under it) wrap the OS and TLS errors; the cause chain holds
    the precise reason. It is looked at before the exception's own type, which is
    coarser (an application's own transport may map every aiohttp connection error
    to httpx.ConnectTimeout, as httpx-aiohttp does): a refused connection must not
    read as a timeout.
    """
    for cause in _cause_chain(exc):
        if (described := _describe_cause(cause)) is not None:
            return described
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"timeout after {timeout * 1000:.0f} ms"
    if isinstance(exc, httpx.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, httpx.RemoteProtocolError):
        return _protocol_error(exc)
    if isinstance(exc, httpx.DecodingError):
        return "body could not be decoded"
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _describe_cause(cause: BaseException) -> str | None:  # noqa: PLR0911 - a lookup table
    if isinstance(cause, ssl.SSLCertVerificationError | aiohttp.ClientConnectorCertificateError):
        return "TLS: certificate verify failed"
    if isinstance(cause, ssl.SSLError):
        return f"TLS: {(cause.reason or 'handshake failed').lower().replace('_', ' ')}"
    if isinstance(cause, socket.gaierror | aiohttp.ClientConnectorDNSError):
        return "DNS: host name does not resolve"
    if isinstance(cause, ConnectionRefusedError) or (
        isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
    ):
        return "connection refused"
    if isinstance(cause, ConnectionResetError):
        return "connection reset"
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return "connection closed without a response"
    if isinstance(cause, aiohttp.ClientPayloadError):
        return "connection closed mid-body"
    if isinstance(cause, aiohttp.ClientResponseError):
        return "protocol error: invalid response"  # its message quotes the garbage
    return None


def _after_a_response(exc: BaseException) -> bool:
    """Errors that come only once a response's status line and headers arrived,
    whatever the client (healthmon's transport marks an arrival itself; an
    application's own client does not): a redirect loop, a body that ends early or
    cannot be decoded."""
    if isinstance(exc, httpx.TooManyRedirects | httpx.DecodingError):
        return True
    if isinstance(exc, httpx.RemoteProtocolError) and _MID_BODY in str(exc):
        return True
    return any(isinstance(cause, aiohttp.ClientPayloadError) for cause in _cause_chain(exc))


_MID_BODY = "without sending complete message body"  # h11's words for a body cut short


def _protocol_error(exc: httpx.RemoteProtocolError) -> str:
    # h11's texts carry byte counts; keep the kind, for grouping.
    text = str(exc)
    if _MID_BODY in text:
        return "connection closed mid-body"
    if "without sending a response" in text or "disconnected" in text.lower():
        return "connection closed without a response"
    return f"protocol error: {_first_line(exc)}"


@functools.lru_cache(maxsize=4096)
def _parsed(url: str) -> httpx.URL:
    """Parsed once, not at every check (parsing is a few percent of a check's CPU)."""
    return httpx.URL(url)


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no detail"


def _without_credentials(error: str) -> str:
    """Errors may quote a third-party message, which may quote a URL: redact any URL
    in it as everywhere else (`redact_url`). (Our own texts never contain one, so they
    keep their exact form for grouping.)"""
    return redact_urls_in(error)
