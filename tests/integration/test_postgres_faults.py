"""PostgreSQL fails under a running monitor: stopped and started again, the monitor's
connections killed, statements over a statement_timeout, the database made read-only;
and a COMMIT whose outcome the writer cannot know (on both backends).

Checking and the cache go on; results wait in the writer's bounded buffer and are
written when the database recovers; beyond the bound, drops are counted and logged;
`store_stats` shows PostgreSQL's own words. The server here is the module's own
(these tests stop it), whatever HEALTHMON_TEST_POSTGRES_URL says.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from healthmon import (
    HealthCheckResult,
    HealthMonitor,
    HealthStatus,
    HealthStore,
    ServiceDefinition,
    StatusTransition,
    WriterStats,
)
from healthmon.store.engine import create_engine, database_url
from healthmon.targets import TargetServer
from tests import postgres
from tests.conftest import wait_for


@pytest.fixture(scope="module")
def server() -> Iterator[postgres.LocalPostgres]:
    local = postgres.LocalPostgres()
    local.start()
    try:
        yield local
    finally:
        local.delete()


@pytest.fixture
def url(server: postgres.LocalPostgres) -> Iterator[str]:
    made = postgres.create_database(server.url)
    yield made
    postgres.drop_database(made)


def stats_of(monitor: HealthMonitor) -> WriterStats:
    stats = monitor.store_stats
    assert stats is not None
    return stats


def monitor_of(store: HealthStore, url: str, **settings: int) -> HealthMonitor:
    monitor = HealthMonitor(0.05, store=store, **settings)  # type: ignore[arg-type]
    monitor.add_service(ServiceDefinition("svc", "http", "m", [], url))
    return monitor


async def assert_checking_goes_on(monitor: HealthMonitor, targets: TargetServer) -> None:
    before = monitor.get_cluster_health()["svc"].timestamp
    hits = targets.hits("/healthy")
    await wait_for(lambda: targets.hits("/healthy") >= hits + 5)
    assert monitor.get_cluster_health()["svc"].timestamp > before


async def stored_count(url: str) -> int:
    async with HealthStore(url, migrate=False) as reader:
        return len(await reader.results("svc"))


async def admin(url: str, *statements: str) -> None:
    """Statements on a connection of their own to the server's `postgres` database (as
    the operator would: the monitor's database may be read-only)."""
    engine = create_engine(database_url(url).set(database="postgres"))
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


