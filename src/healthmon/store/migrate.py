"""Schema migrations from the application: alembic, run programmatically.

The migration scripts ship inside the package (`healthmon/migrations/`), so an
installed wheel can upgrade a database as well as a checkout can. The repository's
`alembic.ini` points the `alembic` command at the same folder.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from healthmon.errors import SchemaVersionError, StorageError
from healthmon.store.engine import display_url, is_postgres

__all__ = [
    "LOCK_KEY",
    "LOCK_TIMEOUT",
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "ensure_latest",
    "head_revision",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

LOCK_KEY = 0x6865616C74686D6F  # "healthmo": the migration lock's advisory-lock key
LOCK_TIMEOUT = 60.0
"""Seconds a migration waits for another process's migration to finish."""


def alembic_config(url: str | None = None) -> Config:
    """An alembic Config for healthmon's migrations, optionally bound to a URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision this version of healthmon knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships its migrations
        raise StorageError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at; None for an empty or unmanaged database."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current_revision)


async def upgrade(
    engine: AsyncEngine, revision: str = "head", *, lock_timeout: float = LOCK_TIMEOUT
) -> None:
    """Upgrade the database to `revision`, in one transaction.

    On PostgreSQL the transaction first takes the migration lock (see `_lock`), so
    that processes upgrading one database at once do it one after the other: the
    first migrates, the others then find the schema at the head and do nothing.
    """
    async with engine.begin() as conn:
        await _lock(conn, lock_timeout)
        found = await conn.run_sync(_current_revision)
        _refuse_unknown(found)
        try:
            await conn.run_sync(_run_upgrade, revision)
        except CommandError as exc:
            raise StorageError(f"could not upgrade the database to {revision}: {exc}") from exc


async def ensure_latest(engine: AsyncEngine) -> None:
    """Raise SchemaVersionError unless the database is at the head revision."""
    found = await current_revision(engine)
    expected = head_revision()
    if found != expected:
        raise SchemaVersionError(found, expected)


async def _lock(conn: AsyncConnection, timeout: float) -> None:
    """PostgreSQL: wait at most `timeout` seconds for the migration lock, a
    transaction-level advisory lock (released by the commit or rollback, so it never
    outlives the migration, whatever happens to the process). SQLite needs none: its
    write transaction (BEGIN, then the first write) serialises migrations itself."""
    if not is_postgres(conn.engine.url):
        return
    await conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(timeout * 1000)}ms'")
    try:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    except DBAPIError as exc:
        raise StorageError(
            f"could not take the migration lock of {display_url(conn.engine.url)} within "
            f"{timeout:g} s: another process is migrating this database (or holds "
            f"pg_advisory_lock({LOCK_KEY})); try again once it is done"
        ) from exc
    await conn.exec_driver_sql("SET LOCAL lock_timeout = 0")


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _refuse_unknown(found: str | None) -> None:
    """A revision we do not know is a database written by a newer healthmon."""
    if found is None:
        return
    script = ScriptDirectory.from_config(alembic_config())
    try:
        script.get_revision(found)
    except CommandError as exc:
        raise StorageError(
            f"database schema is at revision {found}, which this version of healthmon "
            f"does not know (its newest is {head_revision()}); it was written by a newer "
            "healthmon: upgrade healthmon rather than the database"
        ) from exc


def _run_upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    # env.py runs the migrations on this connection (alembic's connection sharing).
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
