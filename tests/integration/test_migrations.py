"""Schema migrations: the repository's `alembic` command and the application's own."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from healthmon import HealthStore, SchemaVersionError, StorageError
from healthmon.store.migrate import head_revision

REPO = Path(__file__).resolve().parents[2]
APP_TABLES = {"services", "statuses", "check_results", "status_transitions"}
HISTORY_TABLES = {"result_minutes", "result_hours", "result_gaps", "history_coverage"}
VIEWS = {
    "results_view",
    "transitions_view",
    "gaps_view",
    "incidents_view",
    "minutes_view",
    "hours_view",
}


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
    assert tables(db_path) >= APP_TABLES | HISTORY_TABLES
    assert views(db_path) == VIEWS
    assert revision(db_path) == head_revision()

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


def test_non_sqlite_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="postgresql") as caught:
        HealthStore("postgresql://user:secret@db/health")
    assert "secret" not in str(caught.value)
