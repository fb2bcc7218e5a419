"""The one writer: every result and transition reaches the database through it.

Group commit: `submit()` only appends to an in-memory buffer and never waits. One
task flushes everything pending in one transaction (Core executemany inserts), at
most `flush_interval` after the first pending item and at stop. A transaction per
result would cost ~30x more.

After each commit, `on_commit` receives the committed transitions in commit order;
that is how subscribers hear of a change only once it is durable.

When the database fails (locked, read-only, full, gone), the batch goes back to the
front of the buffer and the flush is retried with backoff, so checking goes on and
nothing is lost while the buffer holds. Beyond `max_pending` the oldest results are
dropped, counted and logged: never silently. Only what a database can recover from
is retried (its errors, I/O errors, a replaced file); anything else is a bug, which
no retry mends: the writer crashes and says so (a critical `store_writer_crashed`,
`stats.last_error`, and `stop()` raising StorageError), and what it can no longer
store is counted as dropped.

Results are keyed by (service, microsecond). Two results of one service on the same
microsecond (a clock stepped back, or results submitted through the API) are both
kept, the later one moved forward, just after the service's previous result
(store/keys.py).

In cluster mode (healthmon/cluster/) a `Fence` checks, in each flush's transaction,
that this node still holds the lease of each result's service at the epoch it was
taken under; rows of a lost lease are not written, and are counted and logged.

Threads: given the store's thread (store/thread.py), the writer's task and all its
SQL run on that thread's loop, never waiting for turns of a busy monitor's loop.
`submit` and `register_service` may then be called from the monitor's thread (they
take a lock for a few list appends and wake the writer only when it sleeps); `start`,
`stop` and `flush` run their work there and return in the caller's loop, and
`on_commit` is called on the first loop that started, flushed or stopped the
writer, in commit order: a callback queued before `stop()` or `flush()` returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog
from sqlalchemy import Select, Table, insert, select, tuple_
from sqlalchemy.exc import DBAPIError, NotSupportedError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from healthmon.errors import StorageError
from healthmon.micros import ms_to_us, storable, to_us
from healthmon.model import HealthCheckResult, StatusTransition
from healthmon.store import dialect, raw
from healthmon.store.checkpoint import Checkpoints
from healthmon.store.details import Details, Remembered
from healthmon.store.keys import Inserted, ResultKeys
from healthmon.store.newest import NewestTimes
from healthmon.store.partitions import Partitions
from healthmon.store.rollup import Rollup, is_answered
from healthmon.store.schema import STATUS_CODES, services, status_transitions
from healthmon.store.staging import Staging
from healthmon.store.thread import StoreThread

__all__ = ["Committed", "Fence", "ResultWriter", "WriterStats"]

_R = TypeVar("_R")

log = structlog.get_logger("healthmon.store")

Committed = tuple[HealthCheckResult, StatusTransition]
"""A committed transition and the result that caused it."""

_STOPPED = "the writer was stopped (its store closed?): results are no longer stored"
_RETRY_FIRST = 0.1
_RETRY_MAX = 5.0


@dataclass(slots=True)
class WriterStats:
    """Counters an orchestrator can poll to see the store's condition."""

    committed_results: int = 0
    committed_transitions: int = 0
    dropped_results: int = 0
    dropped_transitions: int = 0
    flushes: int = 0
    failed_flushes: int = 0
    last_commit_at: float | None = None
    last_error: str | None = None
    """The error of the last failed flush; None once a flush succeeds again."""
    pending_results: int = 0
    pending_transitions: int = 0
    fenced_results: int = 0
    """Cluster mode: results not written because this node had lost their service."""
    fenced_transitions: int = 0

    @property
    def healthy(self) -> bool:
        return self.last_error is None


class Fence(Protocol):
    """Cluster mode's check on every flush (healthmon/cluster/fence.py)."""

    node_id: int
    """Written on every row: which node took the result or recorded the transition."""

    async def admit(
        self, conn: AsyncConnection, wanted: Collection[tuple[str, int]]
    ) -> set[tuple[str, int]]:
        """Of the (service, epoch) pairs, those whose lease this node holds now, locked
        until the transaction ends."""
        ...

    async def number(self, conn: AsyncConnection, transitions: Sequence[Committed]) -> int:
        """Feed positions for the transitions, in commit order; the first of them."""
        ...

    def committed(self) -> None:
        """The flush's transaction committed (called right after, on the writer's loop)."""
        ...


