"""The HTTP check against real local servers: one case per kind of answer."""

from __future__ import annotations

import httpx
import pytest

from healthmon import HealthMonitor, HealthStatus
from healthmon.probe import new_http_client, probe_http
from healthmon.targets import TargetServer


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "status", "error", "details"),
    [
        ("/healthy", HealthStatus.HEALTHY, None, {"status": "ok"}),
        ("/text", HealthStatus.HEALTHY, None, None),
        ("/fail", HealthStatus.UNHEALTHY, "HTTP 500", None),
        ("/status/503", HealthStatus.UNHEALTHY, "HTTP 503", None),
        ("/status/204", HealthStatus.UNHEALTHY, "HTTP 204", None),
        ("/status/302", HealthStatus.UNHEALTHY, "HTTP 302", None),  # redirects not followed
        ("/hang", HealthStatus.UNHEALTHY, "timeout after 300 ms", None),
    ],
)
async def test_check_outcomes(
    targets: TargetServer,
    path: str,
    status: HealthStatus,
    error: str | None,
    details: dict[str, str] | None,
) -> None:
    monitor = HealthMonitor()
    try:
        result = await monitor._check_http_health("svc", targets.url(path), timeout=0.3)
    finally:
        await monitor.stop_monitoring()
    assert (result.status, result.error, result.details) == (status, error, details)
    assert result.service_name == "svc"
    assert result.response_time_ms > 0


@pytest.mark.asyncio
async def test_connection_refused_is_readable(refused_url: str) -> None:
    monitor = HealthMonitor()
    try:
        result = await monitor._check_http_health("svc", refused_url, timeout=2.0)
    finally:
        await monitor.stop_monitoring()
    assert result.status is HealthStatus.UNHEALTHY
    assert result.error == "connection refused"


@pytest.mark.asyncio
async def test_timeout_bounds_the_whole_check(targets: TargetServer) -> None:
    """A hanging target costs the check its timeout, not httpx's per-phase timeouts."""
    monitor = HealthMonitor()
    try:
        result = await monitor._check_http_health("svc", targets.url("/hang"), timeout=0.2)
    finally:
        await monitor.stop_monitoring()
    assert result.error == "timeout after 200 ms"
    assert 150 <= result.response_time_ms < 2000


@pytest.mark.asyncio
async def test_errors_keep_their_words_whatever_the_credentials(refused_url: str) -> None:
    """A password that happens to be a letter of the error must not be starred out."""
    monitor = HealthMonitor()
    url = refused_url.replace("http://", "http://u:e@")
    try:
        result = await monitor._check_http_health("svc", url, timeout=2.0)
    finally:
        await monitor.stop_monitoring()
    assert result.error == "connection refused"


@pytest.mark.asyncio
async def test_cookies_a_target_sets_are_not_kept(targets: TargetServer) -> None:
    """Every check sees the service as the first did: a session cookie set by the
    target would otherwise pin the following checks (`/cookie` fails them)."""
    monitor = HealthMonitor()
    url = targets.url("/cookie")
    try:
        results = [await monitor._check_http_health("svc", url, timeout=2.0) for _ in range(3)]
    finally:
        await monitor.stop_monitoring()
    assert [(r.status, r.error) for r in results] == [(HealthStatus.HEALTHY, None)] * 3


@pytest.mark.asyncio
async def test_cookies_set_on_the_client_are_sent(targets: TargetServer) -> None:
    async with new_http_client() as client:
        client.cookies = {"session": "given"}
        response = await client.get(targets.url("/cookie"))
    assert (response.status_code, response.json()["cookie"]) == (409, "session=given")


@pytest.mark.asyncio
async def test_a_url_quoted_in_an_error_is_redacted() -> None:
    """An HTTP stack's message may quote the URL: its secrets are starred as in logs."""
    url = "http://user:pw-s3cret@127.0.0.1:9/health?token=q-s3cret&period=5"

    def fail(request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"could not reach {url}")

    async with httpx.AsyncClient(transport=httpx.MockTransport(fail)) as client:
        result = await probe_http(client, "svc", url)
    assert result.error == (
        "RuntimeError: could not reach http://***@127.0.0.1:9/health?token=***&period=5"
    )
