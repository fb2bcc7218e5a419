"""Cluster queries from memory: `get_cluster_status()` and `get_cluster_health()`.

Timed in-process with `timeit` (best of 5 repeats, as timeit's docs advise: the
minimum is the figure least disturbed by the rest of the machine), next to the bare
Python doing the same job: a scan for the worst status, a `dict` copy.
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable
from typing import Any

from healthmon import HealthCheckResult, HealthMonitor, HealthStatus
from healthmon.model import worst_status

__all__ = ["run_cluster"]

_REPEAT = 5


def _per_call_us(function: Callable[[], object]) -> float:
    timer = timeit.Timer(function)
    number, _ = timer.autorange()  # calls per repeat so that one repeat takes >= 0.2 s
    return min(timer.repeat(_REPEAT, number)) / number * 1e6


def _results(count: int) -> dict[str, HealthCheckResult]:
    now = time.time()
    # Mostly healthy, a few not: 98 % HEALTHY, 1 % DEGRADED, 1 % UNKNOWN.
    statuses = [HealthStatus.HEALTHY] * 98 + [HealthStatus.DEGRADED, HealthStatus.UNKNOWN]
    return {
        f"svc-{i:05d}": HealthCheckResult(
            f"svc-{i:05d}", statuses[i % len(statuses)], 1.0, now, {"status": "ok"}
        )
        for i in range(count)
    }


def run_cluster(status_services: int, health_sizes: list[int]) -> dict[str, Any]:
    monitor = HealthMonitor(0.05)
    results = _results(status_services)
    # The seed's tests assign health_cache wholesale; the aggregate must follow.
    monitor.health_cache = results
    expected = worst_status(r.status for r in results.values())
    if monitor.get_cluster_status() is not expected:
        raise AssertionError(f"cluster status {monitor.get_cluster_status()} != {expected}")
    status_us = _per_call_us(monitor.get_cluster_status)
    scan_us = _per_call_us(lambda: worst_status(r.status for r in results.values()))

    # As the monitor sees it: one service's result replaced, then the question asked.
    names = list(results)
    flip = [
        HealthCheckResult(name, HealthStatus.UNHEALTHY, 1.0, time.time(), None, "HTTP 503")
        for name in names[:2]
    ]
    cache = monitor.health_cache
    turn = [0]

    def update_and_ask() -> HealthStatus:
        turn[0] += 1
        name = names[turn[0] % len(names)]
        cache[name] = flip[turn[0] % 2] if turn[0] % 2 else results[name]
        return monitor.get_cluster_status()

    update_us = _per_call_us(update_and_ask)

    health = []
    for size in health_sizes:
        sized = HealthMonitor(0.05)
        sized_results = _results(size)
        sized.health_cache = sized_results
        health.append(
            {
                "entries": size,
                "monitor_us": _per_call_us(sized.get_cluster_health),
                "dict_copy_us": _per_call_us(sized_results.copy),
            }
        )
    return {
        "services": status_services,
        "status_us": status_us,
        "status_scan_us": scan_us,
        "update_then_status_us": update_us,
        "health": health,
    }
