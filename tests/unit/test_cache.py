"""The latest-result cache keeps its per-status counts right however it is changed."""

from __future__ import annotations

import pytest

from healthmon import HealthCheckResult, HealthMonitor, HealthStatus
from healthmon.cache import HealthCache

H, U, D, K = (
    HealthStatus.HEALTHY,
    HealthStatus.UNHEALTHY,
    HealthStatus.DEGRADED,
    HealthStatus.UNKNOWN,
)


def result(name: str, status: HealthStatus) -> HealthCheckResult:
    return HealthCheckResult(name, status, 1.0, 0.0)


def test_worst_status_follows_every_kind_of_change() -> None:
    cache = HealthCache()
    assert cache.worst_status() is K  # empty
    cache["a"] = result("a", H)
    assert cache.worst_status() is H
    cache["b"] = result("b", U)
    assert cache.worst_status() is U
    cache["b"] = result("b", D)  # overwrite releases the old status
    assert cache.worst_status() is D
    cache.update({"c": result("c", K)})
    assert cache.worst_status() is D
    del cache["b"]
    assert cache.worst_status() is K
    assert cache.pop("c").status is K
    assert cache.worst_status() is H
    cache.clear()
    assert cache.worst_status() is K
    assert cache.counts() == {H: 0, U: 0, D: 0, K: 0}


def test_counts_match_a_recount_after_many_updates() -> None:
    cache = HealthCache()
    statuses = [H, U, D, K]
    for i in range(1000):
        name = f"s{i % 37}"
        cache[name] = result(name, statuses[(i * 7) % 4])
        if i % 11 == 0:
            cache.pop(f"s{(i * 3) % 37}", None)
    recount = {s: sum(1 for r in cache.values() if r.status is s) for s in statuses}
    assert cache.counts() == recount


def test_assigning_health_cache_keeps_cluster_status_right() -> None:
    monitor = HealthMonitor()
    monitor.health_cache = {"a": result("a", H), "b": result("b", U)}
    assert monitor.get_cluster_status() is U
    monitor.health_cache["b"] = result("b", H)
    assert monitor.get_cluster_status() is H
    snapshot = monitor.get_cluster_health()
    monitor.health_cache["a"] = result("a", D)
    assert snapshot["a"].status is H  # a copy, not a view


def test_only_results_go_in() -> None:
    with pytest.raises(TypeError, match="HealthCheckResult"):
        HealthCache()["a"] = "healthy"  # type: ignore[assignment]


def test_keys_and_membership_are_the_live_dicts() -> None:
    cache = HealthCache()
    keys = cache.keys()
    cache["a"] = result("a", H)
    assert "a" in cache
    assert "b" not in cache
    anything: object = 1
    assert anything not in cache  # any object may be asked for
    assert keys == {"a"}  # a view: it follows the cache
    assert {"a", "b"} - cache.keys() == {"b"}
