"""Schema migrations: the repository's `alembic` command and the application's own."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from healthmon import (
    HealthCheckResult,
    HealthStatus,
    HealthStore,
    SchemaVersionError,
    StorageError,
)
from healthmon.store.migrate import head_revision

REPO = Path(__file__).resolve().parents[2]
APP_TABLES = {"services", "statuses", "check_results", "status_transitions"}
HISTORY_TABLES = {"result_minutes", "result_hours", "result_gaps", "history_coverage"}
COMPACT_TABLES = {"result_details"}
DAY_TABLES = {"result_days"}
VIEWS_0002 = {
    "results_view",
    "transitions_view",
    "gaps_view",
    "incidents_view",
    "minutes_view",
    "hours_view",
}
VIEWS = VIEWS_0002 | {"days_view"}


def alembic(db_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HEALTHMON_DATABASE_URL": f"sqlite+aiosqlite:///{db_path}"}
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def tables(db_path: Path) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    conn.close()
    return {name for (name,) in rows}


def views(db_path: Path) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'").fetchall()
    conn.close()
    return {name for (name,) in rows}


def revision(db_path: Path) -> str | None:
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    conn.close()
    return None if row is None else str(row[0])


def test_upgrade_downgrade_upgrade_and_check(db_path: Path) -> None:
    alembic(db_path, "upgrade", "head")
    assert tables(db_path) >= APP_TABLES | HISTORY_TABLES | COMPACT_TABLES | DAY_TABLES
    assert views(db_path) == VIEWS
    assert revision(db_path) == head_revision()

    alembic(db_path, "downgrade", "0005")  # the day tier's step back
    assert DAY_TABLES.isdisjoint(tables(db_path))
    assert views(db_path) == VIEWS_0002

    alembic(db_path, "downgrade", "0002")  # the compact results' step back
    assert tables(db_path) == APP_TABLES | HISTORY_TABLES | {"alembic_version"}
    assert views(db_path) == VIEWS_0002

    alembic(db_path, "downgrade", "0001")  # the history's own step back
    assert tables(db_path) == APP_TABLES | {"alembic_version"}
    assert views(db_path) == set()

    alembic(db_path, "downgrade", "base")
    assert tables(db_path) == {"alembic_version"}
    assert revision(db_path) is None

    alembic(db_path, "upgrade", "head")
    assert tables(db_path) >= APP_TABLES
    # Models and migrations agree: nothing for autogenerate to add.
    check = alembic(db_path, "check")
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_status_names_are_seeded_for_sql_readers(db_path: Path) -> None:
    alembic(db_path, "upgrade", "head")
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT code, name FROM statuses ORDER BY code").fetchall()
    conn.close()
    assert rows == [(0, "healthy"), (1, "unknown"), (2, "degraded"), (3, "unhealthy")]


@pytest.mark.asyncio
async def test_store_upgrades_a_new_database(db_path: Path) -> None:
    async with HealthStore(f"sqlite:///{db_path}") as store:
        assert await store.latest() == {}
    assert tables(db_path) >= APP_TABLES
    assert revision(db_path) == head_revision()


@pytest.mark.asyncio
async def test_store_upgrades_an_older_database(db_path: Path) -> None:
    alembic(db_path, "upgrade", "head")
    alembic(db_path, "downgrade", "base")  # an "older" database: at no revision yet
    async with HealthStore(db_path):
        pass
    assert revision(db_path) == head_revision()


@pytest.mark.asyncio
async def test_migrate_false_refuses_a_database_not_at_head(db_path: Path) -> None:
    sqlite3.connect(db_path).close()  # an empty, unmanaged database
    with pytest.raises(SchemaVersionError) as caught:
        async with HealthStore(db_path, migrate=False):
            pass
    assert caught.value.found is None
    assert caught.value.expected == head_revision()
    assert head_revision() in str(caught.value)
    assert APP_TABLES.isdisjoint(tables(db_path))  # refused, not touched


@pytest.mark.asyncio
async def test_a_database_from_a_newer_healthmon_is_refused(db_path: Path) -> None:
    alembic(db_path, "upgrade", "head")
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffff_from_the_future'")
    conn.close()
    with pytest.raises(StorageError, match=r"ffff_from_the_future.*newer healthmon"):
        async with HealthStore(db_path):
            pass
    with pytest.raises(SchemaVersionError, match="ffff_from_the_future"):
        async with HealthStore(db_path, migrate=False):
            pass


def test_other_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="mysql") as caught:
        HealthStore("mysql://user:secret@db/health")
    assert "secret" not in str(caught.value)


# -- 0003: compact results ---------------------------------------------------------------

BASE = 1_800_000_000.0  # a whole minute
OK = '{"status": "ok"}'


def old_rows() -> list[tuple[int, float, int, float, str | None, str | None, int]]:
    """(service_id, ts, status, response_time_ms, error, details, answered) as 0002 held
    them: repeated and changing bodies, a minute boundary, and results of one service
    that fall on one microsecond."""
    api = [
        (1, BASE, 0, 2.0, None, OK, 1),
        (1, BASE + 1, 0, 3.0, None, OK, 1),
        (1, BASE + 1, 0, 4.0, None, OK, 1),  # the same time
        (1, BASE + 1 + 1e-7, 0, 5.0, None, OK, 1),  # the same microsecond
        (1, BASE + 59.5, 0, 2.5, None, OK, 1),
        (1, BASE + 60.5, 0, 2.25, None, OK, 1),  # the next minute: a details row of its own
        (1, BASE + 61, 3, 500.0, "timeout after 500 ms", None, 0),
    ]
    db = [
        (2, BASE + 0.5, 0, 1.0, None, '{"n": 1}', 1),
        (2, BASE + 1.5, 3, 1.0, "HTTP 503", '{"n": 2}', 1),
        (2, BASE + 2.5, 0, 1.0, None, '{"n": 1}', 1),
    ]
    return api + db


def test_0003_copies_every_result_then_downgrades_to_0002(db_path: Path) -> None:
    alembic(db_path, "upgrade", "0002")
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT INTO services (id, name, kind, url, created_at) "
            "VALUES (1, 'api', 'http', NULL, 0), (2, 'db', 'http', NULL, 0)"
        )
        conn.executemany(
            "INSERT INTO check_results "
            "(service_id, ts, status, response_time_ms, error, details, answered) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            old_rows(),
        )
    conn.close()

    upgraded = alembic(db_path, "upgrade", "0003")
    assert "results_time_nudged" in upgraded.stdout + upgraded.stderr
    assert "count=2" in upgraded.stdout + upgraded.stderr
    us = round(BASE * 1e6)
    rows = query(
        db_path,
        "SELECT service_id, ts_us, status, response_time_us, error, details_id, answered "
        "FROM check_results ORDER BY service_id, ts_us",
    )
    assert [(sid, ts - us, status, rt) for sid, ts, status, rt, *_ in rows] == [
        (1, 0, 0, 2000),
        (1, 1_000_000, 0, 3000),
        (1, 1_000_001, 0, 4000),  # moved 1 us apart, in their old order
        (1, 1_000_002, 0, 5000),
        (1, 59_500_000, 0, 2500),
        (1, 60_500_000, 0, 2250),
        (1, 61_000_000, 3, 500_000),
        (2, 500_000, 0, 1000),
        (2, 1_500_000, 3, 1000),
        (2, 2_500_000, 0, 1000),
    ]
    # One details row per body, service and minute; answered and errors kept.
    assert query(db_path, "SELECT count(*) FROM result_details") == [(4,)]
    assert [row[4:] for row in rows if row[0] == 1][-1] == ("timeout after 500 ms", None, 0)
    shown = query(
        db_path,
        "SELECT service, at, ts, response_time_ms, details FROM results_view "
        "ORDER BY service, ts_us",
    )
    assert shown[0] == ("api", "2027-01-15T08:00:00.000Z", BASE, 2.0, OK)
    assert shown[5] == ("api", "2027-01-15T08:01:00.500Z", BASE + 60.5, 2.25, OK)
    assert [details for *_, details in shown] == [d for *_, d, _ in old_rows()]

    alembic(db_path, "upgrade", "head")  # (the later revisions change none of these rows)

    async def read() -> list[HealthCheckResult]:
        # (Upgraded on to the head: the downgrade below goes back through every later one.)
        async with HealthStore(db_path) as store:
            return await store.results("api") + await store.results("db")

    results = asyncio.run(read())
    assert [r.details for r in results] == [
        None if d is None else json.loads(d) for *_, d, _ in old_rows()
    ]
    assert [r.timestamp for r in results][1:4] == [(us + 1_000_000 + k) / 1e6 for k in range(3)]

    alembic(db_path, "downgrade", "0002")
    back = query(
        db_path,
        "SELECT service_id, ts, status, response_time_ms, error, details, answered "
        "FROM check_results ORDER BY service_id, ts, id",
    )
    # The same rows, at the times they were moved to.
    assert back == [
        (*old[:1], new[1] / 1e6, *old[2:]) for old, new in zip(old_rows(), rows, strict=True)
    ]
    assert query(db_path, "SELECT count(*) FROM results_view") == [(10,)]
    indexes = query(db_path, "SELECT name FROM sqlite_master WHERE type = 'index'")
    assert ("ix_check_results_service_id_ts",) in indexes

    alembic(db_path, "upgrade", "head")  # and up again: nothing left to move
    assert query(db_path, "SELECT count(*) FROM check_results") == [(10,)]
    check = alembic(db_path, "check")
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def query(db_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(sql).fetchall()
    conn.close()
    return rows


# -- 0004: answered failures -------------------------------------------------------------

HOUR = 1_800_000_000.0  # a whole hour


def _made(ts: float, *, down: bool) -> HealthCheckResult:
    if down:  # flagged as the writer before 0004 did
        return HealthCheckResult(
            "api", HealthStatus.UNHEALTHY, 40.0, ts, error="body status DOWN", answered=False
        )
    return HealthCheckResult("api", HealthStatus.HEALTHY, 4.0, ts)


async def _latency(db_path: Path, stream: Sequence[HealthCheckResult] = ()) -> tuple[Any, Any]:
    """Write `stream`, then the hour's latency from the aggregates and from raw results."""
    async with HealthStore(db_path) as store:
        if stream:
            writer = store.writer()
            for result in stream:
                writer.submit(result)
            assert await writer.flush()
            await writer.stop()
        aggregated = await store.report("api", HOUR, HOUR + 3600)
        exact = await store.report("api", HOUR, HOUR + 3600, exact=True)
    return aggregated.latency, exact.latency