@dataclass(slots=True)
class _Service:
    kind: str
    url: str | None
    dirty: bool = True


@dataclass(frozen=True, slots=True)
class _Written:
    ids: dict[str, int]  # service name -> id
    details: Remembered
    keys: Inserted
    batch: _Buffer  # what is committed: the batch without what the fence refused
    services: dict[str, _Service]  # the service rows written (as they were described)


@dataclass(slots=True)
class _Buffer:
    results: list[HealthCheckResult] = field(default_factory=list)
    transitions: list[Committed] = field(default_factory=list)
    epochs: list[int | None] = field(default_factory=list)  # the results' lease epochs

    fenced: tuple[int, int, dict[str, int]] | None = None  # refused: results, transitions

    def __bool__(self) -> bool:
        return bool(self.results or self.transitions)


class ResultWriter:
    """Buffers results and transitions and writes them in group commits."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        flush_interval: float = 0.1,
        max_pending: int = 100_000,
        on_commit: Callable[[Sequence[Committed]], None] | None = None,
        on_release: Callable[[], None] | None = None,
        rollup: Rollup | None = None,
        recreate_if_lost: Callable[[], Awaitable[bool]] | None = None,
        fence: Fence | None = None,
        checkpoints: Checkpoints | None = None,
        staged: Staging | None = None,
        thread: StoreThread | None = None,
    ) -> None:
        if not 0 < flush_interval <= 1.0:
            raise ValueError(f"flush_interval must be in (0, 1] seconds, got {flush_interval!r}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending!r}")
        self._engine = engine
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self._on_commit = on_commit
        self._on_release = on_release
        self._rollup = rollup  # history aggregates in each flush, pruning between flushes
        self._recreate_if_lost = recreate_if_lost  # the database file deleted under us?
        self._fence = fence
        self._checkpoints = checkpoints  # SQLite's WAL, between flushes (store/checkpoint.py)
        self._staging = staged  # SQLite: rows staged, compacted between flushes (staging.py)
        self._thread = thread  # where the task and its SQL run (None: the caller's loop)
        self._home: asyncio.AbstractEventLoop | None = None  # where on_commit is called
        self._stopping_work: asyncio.Future[None] | concurrent.futures.Future[None] | None = None
        # Guards what the monitor's thread changes: the buffer and the service rows.
        self._lock = threading.Lock()
        self._idle = False  # the task waits for something to write: wake it
        self._buffer = _Buffer()
        self._services: dict[str, _Service] = {}
        self._ids: dict[str, int] = {}
        # Remembered from committed writes only: a rolled-back flush leaves them as
        # they were, and any failure clears them (store/details.py, store/keys.py).
        self._details = Details()
        self._keys = ResultKeys()
        self._newest = NewestTimes()  # each service's newest committed result time
        self._partitions = Partitions()  # PostgreSQL's days of raw results
        self._maybe_stored = False  # a COMMIT whose outcome is unknown: look first
        self._wakeup = asyncio.Event()
        self._flush_lock = asyncio.Lock()  # one transaction at a time keeps commit order
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._released = False  # stopped for good: the store may hand out a new writer
        self._crashed: BaseException | None = None  # not a database error: no retry mends it
        self._told_dropped = False  # submissions refused: logged once
        self._stats = WriterStats()

    # -- the monitor's side: never waits -------------------------------------------------

    def register_service(self, name: str, kind: str, url: str | None) -> None:
        """Describe a service for the `services` table (written with the next flush).

        `url` must already have its credentials redacted.
        """
        with self._lock:
            known = self._services.get(name)
            if known is not None and (known.kind, known.url) == (kind, url):
                return
            self._services[name] = _Service(kind, url)
            wake, self._idle = self._idle, False
        if wake:
            self._wake()

    def submit(
        self,
        result: HealthCheckResult,
        transition: StatusTransition | None = None,
        epoch: int | None = None,
    ) -> None:
        """Queue a result (and the transition it caused) for the next group commit.

        With a fence, `epoch` is the lease epoch the result was taken under (None: not
        fenced, e.g. an agent's report)."""
        with self._lock:
            refused = self._released or self._crashed is not None
            if refused:  # e.g. the store was closed under a running monitor
                self._stats.dropped_results += 1
                self._stats.dropped_transitions += transition is not None
        if refused:
            reason = _STOPPED if self._crashed is None else self._stats.last_error
            if self._stats.last_error != reason or not self._told_dropped:
                self._stats.last_error = reason
                self._told_dropped = True
                log.error("results_dropped", count=1, reason=reason)
            return
        if not (storable(result.timestamp) and storable(result.response_time_ms)):
            with self._lock:
                self._stats.dropped_results += 1
                self._stats.dropped_transitions += transition is not None
            log.error(
                "results_dropped",
                count=1,
                service=result.service_name,
                reason="its timestamp or response time is not a finite number of seconds "
                f"or milliseconds ({result.timestamp!r}, {result.response_time_ms!r})",
            )
            return
        with self._lock:
            buffer = self._buffer
            buffer.results.append(result)
            buffer.epochs.append(epoch)
            if transition is not None:
                buffer.transitions.append((result, transition))
            if len(buffer.results) > self.max_pending:
                self._drop_oldest_results(len(buffer.results) - self.max_pending)
            if len(buffer.transitions) > self.max_pending:
                excess = len(buffer.transitions) - self.max_pending
                del buffer.transitions[:excess]
                self._stats.dropped_transitions += excess
                log.error("transitions_dropped", count=excess, reason="buffer full")
            wake, self._idle = self._idle, False
        if wake:
            self._wake()

    def _wake(self) -> None:
        """Wake the writer's task, from whichever thread."""
        if self._thread is None or self._thread.here():
            self._wakeup.set()
            return
        with contextlib.suppress(RuntimeError):  # the thread has ended: so has the task
            self._thread.call_soon(self._wakeup.set)

    def release_if_idle(self) -> bool:
        """Let go of the store if this writer has no task and holds no result (as a
        stopped monitor's, kept between one-off checks), so that another may write:
        True if it is released. (Service rows not written yet are written again by
        whoever registers the services next.)"""
        idle = self._task is None and not self._buffer and not self._flush_lock.locked()
        if idle and not self._released and self._crashed is None:
            self._released = True
            if self._on_release is not None:
                self._on_release()
        return self._released

    @property
    def released(self) -> bool:
        """Stopped for good (by its owner, or by the store closing): ask for a new one."""
        return self._released

    @property
    def stats(self) -> WriterStats:
        """A snapshot of the counters."""
        stats = self._stats
        return WriterStats(
            committed_results=stats.committed_results,
            committed_transitions=stats.committed_transitions,
            dropped_results=stats.dropped_results,
            dropped_transitions=stats.dropped_transitions,
            flushes=stats.flushes,
            failed_flushes=stats.failed_flushes,
            last_commit_at=stats.last_commit_at,
            last_error=stats.last_error,
            pending_results=len(self._buffer.results),
            pending_transitions=len(self._buffer.transitions),
            fenced_results=stats.fenced_results,
            fenced_transitions=stats.fenced_transitions,
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._released:
            raise RuntimeError("this writer was stopped; ask the store for a new one")
        if self._crashed is not None:
            raise StorageError(f"{self._stats.last_error}; ask the store for a new writer")
        if self._task is None:
            await self._there(self._spawn())

    async def _spawn(self) -> None:
        if self._task is None:  # (on the writer's loop, where stop() looks for it)
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="healthmon-writer")

    async def stop(self, timeout: float = 2.0) -> None:
        """Flush everything pending, retrying a failing database until `timeout`;
        whatever still cannot be written then is counted as dropped and logged."""
        with self._lock:  # (submissions from now on are refused and counted)
            stopping = self._stopping_work
            if stopping is None:
                if self._released:  # let go while idle: nothing to stop
                    return
                self._released = True
                self._note_home()
                stopping = self._stopping_work = (
                    asyncio.ensure_future(self._stop(timeout))
                    if self._thread is None
                    else self._thread.submit(self._stop(timeout))
                )
        # Every caller waits for the one stop (a store closing while the monitor stops
        # its writer), which goes on if a caller is cancelled.
        await asyncio.shield(asyncio.wrap_future(stopping))

    async def _stop(self, timeout: float) -> None:
        self._stopping.set()
        self._wakeup.set()
        # A writer that never started may still hold submissions: its loop drains them.
        task, self._task = self._task or asyncio.create_task(self._run()), None
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except Exception:  # noqa: S110 - the task crashed: `_crashed` holds it, raised below
            pass
        finally:
            if self._checkpoints is not None:
                await self._checkpoints.stop()
            self._drop_all(reason="stopped before the database accepted them")
            if self._on_release is not None:
                self._on_release()
        if self._crashed is not None:
            raise StorageError(
                f"{self._stats.last_error}; the results since were not stored"
            ) from self._crashed

    async def flush(self) -> bool:
        """Write everything pending now; False if the database refused it (it stays queued)."""
        return await self._there(self._flush())

    def written_elsewhere(self) -> None:
        """Another writer has written these tables' rows for services this one writes now
        (cluster mode: a service taken over): what is remembered of its rows (newest
        times, details ids) is read anew from the database (by the flushes that begin
        after this call)."""
        if self._thread is None or self._thread.here():
            self._forget_rows()
            return
        with contextlib.suppress(RuntimeError):  # the thread has ended: nothing to forget
            self._thread.call_soon(self._forget_rows)

    async def _there(self, work: Coroutine[Any, Any, _R]) -> _R:
        """Await `work` on the writer's loop."""
        if self._thread is None:
            return await work
        self._note_home()
        return await self._thread.run(work)

    def _note_home(self) -> None:
        """on_commit is called on the first loop that starts, flushes or stops the
        writer from another thread (the monitor's)."""
        if self._home is None and self._thread is not None and not self._thread.here():
            self._home = asyncio.get_running_loop()

    # -- the writer task ----------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._loop()
        except Exception as exc:  # a flush's crash is told already; anything else here
            if self._crashed is None:  # (pruning, say) is one too, and says so
                self._crash(exc)
            raise

    async def _loop(self) -> None:
        retry_delay = _RETRY_FIRST
        while True:
            with self._lock:
                self._idle = not (self._buffer or self._dirty_services())
                idle = self._idle
            if idle:
                if self._stopping.is_set():
                    if self._staging is not None:  # a stopped writer leaves none staged
                        self._details.forget(
                            await self._staging.step(
                                self._engine, self._flush_lock, self._keys, now=True
                            )
                        )
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            if not self._stopping.is_set():
                # Let a group gather: everything submitted in this window shares a commit.
                await self._until_stopping(self.flush_interval)
            if await self._flush():
                retry_delay = _RETRY_FIRST
                if self._staging is not None and not self._stopping.is_set():
                    self._details.forget(
                        await self._staging.step(self._engine, self._flush_lock, self._keys)
                    )
                if self._rollup is not None and not self._stopping.is_set():
                    async with self._flush_lock:  # between flushes, never during one
                        self._details.forget(await self._rollup.maintain(self._engine))
                if self._checkpoints is not None and not self._stopping.is_set():
                    await self._checkpoints.step(self._engine, self._flush_lock)
                continue
            if self._stopping.is_set():  # stop() bounds the retries with its timeout
                await asyncio.sleep(_RETRY_FIRST)
            else:
                await self._until_stopping(retry_delay)
            retry_delay = min(retry_delay * 2, _RETRY_MAX)

    async def _until_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _flush(self) -> bool:
        """One transaction with everything pending; False if the database refused it."""
        async with self._flush_lock:
            with self._lock:
                batch, self._buffer = self._buffer, _Buffer()
                dirty = {name: self._services[name] for name in self._dirty_services()}
            if not (batch or dirty):
                return True
            committing = False
            try:
                if self._recreate_if_lost is not None and await self._recreate_if_lost():
                    self._forget_database()
                async with self._engine.begin() as conn:
                    written = await self._write(conn, batch, dirty)
                    committing = True  # the block's end commits
            except asyncio.CancelledError:
                self._requeue(batch)  # stop() counts it as dropped; never lost uncounted
                self._forget_rows()
                raise
            except Exception as exc:
                # Whatever went wrong, what was remembered of the rows may be why (a
                # details row or a result written behind our back): read it anew.
                self._forget_rows()
                if not _recoverable(exc):
                    self._requeue(batch)  # stop() counts it as dropped
                    self._crash(exc)
                    raise
                self._failed(batch, exc)  # put back, retried with backoff
                if committing:
                    self._commit_unknown()
                await dialect.after_failure(self._engine)
                return False
            self._maybe_stored = False
            self._ids = written.ids
            self._details.remember(written.details)
            self._details.forget(written.keys.moved_details)  # now another minute's
            self._newest.remember(written.keys.newest)
            self._partitions.committed()
            if self._staging is not None:
                self._staging.committed()
            if self._rollup is not None:
                self._rollup.committed()
            if self._fence is not None:
                self._fence.committed()
            self._committed(written.batch, written.services)
            return True

    def _commit_unknown(self) -> None:
        """The COMMIT failed (e.g. the connection dropped during it): the database may
        have committed the batch or not, and cannot say which. So the next flush first
        looks for what it already holds (`_already_stored`), and what the writer
        remembers of its newest results and gaps is read anew."""
        self._maybe_stored = True
        if self._rollup is not None:
            self._rollup.reset()
        log.warning(
            "store_commit_unknown",
            consequence="the batch is written again, but for what the database shows "
            "it already committed",
        )

    def _crash(self, exc: BaseException) -> None:
        self._crashed = exc
        self._stats.last_error = f"the store writer crashed: {_describe(exc)}"
        log.critical(
            "store_writer_crashed",
            error=self._stats.last_error,
            reason="not an error a database recovers from (a bug?): results are no longer "
            "stored; please report it with this traceback",
            pending_results=len(self._buffer.results),
            exc_info=exc,
        )

    def _forget_database(self) -> None:
        """A new, empty database: ids and service rows are written anew."""
        self._ids = {}
        self._forget_rows()
        with self._lock:
            for service in self._services.values():
                service.dirty = True
        if self._rollup is not None:
            self._rollup.reset()

    def _failed(self, batch: _Buffer, exc: BaseException) -> None:
        self._requeue(batch)
        stats = self._stats
        stats.failed_flushes += 1
        first_failure = stats.last_error is None
        stats.last_error = _describe(exc)
        # The first failure of an outage is an error; its retries are warnings.
        (log.error if first_failure else log.warning)(
            "store_write_failed",
            error=stats.last_error,
            pending_results=len(self._buffer.results),
            max_pending=self.max_pending,
        )

    def _forget_rows(self) -> None:
        self._details.clear()
        self._newest.clear()
        self._partitions.clear()

    async def _write(
        self, conn: AsyncConnection, batch: _Buffer, dirty: dict[str, _Service]
    ) -> _Written:
        """Insert the batch and the `dirty` service rows; return what to remember of it
        once committed."""
        node_id = None
        if self._fence is not None:
            batch = await self._fenced(conn, self._fence, batch)
            node_id = self._fence.node_id
        reported = batch  # what is committed once this commits, stored before or now
        ids = await self._service_ids(conn, batch, dirty)
        if self._maybe_stored:
            batch = await _already_stored(conn, batch, ids)
        rows: list[dict[str, Any]] = [
            {
                "service_id": ids[r.service_name],
                "ts_us": to_us(r.timestamp),
                "status": STATUS_CODES[r.status],
                "response_time_us": ms_to_us(r.response_time_ms),
                "error": r.error,
                "details_id": None,
                "answered": is_answered(r),
                "node_id": node_id,
            }
            for r in batch.results
        ]
        await self._partitions.ensure(conn, (row["ts_us"] for row in rows))
        details = await self._details.link(conn, rows, [r.details for r in batch.results])
        before = await self._newest.read(conn, {ids[r.service_name] for r in batch.results})
        keys = Inserted({})
        if rows and self._staging is not None:
            keys = await self._staging.insert(conn, rows, before, self._keys)
        elif rows:
            keys = await self._keys.insert(conn, rows, before)
        if self._rollup is not None:
            await self._rollup.write(conn, rows, before)
        if batch.transitions:
            # Last: a fence numbers them under a lock held until the commit.
            first = None
            if self._fence is not None:
                first = await self._fence.number(conn, batch.transitions)
            await conn.execute(
                insert(status_transitions),
                [
                    {
                        "service_id": ids[t.service_name],
                        "ts": t.timestamp,
                        "from_status": None
                        if t.from_status is None
                        else STATUS_CODES[t.from_status],
                        "to_status": STATUS_CODES[t.to_status],
                        "cause": t.cause,
                        "node_id": node_id,
                        "seq": None if first is None else first + i,
                    }
                    for i, (_, t) in enumerate(batch.transitions)
                ],
            )
        return _Written(ids, details, keys, reported, dirty)

    async def _fenced(self, conn: AsyncConnection, fence: Fence, batch: _Buffer) -> _Buffer:
        """The batch without the results (and their transitions) of leases this node
        no longer holds at their epochs; those are counted and logged once committed."""
        wanted = {
            (r.service_name, epoch)
            for r, epoch in zip(batch.results, batch.epochs, strict=True)
            if epoch is not None
        }
        admitted = await fence.admit(conn, wanted)
        if len(admitted) == len(wanted):
            return batch
        kept = _Buffer()
        refused: dict[str, int] = {}
        for result, epoch in zip(batch.results, batch.epochs, strict=True):
            if epoch is None or (result.service_name, epoch) in admitted:
                kept.results.append(result)
                kept.epochs.append(epoch)
            else:
                refused[result.service_name] = refused.get(result.service_name, 0) + 1
        kept_ids = {id(result) for result in kept.results}
        kept.transitions = [t for t in batch.transitions if id(t[0]) in kept_ids]
        kept.fenced = (
            len(batch.results) - len(kept.results),
            len(batch.transitions) - len(kept.transitions),
            refused,
        )
        return kept

    def _dirty_services(self) -> list[str]:
        return [name for name, service in self._services.items() if service.dirty]

    async def _service_ids(
        self, conn: AsyncConnection, batch: _Buffer, dirty: dict[str, _Service]
    ) -> dict[str, int]:
        """Ids of the batch's services, writing new or changed service rows first."""
        names = {r.service_name for r in batch.results}
        names.update(t.service_name for _, t in batch.transitions)
        unknown = (names - self._ids.keys()).difference(dirty)
        now = time.time()
        if dirty:
            statement = dialect.upsert(conn, services)
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[services.c.name],
                    set_={"kind": statement.excluded.kind, "url": statement.excluded.url},
                ),
                [
                    {"name": name, "kind": service.kind, "url": service.url, "created_at": now}
                    for name, service in dirty.items()
                ],
            )
        if unknown:  # results of services nobody described: keep them, as kind "other"
            await conn.execute(
                dialect.upsert(conn, services).on_conflict_do_nothing(
                    index_elements=[services.c.name]
                ),
                [
                    {"name": name, "kind": "other", "url": None, "created_at": now}
                    for name in unknown
                ],
            )
        missing = (names | dirty.keys()) - self._ids.keys()
        if missing:
            rows = await conn.execute(
                select(services.c.name, services.c.id).where(services.c.name.in_(missing))
            )
            # A new dict: the cache is replaced only after the commit, since a
            # rolled-back insert has no id.
            return {**self._ids, **{name: service_id for name, service_id in rows}}
        return self._ids

    def _committed(self, batch: _Buffer, written: dict[str, _Service]) -> None:
        stats = self._stats
        for service in written.values():  # (one described anew meanwhile stays dirty)
            service.dirty = False
        stats.flushes += 1
        if batch.fenced is not None:
            results, transitions, services = batch.fenced
            stats.fenced_results += results
            stats.fenced_transitions += transitions
            log.warning(
                "results_fenced",
                results=results,
                transitions=transitions,
                services=services,
                reason="this node no longer holds these services' leases (another node "
                "checks them now): their results are not written",
            )
        stats.committed_results += len(batch.results)
        stats.committed_transitions += len(batch.transitions)
        stats.last_commit_at = time.time()
        if stats.last_error is not None:
            log.info("store_write_recovered", after_failures=stats.failed_flushes)
            stats.last_error = None
        if batch.transitions and self._on_commit is not None:
            self._tell(self._on_commit, batch.transitions)

    def _tell(
        self, on_commit: Callable[[Sequence[Committed]], None], committed: Sequence[Committed]
    ) -> None:
        """on_commit, on its caller's loop (queued there in commit order)."""
        home = self._home
        if home is None or self._thread is None or not self._thread.here():
            on_commit(committed)
            return
        try:
            home.call_soon_threadsafe(on_commit, committed)
        except RuntimeError:  # that loop is closed: nobody is left to hear
            log.warning("transitions_untold", count=len(committed), reason="its loop is closed")

    def _requeue(self, batch: _Buffer) -> None:
        """Put a failed batch back in front of what arrived meanwhile, within the bound."""
        with self._lock:
            buffer = self._buffer
            buffer.results[:0] = batch.results
            buffer.epochs[:0] = batch.epochs
            buffer.transitions[:0] = batch.transitions
            if len(buffer.results) > self.max_pending:
                self._drop_oldest_results(len(buffer.results) - self.max_pending)

    def _drop_oldest_results(self, count: int) -> None:
        """(Under `_lock`.)"""
        del self._buffer.results[:count]
        del self._buffer.epochs[:count]
        self._stats.dropped_results += count
        log.error(
            "results_dropped",
            count=count,
            total_dropped=self._stats.dropped_results,
            reason=f"buffer full ({self.max_pending} results) while the database is failing",
        )

    def _drop_all(self, reason: str) -> None:
        with self._lock:
            buffer, self._buffer = self._buffer, _Buffer()
            self._stats.dropped_results += len(buffer.results)
            self._stats.dropped_transitions += len(buffer.transitions)
        if buffer:
            log.error(
                "results_dropped",
                count=len(buffer.results),
                transitions=len(buffer.transitions),
                reason=reason,
            )


