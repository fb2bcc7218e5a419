"""The HTTP check against real local servers: one case per kind of answer."""

from __future__ import annotations

import httpx
import pytest

from healthmon import CheckPolicy, HealthCheckResult, HealthMonitor, HealthStatus
from healthmon.probe import new_http_client, probe_http
from healthmon.targets import TargetServer
from healthmon.transport import BodyTooLarge, CappedTransport


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


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/healthy", "/gzipped", "/endless"])
async def test_a_response_reads_as_httpx_makes_one(targets: TargetServer, path: str) -> None:
    """The transport hands httpx a response whose body it has read (and decoded, and
    capped): it must read as one httpx made from that content, read again or not."""
    async with new_http_client(CheckPolicy(max_body_bytes=1000)) as client:
        if path == "/endless":  # chunked, never ends: capped
            with pytest.raises(BodyTooLarge):
                await client.get(targets.url(path))
            return
        response = await client.get(targets.url(path))
        async with client.stream("GET", targets.url(path)) as streamed:
            chunks = [chunk async for chunk in streamed.aiter_bytes()]
    like = httpx.Response(200, content=b'{"status": "ok"}')
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "content-encoding" not in response.headers  # decoded here: httpx must not again
    assert (response.content, response.text, response.json()) == (
        like.content,
        like.text,
        like.json(),
    )
    assert (await response.aread(), response.read()) == (like.content, like.content)
    assert (response.is_closed, response.is_stream_consumed) == (True, True)
    assert response.http_version == "HTTP/1.1"
    assert response.reason_phrase == "OK"
    assert b"".join(chunks) == like.content
    await response.aclose()


@pytest.mark.asyncio
async def test_a_gzipped_body_is_read_decoded(targets: TargetServer) -> None:
    result = await check_service(targets.url("/gzipped?status=DOWN"))
    assert (result.status, result.error, result.details) == (
        HealthStatus.UNHEALTHY,
        "body status DOWN",
        {"status": "DOWN"},
    )


async def check_service(url: str) -> HealthCheckResult:
    async with new_http_client() as client:
        return await probe_http(client, "svc", url)


@pytest.mark.asyncio
async def test_capped_transport_caps_any_transport(targets: TargetServer) -> None:
    """An application's own client gets the cap by wrapping its transport (docs/checks.md)."""
    transport = CappedTransport(httpx.AsyncHTTPTransport(), max_body_bytes=1000)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(BodyTooLarge):
            await client.get(targets.url("/big?bytes=5000"))
        with pytest.raises(BodyTooLarge):
            await client.get(targets.url("/gzipbomb?mb=1"))
        response = await client.get(targets.url("/gzipped"))
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