def test_0004_counts_the_latency_of_answered_failures_stored_as_unanswered(
    db_path: Path,
) -> None:
    # Issue 11 #3: 10 healthy results at 4 ms and 10 `body status DOWN` at 40 ms gave a
    # latency count of 10 and a max of 4 ms. Rows so stored (answered 0, as the writer
    # before 0004 flagged them) are corrected, and so are the aggregates written.
    stream = [_made(HOUR + 60 * i + 1, down=i % 2 == 1) for i in range(20)]
    timeout = "timeout after 500 ms"  # stays unanswered
    stream.append(
        HealthCheckResult("api", HealthStatus.UNHEALTHY, 500.0, HOUR + 1300, error=timeout)
    )
    stream += [_made(HOUR + 3600 + 10 + i, down=False) for i in range(3)]  # closes the hour
    before, _ = asyncio.run(_latency(db_path, stream))
    assert (before.count, before.max, before.exact) == (10, 4.0, False)  # from the hour row
    alembic(db_path, "downgrade", "0003")  # as a database written before 0004 is
    upgraded = alembic(db_path, "upgrade", "head")
    assert "answered_failures_corrected" in upgraded.stdout + upgraded.stderr

    aggregated, exact = asyncio.run(_latency(db_path))
    assert (aggregated.count, aggregated.max, aggregated.min) == (20, 40.0, 4.0)
    assert (exact.count, exact.max, exact.min) == (20, 40.0, 4.0)
    assert aggregated.mean == pytest.approx(exact.mean) == pytest.approx(22.0)
    assert aggregated.p95 == pytest.approx(40.0, rel=0.01)
    assert query(db_path, "SELECT error, answered FROM check_results WHERE status = 3") == [
        ("body status DOWN", 1)
    ] * 10 + [(timeout, 0)]
    minutes = query(db_path, "SELECT sum(answered), max(latency_max) FROM result_minutes")
    assert minutes == [(20, 40.0)]  # answered in written minutes: the first 20, now
