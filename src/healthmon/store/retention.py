"""How long each tier of the history is kept, and the pruning that enforces it.

Pruning runs in the writer's task between two flushes, so it never competes with the
writer for SQLite's lock: each step is one short transaction deleting at most
`batch_size` rows of each table (a few milliseconds), and a step comes after every
flush while a backlog remains, otherwise once per `interval`. While a step runs,
checks go on and results queue in the writer's buffer as usual.

Each step first raises the tier's mark in `history_coverage`, in the same transaction,
so readers never take a tier for complete where rows are being deleted.

On PostgreSQL raw results are not deleted row by row: a step drops the oldest
partition (a UTC day, store/partitions.py) that lies wholly before the cut-off. The
raw tier's mark is exact all the same, and reads never return a result before it but
each service's newest (store/history.py `visible`): the results of the partial day at
the edge stay on disk, unseen, until their day is dropped whole (up to a day more
than `raw` on disk).

Details bodies (`result_details`) go with the last result that references them: the
results a step deletes name their details rows, and each of those no result refers to
any more is deleted too. A details row is referenced only within one service's minute
(store/details.py), so that takes one range read of that minute, not a scan.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Table, delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.micros import us_at_or_after
from healthmon.store import dialect
from healthmon.store.details import unreferenced, window_of
from healthmon.store.partitions import drop_expired
from healthmon.store.schema import (
    check_results,
    history_coverage,
    result_days,
    result_details,
    result_gaps,
    result_hours,
    result_minutes,
    services,
    status_transitions,
)

__all__ = ["DAY", "Pruned", "Retention", "prune_step"]

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Retention:
    """Seconds to keep each tier; `HealthStore(..., retention=Retention(raw=3 * DAY))`.

    Defaults: raw results 7 days, minute aggregates 35 days, hour aggregates (with
    the status transitions and gaps) 400 days, day aggregates as long as hours (None).
    At 20 Hz a service-day of raw results takes ~48 MB (~28 bytes a healthy result:
    `python -m bench.measure`), its minute aggregates ~1.2 MB, its hour aggregates
    ~25 kB (bench/history) and its day aggregate ~1 kB.
    """

    raw: float = 7 * DAY
    minute: float = 35 * DAY
    hour: float = 400 * DAY
    day: float | None = None

    def __post_init__(self) -> None:
        for tier in ("raw", "minute", "hour", "day"):
            value = getattr(self, tier)
            if tier == "day" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"retention {tier} must be a positive number of seconds")
        if not self.raw <= self.minute <= self.hour <= self.days:
            raise ValueError(
                "retention must keep coarser tiers at least as long as finer ones "
                f"(raw <= minute <= hour <= day), got raw={self.raw}, minute={self.minute}, "
                f"hour={self.hour}, day={self.day}"
            )

    @property
    def days(self) -> float:
        """Seconds the day aggregates are kept: `day`, or as long as hours."""
        return self.hour if self.day is None else self.day


@dataclass(frozen=True, slots=True)
class Pruned:
    """What a pruning step did."""

    more: bool
    """Some table still has expired rows: another step is due."""
    details: frozenset[int]
    """The ids of the result_details rows it deleted."""


async def prune_step(
    conn: AsyncConnection, retention: Retention, batch_size: int, now: float | None = None
) -> Pruned:
    """Delete at most `batch_size` expired rows of each table, and the details bodies
    no result references any more."""
    now = time.time() if now is None else now
    raw_cutoff = now - retention.raw
    minute_cutoff = (now - retention.minute) // 60 * 60
    hour_cutoff = (now - retention.hour) // 3600 * 3600
    day_cutoff = (now - retention.days) // DAY * DAY
    for tier, cutoff in (
        ("raw", raw_cutoff),
        ("minute", minute_cutoff),
        ("hour", hour_cutoff),
        ("day", day_cutoff),
        ("events", hour_cutoff),
    ):
        await conn.execute(
            update(history_coverage)
            .where(history_coverage.c.tier == tier, history_coverage.c.complete_since < cutoff)
            .values(complete_since=cutoff)
        )
    if dialect.name(conn) == dialect.POSTGRESQL:  # whole days: partitions dropped
        dropped = await drop_expired(conn, us_at_or_after(raw_cutoff))
        results, details = batch_size if dropped.more else 0, dropped.details
    else:
        results, details = await _delete_results(conn, us_at_or_after(raw_cutoff), batch_size)
    counts = [
        results,
        await _delete(conn, result_minutes, result_minutes.c.start, minute_cutoff, batch_size),
        await _delete(conn, result_hours, result_hours.c.start, hour_cutoff, batch_size),
        await _delete(conn, result_days, result_days.c.start, day_cutoff, batch_size),
        await _delete(conn, result_gaps, result_gaps.c.end_ts, hour_cutoff, batch_size),
        await _delete_transitions(conn, hour_cutoff, batch_size),
    ]
    return Pruned(any(count >= batch_size for count in counts), frozenset(details))


async def _delete_results(
    conn: AsyncConnection, cutoff_us: int, limit: int
) -> tuple[int, set[int]]:
    """Expired results but each service's newest (so that `latest()` and a gap still
    open at the end of a report know when the service was last seen); then the details
    rows that only they referenced. Returns how many results, and the details ids."""
    c = check_results.c
    inner = check_results.alias("newest").c
    newest = (
        select(func.max(inner.ts_us))
        .where(inner.service_id == c.service_id)
        .correlate(check_results)
        .scalar_subquery()
    )
    # `service_id IN (every service)`: an index range per service, as in `_delete`.
    expired = (
        select(c.service_id, c.ts_us)
        .where(c.service_id.in_(select(services.c.id)), c.ts_us < cutoff_us, c.ts_us < newest)
        .limit(limit)
    )
    deleted = (
        await conn.execute(
            delete(check_results)
            .where(tuple_(c.service_id, c.ts_us).in_(expired))
            .returning(c.service_id, c.ts_us, c.details_id)
        )
    ).all()
    candidates = {
        (details_id, service_id, window_of(ts_us))
        for service_id, ts_us, details_id in deleted
        if details_id is not None
    }
    gone = sorted(await unreferenced(conn, candidates))
    for first in range(0, len(gone), 500):  # within SQLite's limit of bound parameters
        chunk = gone[first : first + 500]
        await conn.execute(delete(result_details).where(result_details.c.id.in_(chunk)))
    return len(deleted), set(gone)


async def _delete(
    conn: AsyncConnection,
    table: Table,
    when: Column[Any],
    cutoff: float,
    limit: int,
) -> int:
    # `service_id IN (every service)` makes SQLite read an index range per service
    # through (service_id, time); a join lets it scan the whole table or index instead,
    # which costs seconds at 10 M rows when nothing has expired.
    key = tuple(table.primary_key.columns)  # id, or (service_id, start) for aggregates
    expired = (
        select(*key)
        .where(table.c.service_id.in_(select(services.c.id)), when < cutoff)
        .limit(limit)
    )
    where = key[0].in_(expired) if len(key) == 1 else tuple_(*key).in_(expired)
    result = await conn.execute(delete(table).where(where))
    return result.rowcount


async def _delete_transitions(conn: AsyncConnection, cutoff: float, limit: int) -> int:
    """Expired transitions, except each service's newest before the cut-off: it gives
    the status at the cut-off (and the current status of a quiet service)."""
    t = status_transitions.c
    inner = status_transitions.alias("newest").c
    kept = (
        select(inner.id)
        .where(inner.service_id == t.service_id, inner.ts < cutoff)
        .order_by(inner.ts.desc(), inner.id.desc())
        .limit(1)
        .correlate(status_transitions)
        .scalar_subquery()
    )
    expired = (
        select(t.id)
        .where(t.service_id.in_(select(services.c.id)), t.ts < cutoff, t.id != kept)
        .limit(limit)
    )
    result = await conn.execute(delete(status_transitions).where(t.id.in_(expired)))
    return result.rowcount
