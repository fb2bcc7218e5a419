"""Which database a command uses, and opening one for reading without changing it."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from alembic.script import ScriptDirectory

from healthmon.errors import SchemaVersionError, StorageError
from healthmon.store import HealthStore
from healthmon.store.engine import database_path, database_url, display_url
from healthmon.store.migrate import alembic_config

__all__ = [
    "DATABASE_ENV",
    "DEFAULT_DATABASE",
    "add_database_argument",
    "database_file",
    "default_database",
    "open_for_reading",
    "shown",
]

DATABASE_ENV = "HEALTHMON_DATABASE_URL"
DEFAULT_DATABASE = "healthmon.db"


def default_database() -> str:
    """$HEALTHMON_DATABASE_URL, else healthmon.db in the current folder (as alembic.ini)."""
    return os.environ.get(DATABASE_ENV) or DEFAULT_DATABASE


def add_database_argument(parser: argparse.ArgumentParser, *, default: bool = True) -> None:
    parser.add_argument(
        "--database",
        metavar="URL",
        type=_database,
        default=default_database() if default else None,
        help="SQLite file path or URL (sqlite:///health.db), or a PostgreSQL URL "
        "(postgresql://user@host/db); default: "
        + ("" if default else "the config file's [store] database, else ")
        + f"${DATABASE_ENV}, else ./{DEFAULT_DATABASE}",
    )


def _database(value: str) -> str:
    """argparse type: a SQLite path or URL, checked (a bad one is a usage error)."""
    try:
        database_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def shown(database: str) -> str:
    """A database as users name it: the file's path, else the URL (password hidden)."""
    file = database_file(database)
    return str(file) if file is not None else display_url(database_url(database))


def database_file(database: str) -> Path | None:
    """The file behind a database argument; None for an in-memory database."""
    url = database_url(database)
    if database_path(url) is None:  # in memory, or a server's database (PostgreSQL)
        return None
    return Path(url.database or "").expanduser()


@contextlib.asynccontextmanager
async def open_for_reading(database: str) -> AsyncIterator[HealthStore]:
    """A store over an existing database at the current schema: reading never creates
    a file and never migrates (a monitor may be writing it)."""
    file = database_file(database)
    if file is not None and not file.exists():
        raise StorageError(
            f"no database at {file}: start `healthmon run` or pass --database "
            f"(or set ${DATABASE_ENV})"
        )
    try:
        store = HealthStore(database, migrate=False)
        await store.open()
    except SchemaVersionError as exc:
        raise StorageError(_schema_advice(shown(database), exc)) from exc
    try:
        yield store
    finally:
        await store.close()


def _schema_advice(name: str, exc: SchemaVersionError) -> str:
    known = {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }
    if exc.found is not None and exc.found not in known:
        return (
            f"{name} is at schema revision {exc.found}, written by a newer healthmon "
            f"(this one knows up to {exc.expected}): upgrade healthmon"
        )
    found = exc.found or "none (not a healthmon database, or never upgraded)"
    return (
        f"{name} is at schema revision {found}, this healthmon reads {exc.expected}: "
        f"run `healthmon db upgrade --database {name}` (or let `healthmon run` upgrade it)"
    )
