"""Monitor behaviour with the HTTP check replaced: subscribers, registry, agents."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Mapping
from typing import Any

import pytest

from healthmon import HealthCheckResult, HealthMonitor, HealthStatus, ServiceDefinition
from healthmon import monitor as monitor_module
from healthmon.agents import agent_health_status
from tests.conftest import LoopTurns, wait_for

H, U, D, K = (
    HealthStatus.HEALTHY,
    HealthStatus.UNHEALTHY,
    HealthStatus.DEGRADED,
    HealthStatus.UNKNOWN,
)


def result(name: str, status: HealthStatus) -> HealthCheckResult:
    return HealthCheckResult(name, status, 1.0, time.time())


def service(name: str, url: str | None = "http://127.0.0.1:9/health") -> ServiceDefinition:
    return ServiceDefinition(name, "http", f"m.{name}", [], url)


# -- subscribers ---------------------------------------------------------------------


def test_sync_callbacks_are_refused() -> None:
    def not_async(result: HealthCheckResult) -> None:
        pass

    with pytest.raises(TypeError, match="async"):
        HealthMonitor().subscribe(not_async)  # type: ignore[arg-type]


def test_async_callable_objects_are_accepted() -> None:
    class Listener:
        async def __call__(self, result: HealthCheckResult) -> None:
            pass

    monitor = HealthMonitor()
    listener = Listener()
    monitor.subscribe(listener)
    monitor.unsubscribe(listener)
    monitor.unsubscribe(listener)  # twice is harmless
    assert monitor.subscribers == []


@pytest.mark.asyncio
async def test_a_raising_or_hanging_callback_does_not_stop_the_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    monitor = HealthMonitor(callback_timeout=0.1)
    heard: list[str] = []

    async def raises(result: HealthCheckResult) -> None:
        raise RuntimeError("subscriber bug")

    async def hangs(result: HealthCheckResult) -> None:
        await asyncio.Event().wait()

    async def listens(result: HealthCheckResult) -> None:
        heard.append(result.service_name)

    for callback in (raises, hangs, listens):
        monitor.subscribe(callback)
    await monitor._notify_subscribers(result("api", U), None)
    assert heard == ["api"]
    logged = capsys.readouterr().out
    assert "health_callback_error" in logged
    assert "subscriber bug" in logged
    assert "health_callback_timeout" in logged


@pytest.mark.asyncio
async def test_no_notification_without_a_change() -> None:
    monitor = HealthMonitor()
    heard: list[HealthCheckResult] = []

    async def listens(result: HealthCheckResult) -> None:
        heard.append(result)

    monitor.subscribe(listens)
    await monitor._notify_subscribers(result("api", H), result("api", H))
    assert heard == []


@pytest.mark.asyncio
async def test_unsubscribing_during_a_notification() -> None:
    monitor = HealthMonitor()
    calls: list[str] = []

    async def first(result: HealthCheckResult) -> None:
        calls.append("first")
        monitor.unsubscribe(first)
        monitor.unsubscribe(second)

    async def second(result: HealthCheckResult) -> None:
        calls.append("second")

    monitor.subscribe(first)
    monitor.subscribe(second)
    await monitor._notify_subscribers(result("api", U), None)  # second: gone already
    await monitor._notify_subscribers(result("api", H), None)  # then: nobody
    assert calls == ["first"]


# -- registry ------------------------------------------------------------------------


def test_duplicate_names_are_refused_and_nothing_is_half_registered() -> None:
    monitor = HealthMonitor()
    original = service("api")
    monitor.add_service(original)
    with pytest.raises(ValueError, match="already registered"):
        monitor.add_service(service("api", "http://127.0.0.1:10/other"))
    assert monitor.services == {"api": original}


def test_agent_prefix_is_reserved() -> None:
    with pytest.raises(ValueError, match="agent:"):
        HealthMonitor().add_service(service("agent:x"))


def test_add_service_wants_a_service_definition() -> None:
    with pytest.raises(TypeError, match="ServiceDefinition"):
        HealthMonitor().add_service({"name": "api"})  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_check_health_of_unknown_or_urlless_service_is_unknown_and_not_recorded() -> None:
    monitor = HealthMonitor()
    monitor.add_service(service("worker", url=None))
    for name in ("nope", "worker"):
        checked = await monitor.check_health(name)
        assert checked.status is K
        assert checked.error == "Service not registered or no health_check_url"
    assert monitor.get_cluster_health() == {}


@pytest.mark.asyncio
async def test_check_health_records_and_notifies_outside_monitoring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monitor = HealthMonitor()
    monitor.add_service(service("api"))
    heard: list[HealthStatus] = []

    async def listens(r: HealthCheckResult) -> None:
        heard.append(r.status)

    async def fake_check(name: str, url: str, timeout: float | None = None) -> HealthCheckResult:
        return result(name, U)

    monitor.subscribe(listens)
    monkeypatch.setattr(monitor, "_check_http_health", fake_check)
    await monitor.check_health("api")
    await monitor.check_health("api")
    assert heard == [U]  # one change, told once, before check_health returned
    assert monitor.get_cluster_status() is U


@pytest.mark.asyncio
async def test_removing_a_service_during_its_check_records_nothing_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monitor = HealthMonitor(0.05)
    monitor.add_service(service("api"))
    in_check = asyncio.Event()
    release = asyncio.Event()

    async def slow_check(name: str, url: str, timeout: float | None = None) -> HealthCheckResult:
        in_check.set()
        await release.wait()
        return result(name, H)

    monkeypatch.setattr(monitor, "_check_http_health", slow_check)
    async with monitor:
        await in_check.wait()
        monitor.remove_service("api")
        release.set()
        await asyncio.sleep(0.1)
        assert monitor.get_cluster_health() == {}
        assert monitor.missed_checks == {}


@pytest.mark.asyncio
async def test_a_check_that_raises_does_not_end_the_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monitor = HealthMonitor(0.05)
    monitor.add_service(service("api"))
    calls = 0
    enough = asyncio.Event()

    async def broken(name: str, url: str, timeout: float | None = None) -> HealthCheckResult:
        nonlocal calls
        calls += 1
        if calls >= 3:
            enough.set()
        raise RuntimeError("bug in an overridden check")

    monkeypatch.setattr(monitor, "_check_http_health", broken)
    async with monitor:
        await asyncio.wait_for(enough.wait(), 5)
    cached = monitor.get_cluster_health()["api"]
    assert (cached.status, cached.error) == (U, "check raised RuntimeError")


@pytest.mark.asyncio
async def test_start_and_stop_are_idempotent() -> None:
    monitor = HealthMonitor(0.05)
    await monitor.stop_monitoring()
    await monitor.start_monitoring()
    await monitor.start_monitoring()
    assert monitor.running
    await monitor.stop_monitoring()
    await monitor.stop_monitoring()
    assert not monitor.running


# -- agents --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("report", "status"),
    [
        ({"status": "running", "health": "healthy"}, H),
        ({"status": "running", "health": "degraded"}, D),
        ({"status": "running"}, K),
        ({"status": "running", "health": "weird"}, K),
        ({"status": "stopped"}, U),
        ({"status": "crashed", "health": "unhealthy"}, U),
        ({}, U),
    ],
)
def test_agent_mapping(report: Mapping[str, Any], status: HealthStatus) -> None:
    assert agent_health_status(report) is status


@pytest.mark.asyncio
async def test_async_adapter_and_bad_reports() -> None:
    class Adapter:
        async def get_agent_statuses(self) -> dict[str, Any]:
            return {"a": {"status": "running", "health": "healthy"}, "b": "garbage"}

    monitor = HealthMonitor()
    await monitor.check_agents_health(Adapter())
    health = monitor.get_cluster_health()
    assert health["agent:a"].status is H
    assert health["agent:a"].details == {"status": "running", "health": "healthy"}
    assert health["agent:b"].status is U
    assert health["agent:b"].error == "agent report is not a mapping: str"


@pytest.fixture
def report_by_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents' rounds let the loop go after each report rather than after 0.5 ms: a
    test that steps into a round then does not depend on the machine's speed."""
    monkeypatch.setattr(monitor_module, "_AGENTS_SLICE", 0.0)


