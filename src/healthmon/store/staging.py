"""SQLite's staging of new results: a flush appends, a compaction files them (issue 16).

`check_results` is keyed by (service, time) so that reading one service's history is
one key range. Written to directly, that key makes a flush of n services' results
write about n leaf pages (and their parents) to the WAL, whole: at 2,000 services x
1 Hz each 28-byte result cost a 512-byte page or more. So on SQLite a flush appends
its rows to `staged_results` instead, a rowid table without any index, whose rows go
in commit order onto its last pages: a flush writes a few pages however many services
it holds. Every few seconds the writer moves everything staged into `check_results`
in one transaction (`compact`), sorted by the key, so that each service's rows since
the last compaction go onto its leaf pages together: a page written once for many
results instead of once per result. Then `DELETE` empties the staging table whole
(no per-row work: the table has no triggers and no foreign keys; its pages are
reused by the next flushes).

When: once `max_rows` rows are staged (bounds the compaction's transaction, which
holds up the flushes behind it: ~10,000 rows take tens of milliseconds) or `every`
seconds after the last one (a quiet fleet's rows do not wait long), and at the first
flush of a writer (rows a previous process staged). The guarantees stay those of a
flush: a staged row is committed (a SIGKILL loses nothing staged), a compaction is
one transaction (a crash in it leaves the rows staged), and a reader sees every row
exactly once, in one table or the other, in any snapshot.

Invariant: a service's staged rows are later than every row of it in check_results.
A result not later than its service's newest stored one (a clock stepped back,
results submitted out of order: rare) could take a key a staged row holds, so the
flush that writes it compacts first, in its own transaction, and writes it into
check_results directly with the key rules of store/keys.py.

Readers: every query of raw results reads both tables, through this module's
store/raw.py (one arm per table, each arm using its own table's access path);
PostgreSQL writes check_results directly (its heap appends; measured in
docs/performance.md) and reads it alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import delete, exists, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from healthmon.store.keys import Inserted, ResultKeys
from healthmon.store.newest import Newest
from healthmon.store.schema import check_results, staged_results

__all__ = ["COMPACT_EVERY", "COMPACT_ROWS", "Staging", "compact"]

log = structlog.get_logger("healthmon.store")

COMPACT_EVERY = 60.0
"""Seconds between compactions at most: each service's rows of that long go onto its
pages at once (a service checked once a second: 60 results a page write)."""
COMPACT_ROWS = 20_000
"""Staged rows that make a compaction due at once. The more rows a compaction moves,
the more of each service's rows share a page write (at 2,000 services x 1 Hz, 10,000
rows: ~950 bytes written per result, 20,000: ~700, 30,000: ~470, bench.writes), but
its transaction holds up the flushes behind it longer (20,000 rows: 0.2-0.7 s on the
loaded 2-core machine of the measurement) and readers scan more staged rows."""
_RETRY_AFTER = 5.0  # seconds after a failed compaction


async def compact(conn: AsyncConnection, keys: ResultKeys) -> tuple[int, frozenset[int]]:
    """Move every staged row into check_results (sorted by its key) in the caller's
    transaction. Returns how many, and the details rows that moved to another minute
    with their results (for `Details.forget`): only when a key was taken behind the
    writer's back (a row inserted into check_results by someone else), whose staged
    row then goes in one microsecond later, as the writer's keys place it (keys.py)."""
    s = staged_results.c
    if not await conn.scalar(select(exists().select_from(staged_results))):
        return 0, frozenset()  # (a read: nothing written)
    names = [column.name for column in staged_results.c]
    ordered = select(*staged_results.c).order_by(s.service_id, s.ts_us)
    moved_details: frozenset[int] = frozenset()
    try:
        async with conn.begin_nested():
            moved = (await conn.execute(insert(check_results).from_select(names, ordered))).rowcount
    except IntegrityError:
        rows = [dict(row._mapping) for row in await conn.execute(ordered)]
        log.warning(
            "results_compact_conflict",
            rows=len(rows),
            reason="a staged result's key was taken behind the writer's back: the rows go in "
            "one at a time, a taken key moved forward",
        )
        moved_details = await keys.insert_each(conn, rows)
        moved = len(rows)
    await conn.execute(delete(staged_results))  # no WHERE: SQLite empties it whole
    return max(0, moved), moved_details


class Staging:
    """The writer's side: where a flush's rows go, and when to compact."""

    def __init__(self, *, every: float = COMPACT_EVERY, max_rows: int = COMPACT_ROWS) -> None:
        if not every > 0:
            raise ValueError(f"compact every must be a positive number of seconds: {every!r}")
        if max_rows < 1:
            raise ValueError(f"compact max_rows must be at least 1: {max_rows!r}")
        self.every = every
        self.max_rows = max_rows
        self._staged = 0  # rows staged since the last compaction, as committed
        self._adding: int | None = None  # the flush in progress: rows staged (None: compacted)
        self._next = 0.0  # due at once: rows a previous process staged
        self._failing = False

    async def insert(
        self,
        conn: AsyncConnection,
        rows: Sequence[dict[str, Any]],
        before: Newest,
        keys: ResultKeys,
    ) -> Inserted:
        """Write a flush's rows: staged when each is later than its service's newest
        stored result (`before`, brought up to date row by row), else, after a
        compaction, into check_results with `keys` (see the module docstring)."""
        newest = dict(before)
        for row in rows:
            service_id, ts = row["service_id"], row["ts_us"]
            last = newest[service_id]
            if last is not None and ts <= last:
                break
            newest[service_id] = ts
        else:
            await conn.execute(insert(staged_results), rows)
            self._adding = len(rows)
            return Inserted(newest)
        moved, moved_details = await compact(conn, keys)
        self._adding = None
        log.info("results_compacted", rows=moved, reason="a result older than its service's newest")
        inserted = await keys.insert(conn, rows, before)
        return Inserted(inserted.newest, inserted.moved_details | moved_details)

    def committed(self) -> None:
        """The flush's transaction committed."""
        adding, self._adding = self._adding, 0
        self._staged = 0 if adding is None else self._staged + adding

    async def step(
        self, engine: AsyncEngine, lock: Any, keys: ResultKeys, *, now: bool = False
    ) -> frozenset[int]:
        """Called by the writer between flushes: compact when due (or `now`: when the
        writer stops), under `lock` (the writer's flush lock). Returns the details rows
        the writer must not reuse (`compact`). A failure is logged: the rows stay
        staged, read as they are, and the compaction is tried again a few seconds later."""
        at = time.monotonic()
        if not now and at < self._next and (self._staged < self.max_rows or self._failing):
            return frozenset()
        started = time.perf_counter()
        async with lock:
            try:
                async with engine.begin() as conn:
                    moved, moved_details = await compact(conn, keys)
            except (SQLAlchemyError, OSError) as exc:
                self._failing = True
                self._next = at + _RETRY_AFTER
                log.warning("results_compact_failed", error=str(exc).splitlines()[0])
                return frozenset()
        self._failing = False
        self._staged = 0
        self._next = at + self.every
        log.debug("results_compacted", rows=moved, seconds=round(time.perf_counter() - started, 4))
        return moved_details
