"""The day tier: `result_days` closed by the writer, backfilled by migration 0006,
late results upserted into it (and reported), pruned by retention, read by reports."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from healthmon import HealthCheckResult, HealthStatus, HealthStore
from healthmon.store.retention import Retention, prune_step
from tests.integration.test_migrations import alembic

pytestmark = pytest.mark.timeout(120)

DAY = 86_400
D0 = 1_800_000_000 // DAY * DAY  # a UTC midnight
START = D0 + 8 * 3600  # results from 08:00 of day 0 ...
END = D0 + 3 * DAY + 3600  # ... to 01:00 of day 3: days 0-2 closed, day 3 open


def stream(name: str, start: float, end: float, step: float) -> list[HealthCheckResult]:
    found = []
    t, i = start, 0
    while t < end:
        status = HealthStatus.UNHEALTHY if i % 7 == 3 else HealthStatus.HEALTHY
        found.append(HealthCheckResult(name, status, 1.0 + (i % 13) * 0.7, t))
        t, i = t + step, i + 1
    return found


async def write(store: HealthStore, results: list[HealthCheckResult]) -> None:
    writer = store.writer()
    for result in results:
        writer.submit(result)
    assert await writer.flush()
    await writer.stop()


def rows(db_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db_path) as conn:
        found = conn.execute(sql, params).fetchall()
    conn.close()
    return found


DAY_ROWS = (
    "SELECT service_id, start, healthy, unknown, degraded, unhealthy, answered, "
    "latency_sum, latency_min, latency_max, histogram FROM result_days ORDER BY 1, 2"
)


def same_rows(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> None:
    assert [row[:7] + row[8:] for row in a] == [row[:7] + row[8:] for row in b]
    assert [row[7] for row in a] == pytest.approx([row[7] for row in b])  # float sums


@pytest.mark.asyncio
async def test_the_writer_closes_days_and_0006_backfills_the_same_rows(db_path: Path) -> None:
    async with HealthStore(db_path) as store:
        await write(store, stream("api", START, END, 300) + stream("db", START, END, 450))
        coverage = await store.coverage()
        written = rows(db_path, DAY_ROWS)
        # Days 0-2 are closed (two services), day 3 is still open.
        assert [(sid, start) for sid, start, *_ in written] == [
            (sid, D0 + k * DAY) for sid in (1, 2) for k in range(3)
        ]
        assert (coverage.day, coverage.day_until) == (0, D0 + 3 * DAY)
        assert written[0][2:6] == tuple(
            rows(
                db_path,
                "SELECT sum(healthy), sum(unknown), sum(degraded), sum(unhealthy) "
                "FROM result_hours WHERE service_id = ? AND start < ?",
                written[0][0],
                D0 + DAY,
            )[0]
        )
        # Reports over whole days read the day rows, and agree with the raw results.
        for since, until in ((D0, D0 + 3 * DAY), (START + 17.5, END - 33.25)):
            fast = await store.report("api", since, until)
            exact = await store.report("api", since, until, exact=True)
            assert fast.counts == exact.counts
            assert fast.latency.count == exact.latency.count
            assert fast.latency.p95 == pytest.approx(exact.latency.p95, rel=0.01)
        series = await store.series("api", D0, D0 + 3 * DAY, bucket=DAY)
        assert [bucket.counts.total for bucket in series] == [
            counted(db_path, "api", D0 + k * DAY, D0 + (k + 1) * DAY) for k in range(3)
        ]

    alembic(db_path, "downgrade", "0005")
    assert ("result_days",) not in rows(db_path, "SELECT name FROM sqlite_master")
    upgraded = alembic(db_path, "upgrade", "head")
    assert "day_aggregates_backfilled" in upgraded.stdout + upgraded.stderr
    same_rows(rows(db_path, DAY_ROWS), written)
    marks = rows(
        db_path, "SELECT complete_since, complete_until FROM history_coverage WHERE tier = 'day'"
    )
    assert marks == [(0, D0 + 3 * DAY)]
    shown = rows(db_path, "SELECT service, at, checks FROM days_view ORDER BY service, start")
    assert shown[0][:2] == ("api", "2027-01-15T00:00:00.000Z")

    # The writer goes on from there: day 3 closes from its hours, read back after 0006.
    async with HealthStore(db_path) as store:
        await write(store, stream("api", END, D0 + 4 * DAY + 600, 300))
        coverage = await store.coverage()
    assert coverage.day_until == D0 + 4 * DAY
    day3 = rows(
        db_path,
        "SELECT healthy + unhealthy FROM result_days JOIN services s ON s.id = service_id "
        "WHERE s.name = 'api' AND start = ?",
        D0 + 3 * DAY,
    )
    assert day3 == [(counted(db_path, "api", D0 + 3 * DAY, D0 + 4 * DAY),)]


def counted(db_path: Path, name: str, since: float, until: float) -> int:
    """The service's raw results in [since, until)."""
    (count,) = rows(
        db_path,
        "SELECT count(*) FROM check_results JOIN services s ON s.id = service_id "
        "WHERE s.name = ? AND ts_us >= ? AND ts_us < ?",
        name,
        int(since * 1_000_000),
        int(until * 1_000_000),
    )[0]
    return int(count)


