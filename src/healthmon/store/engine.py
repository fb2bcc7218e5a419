"""Engine creation: URL handling, and each backend's connection settings.

SQLite (aiosqlite) is the embedded default; PostgreSQL (asyncpg, the optional extra
`healthmon[postgres]`) is the other backend. What differs between them in SQL lives
in store/dialect.py; this module knows how to connect.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from healthmon.store.checkpoint import WAL_LIMIT
from healthmon.store.sketch import merge_blobs

__all__ = [
    "BUSY_TIMEOUT_MS",
    "PAGE_SIZE",
    "POSTGRES_EXTRA",
    "begin_unchecked",
    "create_engine",
    "database_path",
    "database_url",
    "display_url",
    "is_postgres",
    "one_connection",
]

PAGE_SIZE = 512
"""Bytes per page of a new database (SQLite's smallest; its default is 4,096). A flush
writes each page it touches to the WAL whole, and the results key puts each service's
rows on leaf pages of their own, so a flush of n services' results writes about n
pages: at 2,000 services x 1 Hz, 4 KB per result with 4 KB pages (issue 16). The
page size of an existing database stays what it is (`VACUUM` after
`PRAGMA page_size=512` changes it)."""

BUSY_TIMEOUT_MS = 1000
"""How long a statement waits for another connection's lock before failing. Short:
the writer retries a failed flush with backoff anyway, and a statement stuck in
SQLite's busy wait holds up a stop (the driver's thread cannot be interrupted)."""


POSTGRES_EXTRA = "pip install 'healthmon[postgres]'"
"""How to install the PostgreSQL driver (asyncpg), for error messages."""


def database_url(url_or_path: str | Path) -> URL:
    """A SQLAlchemy URL for aiosqlite or asyncpg from a URL or a plain file path.

    `health.db`, `sqlite:///health.db` and `sqlite+aiosqlite:///health.db` name the
    same database. A file's path is made absolute (and `~` expanded) here, once, so
    that a later change of the working directory changes nothing.

    `postgresql://user@host/db` (or `postgres://`, `postgresql+asyncpg://`) means
    PostgreSQL through asyncpg; without asyncpg installed it is refused at once, naming
    the extra to install. Other databases and drivers are refused.
    """
    if isinstance(url_or_path, Path) or "://" not in url_or_path:
        url = URL.create("sqlite+aiosqlite", database=str(url_or_path))
        return _absolute(url)
    try:
        url = make_url(url_or_path)
    except ArgumentError as exc:
        # (The text is not repeated: it may hold a password that could not be parsed.)
        raise ValueError("not a database URL (expected sqlite:/// or postgresql://)") from exc
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return _postgres(url)
    if backend != "sqlite":
        raise ValueError(
            f"healthmon stores into SQLite or PostgreSQL; {backend!r} URLs are not supported "
            f"(got {display_url(url)!r})"
        )
    if url.drivername != "sqlite+aiosqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    return _absolute(url)


def _postgres(url: URL) -> URL:
    # (Not url.get_driver_name(): for a plain URL that loads the default driver.)
    driver = url.drivername.partition("+")[2]
    if driver not in ("", "asyncpg"):
        raise ValueError(
            f"healthmon talks to PostgreSQL through asyncpg; the driver {driver!r} is not "
            f"supported: use postgresql://... or postgresql+asyncpg://... "
            f"(got {display_url(url)!r})"
        )
    if importlib.util.find_spec("asyncpg") is None:
        raise ValueError(
            f"{display_url(url)!r} is a PostgreSQL database, whose driver (asyncpg) is not "
            f"installed: {POSTGRES_EXTRA}"
        )
    return url.set(drivername="postgresql+asyncpg")


def is_postgres(url: URL) -> bool:
    return url.get_backend_name() == "postgresql"


def one_connection(url: URL) -> bool:
    """An in-memory SQLite database: one connection (a second would see another,
    empty database), shared by everyone on one loop."""
    return url.get_backend_name() == "sqlite" and (url.database or "") in ("", ":memory:")


def database_path(url: URL) -> Path | None:
    """The file a SQLite URL names; None for an in-memory database, a `file:` URI or
    a server's database (PostgreSQL)."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    if "mode=memory" in str(url.query):
        return None
    return Path(database)


