"""/metrics' per-service families (http/samples.py): the same text prometheus_client
writes for the same families, and only the services that changed formatted again."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from healthmon.http.samples import FAMILIES, ServiceSamples
from healthmon.model import HealthCheckResult, HealthStatus

pytestmark = pytest.mark.asyncio

NAMES = ["api", 'we"ird\\na\nme', "agent:db", "ünïcode-服务", "x" * 200]


def _result(name: str, status: HealthStatus, ts: float, ms: float) -> HealthCheckResult:
    return HealthCheckResult(name, status, ms, ts, confirmed_status=status)


class _Reference(Collector):
    """The families as the collector before http/samples.py built them: plain
    prometheus_client metric families, one sample at a time."""

    def __init__(
        self,
        results: Mapping[str, HealthCheckResult],
        since: Mapping[str, float],
        counts: Mapping[str, Mapping[HealthStatus, int]],
        missed: Mapping[str, int],
    ) -> None:
        self.args = results, since, counts, missed

    def collect(self) -> Iterator[Metric]:
        results, since, counts, missed = self.args
        families: list[GaugeMetricFamily | CounterMetricFamily] = []
        for family in FAMILIES:
            labels = ["service", "status"] if family.name in {
                "healthmon_service_status", "healthmon_service_checks_total"
            } else ["service"]  # fmt: skip
            if family.kind == "counter":
                name = family.name.removesuffix("_total")
                families.append(CounterMetricFamily(name, family.help, labels=labels))
            else:
                families.append(GaugeMetricFamily(family.name, family.help, labels=labels))
        status, since_f, success, latency, last, checks, missed_f = families
        for name, result in results.items():
            for value in HealthStatus:
                status.add_metric([name, value.value], float(value is result.effective_status))
            if name in since:
                since_f.add_metric([name], since[name])
            ok = result.status in {HealthStatus.HEALTHY, HealthStatus.DEGRADED}
            success.add_metric([name], 1.0 if ok else 0.0)
            latency.add_metric([name], result.response_time_ms / 1000)
            last.add_metric([name], result.timestamp)
            for value, count in counts.get(name, {}).items():
                if count:
                    checks.add_metric([name, value.value], count)
        for name, count in missed.items():
            missed_f.add_metric([name], count)
        yield from families


def _reference_text(*args: Mapping[str, object]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Reference(*args))  # type: ignore[arg-type]  # the four mappings
    return generate_latest(registry).decode()


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