def kill_monitor_connections(database: str) -> str:
    assert database.isidentifier()  # one of ours (tests/postgres.py), safe to quote
    where = f"application_name = 'healthmon' AND datname = '{database}'"
    return f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {where}"  # noqa: S608


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_stopped_for_ten_seconds_and_started_again(
    targets: TargetServer,
    server: postgres.LocalPostgres,
    url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with HealthStore(url) as store:
        monitor = monitor_of(store, targets.url("/healthy"))
        async with monitor:
            await wait_for(lambda: stats_of(monitor).committed_results >= 5)
            await asyncio.to_thread(server.stop)
            stopped_at = time.monotonic()
            try:
                await wait_for(lambda: not stats_of(monitor).healthy, timeout=15)
                await assert_checking_goes_on(monitor, targets)
                await asyncio.sleep(10 - (time.monotonic() - stopped_at))
                down = stats_of(monitor)
            finally:
                await asyncio.to_thread(server.start)
            await wait_for(lambda: stats_of(monitor).healthy, timeout=30)
            stats = stats_of(monitor)
        hits = targets.hits("/healthy")
    assert down.pending_results >= 100  # 10 s at 20 Hz, buffered
    assert down.last_error is not None
    assert "connect" in down.last_error.lower() or "terminat" in down.last_error.lower()
    assert stats.dropped_results == 0
    assert hits - await stored_count(url) in (0, 1)  # all but the check cancelled at stop
    logged = capsys.readouterr().out
    assert "store_write_failed" in logged
    assert "store_write_recovered" in logged


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_the_monitor_s_connections_killed(targets: TargetServer, url: str) -> None:
    database = str(database_url(url).database)
    async with HealthStore(url) as store:
        monitor = monitor_of(store, targets.url("/healthy"))
        async with monitor:
            for _ in range(3):
                committed = stats_of(monitor).committed_results
                await wait_for(
                    lambda c=committed: stats_of(monitor).committed_results >= c + 5  # type: ignore[misc]  # a default binds the loop's value
                )
                await admin(url, kill_monitor_connections(database))
            committed = stats_of(monitor).committed_results
            await wait_for(lambda: stats_of(monitor).committed_results >= committed + 5)
            stats = stats_of(monitor)
        hits = targets.hits("/healthy")
    assert stats.dropped_results == 0
    assert hits - await stored_count(url) in (0, 1)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_statements_over_the_statement_timeout(targets: TargetServer, url: str) -> None:
    database = str(database_url(url).database)
    async with HealthStore(url) as store:
        monitor = monitor_of(store, targets.url("/healthy"))
        async with monitor:
            await wait_for(lambda: stats_of(monitor).committed_results >= 5)
            await admin(
                url,
                f"ALTER DATABASE {database} SET statement_timeout = '200ms'",
                kill_monitor_connections(database),  # new sessions take the setting
            )
            locker = create_engine(database_url(url))
            try:
                async with locker.connect() as conn:  # holds the table: writes wait
                    await conn.execute(text("LOCK TABLE services IN ACCESS EXCLUSIVE MODE"))
                    await wait_for(
                        lambda: "statement timeout" in (stats_of(monitor).last_error or ""),
                        timeout=20,
                    )
                    await assert_checking_goes_on(monitor, targets)
                    await conn.rollback()
            finally:
                await locker.dispose()
            await wait_for(lambda: stats_of(monitor).healthy, timeout=20)
            stats = stats_of(monitor)
        hits = targets.hits("/healthy")
    assert stats.dropped_results == 0
    assert hits - await stored_count(url) in (0, 1)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_made_read_only_drops_beyond_the_bound_then_recovers(
    targets: TargetServer, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    database = str(database_url(url).database)
    async with HealthStore(url) as store:
        monitor = monitor_of(store, targets.url("/healthy"), max_pending=20)
        async with monitor:
            await wait_for(lambda: stats_of(monitor).committed_results >= 5)
            await admin(
                url,
                f"ALTER DATABASE {database} SET default_transaction_read_only = on",
                kill_monitor_connections(database),
            )
            await wait_for(lambda: stats_of(monitor).dropped_results > 0, timeout=20)
            # PostgreSQL's words, naming the first statement refused: the INSERT, or the
            # details ids' nextval() (taken from a sequence, for several writers).
            assert re.fullmatch(
                r"cannot execute (INSERT|nextval\(\)) in a read-only transaction",
                stats_of(monitor).last_error or "",
            )
            assert stats_of(monitor).pending_results <= 20
            await assert_checking_goes_on(monitor, targets)
            await admin(url, f"ALTER DATABASE {database} SET default_transaction_read_only = off")
            await wait_for(lambda: stats_of(monitor).healthy, timeout=20)
            stats = stats_of(monitor)
        hits = targets.hits("/healthy")
    assert hits - await stored_count(url) - stats.dropped_results in (0, 1)
    logged = capsys.readouterr().out
    assert "results_dropped" in logged
    assert "buffer full (20 results)" in logged


# -- a COMMIT whose outcome is unknown ------------------------------------------------------

T0 = 1_800_000_000.0


@pytest.mark.asyncio
@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-committed"])
async def test_a_connection_lost_during_commit_neither_duplicates_nor_loses(
    db_url: str, committed: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """The COMMIT fails as if the connection dropped during it: after the server
    committed (its answer lost) or before. Either way the writer writes the batch
    again, and every result and transition is stored exactly once, and heard once."""
    heard: list[StatusTransition] = []
    async with HealthStore(db_url) as store:
        writer = store.writer(on_commit=lambda done: heard.extend(t for _, t in done))
        results = [
            HealthCheckResult("api", HealthStatus.HEALTHY, 1.0 + i, T0 + i) for i in range(5)
        ]
        writer.submit(results[0], StatusTransition("api", None, HealthStatus.HEALTHY, T0))
        for result in results[1:]:
            writer.submit(result)
        dialect: Any = store.thread_engine.sync_engine.dialect
        real_commit = dialect.do_commit

        def lost_commit(dbapi_connection: Any) -> None:
            dialect.do_commit = real_commit  # once
            if committed:
                real_commit(dbapi_connection)
            raise dialect.loaded_dbapi.OperationalError("connection lost during COMMIT")

        dialect.do_commit = lost_commit
        try:
            assert not await writer.flush()
        finally:
            dialect.do_commit = real_commit
        writer.submit(HealthCheckResult("api", HealthStatus.HEALTHY, 9.0, T0 + 5))
        assert await writer.flush()
        await writer.stop()
        stored = await store.results("api")
        transitions = await store.transitions("api")
        report = await store.report("api", T0, T0 + 60, exact=True)
    assert [(r.timestamp, r.response_time_ms) for r in stored] == [
        (T0 + i, 1.0 + i) for i in range(5)
    ] + [(T0 + 5, 9.0)]
    assert [(t.from_status, t.to_status) for t in transitions] == [(None, HealthStatus.HEALTHY)]
    assert [(t.from_status, t.to_status) for t in heard] == [(None, HealthStatus.HEALTHY)]
    assert report.counts.total == 6
    assert writer.stats.committed_results == 6
    assert writer.stats.dropped_results == 0
    logged = capsys.readouterr().out
    assert "store_commit_unknown" in logged
    assert ("store_commit_had_succeeded" in logged) is committed