@pytest.mark.asyncio
@pytest.mark.usefixtures("report_by_report")
async def test_a_large_round_of_agents_lets_the_loop_run_in_between() -> None:
    class Adapter:
        def get_agent_statuses(self) -> dict[str, Any]:
            reports: dict[str, Any] = {
                f"a{i}": {"status": "running", "health": "healthy"} for i in range(1000)
            }
            reports["odd"] = {"status": "running", "health": "healthy", "at": time}  # a module
            return reports

    monitor = HealthMonitor()
    async with LoopTurns() as turns:
        await monitor.check_agents_health(Adapter())
    assert turns.count >= 1000  # the loop turned after each report
    health = monitor.get_cluster_health()
    assert len(health) == 1001
    assert all(r.status is H for r in health.values())
    # A value JSON cannot hold is kept as its text (the flat reports as they are).
    odd = {"status": "running", "health": "healthy", "at": str(time)}
    assert health["agent:odd"].details == odd
    assert health["agent:a7"].details == {"status": "running", "health": "healthy"}


class _Reports:
    def __init__(self, count: int, health: str) -> None:
        self.reports = {f"a{i}": {"health": health} for i in range(count)}

    def get_agent_statuses(self) -> dict[str, Any]:
        return self.reports


@pytest.mark.asyncio
@pytest.mark.usefixtures("report_by_report")
async def test_a_cancelled_round_of_agents_leaves_the_next_one_whole() -> None:
    monitor = HealthMonitor(freeze_gc=False)
    await monitor.check_agents_health(_Reports(1000, "healthy"))
    # a400..a999 vanish, in a round cancelled after its first step ...
    cut = asyncio.create_task(monitor.check_agents_health(_Reports(400, "failed")))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not cut.done()
    cut.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cut
    # ... the next round still sees them gone.
    await monitor.check_agents_health(_Reports(400, "failed"))
    health = monitor.get_cluster_health()
    assert health["agent:a500"].status is HealthStatus.UNKNOWN
    assert health["agent:a0"].status is U


