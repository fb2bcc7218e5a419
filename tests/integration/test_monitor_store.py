"""The monitor writing to a real database (a SQLite file, a PostgreSQL database) while
checking real local servers."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event, text

from healthmon import CheckPolicy, HealthCheckResult, HealthMonitor, HealthStatus, HealthStore
from healthmon.targets import TargetServer
from tests.conftest import http_service, wait_for


@pytest.mark.asyncio
async def test_everything_stored_and_equal_to_the_cache(
    targets: TargetServer, db_url: str, refused_url: str
) -> None:
    heard: list[HealthCheckResult] = []

    async def on_change(result: HealthCheckResult) -> None:
        heard.append(result)

    async with HealthStore(db_url) as store:
        monitor = HealthMonitor(0.05, store=store, policy=CheckPolicy(timeout=0.5))
        monitor.add_service(http_service("ok", targets.url("/healthy")))
        monitor.add_service(http_service("broken", targets.url("/fail")))
        monitor.add_service(http_service("flappy", targets.url("/flip?period=0.2")))
        monitor.add_service(http_service("gone", refused_url))
        monitor.subscribe(on_change)
        async with monitor:
            await wait_for(lambda: targets.hits("/flip") >= 16)  # a few flips
        cache = monitor.get_cluster_health()
        stats = monitor.store_stats

    # Read back through a second store, as another process would.
    async with HealthStore(db_url, migrate=False) as reader:
        latest = await reader.latest()
        transitions = await reader.transitions()
        flappy = await reader.results("flappy")
        counts = {name: len(await reader.results(name)) for name in cache}

    assert stats is None  # the writer is released at stop
    assert latest == cache
    assert latest["gone"].error == "connection refused"
    # Every completed check stored, none twice; stop cancels (and does not record) at
    # most the one check per service that was in flight.
    assert targets.hits("/flip") - counts["flappy"] in (0, 1)
    assert targets.hits("/healthy") - counts["ok"] in (0, 1)
    # Transitions follow the stored results exactly.
    statuses = [r.status for r in flappy]
    flips = sum(1 for before, after in itertools.pairwise(statuses) if before != after)
    flappy_transitions = [t for t in transitions if t.service_name == "flappy"]
    assert len(flappy_transitions) == flips + 1 >= 3
    assert flappy_transitions[0].from_status is None
    assert [t.to_status for t in flappy_transitions] == [
        s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s
    ]
    # Subscribers heard each committed transition once, in commit order.
    assert [(r.service_name, r.status, r.timestamp) for r in heard] == [
        (t.service_name, t.to_status, t.timestamp) for t in transitions
    ]


@pytest.mark.asyncio
async def test_callback_finds_its_transition_in_the_database(
    targets: TargetServer, db_url: str
) -> None:
    found: list[bool] = []
    async with HealthStore(db_url) as store, HealthStore(db_url) as other_connection:

        async def on_change(result: HealthCheckResult) -> None:
            stored = await other_connection.transitions(result.service_name)
            found.append(
                any(
                    t.to_status == result.status and t.timestamp == result.timestamp for t in stored
                )
            )

        monitor = HealthMonitor(0.05, store=store)
        monitor.add_service(http_service("flappy", targets.url("/flip?period=0.15")))
        monitor.subscribe(on_change)
        async with monitor:
            await wait_for(lambda: len(found) >= 4)
    assert found
    assert all(found)


@pytest.mark.asyncio
async def test_hanging_service_neither_slows_others_nor_stop(
    targets: TargetServer, db_url: str
) -> None:
    async with HealthStore(db_url) as store:
        monitor = HealthMonitor(0.05, store=store, policy=CheckPolicy(timeout=30.0))
        monitor.add_service(http_service("stuck", targets.url("/hang")))
        monitor.add_service(http_service("ok", targets.url("/healthy")))
        async with monitor:
            started = time.monotonic()
            await wait_for(lambda: targets.hits("/healthy") >= 20)
            elapsed = time.monotonic() - started
            assert targets.hits("/hang") == 1  # one check in flight, never a second
            assert monitor.missed_checks["ok"] == 0
            stop_started = time.monotonic()
        stop_took = time.monotonic() - stop_started
    # 20 checks at 20 Hz take ~1 s; the hanging check's 30 s timeout would show here.
    assert elapsed < 5.0
    # stop cancels the check that waits for a 30 s timeout instead of waiting for it
    assert stop_took < 5.0
    assert "stuck" not in monitor.get_cluster_health()


@pytest.mark.asyncio
async def test_restart_records_no_new_transition(targets: TargetServer, db_url: str) -> None:
    async def monitor_until(hits: int) -> None:
        async with HealthStore(db_url) as store:
            monitor = HealthMonitor(0.05, store=store)
            monitor.add_service(http_service("ok", targets.url("/healthy")))
            async with monitor:
                await wait_for(lambda: targets.hits("/healthy") >= hits)

    await monitor_until(5)
    await monitor_until(10)  # a second run on the same database
    async with HealthStore(db_url) as store:
        transitions = await store.transitions("ok")
        results = await store.results("ok")
    assert [(t.from_status, t.to_status) for t in transitions] == [(None, HealthStatus.HEALTHY)]
    assert len(results) >= 8  # at least 4 completed checks per run


@pytest.mark.asyncio
async def test_reader_in_a_transaction_does_not_block_the_writer(
    targets: TargetServer, db_url: str, backend: str
) -> None:
    count = text("SELECT count(*) FROM results_view")
    async with HealthStore(db_url) as store, HealthStore(db_url) as reader:
        monitor = HealthMonitor(0.05, store=store)
        monitor.add_service(http_service("ok", targets.url("/healthy")))
        async with monitor:
            await wait_for(lambda: (monitor.store_stats or _never).committed_results >= 5)
            async with reader.engine.connect() as conn:
                if backend == "postgresql":  # (its default, READ COMMITTED, reads anew)
                    await conn.execution_options(isolation_level="REPEATABLE READ")
                await conn.begin()
                seen_first = (await conn.execute(count)).scalar_one()
                committed_then = (monitor.store_stats or _never).committed_results
                await wait_for(
                    lambda: (monitor.store_stats or _never).committed_results >= committed_then + 10
                )
                # The snapshot holds inside the read transaction...
                assert (await conn.execute(count)).scalar_one() == seen_first
            stats = monitor.store_stats
        assert stats is not None
        assert stats.failed_flushes == 0
        # ...and the writer committed all along, visible to a new read.
        async with reader.engine.connect() as conn:
            assert (await conn.execute(count)).scalar_one() >= seen_first + 10


class _Never:
    committed_results = -1
    healthy = False


_never = _Never()


@pytest.mark.asyncio
async def test_a_writer_stopped_without_starting_writes_and_frees_the_store(
    db_url: str,
) -> None:
    async with HealthStore(db_url) as store:
        writer = store.writer()
        writer.submit(HealthCheckResult("a", HealthStatus.HEALTHY, 1.0, time.time()))
        await writer.stop()
        await writer.stop()  # twice is harmless
        with pytest.raises(RuntimeError, match="stopped"):
            await writer.start()
        second = store.writer()  # the store's one writer slot is free again
        await second.start()
        await second.stop()
        assert [r.service_name for r in await store.results("a")] == ["a"]
        assert writer.stats.committed_results == 1


@pytest.mark.asyncio
async def test_a_one_off_check_racing_start_leaves_the_monitor_whole(db_url: str) -> None:
    class Adapter:
        def get_agent_statuses(self) -> dict[str, dict[str, str]]:
            return {"w": {"status": "running", "health": "healthy"}}

    async with HealthStore(db_url) as store:
        monitor = HealthMonitor(0.05, store=store)
        await asyncio.gather(monitor.start_monitoring(), monitor.check_agents_health(Adapter()))
        assert monitor.store_stats is not None  # the running monitor kept its writer
        await monitor.check_agents_health(Adapter())
        await monitor.stop_monitoring()
        assert len(await store.results("agent:w")) == 2


@pytest.mark.asyncio
async def test_a_report_json_cannot_hold_is_stored_as_text(db_url: str) -> None:
    class Adapter:
        def get_agent_statuses(self) -> dict[str, dict[str, object]]:
            return {"w": {"status": "running", "health": "healthy", "since": datetime.now(UTC)}}

    async with HealthStore(db_url) as store:
        monitor = HealthMonitor(0.05, store=store)
        async with monitor:
            await monitor.check_agents_health(Adapter())
            await wait_for(lambda: (monitor.store_stats or _never).committed_results >= 1)
            assert (monitor.store_stats or _never).healthy
        (stored,) = await store.results("agent:w")
    assert stored.details is not None
    assert isinstance(stored.details["since"], str)


@pytest.mark.asyncio
async def test_closing_the_store_under_a_running_monitor_counts_what_is_lost(
    targets: TargetServer, db_url: str
) -> None:
    store = HealthStore(db_url)
    await store.open()
    monitor = HealthMonitor(0.05, store=store)
    monitor.add_service(http_service("ok", targets.url("/healthy")))
    async with monitor:
        await wait_for(lambda: targets.hits("/healthy") >= 3)
        writer = store._writer
        assert writer is not None
        await store.close()  # the wrong order: the store before the monitor
        before = targets.hits("/healthy")
        await wait_for(lambda: targets.hits("/healthy") >= before + 3)
        assert writer.stats.dropped_results >= 2
        assert writer.stats.last_error is not None


@pytest.mark.asyncio
async def test_a_one_off_check_of_a_stopped_monitor_is_one_transaction(
    targets: TargetServer, db_path: Path
) -> None:
    # Issue 11: each check_health()/check_agents_health() on a monitor not running
    # opened and closed a whole writer (reloading the history sums) and notifier.
    class Adapter:
        def get_agent_statuses(self) -> dict[str, dict[str, str]]:
            return {"w": {"status": "running", "health": "healthy"}}

    statements: list[str] = []
    heard: list[tuple[str, bool, int]] = []
    async with HealthStore(db_path) as store:
        monitor = HealthMonitor(0.05, store=store)
        monitor.add_service(http_service("ok", targets.url("/healthy")))
        caller = asyncio.current_task()

        async def on_change(result: HealthCheckResult) -> None:  # after the commit
            stored = await store.transitions(result.service_name)
            heard.append((result.service_name, asyncio.current_task() is caller, len(stored)))

        monitor.subscribe(on_change)
        await monitor.check_health("ok")
        await monitor.check_agents_health(Adapter())

        def count(*args: object) -> None:
            statements.append(str(args[2]))

        event.listen(store.thread_engine.sync_engine, "before_cursor_execute", count)
        for _ in range(5):
            await monitor.check_health("ok")
            await monitor.check_agents_health(Adapter())
        event.remove(store.thread_engine.sync_engine, "before_cursor_execute", count)
        await monitor.stop_monitoring()
        assert len(await store.results("ok")) == 6
        assert len(await store.results("agent:w")) == 6
    # Told inline, once committed: no notifier task, and the transition is stored.
    assert heard == [("ok", True, 1), ("agent:w", True, 1)]
    # Each one-off is one short transaction: the results, nothing read again.
    assert len(statements) <= 10 * 3, statements


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_a_writer_kept_for_one_off_checks_gives_way_to_another_monitor(
    db_path: Path,
) -> None:
    # Review of issue 11: the writer a stopped monitor keeps between one-off checks
    # (idle: no task, nothing pending) held the store, so that no other monitor could
    # check or start on it: "already has a writer".
    with TargetServer() as targets:
        async with HealthStore(db_path) as store:
            first, second = HealthMonitor(store=store), HealthMonitor(store=store)
            first.add_service(http_service("a", targets.url("/healthy")))
            second.add_service(http_service("b", targets.url("/healthy")))
            await first.check_health("a")  # first keeps the store's writer, idle
            await second.check_health("b")  # which gives way
            async with second:
                await wait_for(lambda: targets.hits("/healthy") >= 4)
                with pytest.raises(RuntimeError, match="already has a writer"):
                    await first.check_health("a")  # a running writer does not
            await first.check_health("a")
            await first.stop_monitoring()
            stored = {name: len(await store.results(name)) for name in ("a", "b")}
    assert stored["a"] == 2  # the one refused was not recorded
    assert stored["b"] >= 3
