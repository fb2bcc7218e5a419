"""One HTTP health check: a GET through an `httpx.AsyncClient`, turned into a result.

The probe knows HTTP and nothing of scheduling or storage. It never raises for a
failed check: every outcome is a `HealthCheckResult`, with a short, stable error
text that groups well (`HTTP 503`, `timeout after 500 ms`, `connection refused`).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from typing import Any

import httpx

from healthmon.model import HealthCheckResult, HealthStatus

__all__ = ["describe_error", "new_http_client", "probe_http"]


def new_http_client() -> httpx.AsyncClient:
    """The client the monitor uses when the caller passes none.

    A health check goes straight to its target: no proxies from the environment and
    no redirects followed (a redirect is an answer, judged by its status code).
    """
    return httpx.AsyncClient(follow_redirects=False, trust_env=False)


async def probe_http(
    client: httpx.AsyncClient, service_name: str, url: str, timeout: float
) -> HealthCheckResult:
    """GET `url` and judge the answer: 200 is HEALTHY, anything else UNHEALTHY.

    `timeout` bounds the whole check, not only each network phase, so a target that
    drips its answer cannot hold the check longer than it.
    """
    started = time.perf_counter()
    details: dict[str, Any] | None = None
    error: str | None
    try:
        async with asyncio.timeout(timeout):
            response = await client.get(url, timeout=timeout)
    except (TimeoutError, httpx.TimeoutException):
        status, error = HealthStatus.UNHEALTHY, f"timeout after {timeout * 1000:.0f} ms"
    except httpx.HTTPError as exc:
        status, error = HealthStatus.UNHEALTHY, describe_error(exc)
    else:
        if response.status_code == 200:
            status, error = HealthStatus.HEALTHY, None
            details = _json_details(response)
        else:
            status, error = HealthStatus.UNHEALTHY, f"HTTP {response.status_code}"
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    return HealthCheckResult(
        service_name=service_name,
        status=status,
        response_time_ms=elapsed_ms,
        timestamp=time.time(),
        details=details,
        error=error,
    )


def _json_details(response: httpx.Response) -> dict[str, Any] | None:
    """The body as details when it is a JSON object; None for anything else."""
    content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not (content_type == "application/json" or content_type.endswith("+json")):
        return None
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):  # json.JSONDecodeError is a ValueError
        return None
    return body if isinstance(body, dict) else None


def describe_error(exc: BaseException) -> str:  # noqa: PLR0911 - a lookup table, in order
    """A short, stable description of a transport error, for grouping and for people.

    httpx wraps the OS and TLS errors; the cause chain holds the precise reason.
    """
    for cause in _cause_chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS: certificate verify failed ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {(cause.reason or 'handshake failed').lower().replace('_', ' ')}"
        if isinstance(cause, socket.gaierror):
            return "DNS: host name does not resolve"
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"protocol error: {_first_line(exc)}"
    if isinstance(exc, httpx.ConnectError):
        return f"connect error: {_first_line(exc)}"
    if isinstance(exc, httpx.ReadError):
        return "connection reset" if "reset" in str(exc).lower() else "read error"
    if isinstance(exc, httpx.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, httpx.DecodingError):
        return "body could not be decoded"
    return f"{type(exc).__name__}: {_first_line(exc)}"


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