@pytest.mark.asyncio
async def test_a_late_result_is_added_to_its_written_day_and_reported(db_path: Path) -> None:
    async with HealthStore(db_path) as store:
        await write(store, stream("api", START, END, 300))
        version = store.late.version
        assert store.late.after(version) == []
        before = rows(db_path, "SELECT healthy, unhealthy, answered FROM result_days")
        late_at = D0 + DAY + 1234.5  # day 1, long closed: minute, hour and day written
        await write(
            store,
            [HealthCheckResult("api", HealthStatus.UNHEALTHY, 50.0, late_at, error="HTTP 500")],
        )
        after = rows(db_path, "SELECT healthy, unhealthy, answered FROM result_days")
        assert after[1] == (before[1][0], before[1][1] + 1, before[1][2] + 1)
        assert [after[0], after[2]] == [before[0], before[2]]
        (sid,) = rows(db_path, "SELECT id FROM services WHERE name = 'api'")[0]
        minute = int(late_at) // 60 * 60
        assert sorted(store.late.after(version) or []) == [
            (60, sid, minute),
            (3600, sid, minute // 3600 * 3600),
            (DAY, sid, D0 + DAY),
        ]
        assert store.late.version == version + 1
        day = await store.report("api", D0 + DAY, D0 + 2 * DAY)
        exact = await store.report("api", D0 + DAY, D0 + 2 * DAY, exact=True)
        assert day.counts == exact.counts
        assert day.latency.max == exact.latency.max == 50.0


@pytest.mark.asyncio
async def test_a_late_result_in_an_open_day_waits_for_it_to_close(db_path: Path) -> None:
    async with HealthStore(db_path) as store:
        await write(store, stream("api", D0 + 3600, D0 + 7 * 3600, 300))
        late_at = D0 + 3600 + 77.0  # its hour is written, its day not yet
        await write(
            store,
            [HealthCheckResult("api", HealthStatus.UNHEALTHY, 5.0, late_at, error="HTTP 500")],
        )
        assert rows(db_path, "SELECT count(*) FROM result_days") == [(0,)]
        await write(store, stream("api", D0 + DAY + 600, D0 + DAY + 900, 60))  # closes day 0
        report = await store.report("api", D0, D0 + DAY)
    assert rows(db_path, "SELECT healthy, unhealthy FROM result_days WHERE start = ?", D0) == [
        (report.counts.healthy, report.counts.unhealthy)
    ]
    assert report.counts.total == counted(db_path, "api", D0, D0 + DAY)


@pytest.mark.asyncio
async def test_retention_prunes_day_rows_and_raises_the_day_mark(db_path: Path) -> None:
    async with HealthStore(db_path) as store:
        await write(store, stream("api", START, END, 300))
        retention = Retention(raw=DAY, minute=DAY, hour=DAY, day=2 * DAY)
        now = D0 + 3 * DAY + 3600  # day 0 is over 2 days old
        async with store.engine.begin() as conn:
            while (await prune_step(conn, retention, 1000, now=now)).more:
                pass
        coverage = await store.coverage()
    assert coverage.day == D0 + DAY
    assert coverage.hour == D0 + 2 * DAY + 3600
    assert [start for (start,) in rows(db_path, "SELECT start FROM result_days")] == [
        D0 + DAY,
        D0 + 2 * DAY,
    ]
    with pytest.raises(ValueError, match=r"hour <= day"):
        Retention(hour=10 * DAY, day=DAY)
