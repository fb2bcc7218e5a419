"""/metrics' per-service families (http/samples.py): the same text prometheus_client
writes for the same families, and only the services that changed formatted again."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from bench.http.render import reference_page

from healthmon.http.samples import ServiceSamples
from healthmon.model import HealthCheckResult, HealthStatus
from healthmon.pace import Pace
from tests.conftest import LoopTurns

pytestmark = pytest.mark.asyncio

NAMES = ["api", 'we"ird\\na\nme', "agent:db", "ünïcode-服务", "x" * 200]


def _result(name: str, status: HealthStatus, ts: float, ms: float) -> HealthCheckResult:
    return HealthCheckResult(name, status, ms, ts, confirmed_status=status)


def _reference_text(
    results: Mapping[str, HealthCheckResult],
    since: Mapping[str, float],
    counts: Mapping[str, Mapping[HealthStatus, int]],
    missed: Mapping[str, int],
) -> str:
    """prometheus_client's rendering of the same families (bench/http/render.py's
    baseline: plain metric families, one sample at a time)."""
    return reference_page(results, since, counts, missed).decode()


async def test_the_text_is_prometheus_clients_own() -> None:
    statuses = list(HealthStatus)
    results = {
        name: _result(name, statuses[i % 4], 1796400000.125 + i, [0.0, 1.5, 12345678.9][i % 3])
        for i, name in enumerate(NAMES)
    }
    since = {name: 1796399000.5 + i for i, name in enumerate(NAMES) if i % 2 == 0}
    counts = {
        name: {status: (i + 1) * j for j, status in enumerate(HealthStatus)}
        for i, name in enumerate(NAMES)
    }
    missed = {name: i for i, name in enumerate(NAMES) if name != "agent:db"}
    missed["scheduled-not-checked-yet"] = 3  # a schedule without a result so far
    text = await ServiceSamples().text(results, since, counts, missed)
    assert text == _reference_text(results, since, counts, missed)


async def test_only_the_services_that_changed_are_formatted_again() -> None:
    samples = ServiceSamples()
    results = {f"s{i}": _result(f"s{i}", HealthStatus.HEALTHY, 1.0 + i, 2.0) for i in range(500)}
    counts = {name: {HealthStatus.HEALTHY: 1} for name in results}
    first = await samples.text(results, {}, counts, {})
    assert samples.formatted == 500
    assert await samples.text(results, {}, counts, {}) == first
    assert samples.formatted == 0
    results["s7"] = _result("s7", HealthStatus.UNHEALTHY, 99.0, 3.0)
    counts["s7"] = {HealthStatus.HEALTHY: 1, HealthStatus.UNHEALTHY: 1}
    second = await samples.text(results, {"s9": 5.0}, counts, {"s3": 1})
    assert samples.formatted == 3  # s7 (a result), s9 (since), s3 (missed): no other
    assert 'healthmon_service_status{service="s7",status="unhealthy"} 1.0' in second
    assert 'healthmon_service_status_since_timestamp_seconds{service="s9"} 5.0' in second
    assert 'healthmon_service_missed_checks_total{service="s3"} 1.0' in second
    del results["s1"]
    assert 'service="s1"' not in await samples.text(results, {}, counts, {})


async def test_formatting_lets_the_loop_go_as_its_pace_tells() -> None:
    results = {f"s{i}": _result(f"s{i}", HealthStatus.HEALTHY, 1.0 + i, 2.0) for i in range(300)}
    async with LoopTurns() as turns:
        text = await ServiceSamples().text(results, {}, {}, {}, Pace(0.0))
    assert turns.count >= 300  # a slice of no time: the loop turned after each service
    assert text.count("healthmon_service_check_success{") == 300