async def _already_stored(conn: AsyncConnection, batch: _Buffer, ids: dict[str, int]) -> _Buffer:
    """The batch without the results and transitions the database already holds, alike
    in every stored field: after a COMMIT whose outcome is unknown, the first flush
    writes only what did not make it. (A result is keyed by its service and
    microsecond: two results of one service with the same microsecond, status,
    latency and error are taken for one.) Transitions are still reported as committed
    (their subscribers have not heard of them)."""
    t = status_transitions.c
    stored: set[tuple[Any, ...]] = set()
    keys = [(ids[r.service_name], to_us(r.timestamp)) for r in batch.results]
    for first in range(0, len(keys), 250):
        found = await conn.execute(
            raw.union(dialect.name(conn), _stored(keys[first : first + 250]))
        )
        stored.update(tuple(row) for row in found)
    kept = [
        (r, epoch)
        for r, epoch, (service_id, ts_us) in zip(batch.results, batch.epochs, keys, strict=True)
        if (service_id, ts_us, STATUS_CODES[r.status], ms_to_us(r.response_time_ms), r.error)
        not in stored
    ]
    results = [r for r, _ in kept]
    seen: set[tuple[Any, ...]] = set()
    moments = [(ids[tr.service_name], tr.timestamp) for _, tr in batch.transitions]
    for first in range(0, len(moments), 500):
        found = await conn.execute(
            select(t.service_id, t.ts, t.from_status, t.to_status).where(
                tuple_(t.service_id, t.ts).in_(moments[first : first + 500])
            )
        )
        seen.update(tuple(row) for row in found)
    written = [
        (r, tr)
        for r, tr in batch.transitions
        if (
            ids[tr.service_name],
            tr.timestamp,
            None if tr.from_status is None else STATUS_CODES[tr.from_status],
            STATUS_CODES[tr.to_status],
        )
        not in seen
    ]
    skipped = len(batch.results) - len(results), len(batch.transitions) - len(written)
    if any(skipped):
        log.warning(
            "store_commit_had_succeeded",
            results=skipped[0],
            transitions=skipped[1],
            consequence="not written twice",
        )
    return _Buffer(results, written, [epoch for _, epoch in kept], batch.fenced)