def _absolute(url: URL) -> URL:
    path = database_path(url)
    return url if path is None else url.set(database=str(path.expanduser().resolve()))


def display_url(url: URL | str) -> str:
    """The URL as it may appear in logs and errors: any password hidden."""
    if isinstance(url, str):
        url = make_url(url)
    return url.render_as_string(hide_password=True)


def create_engine(url: URL, **kwargs: Any) -> AsyncEngine:
    """An async engine for the URL's backend (see `_create_postgres` for PostgreSQL).

    SQLite: connections use WAL and explicit transactions.

    - page_size=512 for a new database (`PAGE_SIZE`: fewer bytes written per flush).
    - WAL: readers (the CLI, `sqlite3`, another HealthStore) never block the writer.
    - synchronous=NORMAL: in WAL mode a commit survives a crash of this process; only
      an OS crash or power loss can take back the last commits.
    - wal_autocheckpoint=0: no checkpoint inside a commit; the writer checkpoints
      between flushes, beside them (store/checkpoint.py), and closing the last
      connection checkpoints what is left. journal_size_limit: a WAL file started
      again is cut back to `WAL_LIMIT`.
    - busy_timeout: a briefly locked database is waited for (1 s), not an error.
    - hm_merge_histograms(a, b): adds two latency histograms (store/sketch.py), for the
      aggregates' upserts.
    - Explicit BEGIN: Python's sqlite3 module otherwise opens transactions implicitly
      and only before DML; emitting BEGIN ourselves makes DDL transactional and
      transactions exactly what SQLAlchemy says they are (SQLAlchemy's documented recipe).
    """
    if is_postgres(url):
        return _create_postgres(url, **kwargs)
    if one_connection(url):
        # One shared connection, or every connection would see its own empty database.
        kwargs.setdefault("poolclass", StaticPool)
    engine = create_async_engine(url, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL: new files only
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()
        dbapi_connection.create_function("hm_merge_histograms", 2, merge_blobs, deterministic=True)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine


def _create_postgres(url: URL, **kwargs: Any) -> AsyncEngine:
    """An asyncpg engine. Connections say who they are (`application_name`, seen in
    pg_stat_activity); a pooled connection is tested before use (`pool_pre_ping`), so
    one killed by the server or a restart costs a reconnect, not a failed flush; and a
    statement gives up after `command_timeout` rather than hang a flush forever on a
    server that stopped answering.
    """
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("server_settings", {}).setdefault("application_name", "healthmon")
    connect_args.setdefault("command_timeout", 60)
    connect_args.setdefault("timeout", 10)  # to connect
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, connect_args=connect_args, **kwargs)


@contextlib.asynccontextmanager
async def begin_unchecked(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction without SQLite's foreign-key checks, for deletes whose rows the
    caller knows to be unreferenced (retention's details rows). SQLite checks a deleted
    parent row by scanning its child table where the child column has no index, and
    `check_results.details_id` has none on purpose: seconds per row at 10 M results.
    (PostgreSQL has no such foreign key to check: a plain transaction.)
    """
    if is_postgres(engine.url):
        async with engine.begin() as conn:
            yield conn
        return
    async with engine.connect() as conn:
        # The pragma is a no-op inside a transaction: set it before BEGIN.
        await conn.run_sync(_foreign_keys, on=False)
        try:
            async with conn.begin():
                yield conn
        finally:
            if not conn.invalidated:  # (an invalidated one is never used again)
                try:
                    await conn.run_sync(_foreign_keys, on=True)
                except BaseException:
                    await conn.invalidate()  # never back in the pool without the checks
                    raise


def _foreign_keys(connection: Connection, *, on: bool) -> None:
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    finally:
        cursor.close()
