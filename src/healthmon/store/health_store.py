"""HealthStore: a SQLite database of check results and status transitions."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar, TypeVarTuple

import structlog
from sqlalchemy import Row, Select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from healthmon.errors import StorageError
from healthmon.model import HealthCheckResult, HealthStatus, StatusTransition
from healthmon.store import dialect, fleet, history, migrate, report
from healthmon.store.checkpoint import Checkpoints
from healthmon.store.closing import SharedRollup
from healthmon.store.dbfile import DatabaseFile, FileState
from healthmon.store.engine import create_engine, database_url, display_url, one_connection
from healthmon.store.fleet import Aggregate, DayCounts
from healthmon.store.history import TransitionRecord
from healthmon.store.late import LateChanges
from healthmon.store.plan import Coverage, load_coverage
from healthmon.store.retention import Retention
from healthmon.store.rollup import DEFAULT_GAP_AFTER, Rollup
from healthmon.store.staging import Staging
from healthmon.store.stats import ServiceReport, StatusCounts, WindowStats
from healthmon.store.thread import StoreThread
from healthmon.store.writer import Committed, Fence, ResultWriter

log = structlog.get_logger("healthmon.store")

__all__ = ["HealthStore"]

_Columns = TypeVarTuple("_Columns")
_T = TypeVar("_T")


class HealthStore:
    """The history database. Use it as an async context manager::

        async with HealthStore("sqlite+aiosqlite:///health.db") as store:
            monitor = HealthMonitor(0.1, store=store)

    Opening upgrades the schema through the alembic migrations; with
    `migrate=False` a database that is not at the latest revision is refused
    (SchemaVersionError names the revision found and the one expected).

    Any number of stores may read one file at once, in this process or others (WAL);
    writes go through one `ResultWriter` at a time, which the monitor owns.

    The writer and the reads below run on the store's own thread and event loop
    (store/thread.py), with an engine of their own there: a monitor's loop busy with
    checks never holds them up, and awaits each of them once. `engine` is an engine
    on the opener's loop, for code that runs its own SQL (cluster mode's leases, the
    CLI) and for the streamed exports. (An in-memory database, one connection, has
    no thread: everything runs on the opener's loop.)

    History settings (see docs/history.md): `retention` per tier (default: raw
    results 7 days, minute aggregates 35 days, hour aggregates with transitions and
    gaps 400 days, day aggregates as long as hours); `gap_after`, the seconds
    without a result that make a gap (default 10); pruning deletes at most
    `prune_batch` rows per table in one short transaction between two flushes, again
    after the next flush while a backlog remains, else every `prune_interval` seconds.
    """

    def __init__(
        self,
        url: str | Path,
        *,
        migrate: bool = True,
        retention: Retention | None = None,
        gap_after: float = DEFAULT_GAP_AFTER,
        prune_batch: int = 1000,
        prune_interval: float = 60.0,
    ) -> None:
        self.url = database_url(url)
        self.migrate = migrate
        self._file = DatabaseFile(self.url)
        rollup = Rollup(  # validates the history settings now rather than at the first write
            gap_after=gap_after,
            retention=retention,
            prune_batch=prune_batch,
            prune_interval=prune_interval,
        )
        self.retention = rollup.retention
        self.gap_after = rollup.gap_after
        self._prune_batch = prune_batch
        self._prune_interval = prune_interval
        self._engine: AsyncEngine | None = None
        self._thread: StoreThread | None = None
        self._own: AsyncEngine | None = None  # the thread's (or `_engine` without one)
        self._opener: asyncio.AbstractEventLoop | None = None  # `_engine`'s loop
        self._writer: ResultWriter | None = None
        self.late = LateChanges()
        """Aggregate rows this process's writer changed with late results (store/late.py)."""

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
        except (SQLAlchemyError, OSError) as exc:  # (asyncpg: a refused connection)
            await engine.dispose()
            raise StorageError(f"cannot open {display_url(self.url)}: {exc}") from exc
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine
        self._file.remember()
        self._opener = asyncio.get_running_loop()
        if one_connection(self.url):
            self._own = engine
            return
        self._thread = StoreThread()
        self._thread.start()
        self._own = create_engine(self.url)  # (it connects on the thread, when first used)

    async def _recreate_if_lost(self) -> bool:
        """If the database file was deleted or replaced under us, make a new one at the
        same path (through the migrations) and say so; the writer then starts afresh."""
        state = self._file.state()
        if state is FileState.SAME:
            return False
        if state is FileState.REPLACED:
            # Perhaps a restored backup: whatever it is, healthmon did not open it and
            # does not write into it. Results wait (and beyond the bound are dropped).
            raise StorageError(
                f"the database file {self._file.path} was replaced by another file; "
                "restart healthmon to use it"
            )
        log.error(
            "database_file_lost",
            path=str(self._file.path),
            consequence="results committed to the lost file are gone with it; "
            "a new database is created at the same path",
        )
        # The pooled connections still point at the old inode. (This runs on the store's
        # thread; the opener's pool belongs to the opener's loop: disposed there.)
        await self.thread_engine.dispose()
        self._dispose_opener_engine()
        self._file.remove_leftovers()
        await migrate.upgrade(self.thread_engine)
        self._file.remember()
        log.info("database_recreated", path=str(self._file.path))
        return True

    def _dispose_opener_engine(self) -> None:
        engine, loop = self._engine, self._opener
        if engine is None or engine is self._own or loop is None:
            return
        dispose = engine.dispose()
        try:
            asyncio.run_coroutine_threadsafe(dispose, loop)  # (not waited for)
        except RuntimeError:  # that loop has ended, and with it whatever used the engine
            dispose.close()

    async def close(self) -> None:
        """Close every connection. A writer still open is stopped (and flushed) first."""
        try:
            if self._writer is not None:
                await self._writer.stop()  # raises if it crashed: after it let go
        finally:
            engine, self._engine = self._engine, None
            own, self._own = self._own, None
            thread, self._thread = self._thread, None
            try:
                if thread is not None and own is not None:
                    await thread.run(own.dispose())
            finally:
                if thread is not None:
                    await asyncio.to_thread(thread.stop)
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

    @property
    def thread_engine(self) -> AsyncEngine:
        """The engine the writer and the reads use, on the store's thread (`engine`
        itself for an in-memory database). For instrumentation, such as SQLAlchemy
        events; do not await on it from another loop (PostgreSQL's connections belong
        to the loop that made them)."""
        if self._own is None:
            raise RuntimeError(f"{self!r} is not open: use `async with` or await open()")
        return self._own

    # -- writing ------------------------------------------------------------------------

    def writer(
        self,
        *,
        on_commit: Callable[[Sequence[Committed]], None] | None = None,
        flush_interval: float = 0.1,
        max_pending: int = 100_000,
        fence: Fence | None = None,
    ) -> ResultWriter:
        """The store's single writer (one at a time; released when it stops, or taken
        over from an idle one: no task, nothing pending).

        With a `fence` (cluster mode, PostgreSQL) every flush is checked against this
        node's leases. Several nodes then write at once: the writer adds its late rows
        and gaps to the history, and one node's historian closes the aggregates and
        prunes (store/closing.py, cluster/historian.py; docs/cluster.md)."""
        if self._writer is not None and not self._writer.release_if_idle():
            raise RuntimeError(
                f"{self!r} already has a writer: one monitor writes to a store at a time"
            )
        self._writer = ResultWriter(
            self.thread_engine,
            flush_interval=flush_interval,
            max_pending=max_pending,
            on_commit=on_commit,
            on_release=self._release_writer,
            recreate_if_lost=self._recreate_if_lost,
            fence=fence,
            # SQLite's WAL (a file database only): checkpoints beside the writer.
            checkpoints=None
            if self._file.path is None or self.url.get_backend_name() != "sqlite"
            else Checkpoints(Path(f"{self._file.path}-wal")),
            # SQLite: results staged in commit order, compacted every few seconds.
            staged=None if self.url.get_backend_name() != "sqlite" else Staging(),
            rollup=SharedRollup(gap_after=self.gap_after, on_late=self.late.add)
            if fence is not None
            else self.rollup(),
            thread=self._thread,
        )
        return self._writer

    def rollup(self) -> Rollup:
        """A single writer's history bookkeeping with this store's settings (also what
        cluster mode's historian prunes with)."""
        return Rollup(
            gap_after=self.gap_after,
            retention=self.retention,
            prune_batch=self._prune_batch,
            prune_interval=self._prune_interval,
            on_late=self.late.add,
        )

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
        return await self._read(
            lambda conn: history.results(conn, service_name, since, until, limit)
        )

    async def transitions(
        self,
        service_name: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[StatusTransition]:
        """Status transitions with since <= timestamp < until, oldest first."""
        return await self._read(lambda conn: history.transitions(conn, service_name, since, until))

    async def latest(self) -> dict[str, HealthCheckResult]:
        """The newest stored result of each service, with the service's confirmed
        status (from its newest transition) as `confirmed_status`."""

        async def read(
            conn: AsyncConnection,  # one read transaction: one snapshot
        ) -> tuple[dict[str, HealthCheckResult], dict[str, HealthStatus]]:
            return await history.latest_results(conn), await history.current_statuses(conn)

        results, statuses = await self._read(read)
        return {
            name: dataclasses.replace(result, confirmed_status=statuses.get(name))
            for name, result in results.items()
        }

    async def current_statuses(self) -> dict[str, HealthStatus]:
        """Each service's status as its newest stored transition left it."""
        return await self._read(history.current_statuses)

    async def transitions_after(
        self,
        after: int = 0,
        *,
        limit: int = 1000,
        service_names: Sequence[str] | None = None,
    ) -> list[TransitionRecord]:
        """The first `limit` stored transitions with an id above `after`, in commit
        order (ids grow with each commit): a cursor to follow the transitions with,
        paging on from the last id read. Of the named services only, if given."""
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError(f"after must be a transition id (an integer >= 0), got {after!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        return await self._read(
            lambda conn: history.transitions_after(conn, after, limit, service_names)
        )

    async def last_transition_id(self) -> int:
        """The id of the newest stored transition (0 when there is none)."""
        return await self._read(history.last_transition_id)

    async def latest_transitions(self) -> dict[str, TransitionRecord]:
        """Each service's newest stored transition, with its id: since when a service
        has had its status."""
        return await self._read(history.latest_transitions)

    async def service_names(self) -> list[str]:
        """Every service the database has rows of, in the order first stored."""
        return await self._read(history.service_names)

    async def stream_results(
        self,
        service_name: str | None = None,
        since: float | None = None,
        until: float | None = None,
        *,
        batch_size: int = 1000,
    ) -> AsyncGenerator[HealthCheckResult]:
        """Results with since <= timestamp < until, of one service or all, read through a
        cursor `batch_size` rows at a time: memory stays flat however many there are
        (for exports). One service's come oldest first; all services' come one service
        after another (in the order they were first seen), each oldest first: the key's
        order, which needs no sort. Close the iterator (`contextlib.aclosing`) when
        stopping early."""

        async def query(conn: AsyncConnection) -> Select[*history.ResultColumns]:
            # (The raw mark read in the same snapshot as the rows.)
            return history.results_query(
                service_name, since, until, await history.raw_mark(conn), dialect.name(conn)
            )

        async with contextlib.aclosing(self._stream(query, batch_size)) as rows:
            async for row in rows:
                yield history.result_from_row(row)

    async def stream_transitions(
        self,
        service_name: str | None = None,
        since: float | None = None,
        until: float | None = None,
        *,
        batch_size: int = 1000,
    ) -> AsyncGenerator[StatusTransition]:
        """`transitions()` read through a cursor, like `stream_results()`; oldest first."""

        async def query(conn: AsyncConnection) -> Select[*history.TransitionColumns]:
            return history.transitions_query(service_name, since, until)

        async with contextlib.aclosing(self._stream(query, batch_size)) as rows:
            async for row in rows:
                yield history.transition_from_row(row)

    async def _stream(
        self,
        build: Callable[[AsyncConnection], Awaitable[Select[*_Columns]]],
        batch_size: int,
    ) -> AsyncGenerator[Row[*_Columns]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        async with self._reading(self.engine) as conn:  # (on the caller's loop: see class)
            query = await build(conn)
            rows = await conn.stream(query.execution_options(yield_per=batch_size))
            async for row in rows:
                yield row

    # -- history ------------------------------------------------------------------------

    async def report(
        self,
        service_name: str,
        since: float,
        until: float | None = None,
        *,
        exact: bool = False,
    ) -> ServiceReport:
        """One service's counts, uptime, latency, incidents and gaps over [since, until).

        `until` defaults to now. Percentiles come from the aggregates' histograms
        (within 1 %) except at the window's unaligned edges; with `exact=True` they
        come from raw results only (slower on long windows; the report then starts no
        earlier than the oldest raw result kept).
        """
        since, until = _window(since, until)

        async def read(conn: AsyncConnection) -> ServiceReport:
            ids = await report.service_ids(conn, [service_name])
            found = await report.reports(
                conn, ids, since, until, gap_after=self.gap_after, exact=exact
            )
            return found[service_name]

        return await self._read(read)

    async def reports(self, since: float, until: float | None = None) -> dict[str, ServiceReport]:
        """Every service's report over [since, until), by name: the fleet overview."""
        since, until = _window(since, until)

        async def read(conn: AsyncConnection) -> dict[str, ServiceReport]:
            ids = await report.service_ids(conn, None)
            return await report.reports(conn, ids, since, until, gap_after=self.gap_after)

        return await self._read(read)

    async def report_series(
        self, service_name: str, since: float, until: float | None = None, *, bucket: float
    ) -> tuple[ServiceReport, list[WindowStats]]:
        """`report()` and `series()` of one service over the same window, from one
        reading of its rows (what a service's page shows): the same figures as the
        two calls give, for about half the work on long windows."""
        since, until = _window(since, until)
        _check_buckets(since, until, bucket)

        async def read(conn: AsyncConnection) -> tuple[ServiceReport, list[WindowStats]]:
            ids = await report.service_ids(conn, [service_name])
            return await report.report_series(
                conn, ids, (since, until), bucket=bucket, gap_after=self.gap_after
            )

        return await self._read(read)

    async def windows(self, since: float, until: float | None = None) -> dict[str, WindowStats]:
        """Every service's counts, uptime and latency over [since, until), by name: the
        figures of `reports()` without incidents and gaps, for a fleet's overview."""
        since, until = _window(since, until)

        async def read(conn: AsyncConnection) -> dict[str, WindowStats]:
            ids = await report.service_ids(conn, None)
            return await report.windows(conn, ids, since, until)

        return await self._read(read)

    async def days(self, since: float, until: float | None = None) -> dict[str, list[DayCounts]]:
        """Every service's status counts per UTC day of [since, until), by name, oldest
        day first (days without results left out): the status page's daily bars."""
        since, until = _window(since, until)

        async def read(conn: AsyncConnection) -> dict[str, list[DayCounts]]:
            ids = await report.service_ids(conn, None)
            return await fleet.day_counts(conn, ids, since, until)

        return await self._read(read)

    async def coverage(self) -> Coverage:
        """From when, and until when, each tier of the history is complete: raw results
        from `raw`; minute and hour aggregates from `minute`/`hour` until
        `minute_until`/`hour_until` (the writer's open minute and hour begin there)."""
        return await self._read(load_coverage)

    async def aggregates(
        self, width: int, since: float, until: float
    ) -> dict[str, list[Aggregate]]:
        """Every service's minute (`width` 60), hour (3600) or day (86400) aggregate
        rows starting in [since, until), by name, oldest first: for a reader keeping
        running sums of a fleet's recent history, which reads each row once (and again
        those `late` reports changed)."""
        since, until = _window(since, until)

        async def read(conn: AsyncConnection) -> dict[str, list[Aggregate]]:
            ids = await report.service_ids(conn, None)
            return await fleet.aggregates(conn, ids, width, since, until)

        return await self._read(read)

    async def minute_counts(
        self, since: float, until: float | None = None
    ) -> dict[str, dict[int, StatusCounts]]:
        """Every service's raw results in [since, until) counted per minute, by name
        ({minute start: counts}; services without any left out): the minutes the
        writer has not aggregated yet, for readers keeping running sums."""
        since, until = _window(since, until)

        async def read(conn: AsyncConnection) -> dict[str, dict[int, StatusCounts]]:
            ids = await report.service_ids(conn, None)
            return await fleet.minute_counts(conn, ids, since, until)

        return await self._read(read)

    async def series(
        self,
        service_name: str | None,
        since: float,
        until: float | None = None,
        *,
        bucket: float,
    ) -> list[WindowStats]:
        """Counts and latency in buckets of `bucket` seconds from `since`, for charts;
        of one service, or of all together with None. Buckets aligned to whole
        minutes or hours read only aggregates."""
        since, until = _window(since, until)
        _check_buckets(since, until, bucket)
        names = None if service_name is None else [service_name]

        async def read(conn: AsyncConnection) -> list[WindowStats]:
            ids = await report.service_ids(conn, names)
            return await report.series(conn, list(ids.values()), since, until, bucket)

        return await self._read(read)

    async def _read(self, read: Callable[[AsyncConnection], Awaitable[_T]]) -> _T:
        """`read(conn)` on a read connection (one snapshot), on the store's thread."""
        work = self._read_here(read)
        return await (work if self._thread is None else self._thread.run(work))

    async def _read_here(self, read: Callable[[AsyncConnection], Awaitable[_T]]) -> _T:
        async with self._reading(self.thread_engine) as conn:
            return await read(conn)

    @contextlib.asynccontextmanager
    async def _reading(self, engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
        """A read connection whose database errors surface as StorageError."""
        try:
            async with engine.connect() as conn:
                yield await dialect.as_one_snapshot(conn)
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(f"cannot read {self!r}: {exc}") from exc

    def _create_parent_folder(self) -> None:
        if self._file.path is not None:
            self._file.path.parent.mkdir(parents=True, exist_ok=True)


def _check_buckets(since: float, until: float, bucket: float) -> None:
    if isinstance(bucket, bool) or not isinstance(bucket, int | float):
        raise TypeError(f"bucket must be a number of seconds, got {bucket!r}")
    if not (math.isfinite(bucket) and bucket > 0):
        raise ValueError(f"bucket must be a positive number of seconds, got {bucket!r}")
    if (until - since) / bucket > report.MAX_BUCKETS:
        raise ValueError(
            f"{(until - since) / bucket:.0f} buckets of {bucket} s between since and "
            f"until; at most {report.MAX_BUCKETS}: choose a larger bucket"
        )


def _window(since: float, until: float | None) -> tuple[float, float]:
    """A validated window [since, until); until defaults to now."""
    until = time.time() if until is None else until
    for name, value in (("since", since), ("until", until)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be epoch seconds (a number), got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number of epoch seconds, got {value!r}")
    if since > until:
        raise ValueError(f"since ({since}) is after until ({until}): the window is empty")
    return float(since), float(until)
