"""How long each tier of the history is kept, and the pruning that enforces it.

Pruning runs in the writer's task between two flushes, so it never competes with the
writer for SQLite's lock: each step is one short transaction deleting at most
`batch_size` rows of each table (a few milliseconds), and a step comes after every
flush while a backlog remains, otherwise once per `interval`. While a step runs,
checks go on and results queue in the writer's buffer as usual.

Each step first raises the tier's mark in `history_coverage`, in the same transaction,
so readers never take a tier for complete where rows are being deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, ColumnElement, Table, delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.store.schema import (
    check_results,
    history_coverage,
    result_gaps,
    result_hours,
    result_minutes,
    services,
    status_transitions,
)

__all__ = ["DAY", "Retention", "prune_step"]

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Retention:
    """Seconds to keep each tier; `HealthStore(..., retention=Retention(raw=3 * DAY))`.

    Defaults: raw results 7 days, minute aggregates 35 days, hour aggregates (with
    the status transitions and gaps) 400 days. At 20 Hz a service-day of raw results
    takes ~89 MB, its minute aggregates ~1.2 MB and its hour aggregates ~25 kB
    (measured: bench/history).
    """

    raw: float = 7 * DAY
    minute: float = 35 * DAY
    hour: float = 400 * DAY

    def __post_init__(self) -> None:
        for tier in ("raw", "minute", "hour"):
            value = getattr(self, tier)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"retention {tier} must be a positive number of seconds")
        if not self.raw <= self.minute <= self.hour:
            raise ValueError(
                "retention must keep coarser tiers at least as long as finer ones "
                f"(raw <= minute <= hour), got raw={self.raw}, minute={self.minute}, "
                f"hour={self.hour}"
            )


async def prune_step(
    conn: AsyncConnection, retention: Retention, batch_size: int, now: float | None = None
) -> bool:
    """Delete at most `batch_size` expired rows of each table; True if more remain."""
    now = time.time() if now is None else now
    raw_cutoff = now - retention.raw
    minute_cutoff = (now - retention.minute) // 60 * 60
    hour_cutoff = (now - retention.hour) // 3600 * 3600
    for tier, cutoff in (
        ("raw", raw_cutoff),
        ("minute", minute_cutoff),
        ("hour", hour_cutoff),
        ("events", hour_cutoff),
    ):
        await conn.execute(
            update(history_coverage)
            .where(history_coverage.c.tier == tier, history_coverage.c.complete_since < cutoff)
            .values(complete_since=cutoff)
        )
    counts = [
        await _delete(
            conn, check_results, check_results.c.ts, raw_cutoff, batch_size, before=_newest()
        ),
        await _delete(conn, result_minutes, result_minutes.c.start, minute_cutoff, batch_size),
        await _delete(conn, result_hours, result_hours.c.start, hour_cutoff, batch_size),
        await _delete(conn, result_gaps, result_gaps.c.end_ts, hour_cutoff, batch_size),
        await _delete_transitions(conn, hour_cutoff, batch_size),
    ]
    return any(count >= batch_size for count in counts)


async def _delete(
    conn: AsyncConnection,
    table: Table,
    when: Column[Any],
    cutoff: float,
    limit: int,
    *,
    before: ColumnElement[Any] | None = None,
) -> int:
    # `service_id IN (every service)` makes SQLite read an index range per service
    # through (service_id, time); a join lets it scan the whole table or index instead,
    # which costs seconds at 10 M rows when nothing has expired.
    if "id" in table.c:
        key: tuple[Column[Any], ...] = (table.c.id,)
    else:  # aggregates have no rowid: their key is (service_id, start)
        key = (table.c.service_id, table.c.start)
    expired = (
        select(*key)
        .where(table.c.service_id.in_(select(services.c.id)), when < cutoff)
        .where(*([] if before is None else [when < before]))
        .limit(limit)
    )
    where = key[0].in_(expired) if len(key) == 1 else tuple_(*key).in_(expired)
    result = await conn.execute(delete(table).where(where))
    return result.rowcount


def _newest() -> ColumnElement[Any]:
    """Each service's newest result time: that result is kept, so that `latest()` and a
    gap still open at the end of a report know when the service was last seen."""
    inner = check_results.alias("newest").c
    return (
        select(func.max(inner.ts))
        .where(inner.service_id == check_results.c.service_id)
        .correlate(check_results)
        .scalar_subquery()
    )


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
