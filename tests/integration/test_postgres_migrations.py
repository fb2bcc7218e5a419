"""PostgreSQL: URLs, the driver as an extra, and the migrations on a real server."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import text

from healthmon import HealthStore, StorageError
from healthmon.store import migrate, sketch
from healthmon.store.engine import create_engine, database_url
from healthmon.store.migrate import LOCK_KEY, head_revision
from tests.integration.test_migrations import APP_TABLES, BASE, OK, REPO, VIEWS, old_rows


def alembic(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HEALTHMON_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    async def run() -> list[tuple[Any, ...]]:
        engine = create_engine(database_url(url))
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(sql), params)
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(run())


def tables(url: str) -> set[str]:
    rows = query(
        url,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename NOT LIKE 'check\\_results\\_p%'",
    )
    return {name for (name,) in rows}


def views(url: str) -> set[str]:
    return {
        name for (name,) in query(url, "SELECT viewname FROM pg_views WHERE schemaname = 'public'")
    }


def test_upgrade_downgrade_upgrade_and_check_on_postgresql(pg_url: str) -> None:
    alembic(pg_url, "upgrade", "head")
    assert tables(pg_url) >= APP_TABLES | {"result_details"}
    assert views(pg_url) == VIEWS
    check = alembic(pg_url, "check")
    assert "No new upgrade operations detected" in check.stdout + check.stderr
    alembic(pg_url, "downgrade", "base")
    assert tables(pg_url) == {"alembic_version"}
    assert views(pg_url) == set()
    alembic(pg_url, "upgrade", "head")
    check = alembic(pg_url, "check")
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_0003_copies_every_result_into_day_partitions_and_back(pg_url: str) -> None:
    alembic(pg_url, "upgrade", "0002")
    query(
        pg_url,
        "INSERT INTO services (id, name, kind, url, created_at) "
        "VALUES (1, 'api', 'http', NULL, 0), (2, 'db', 'http', NULL, 0)",
    )
    query(
        pg_url,
        "INSERT INTO check_results "
        "(service_id, ts, status, response_time_ms, error, details, answered) "
        "VALUES (:sid, :ts, :status, :rt, :error, CAST(:details AS JSON), :answered)",
        [
            dict(zip(("sid", "ts", "status", "rt", "error", "details"), row[:6], strict=True))
            | {"answered": bool(row[6])}
            for row in old_rows()
        ],
    )
    upgraded = alembic(pg_url, "upgrade", "0003")
    assert "count=2" in upgraded.stdout + upgraded.stderr
    us = round(BASE * 1e6)
    stored = query(
        pg_url,
        "SELECT service_id, ts_us, status, response_time_us FROM check_results "
        "ORDER BY service_id, ts_us",
    )
    assert [(sid, ts - us, status, rt) for sid, ts, status, rt in stored] == [
        (1, 0, 0, 2000),
        (1, 1_000_000, 0, 3000),
        (1, 1_000_001, 0, 4000),
        (1, 1_000_002, 0, 5000),
        (1, 59_500_000, 0, 2500),
        (1, 60_500_000, 0, 2250),
        (1, 61_000_000, 3, 500_000),
        (2, 500_000, 0, 1000),
        (2, 1_500_000, 3, 1000),
        (2, 2_500_000, 0, 1000),
    ]
    assert query(pg_url, "SELECT count(*) FROM result_details") == [(4,)]
    # The rows are in their day's partition.
    assert query(pg_url, "SELECT count(*) FROM check_results_p20270115") == [(10,)]
    shown = query(
        pg_url, "SELECT service, at, details FROM results_view ORDER BY service, ts_us LIMIT 1"
    )
    assert shown == [("api", "2027-01-15T08:00:00.000Z", json.loads(OK))]
    alembic(pg_url, "downgrade", "0002")
    assert query(pg_url, "SELECT count(*) FROM check_results") == [(10,)]
    alembic(pg_url, "upgrade", "head")
    assert query(pg_url, "SELECT count(*) FROM check_results") == [(10,)]
    check = alembic(pg_url, "check")
    assert "No new upgrade operations detected" in check.stdout + check.stderr


@pytest.mark.asyncio
async def test_concurrent_upgrades_take_turns_on_the_migration_lock(pg_url: str) -> None:
    """Four processes' stores opening one new database at once: one migrates, the
    others wait for it, and find nothing left to do."""
    script = (
        "import asyncio, sys\n"
        "from healthmon import HealthStore\n"
        "async def main():\n"
        "    async with HealthStore(sys.argv[1]):\n"
        "        pass\n"
        "asyncio.run(main())\n"
    )
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, pg_url, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(4)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in processes))
    assert [p.returncode for p in processes] == [0] * 4, [err for _, err in outputs]
    engine = create_engine(database_url(pg_url))
    try:
        assert await migrate.current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


@pytest.mark.asyncio
async def test_a_migration_waits_for_the_lock_then_fails_naming_it(pg_url: str) -> None:
    holder = create_engine(database_url(pg_url))
    engine = create_engine(database_url(pg_url))
    try:
        async with holder.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
            with pytest.raises(StorageError) as caught:
                await migrate.upgrade(engine, lock_timeout=0.3)
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
        message = str(caught.value)
        assert "migration lock" in message
        assert "another process is migrating" in message
        assert await migrate.current_revision(engine) is None  # nothing done meanwhile
        await migrate.upgrade(engine, lock_timeout=0.3)  # free again
        assert await migrate.current_revision(engine) == head_revision()
    finally:
        await engine.dispose()
        await holder.dispose()


def test_plain_postgresql_urls_mean_asyncpg() -> None:
    for given in ("postgresql://u@h/db", "postgres://u@h/db", "postgresql+asyncpg://u@h/db"):
        assert database_url(given).drivername == "postgresql+asyncpg"
    with pytest.raises(ValueError, match="asyncpg") as caught:
        database_url("postgresql+psycopg2://user:secret@h/db")
    assert "secret" not in str(caught.value)


def test_a_postgresql_url_without_the_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = importlib.util.find_spec

    def without_asyncpg(name: str, *args: Any) -> Any:
        return None if name == "asyncpg" else found(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_asyncpg)
    with pytest.raises(ValueError, match=r"healthmon\[postgres\]") as caught:
        HealthStore("postgresql://monitor:hunter2@db.example/health")
    assert "hunter2" not in str(caught.value)
    assert "db.example" in str(caught.value)


def test_0006_backfills_day_rows_from_hour_rows_on_postgresql(pg_url: str) -> None:
    """On a database at 0005 with hour rows: 0006 sums each whole day the hour tier
    holds into a day row, and says so in history_coverage; down and up again."""
    alembic(pg_url, "upgrade", "0005")
    day = int(BASE) // 86_400 * 86_400
    query(pg_url, "INSERT INTO services (id, name, kind, created_at) VALUES (1, 'api', 'http', 0)")
    hours = [
        {"start": day + 3600 * h, "healthy": 10 + h, "unhealthy": h % 2, "answered": 10 + h}
        for h in range(30)  # day 0 whole, 6 hours of day 1
    ]
    query(
        pg_url,
        "INSERT INTO result_hours (service_id, start, healthy, unknown, degraded, unhealthy, "
        "answered, latency_sum, latency_min, latency_max, histogram) VALUES "
        "(1, :start, :healthy, 0, 0, :unhealthy, :answered, 2.0, 1.0, 3.0, :histogram)",
        [row | {"histogram": sketch.encode({5: row["answered"]})} for row in hours],
    )
    query(
        pg_url,
        "UPDATE history_coverage SET complete_since = :since, complete_until = :until "
        "WHERE tier = 'hour'",
        {"since": day, "until": day + 30 * 3600},
    )
    alembic(pg_url, "upgrade", "head")
    found = query(
        pg_url,
        "SELECT start, healthy, unhealthy, answered, latency_sum, latency_min, histogram "
        "FROM result_days",
    )
    expected_healthy = sum(10 + h for h in range(24))
    assert [row[:6] for row in found] == [(day, expected_healthy, 12, expected_healthy, 48.0, 1.0)]
    assert sketch.decode(bytes(found[0][6]))[1].tolist() == [expected_healthy]
    assert query(
        pg_url, "SELECT complete_since, complete_until FROM history_coverage WHERE tier = 'day'"
    ) == [(day, day + 86_400)]
    assert query(pg_url, "SELECT service, at FROM days_view") == [
        ("api", "2027-01-15T00:00:00.000Z")
    ]
    check = alembic(pg_url, "check")
    assert "No new upgrade operations detected" in check.stdout + check.stderr
    alembic(pg_url, "downgrade", "0005")
    assert "result_days" not in tables(pg_url)
    assert query(pg_url, "SELECT count(*) FROM history_coverage WHERE tier = 'day'") == [(0,)]
    alembic(pg_url, "upgrade", "head")
    assert query(pg_url, "SELECT count(*) FROM result_days") == [(1,)]