@pytest.mark.asyncio
@pytest.mark.usefixtures("report_by_report")
async def test_overlapping_rounds_of_agents_are_taken_in_turn() -> None:
    monitor = HealthMonitor(freeze_gc=False)
    await monitor.start_monitoring()  # (a monitor not running takes one-off rounds in turn)
    older = asyncio.create_task(monitor.check_agents_health(_Reports(250, "healthy")))
    await asyncio.sleep(0)
    await monitor.check_agents_health(_Reports(100, "failed"))  # a100.. vanished
    await older
    await monitor.stop_monitoring()
    health = monitor.get_cluster_health()
    assert health["agent:a0"].status is U  # the newer round's word stands
    assert health["agent:a200"].status is HealthStatus.UNKNOWN


@pytest.mark.asyncio
@pytest.mark.usefixtures("report_by_report")
async def test_a_round_cut_by_a_stop_is_logged_not_half_stored(
    capsys: pytest.CaptureFixture[str],
) -> None:
    monitor = HealthMonitor(freeze_gc=False)
    await monitor.start_monitoring()
    round_ = asyncio.create_task(monitor.check_agents_health(_Reports(250, "healthy")))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    await monitor.stop_monitoring()
    await round_
    assert "agents_round_cut" in capsys.readouterr().out
    assert len(monitor.get_cluster_health()) < 250  # what came after the stop was not taken


@pytest.mark.asyncio
async def test_a_failing_adapter_is_logged_and_changes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Adapter:
        def get_agent_statuses(self) -> dict[str, Any]:
            raise ConnectionError("agents unreachable")

    monitor = HealthMonitor()
    await monitor.check_agents_health(Adapter())
    assert monitor.get_cluster_health() == {}
    assert "agents_health_check_failed" in capsys.readouterr().out


@pytest.mark.asyncio
async def test_a_service_added_while_stopping_does_not_outlive_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monitor = HealthMonitor(0.05)
    monitor.add_service(service("a"))
    in_check = asyncio.Event()

    async def slow_check(name: str, url: str, timeout: float | None = None) -> HealthCheckResult:
        in_check.set()
        try:
            await asyncio.sleep(10)
        finally:  # the orchestrator adds a service while the monitor is stopping
            if "b" not in monitor.services:
                monitor.add_service(service("b"))
        return result(name, H)

    monkeypatch.setattr(monitor, "_check_http_health", slow_check)
    await monitor.start_monitoring()
    await in_check.wait()
    await monitor.stop_monitoring()  # cancelling a's check adds b meanwhile
    assert "b" in monitor.services
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("healthmon")] == []


@pytest.mark.asyncio
async def test_a_callback_raising_cancelled_error_is_just_a_bad_callback() -> None:
    monitor = HealthMonitor()
    heard: list[str] = []

    async def cancels(result: HealthCheckResult) -> None:
        raise asyncio.CancelledError

    async def listens(result: HealthCheckResult) -> None:
        heard.append(result.service_name)

    monitor.subscribe(cancels)
    monitor.subscribe(listens)
    await monitor._notify_subscribers(result("api", U), None)
    assert heard == ["api"]


