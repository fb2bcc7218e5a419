"""Cluster mode's history: aggregates closed by one node from the committed raw rows,
late rows and gaps added by each node's writer (store/closing.py), the historian's
lease and pruning (cluster/historian.py), on a real PostgreSQL server.

The property test is test_history_properties.py's oracle on a database written by two
cluster nodes' fenced writers with a handover in the middle, while a closer closes
minutes and hours at random moments, concurrently with their flushes: every report,
series and result read must be what the raw stream says, as on a single node's.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from healthmon import HealthCheckResult, HealthStatus, HealthStore
from healthmon.cluster.fence import ClusterFence
from healthmon.micros import us_at_or_after
from healthmon.store.closing import close_step
from healthmon.store.engine import create_engine, database_url
from tests import postgres
from tests.integration.test_history_properties import (
    EXAMPLES,
    SERVICES,
    T0,
    Stream,
    _empty,
    _migrate,
    check_report,
    check_window,
    streams,
    window,
)

NODES = (1, 2)


@pytest.fixture(scope="module")
def cluster_databases(postgres_server: str) -> Iterator[Iterator[str]]:
    """One PostgreSQL database, emptied again for each example."""
    url = postgres.create_database(postgres_server)
    _migrate(url)

    def emptied() -> Iterator[str]:
        while True:
            asyncio.run(_empty_cluster(url))
            yield url

    yield emptied()
    postgres.drop_database(url)


async def _empty_cluster(url: str) -> None:
    await _empty(url)
    engine = create_engine(database_url(url))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE service_leases, cluster_nodes"))
            await conn.execute(
                text(
                    "INSERT INTO cluster_nodes (id, name, started_at, heartbeat_at) "
                    "VALUES (1, 'a', 0, 0), (2, 'b', 0, 0)"
                )
            )
    finally:
        await engine.dispose()


async def _hand_to(engine: AsyncEngine, node_id: int) -> int:
    """Every service's lease to `node_id` (a claim: the epoch bumped); the new epoch."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO service_leases (service, node_id, epoch, expires_at) "
                "SELECT unnest(CAST(:names AS text[])), NULL, 0, 0 ON CONFLICT DO NOTHING"
            ),
            {"names": list(SERVICES)},
        )
        epochs = await conn.scalars(
            text(
                "UPDATE service_leases SET node_id = :node, epoch = epoch + 1, "
                "expires_at = extract(epoch from clock_timestamp()) + 3600 "
                "RETURNING epoch"
            ),
            {"node": node_id},
        )
        (epoch,) = set(epochs)
        return int(epoch)


async def write_clustered(
    store: HealthStore, stream: Stream, closes: list[tuple[float, float]]
) -> None:
    """Through node 1's fenced writer, then (from `restart_at` on) node 2's, after a
    claim; at each flush point, a closer step at the next of `closes` (now, settle)
    runs concurrently with the flush."""
    caused = {(t.service_name, t.timestamp): t for t in stream.transitions}
    restart = stream.restart_at
    moments = itertools.cycle(closes)
    parts = ((0, stream.results[:restart]), (restart, stream.results[restart:]))
    for node_id, (first, part) in zip(NODES, parts, strict=True):
        epoch = await _hand_to(store.engine, node_id)
        writer = store.writer(max_pending=10**6, fence=ClusterFence(node_id, 3600.0))
        await writer.start()
        for index, result in enumerate(part, start=first):
            writer.submit(result, caused.get((result.service_name, result.timestamp)), epoch)
            if index in stream.flush_after:
                now, settle = next(moments)
                flushed, _ = await asyncio.gather(
                    writer.flush(), close_step(store.engine, now=now, settle=settle)
                )
                assert flushed
        assert await writer.flush()
        await writer.stop()
        assert writer.stats.fenced_results == 0


async def check_aggregates(store: HealthStore) -> None:
    """Every aggregate row is the sum of what it covers, and none lies past its mark."""
    async with store.engine.connect() as conn:
        marks: dict[str, float] = dict(
            (
                await conn.execute(
                    text(
                        "SELECT tier, complete_until FROM history_coverage WHERE tier IN "
                        "('minute', 'hour', 'day')"
                    )
                )
            ).all()
        )
        counts = (
            await conn.execute(
                text(
                    "SELECT service_id, floor(ts_us / 60000000.0) * 60 AS start, "
                    "sum(CASE WHEN status = 0 THEN 1 ELSE 0 END), count(*), "
                    "sum(CASE WHEN answered THEN 1 ELSE 0 END) FROM check_results "
                    "WHERE ts_us < :mark GROUP BY 1, 2 ORDER BY 1, 2"
                ),
                {"mark": us_at_or_after(marks["minute"])},
            )
        ).all()
        minutes = (
            await conn.execute(
                text(
                    "SELECT service_id, start, healthy, healthy + unknown + degraded + "
                    "unhealthy, answered FROM result_minutes ORDER BY 1, 2"
                )
            )
        ).all()
        assert [tuple(map(float, row)) for row in minutes] == [
            tuple(map(float, row)) for row in counts
        ]
        for lower, tier, width in (("minutes", "hours", 3600), ("hours", "days", 86400)):
            summed = (
                await conn.execute(
                    text(
                        f"SELECT service_id, floor(start / {width}) * {width}, sum(healthy), "  # noqa: S608 - ours
                        f"sum(answered) FROM result_{lower} WHERE start < :mark "
                        "GROUP BY 1, 2 ORDER BY 1, 2"
                    ),
                    {"mark": marks[tier[:-1]]},
                )
            ).all()
            rows = (
                await conn.execute(
                    text(
                        "SELECT service_id, start, healthy, answered "  # noqa: S608 - ours
                        f"FROM result_{tier} ORDER BY 1, 2"
                    )
                )
            ).all()
            assert [tuple(map(float, row)) for row in rows] == [
                tuple(map(float, row)) for row in summed
            ], tier


