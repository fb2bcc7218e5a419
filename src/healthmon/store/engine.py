"""Engine creation for SQLite through aiosqlite: URL handling and connection pragmas."""

from __future__ import annotations

import contextlib
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
    "begin_unchecked",
    "create_engine",
    "database_path",
    "database_url",
    "display_url",
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


def database_url(url_or_path: str | Path) -> URL:
    """A SQLAlchemy URL for aiosqlite from a URL or a plain file path.

    `health.db`, `sqlite:///health.db` and `sqlite+aiosqlite:///health.db` name the
    same database. A file's path is made absolute (and `~` expanded) here, once, so
    that a later change of the working directory changes nothing. Other databases
    are refused: healthmon is built on SQLite.
    """
    if isinstance(url_or_path, Path) or "://" not in url_or_path:
        url = URL.create("sqlite+aiosqlite", database=str(url_or_path))
        return _absolute(url)
    try:
        url = make_url(url_or_path)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {url_or_path!r}") from exc
    if url.get_backend_name() != "sqlite":
        raise ValueError(
            f"healthmon stores into SQLite; {url.get_backend_name()!r} URLs are not supported "
            f"(got {display_url(url)!r})"
        )
    if url.get_driver_name() != "aiosqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    return _absolute(url)


def database_path(url: URL) -> Path | None:
    """The file a SQLite URL names; None for an in-memory database or a `file:` URI."""
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
    """An async engine whose connections use WAL and explicit transactions.

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
    if (url.database or "") in ("", ":memory:"):
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


@contextlib.asynccontextmanager
async def begin_unchecked(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction without SQLite's foreign-key checks, for deletes whose rows the
    caller knows to be unreferenced (retention's details rows). SQLite checks a deleted
    parent row by scanning its child table where the child column has no index, and
    `check_results.details_id` has none on purpose: seconds per row at 10 M results.
    """
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