def _stored(keys: list[tuple[int, int]]) -> Callable[[Table], Select[Any]]:
    """For `_already_stored`: the stored fields of the results with these keys."""

    def arm(table: Table) -> Select[Any]:
        c = table.c
        return select(c.service_id, c.ts_us, c.status, c.response_time_us, c.error).where(
            tuple_(c.service_id, c.ts_us).in_(keys)
        )

    return arm


def _recoverable(exc: BaseException) -> bool:
    """What a retry can mend: the database's own errors (locked, read-only, full, gone,
    a constraint a row written behind our back broke), the pool's, I/O errors, and our
    StorageError (a replaced file). Not an error in our SQL (ProgrammingError,
    NotSupportedError), nor any other exception: those are bugs."""
    if isinstance(exc, ProgrammingError | NotSupportedError):
        return False
    return isinstance(exc, DBAPIError | PoolTimeoutError | OSError | StorageError)


def _describe(exc: BaseException) -> str:
    """The database's own words (e.g. 'database is locked'), without the SQL; for
    anything that is not the database's, the exception's type says what it is."""
    original = getattr(exc, "orig", None)
    if original is not None:
        exc = original
        # asyncpg's errors come wrapped: "<class 'asyncpg....Error'>: the server's words"
        words = str(exc).strip()
        if words.startswith("<class '") and "'>: " in words:
            return words.split("'>: ", 1)[1].splitlines()[0]
    elif not isinstance(exc, OSError | StorageError):
        return f"{type(exc).__name__}: {str(exc).strip()[:200]}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
