"""`/metrics` and `/api/v1/cluster` made in-process at 1,000 services:
`python -m bench.http.render` (about 20 s; `--services N`, `--rounds N`).

1,000 agents in a monitor with a SQLite store; each page is made `rounds` times
after every service got a new result (all changed: a scrape every check interval or
more) and with nothing changed since the last one (scrapes more frequent than
checks). For each: the time to make it (the loop let go in between: what a client
waits) and the longest loop step meanwhile (what a check due then waits). The bare
baseline, in the same run: prometheus_client's `generate_latest` over the same
per-service families built as plain metric families (how the page was made before),
on the loop and in a thread. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.events
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.datastructures import QueryParams

from bench.http.worker import _Agents
from healthmon import HealthMonitor, HealthStore
from healthmon.http import HttpApi, HttpSettings
from healthmon.http.samples import FAMILIES
from healthmon.log import configure_logging
from healthmon.model import HealthCheckResult, HealthStatus

__all__ = ["ReferenceFamilies", "main"]

_SUCCEEDED = {HealthStatus.HEALTHY, HealthStatus.DEGRADED}


class ReferenceFamilies(Collector):
    """The per-service families as plain prometheus_client metric families, one
    sample at a time (how http/metrics.py built them before http/samples.py)."""

    def __init__(
        self,
        results: Mapping[str, HealthCheckResult],
        since: Mapping[str, float],
        counts: Mapping[str, Mapping[HealthStatus, int]],
        missed: Mapping[str, int],
    ) -> None:
        self.results, self.since, self.counts, self.missed = results, since, counts, missed

    def collect(self) -> Iterator[Metric]:
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
        status, since, success, latency, last, checks, missed = families
        for name, result in self.results.items():
            for value in HealthStatus:
                status.add_metric([name, value.value], float(value is result.effective_status))
            if name in self.since:
                since.add_metric([name], self.since[name])
            success.add_metric([name], 1.0 if result.status in _SUCCEEDED else 0.0)
            latency.add_metric([name], result.response_time_ms / 1000)
            last.add_metric([name], result.timestamp)
            for value, count in self.counts.get(name, {}).items():
                if count:
                    checks.add_metric([name, value.value], count)
        for name, count in self.missed.items():
            missed.add_metric([name], count)
        yield from families


def reference_page(
    results: Mapping[str, HealthCheckResult],
    since: Mapping[str, float],
    counts: Mapping[str, Mapping[HealthStatus, int]],
    missed: Mapping[str, int],
) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReferenceFamilies(results, since, counts, missed))
    return generate_latest(registry)


_steps: list[float] = []


def _hook_steps() -> Callable[[], None]:
    """Time every loop step (asyncio's Handle._run), as asyncio debug's slow-callback
    log does, for the longest one."""
    run = asyncio.events.Handle._run

    def timed(handle: asyncio.Handle) -> None:
        started = time.perf_counter()
        run(handle)
        _steps.append(time.perf_counter() - started)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]  # bench hook

    def undo() -> None:
        asyncio.events.Handle._run = run  # type: ignore[method-assign]

    return undo


async def _measure(
    make: Callable[[], Any], change: Callable[[], Any] | None, rounds: int
) -> tuple[float, float]:
    """Median time to make the page, and the median of each round's longest step."""
    took, longest = [], []
    for _ in range(rounds):
        if change is not None:
            await change()
        await asyncio.sleep(0.3)  # the writer's flush, before the measurement
        _steps.clear()
        started = time.perf_counter()
        await asyncio.create_task(make())  # its own task: its steps are timed
        took.append(time.perf_counter() - started)
        longest.append(max(_steps, default=0.0))
    return statistics.median(took), statistics.median(longest)


async def _run(services: int, rounds: int) -> None:
    configure_logging("warning", "json")
    with tempfile.TemporaryDirectory(prefix="healthmon-bench-render-") as folder:
        async with HealthStore(Path(folder) / "bench.db") as store:
            monitor = HealthMonitor(1.0, store=store)
            agents = _Agents(services)
            async with monitor:
                await monitor.check_agents_health(agents)
                api = HttpApi(monitor, store, HttpSettings(port=0, metrics_max_age=0))
                await api.start()
                try:
                    await _table(api, monitor, agents, rounds)
                finally:
                    await api.stop()


async def _table(api: HttpApi, monitor: HealthMonitor, agents: _Agents, rounds: int) -> None:
    async def report() -> None:
        await monitor.check_agents_health(agents)

    def snapshot() -> tuple[Any, ...]:
        results = monitor.health_cache.copy()
        since = {}
        for name in results:
            record = api.feed.latest(name)
            if record is not None:
                since[name] = record.transition.timestamp
        return results, since, monitor.check_counts, monitor.missed_checks

    async def bare_loop() -> None:
        reference_page(*snapshot())

    async def bare_thread() -> None:
        await asyncio.to_thread(reference_page, *snapshot())

    cluster = next(e for p, e in _routes(api) if p == "/api/v1/cluster")

    async def cluster_json() -> None:
        await cluster(_Request())

    undo = _hook_steps()
    try:
        print(f"{'page':<62}{'made in':>10}{'longest step':>14}")
        for label, make in (
            ("/metrics, generate_latest on the loop (bare)", bare_loop),
            ("/metrics, generate_latest in a thread (before)", bare_thread),
            ("/metrics, MetricsPage.render (now)", api.metrics.render),
            ("/api/v1/cluster", cluster_json),
        ):
            for what, change in (("all changed", report), ("none changed", None)):
                made, longest = await _measure(make, change, rounds)
                row = f"{label}, {what}"
                print(f"{row:<62}{made * 1000:>7.2f} ms{longest * 1000:>11.2f} ms")
        print(f"    /metrics page: {len(await api.metrics.render())} bytes")
    finally:
        undo()


def _routes(api: HttpApi) -> list[tuple[str, Any]]:
    from healthmon.http import routes  # noqa: PLC0415 - the extra's module, as the app does

    return routes.table(api)


class _Request:
    """What the cluster route reads of a request: no query parameters."""

    query_params = QueryParams("")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http.render", description=__doc__)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the start")
    asyncio.run(_run(args.services, args.rounds))
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end")


if __name__ == "__main__":
    main()