@pytest.mark.asyncio
async def test_a_hanging_subscriber_holds_up_only_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = HealthMonitor(0.05, callback_timeout=30.0)
    monitor.add_service(service("api"))
    flips = iter([H, U] * 100)
    heard: list[HealthStatus] = []

    async def flapping(name: str, url: str, timeout: float | None = None) -> HealthCheckResult:
        return result(name, next(flips))

    async def hangs(result: HealthCheckResult) -> None:
        await asyncio.Event().wait()

    async def listens(result: HealthCheckResult) -> None:
        heard.append(result.status)

    monkeypatch.setattr(monitor, "_check_http_health", flapping)
    monitor.subscribe(hangs)
    monitor.subscribe(listens)
    async with monitor:
        # Four changes heard long before the hanging call's 30 s limit: nobody waits on it.
        await wait_for(lambda: len(heard) >= 4, timeout=10)
    assert heard[:4] == [H, U, H, U]


@pytest.mark.asyncio
async def test_manual_checks_never_overlap_the_scheduled_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monitor = HealthMonitor(0.05)
    monitor.add_service(service("api"))
    in_flight = most = calls = 0

    async def slow(name: str, url: str, timeout: float | None = None) -> HealthCheckResult:
        nonlocal in_flight, most, calls
        in_flight += 1
        calls += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return result(name, H)

    monkeypatch.setattr(monitor, "_check_http_health", slow)
    async with monitor:
        await asyncio.gather(*(monitor.check_health("api") for _ in range(3)))
        await wait_for(lambda: calls >= 6)
    assert most == 1  # at most one check of a service in flight, scheduled or not


# -- the garbage collector -------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_first_start_freezes_the_objects_alive_then_once() -> None:
    monitor_module._freeze_long_lived_objects.cache_clear()
    gc.unfreeze()
    try:
        async with HealthMonitor(freeze_gc=False):
            assert gc.get_freeze_count() == 0
        async with HealthMonitor():
            frozen = gc.get_freeze_count()
            assert frozen > 0
        # Lists are tracked by the collector: these would be frozen by a second freeze.
        tracked_since: list[list[int]] = [[] for _ in range(100)]
        async with HealthMonitor():  # not a second time in this process
            assert gc.get_freeze_count() <= frozen  # (frozen objects can still be freed)
        assert tracked_since
    finally:
        gc.unfreeze()  # the next tests' objects are collected as usual


@pytest.mark.asyncio
async def test_stop_lets_a_slow_subscriber_finish_within_its_time_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    monitor = HealthMonitor(callback_timeout=3.0)
    heard: list[str] = []

    async def slow(result: HealthCheckResult) -> None:
        await asyncio.sleep(1.5)  # longer than stop's old fixed 1 s, within the limit
        heard.append(result.service_name)

    monitor.subscribe(slow)
    async with monitor:
        monitor._record(result("api", U), force=True)
    assert heard == ["api"]
    assert "notifications_dropped" not in capsys.readouterr().out


# -- the cluster status ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_registered_service_not_checked_yet_makes_the_cluster_unknown() -> None:
    # Issue 11: right after start the cluster read HEALTHY while a service had never
    # been checked.
    monitor = HealthMonitor()
    monitor.add_service(service("api"))
    monitor.add_service(service("db"))
    monitor.add_service(service("fed-by-agent", url=None))  # not checkable: not waited for
    monitor._record(result("api", H))
    assert monitor.get_cluster_status() is K
    assert set(monitor.get_cluster_health()) == {"api"}  # the snapshot holds results only
    monitor._record(result("db", H))
    assert monitor.get_cluster_status() is H
    monitor.remove_service("db")
    monitor.add_service(service("db"))  # added again: not checked since
    assert monitor.get_cluster_status() is K
    monitor.remove_service("db")
    assert monitor.get_cluster_status() is H
    monitor._record(result("api", U))
    monitor.add_service(service("db"))
    assert monitor.get_cluster_status() is U  # worse than unknown wins


def test_an_assigned_cache_counts_as_checked() -> None:
    monitor = HealthMonitor()
    monitor.add_service(service("api"))
    assert monitor.get_cluster_status() is K
    monitor.health_cache = {"api": result("api", H)}
    assert monitor.get_cluster_status() is H
    monitor.health_cache = {"other": result("other", H)}  # api has no result now
    assert monitor.get_cluster_status() is K
    monitor.health_cache["api"] = result("api", D)  # set in place, as a mapping
    assert monitor.get_cluster_status() is D
