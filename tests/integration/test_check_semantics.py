"""Check semantics against real local servers: codes, bodies, latency, caps, redirects,
TLS, proxies, headers, thresholds and start periods."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from healthmon import (
    CheckPolicy,
    HealthCheckResult,
    HealthMonitor,
    HealthStatus,
    HealthStore,
    ServiceDefinition,
)
from healthmon.targets import TargetServer
from tests.conftest import wait_for

H, U, D, K = (
    HealthStatus.HEALTHY,
    HealthStatus.UNHEALTHY,
    HealthStatus.DEGRADED,
    HealthStatus.UNKNOWN,
)
DATA = Path(__file__).resolve().parents[1] / "data"


async def check_once(
    service: ServiceDefinition, policy: CheckPolicy | None = None
) -> HealthCheckResult:
    """One check of `service` through a monitor, as the schedule would run it."""
    monitor = HealthMonitor(policy=policy)
    monitor.add_service(service)
    try:
        return await monitor.check_health(service.name)
    finally:
        await monitor.stop_monitoring()


def svc(url: str, **overrides: Any) -> ServiceDefinition:
    return ServiceDefinition("svc", "http", "tests.svc", [], url, **overrides)


# -- status codes, bodies, latency ------------------------------------------------------

CASES: list[tuple[str, dict[str, Any], HealthStatus, str | None]] = [
    # success codes
    ("/status/204", {}, U, "HTTP 204"),
    ("/status/204", {"success_codes": "200-399"}, H, None),
    ("/status/302", {"success_codes": "200-399"}, H, None),
    ("/status/204", {"success_codes": "2xx"}, H, None),
    ("/status/301", {"success_codes": "2xx"}, U, "HTTP 301"),
    ("/status/503", {"success_codes": "200,503"}, H, None),
    ("/fail", {}, U, "HTTP 500"),
    # application/health+json
    ("/health+json?status=pass", {}, H, None),
    ("/health+json?status=ok", {}, H, None),
    ("/health+json?status=up", {}, H, None),
    ("/health+json?status=warn", {}, D, "health+json status warn"),
    ("/health+json?status=fail", {}, U, "health+json status fail"),
    ("/health+json?status=error", {}, U, "health+json status error"),
    ("/health+json?status=down", {}, U, "health+json status down"),
    # Spring Boot Actuator
    ("/actuator?status=UP", {}, H, None),
    ("/actuator?status=DOWN", {}, U, "body status DOWN"),
    ("/actuator?status=OUT_OF_SERVICE", {}, U, "body status OUT_OF_SERVICE"),
    ("/actuator?status=UNKNOWN", {}, K, "body status UNKNOWN"),
    # plain JSON
    ("/json?status=ok", {}, H, None),
    ("/json?status=healthy", {}, H, None),
    ("/json?status=degraded", {}, D, "body status degraded"),
    ("/json?status=unhealthy", {}, U, "body status unhealthy"),
    ("/json?status=something-else", {}, H, None),  # unknown words leave it to the code
    ("/badjson", {}, H, None),  # unparsable: the code decides
    ("/text", {}, H, None),
    # latency
    ("/slow?ms=150", {"degraded_after_ms": 50}, D, "slow"),
    ("/slow?ms=10", {"degraded_after_ms": 2000}, H, None),
    ("/health+json?status=fail", {"degraded_after_ms": 2000}, U, "health+json status fail"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "overrides", "status", "error"), CASES)
async def test_codes_bodies_and_latency(
    targets: TargetServer,
    path: str,
    overrides: dict[str, Any],
    status: HealthStatus,
    error: str | None,
) -> None:
    result = await check_once(svc(targets.url(path), **overrides))
    assert result.status is status
    if error is None:
        assert result.error is None
    else:
        assert result.error is not None
        assert result.error.startswith(error)


@pytest.mark.asyncio
async def test_details_are_the_json_object_and_none_when_unparsable(targets: TargetServer) -> None:
    assert (await check_once(svc(targets.url("/json?status=x")))).details == {"status": "x"}
    assert (await check_once(svc(targets.url("/badjson")))).details is None


@pytest.mark.asyncio
async def test_monitor_wide_defaults_and_service_overrides(targets: TargetServer) -> None:
    monitor = HealthMonitor(policy=CheckPolicy(success_codes="2xx", degraded_after_ms=5000))
    monitor.add_service(ServiceDefinition("a", "http", "m", [], targets.url("/status/204")))
    monitor.add_service(
        ServiceDefinition("b", "http", "m", [], targets.url("/status/204"), success_codes="200")
    )
    try:
        assert (await monitor.check_health("a")).status is H
        assert (await monitor.check_health("b")).error == "HTTP 204"
        assert monitor.policy_for("b").degraded_after_ms == 5000  # inherited
    finally:
        await monitor.stop_monitoring()


# -- bodies that are too big, endless or slow ----------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "overrides", "error"),
    [
        ("/big?bytes=70000", {}, "body over 65536 bytes"),
        ("/big?bytes=1000", {"max_body_bytes": 500}, "body over 500 bytes"),
        ("/endless", {}, "body over 65536 bytes"),
        ("/gzipbomb?mb=50", {}, "body over 65536 bytes"),
        ("/drip?interval=0.2", {"timeout": 0.5}, "timeout after 500 ms"),
    ],
)
async def test_body_cap(
    targets: TargetServer, path: str, overrides: dict[str, Any], error: str
) -> None:
    result = await check_once(svc(targets.url(path), **overrides))
    assert (result.status, result.error) == (U, error)
    assert result.response_time_ms < 5000


@pytest.mark.asyncio
async def test_a_body_within_the_cap_is_fine(targets: TargetServer) -> None:
    result = await check_once(svc(targets.url("/big?bytes=65536")))
    assert (result.status, result.error) == (H, None)


# -- redirects, headers, credentials ------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "overrides", "status", "error"),
    [
        ("/redirect", {}, U, "HTTP 302"),
        ("/redirect", {"follow_redirects": True}, H, None),
        ("/redirect-loop", {"follow_redirects": True}, U, "too many redirects"),
        ("/auth", {}, U, "HTTP 401"),
        ("/auth", {"headers": {"Authorization": "Bearer letmein"}}, H, None),
    ],
)
async def test_redirects_and_headers(
    targets: TargetServer,
    path: str,
    overrides: dict[str, Any],
    status: HealthStatus,
    error: str | None,
) -> None:
    result = await check_once(svc(targets.url(path), **overrides))
    assert (result.status, result.error) == (status, error)


@pytest.mark.asyncio
async def test_credentials_never_reach_the_database_or_the_logs(
    targets: TargetServer, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password, token, query_token = "hunter2", "letmein", "q-s3cret"
    authed = targets.url("/auth").replace("http://", f"http://user:{password}@")
    failing = targets.url("/fail").replace("http://", f"http://user:{password}@")
    async with HealthStore(db_path) as store:
        monitor = HealthMonitor(0.05, store=store)
        monitor.add_service(ServiceDefinition("basic", "http", "m", [], authed))
        monitor.add_service(ServiceDefinition("failing", "http", "m", [], failing))
        in_query = targets.url("/healthy") + f"?token={query_token}"
        monitor.add_service(ServiceDefinition("query", "http", "m", [], in_query))
        monitor.add_service(
            ServiceDefinition(
                "bearer",
                "http",
                "m",
                [],
                targets.url("/auth"),
                headers={"Authorization": f"Bearer {token}"},
            )
        )
        async with monitor:
            await wait_for(
                lambda: all(
                    targets.hits(path) >= n
                    for path, n in (("/auth", 6), ("/fail", 3), ("/healthy", 3))
                )
            )
        health = monitor.get_cluster_health()
        assert health["basic"].status is H  # the URL's credentials were used...
        assert health["bearer"].status is H
        assert health["failing"].error == "HTTP 500"
        services = {s.name: s for s in [*monitor.services.values()]}
        assert health["query"].status is H
        assert password not in repr(services)
        assert token not in repr(services)
        assert query_token not in repr(services)
    stored = b"".join(p.read_bytes() for p in db_path.parent.glob("health.db*"))
    logged = capsys.readouterr()
    for secret in (password, token, query_token):  # ...and kept everywhere else
        assert secret.encode() not in stored
        assert secret not in logged.out + logged.err
    assert b"http://***@127.0.0.1" in stored
    assert b"?token=***" in stored


# -- TLS and proxies ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_tls_is_verified_unless_asked_otherwise(tls_targets: TargetServer) -> None:
    url = tls_targets.url("/healthy")
    verified = await check_once(svc(url))
    assert (verified.status, verified.error) == (U, "TLS: certificate verify failed")
    unverified = await check_once(svc(url, verify_tls=False))
    assert (unverified.status, unverified.error) == (H, None)


@pytest.mark.asyncio
async def test_environment_proxies_are_ignored_unless_asked(
    targets: TargetServer, refused_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = refused_url.removesuffix("/health")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("http_proxy", proxy)
    direct = await check_once(svc(targets.url("/healthy")))
    assert (direct.status, direct.error) == (H, None)
    via_proxy = await check_once(svc(targets.url("/healthy"), trust_env=True))
    assert (via_proxy.status, via_proxy.error) == (U, "connection refused")
    assert targets.hits("/healthy") == 1


# -- thresholds and start periods, on exact sequences ---------------------------------------

OK, FAIL = 200, 500


async def run_script(
    targets: TargetServer, db_path: Path, codes: list[int], **overrides: Any
) -> tuple[list[HealthStatus], list[tuple[HealthStatus | None, HealthStatus, int]]]:
    """Serve `codes`, one per check at 20 Hz; return the stored statuses, and the
    transitions as (from, to, index of the scripted result that caused it)."""
    targets.script(*codes)
    async with HealthStore(db_path) as store:
        monitor = HealthMonitor(0.05, store=store)
        monitor.add_service(svc(targets.url("/scripted"), **overrides))
        async with monitor:
            # One check in flight at a time: request n+1 means result n was recorded.
            await wait_for(lambda: targets.hits("/scripted") > len(codes))
        results = (await store.results("svc"))[: len(codes)]
        transitions = await store.transitions("svc")
    times = [r.timestamp for r in results]
    return (
        [r.status for r in results],
        [
            (t.from_status, t.to_status, times.index(t.timestamp))
            for t in transitions
            if t.timestamp in times
        ],
    )


@pytest.mark.asyncio
async def test_failure_threshold_three(targets: TargetServer, db_path: Path) -> None:
    codes = [OK, OK, FAIL, FAIL, OK, FAIL, FAIL, FAIL]
    observed, transitions = await run_script(targets, db_path, codes, failure_threshold=3)
    assert observed == [H, H, U, U, H, U, U, U]  # every raw result stored as observed
    # the first status, then one transition: at the third consecutive failure
    assert transitions == [(None, H, 0), (H, U, 7)]


@pytest.mark.asyncio
async def test_success_threshold_two(targets: TargetServer, db_path: Path) -> None:
    codes = [FAIL, OK, FAIL, OK, OK, OK]
    _, transitions = await run_script(targets, db_path, codes, success_threshold=2)
    assert transitions == [(None, U, 0), (U, H, 4)]


@pytest.mark.asyncio
async def test_cache_says_observed_and_confirmed(targets: TargetServer, db_path: Path) -> None:
    targets.script(OK, *[FAIL] * 100)
    async with HealthStore(db_path) as store:
        monitor = HealthMonitor(0.05, store=store)
        monitor.add_service(svc(targets.url("/scripted"), failure_threshold=50))
        async with monitor:
            await wait_for(lambda: targets.hits("/scripted") >= 5)
            latest = monitor.get_cluster_health()["svc"]
            assert (latest.status, latest.confirmed_status) == (U, H)  # observed, confirmed
            assert latest.effective_status is H
            assert monitor.get_cluster_status() is H
        stored = await store.results("svc")
        transitions = await store.transitions("svc")
    assert [r.status for r in stored[:4]] == [H, U, U, U]  # stored as observed
    assert [(t.from_status, t.to_status) for t in transitions] == [(None, H)]


@pytest.mark.asyncio
async def test_start_period_ignores_failures_until_healthy(
    targets: TargetServer, db_path: Path
) -> None:
    codes = [FAIL, FAIL, FAIL, OK, FAIL]
    observed, transitions = await run_script(targets, db_path, codes, start_period=30.0)
    assert observed == [U, U, U, H, U]
    # UNKNOWN while starting (no transition), the healthy result ends the period
    assert transitions == [(None, H, 3), (H, U, 4)]


@pytest.mark.asyncio
async def test_start_period_ends_by_itself(targets: TargetServer) -> None:
    monitor = HealthMonitor(0.05)
    monitor.add_service(svc(targets.url("/fail"), start_period=0.3))
    async with monitor:
        await asyncio.sleep(0.15)
        assert monitor.get_cluster_health()["svc"].confirmed_status is K
        assert monitor.get_cluster_status() is K
        await wait_for(lambda: monitor.get_cluster_status() is U)


# -- per-service interval ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_per_service_interval(targets: TargetServer) -> None:
    monitor = HealthMonitor(1.0)
    monitor.add_service(
        ServiceDefinition("fast", "http", "m", [], targets.url("/healthy"), interval=0.05)
    )
    monitor.add_service(ServiceDefinition("slow", "http", "m", [], targets.url("/text")))
    async with monitor:
        await wait_for(lambda: targets.hits("/healthy") >= 10)
        assert targets.hits("/text") <= 2  # 1 Hz: the first check, maybe a second


# -- agents -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_agents_get_thresholds_and_vanish_to_unknown(db_path: Path) -> None:
    reports: dict[str, dict[str, str]] = {}

    class Adapter:
        def get_agent_statuses(self) -> dict[str, dict[str, str]]:
            return dict(reports)

    adapter = Adapter()
    heard: list[tuple[str, HealthStatus]] = []

    async def on_change(result: HealthCheckResult) -> None:
        heard.append((result.service_name, result.effective_status))

    async with HealthStore(db_path) as store:
        monitor = HealthMonitor(policy=CheckPolicy(failure_threshold=2), store=store)
        monitor.subscribe(on_change)
        reports["w"] = {"status": "running", "health": "healthy"}
        await monitor.check_agents_health(adapter)
        reports["w"] = {"status": "running", "health": "degraded"}
        await monitor.check_agents_health(adapter)
        assert monitor.get_cluster_status() is H  # one degraded report: not yet
        await monitor.check_agents_health(adapter)
        assert monitor.get_cluster_status() is D
        del reports["w"]
        await monitor.check_agents_health(adapter)
        assert monitor.get_cluster_health()["agent:w"].error == "agent no longer reported"
        assert monitor.get_cluster_status() is K
        transitions = await store.transitions("agent:w")
    assert [(t.from_status, t.to_status) for t in transitions] == [(None, H), (H, D), (D, K)]
    assert heard == [("agent:w", H), ("agent:w", D), ("agent:w", K)]
