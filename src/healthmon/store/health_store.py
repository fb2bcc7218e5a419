"""HealthStore: a SQLite database of check results and status transitions."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from healthmon.errors import StorageError
from healthmon.model import HealthCheckResult, HealthStatus, StatusTransition
from healthmon.store import history, migrate
from healthmon.store.engine import create_engine, database_url, display_url
from healthmon.store.writer import Committed, ResultWriter

__all__ = ["HealthStore"]


class HealthStore:
    """The history database. Use it as an async context manager::

        async with HealthStore("sqlite+aiosqlite:///health.db") as store:
            monitor = HealthMonitor(0.1, store=store)

    Opening upgrades the schema through the alembic migrations; with
    `migrate=False` a database that is not at the latest revision is refused
    (SchemaVersionError names the revision found and the one expected).

    Any number of stores may read one file at once, in this process or others (WAL);
    writes go through one `ResultWriter` at a time, which the monitor owns.
    """

    def __init__(self, url: str | Path, *, migrate: bool = True) -> None:
        self.url = database_url(url)
        self.migrate = migrate
        self._engine: AsyncEngine | None = None
        self._writer: ResultWriter | None = None

    def __repr__(self) -> str:
        return f"HealthStore({display_url(self.url)!r})"

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and bring the schema to the latest revision (or check it is there)."""
        if self._engine is not None:
            return
        self._create_parent_folder()
        engine = create_engine(self.url)
        try:
            if self.migrate:
                await migrate.upgrade(engine)
            else:
                await migrate.ensure_latest(engine)
        except SQLAlchemyError as exc:
            await engine.dispose()
            raise StorageError(f"cannot open {display_url(self.url)}: {exc}") from exc
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine

    async def close(self) -> None:
        """Close every connection. A writer still open is stopped (and flushed) first."""
        if self._writer is not None:
            await self._writer.stop()
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError(f"{self!r} is not open: use `async with` or await open()")
        return self._engine

    # -- writing ------------------------------------------------------------------------

    def writer(
        self,
        *,
        on_commit: Callable[[Sequence[Committed]], None] | None = None,
        flush_interval: float = 0.1,
        max_pending: int = 100_000,
    ) -> ResultWriter:
        """The store's single writer (one at a time; released when it stops)."""
        if self._writer is not None:
            raise RuntimeError(
                f"{self!r} already has a writer: one monitor writes to a store at a time"
            )
        self._writer = ResultWriter(
            self.engine,
            flush_interval=flush_interval,
            max_pending=max_pending,
            on_commit=on_commit,
            on_release=self._release_writer,
        )
        return self._writer

    def _release_writer(self) -> None:
        self._writer = None

    # -- reading ------------------------------------------------------------------------

    async def results(
        self,
        service_name: str,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> list[HealthCheckResult]:
        """A service's results with since <= timestamp < until, oldest first.

        With `limit`, the first `limit` of them (page on by passing a later `since`).
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        async with self._reading() as conn:
            return await history.results(conn, service_name, since, until, limit)

    async def transitions(
        self,
        service_name: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[StatusTransition]:
        """Status transitions with since <= timestamp < until, oldest first."""
        async with self._reading() as conn:
            return await history.transitions(conn, service_name, since, until)

    async def latest(self) -> dict[str, HealthCheckResult]:
        """The newest stored result of each service."""
        async with self._reading() as conn:
            return await history.latest_results(conn)

    async def current_statuses(self) -> dict[str, HealthStatus]:
        """Each service's status as its newest stored transition left it."""
        async with self._reading() as conn:
            return await history.current_statuses(conn)

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        """A read connection whose database errors surface as StorageError."""
        try:
            async with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read {self!r}: {exc}") from exc

    def _create_parent_folder(self) -> None:
        database = self.url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