@pytest.mark.timeout(300)  # hypothesis shrinks a failure for minutes; passing takes ~25 s
@settings(EXAMPLES, max_examples=25)  # (the single node's run 60: the same oracle)
@given(data=st.data(), stream=streams())
def test_reports_on_a_cluster_written_database_match_brute_force(
    cluster_databases: Iterator[str], data: st.DataObject, stream: Stream
) -> None:
    url = next(cluster_databases)
    closes = data.draw(
        st.lists(
            st.tuples(
                st.floats(min_value=stream.start - 60, max_value=stream.end + 7200),
                st.sampled_from([0.0, 2.0, 5.0]),
            ),
            min_size=1,
            max_size=4,
        )
    )

    async def run() -> None:
        async with HealthStore(url) as store:
            await write_clustered(store, stream, closes)
            await check_aggregates(store)
            for _ in range(3):
                since, until = window(data.draw, stream)
                for name in SERVICES:
                    if not stream.of(name):
                        continue
                    assert await store.results(name, since, until) == [
                        r for r in stream.of(name) if since <= r.timestamp < until
                    ]
                    report = await store.report(name, since, until)
                    assert (report.since, report.until) == (since, until)
                    check_report(stream, name, report)
                fleet = await store.reports(since, until)
                for name, report in fleet.items():
                    check_report(stream, name, report)
                bucket = data.draw(st.sampled_from([60.0, 300.0, 3600.0, 97.5]))
                if (until - since) / bucket <= 500:
                    for got in await store.series(None, since, until, bucket=bucket):
                        check_window(stream.results, got.since, got.until, got)
            # Closed to the end, the same answers from the aggregates.
            while (await close_step(store.engine, now=stream.end + 7200, settle=0.0)).more:
                pass
            await check_aggregates(store)
            since, until = window(data.draw, stream)
            for name in SERVICES:
                if stream.of(name):
                    check_report(stream, name, await store.report(name, since, until))

    asyncio.run(run())


@pytest.mark.timeout(60)
def test_a_flush_waits_for_the_closer_before_it_touches_check_results(
    cluster_databases: Iterator[str],
) -> None:
    """The lock order: a cluster writer's flush takes the marks before anything else. A
    closer holding them reads check_results at once, even while a flush of a result of
    a new day (a partition to create: DDL, which locks check_results whole) waits for
    it. (The flush took the marks after its inserts: the two deadlocked.)"""
    url = next(cluster_databases)

    async def run() -> None:
        async with HealthStore(url) as store:
            epoch = await _hand_to(store.engine, NODES[0])
            writer = store.writer(fence=ClusterFence(NODES[0], 3600.0))
            async with store.engine.connect() as closer:
                await closer.execute(
                    text("SELECT tier FROM history_coverage ORDER BY tier FOR UPDATE")
                )
                writer.submit(
                    HealthCheckResult("api", HealthStatus.HEALTHY, 1.0, T0 + 5 * 86400), None, epoch
                )
                flush = asyncio.create_task(writer.flush())

                async def flush_waits() -> bool:
                    async with store.engine.connect() as conn:
                        return bool(
                            await conn.scalar(
                                text(
                                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type "
                                    "= 'Lock' AND query LIKE '%history_coverage%FOR KEY SHARE%'"
                                )
                            )
                        )

                deadline = asyncio.get_running_loop().time() + 20
                while not await flush_waits():
                    assert asyncio.get_running_loop().time() < deadline, "the flush never waited"
                    await asyncio.sleep(0.05)
                await closer.execute(text("SET LOCAL statement_timeout = '2s'"))
                assert await closer.scalar(text("SELECT count(*) FROM check_results")) == 0
                await closer.rollback()
            assert await flush
            await writer.stop()
            assert len(await store.results("api")) == 1

    asyncio.run(run())
