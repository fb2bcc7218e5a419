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
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from healthmon.errors import SchemaVersionError, StorageError

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "ensure_latest",
    "head_revision",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


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


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database to `revision`, in one transaction."""
    async with engine.begin() as conn:
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
