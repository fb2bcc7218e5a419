"""Batch reads of a whole fleet's history, for overviews (the status page).

`day_counts`: status counts per service and UTC day, one query per tier of the
window's plan: day aggregates as they are for whole days, and summed in SQL (GROUP BY
service and day) from hour aggregates, minute aggregates and raw results past their
marks, so Python sees one row per (service, day) and tier: 90 days of 1,000 services
is 90,000 rows. The counts are exact, as a report's.

`aggregates` and `minute_counts`: the rows of an aggregate tier, and the raw results
counted per minute, in a time range: for readers that keep running sums of recent
history and read each row once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import CompoundSelect, Integer, Select, Table, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.micros import us_at_or_after
from healthmon.store import dialect, raw
from healthmon.store.plan import RAW, load_coverage, plan
from healthmon.store.schema import AGGREGATE_TABLES
from healthmon.store.stats import StatusCounts

__all__ = ["DAY", "Aggregate", "DayCounts", "aggregates", "day_counts", "minute_counts"]

DAY = 86_400
_IDS_PER_QUERY = 100
"""Services per query: each is a key range; and the rows of one query are made into
Python objects on the event loop in one go, so a query's rows are kept few (about
5,000 for a day of hour rows) and the loop runs between queries."""


@dataclass(frozen=True, slots=True)
class DayCounts:
    """A service's status counts over one UTC day [day, day + 86400) (or the part of
    it inside the window asked for)."""

    day: int
    """The day's start: epoch seconds of its UTC midnight."""
    counts: StatusCounts


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One row of an aggregate tier: a service's results over [start, start + width)."""

    start: int
    counts: StatusCounts
    answered: int
    """Results with a latency (the histogram's count)."""
    histogram: bytes
    """Their latencies (ms) as store/sketch.py encodes them (`sketch.decode`)."""


async def aggregates(
    conn: AsyncConnection, ids: dict[str, int], width: int, since: float, until: float
) -> dict[str, list[Aggregate]]:
    """Each service's rows of the `width` tier (60 or 3600) starting in [since, until),
    oldest first: for a reader that keeps its own running sums and reads only the
    rows it has not seen."""
    if width not in AGGREGATE_TABLES:
        raise ValueError(f"width must be one of {sorted(AGGREGATE_TABLES)} seconds, got {width!r}")
    a = AGGREGATE_TABLES[width].c
    names = {sid: name for name, sid in ids.items()}
    found: dict[str, list[Aggregate]] = {name: [] for name in ids}
    service_ids = sorted(names)
    for first in range(0, len(service_ids), _IDS_PER_QUERY):
        query = (
            select(
                a.service_id,
                a.start,
                a.healthy,
                a.unknown,
                a.degraded,
                a.unhealthy,
                a.answered,
                a.histogram,
            )
            .where(
                a.service_id.in_(service_ids[first : first + _IDS_PER_QUERY]),
                a.start >= since,
                a.start < until,
            )
            .order_by(a.service_id, a.start)
        )
        for sid, start, healthy, unknown, degraded, unhealthy, answered, blob in await conn.execute(
            query
        ):
            counts = StatusCounts(healthy, unknown, degraded, unhealthy)
            found[names[sid]].append(Aggregate(start, counts, answered, blob))
    return found


async def day_counts(
    conn: AsyncConnection, ids: dict[str, int], since: float, until: float
) -> dict[str, list[DayCounts]]:
    """Each service's counts per UTC day of [since, until), oldest first; days
    without any result are left out."""
    window = plan(since, until, await load_coverage(conn))
    sums: dict[int, dict[int, list[int]]] = {sid: {} for sid in ids.values()}
    service_ids = sorted(ids.values())
    for piece in window.pieces:
        for first in range(0, len(service_ids), _IDS_PER_QUERY):
            chunk = service_ids[first : first + _IDS_PER_QUERY]
            for service_id, day, *counts in await conn.execute(
                _query(piece.tier, chunk, piece.start, piece.end, dialect_name=dialect.name(conn))
            ):
                days = sums[service_id]
                into = days.get(day := int(day))
                if into is None:  # (a plain loop: 90,000 rows for 1,000 services' 90 days)
                    days[day] = [int(n or 0) for n in counts]
                else:
                    for status, count in enumerate(counts):
                        into[status] += int(count or 0)
    return {
        name: [DayCounts(day, StatusCounts(*counts)) for day, counts in sorted(sums[sid].items())]
        for name, sid in ids.items()
    }


async def minute_counts(
    conn: AsyncConnection, ids: dict[str, int], since: float, until: float
) -> dict[str, dict[int, StatusCounts]]:
    """Each service's raw results in [since, until) counted per minute ({minute start:
    counts}); only what raw retention kept (meant for the minutes not yet aggregated)."""
    sums: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0] * 4))
    service_ids = sorted(ids.values())
    for first in range(0, len(service_ids), _IDS_PER_QUERY):
        chunk = service_ids[first : first + _IDS_PER_QUERY]
        for service_id, minute, *counts in await conn.execute(
            _query(RAW, chunk, since, until, width=60, dialect_name=dialect.name(conn))
        ):
            into = sums[service_id][int(minute)]
            for status, count in enumerate(counts):
                into[status] += int(count or 0)
    return {
        name: {minute: StatusCounts(*counts) for minute, counts in sums[sid].items()}
        for name, sid in ids.items()
        if sid in sums
    }


def _query(
    tier: int,
    ids: Sequence[int],
    start: float,
    end: float,
    *,
    width: int = DAY,
    dialect_name: str = dialect.SQLITE,
) -> Select[Any] | CompoundSelect[Any]:
    """(service id, day, healthy, unknown, degraded, unhealthy) of a tier's rows in
    [start, end), grouped by service and day (raw results: by `width` seconds); each
    service's rows are a key range. Raw results come from both their tables
    (store/staging.py): a (service, day) may come twice, to be added up."""
    if tier == RAW:
        width_us = width * 1_000_000

        def arm(table: Table) -> Select[Any]:
            c = table.c
            day = (c.ts_us - c.ts_us % width_us) / 1_000_000
            # A CASE, not a sum of comparisons: PostgreSQL sums no booleans.
            statuses = [
                func.sum(case((c.status == code, 1), else_=0), type_=Integer) for code in range(4)
            ]
            return (
                select(c.service_id, day.label("day"), *statuses)
                .where(
                    c.service_id.in_(ids),
                    c.ts_us >= us_at_or_after(start),
                    c.ts_us < us_at_or_after(end),
                )
                .group_by(c.service_id, "day")
            )

        return raw.union(dialect_name, arm)
    a = AGGREGATE_TABLES[tier].c
    if tier == DAY:  # a row a day already: nothing to group
        return (
            select(a.service_id, a.start, a.healthy, a.unknown, a.degraded, a.unhealthy)
            .where(a.service_id.in_(ids), a.start >= start, a.start < end)
            .order_by(a.service_id, a.start)
        )
    day = a.start - a.start % DAY
    return (
        select(
            a.service_id,
            day.label("day"),
            func.sum(a.healthy),
            func.sum(a.unknown),
            func.sum(a.degraded),
            func.sum(a.unhealthy),
        )
        .where(a.service_id.in_(ids), a.start >= start, a.start < end)
        .group_by(a.service_id, "day")
    )
