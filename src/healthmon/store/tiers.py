"""The coarse aggregate tiers, hours and days, each summed from the tier below it.

A tier's bucket is written once the tier below has closed every bucket in it: an hour
when its last minute is written, a day when its last hour is. Until then its sums are
kept in memory (`CoarseTiers`), added to as the buckets below close, and
`history_coverage.complete_until` of the tier (its mark) says where its unwritten
buckets begin. Sums of the tier below that come late (results older than its mark)
are added to the written rows of every tier they reach by upserts, and to the open
buckets of the others.

Generic over the tiers (`COARSE`), so that whatever closes minutes (the writer's
Rollup, or a cluster's leader) closes hours and days alike, with `CoarseTiers.load`,
`closed` and `late`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.store import dialect, sketch
from healthmon.store.schema import history_coverage, result_days, result_hours, result_minutes

__all__ = [
    "COARSE",
    "SUMMED",
    "Changed",
    "CoarseTiers",
    "Key",
    "Sums",
    "Tier",
    "merge_into",
    "rolled_up",
    "upsert",
]

Key = tuple[int, int]
"""(service id, bucket start)"""

Sums = list[Any]
"""A bucket's sums, as a list for speed: [healthy, unknown, degraded, unhealthy,
answered, latency sum (ms), latency min, latency max, {histogram bin: count}]; min and
max are +inf and -inf without an answered result."""

Changed = list[tuple[int, int, int]]
"""(tier width, service id, bucket start) of written rows that late sums changed."""

SUMMED = ("healthy", "unknown", "degraded", "unhealthy", "answered", "latency_sum")


@dataclass(frozen=True, slots=True)
class Tier:
    width: int
    """Seconds per bucket."""
    table: Table
    name: str
    """Its `history_coverage.tier`."""


MINUTES = Tier(60, result_minutes, "minute")
COARSE = (Tier(3600, result_hours, "hour"), Tier(86_400, result_days, "day"))
"""The tiers summed from the one before them (the first from minutes), finest first."""


@dataclass(slots=True)
class _Open:
    tier: Tier
    mark: float
    buckets: dict[Key, Sums]


class CoarseTiers:
    """The open (unwritten) buckets of the coarse tiers, and their marks."""

    def __init__(self, marks: Mapping[str, float]) -> None:
        self._open = [_Open(tier, marks[tier.name], {}) for tier in COARSE]

    def mark(self, name: str) -> float:
        """Where the tier's unwritten buckets begin."""
        return next(o.mark for o in self._open if o.tier.name == name)

    @classmethod
    async def load(cls, conn: AsyncConnection, minute_mark: float) -> CoarseTiers:
        """The tiers as committed: marks from `history_coverage` (a tier without one
        starts at the one below's, rounded down), each tier's open buckets summed from
        the rows of the tier below from its mark to the one below's."""
        c = history_coverage.c
        found = await conn.execute(
            select(c.tier, c.complete_until).where(c.tier.in_([t.name for t in COARSE]))
        )
        stored = {tier: until for tier, until in found if until is not None}
        marks: dict[str, float] = {}
        below_mark = minute_mark
        for tier in COARSE:
            mark = stored.get(tier.name)
            # Never past the tier below: what it has not closed is not in this one yet.
            marks[tier.name] = below_mark // tier.width * tier.width if mark is None else mark
            below_mark = marks[tier.name]
        tiers = cls(marks)
        below, below_mark = MINUTES, minute_mark
        for into in tiers._open:
            b = below.table.c
            rows = await conn.execute(
                select(
                    b.service_id,
                    b.start,
                    *[b[name] for name in SUMMED],
                    b.latency_min,
                    b.latency_max,
                    b.histogram,
                ).where(b.start >= into.mark, b.start < below_mark)
            )
            for service_id, start, *sums, low, high, blob in rows:
                low_bin, counts = sketch.decode(blob)
                bins = {low_bin + i: n for i, n in enumerate(counts) if n}
                bucket = [
                    *sums,
                    math.inf if low is None else low,
                    -math.inf if high is None else high,
                    bins,
                ]
                width = into.tier.width
                merge_into(into.buckets, {(service_id, start - start % width): bucket})
            below, below_mark = into.tier, into.mark
        return tiers

    async def closed(
        self, conn: AsyncConnection, closed: dict[Key, Sums], below_mark: float
    ) -> None:
        """The tier below closed (wrote) the buckets `closed` and everything before
        `below_mark`: add them to the open buckets; write the buckets that now end
        before their tier's new mark, and move the marks, tier by tier."""
        for into in self._open:
            width = into.tier.width
            merge_into(into.buckets, rolled_up(closed, width))
            mark = below_mark // width * width
            if mark <= into.mark:
                return
            closed = {k: v for k, v in into.buckets.items() if k[1] < mark}
            for key in closed:
                del into.buckets[key]
            await upsert(conn, into.tier.table, closed)
            into.mark = below_mark = mark
            await conn.execute(
                update(history_coverage)
                .where(history_coverage.c.tier == into.tier.name)
                .values(complete_until=mark)
            )

    async def late(self, conn: AsyncConnection, written: dict[Key, Sums]) -> Changed:
        """Add late sums of the tier below, whose buckets were written already, to the
        rows of the buckets written in each tier (upserts), and to the open buckets of
        the others. Returns the written rows it changed here."""
        changed: Changed = []
        for into in self._open:
            width = into.tier.width
            rolled = rolled_up(written, width)
            written = {k: v for k, v in rolled.items() if k[1] < into.mark}
            merge_into(into.buckets, {k: v for k, v in rolled.items() if k not in written})
            await upsert(conn, into.tier.table, written)
            changed += [(width, sid, start) for sid, start in written]
            if not written:
                break
        return changed


def rolled_up(buckets: dict[Key, Sums], width: int) -> dict[Key, Sums]:
    """The buckets summed into buckets of `width` seconds."""
    total: dict[Key, Sums] = {}
    for (service_id, start), sums in buckets.items():
        merge_into(total, {(service_id, start - start % width): sums})
    return total


def merge_into(total: dict[Key, Sums], more: dict[Key, Sums]) -> None:
    for key, sums in more.items():
        found = total.get(key)
        if found is None:
            total[key] = [*sums[:8], dict(sums[8])]
        else:
            _add(found, sums)


def _add(total: Sums, sums: Sums) -> None:
    for i in range(6):
        total[i] += sums[i]
    total[6] = min(total[6], sums[6])
    total[7] = max(total[7], sums[7])
    bins = total[8]
    for index, count in sums[8].items():
        bins[index] = bins.get(index, 0) + count


async def upsert(conn: AsyncConnection, table: Table, buckets: dict[Key, Sums]) -> None:
    """Add the sums to the table's rows (new rows, or merged with rows there)."""
    if not buckets:
        return
    statement = dialect.upsert(conn, table)
    new = statement.excluded
    c = table.c
    rows = [
        {
            "service_id": service_id,
            "start": start,
            "healthy": sums[0],
            "unknown": sums[1],
            "degraded": sums[2],
            "unhealthy": sums[3],
            "answered": sums[4],
            "latency_sum": sums[5],
            "latency_min": sums[6] if sums[4] else None,
            "latency_max": sums[7] if sums[4] else None,
            "histogram": sketch.encode(sums[8]),
        }
        for (service_id, start), sums in buckets.items()
    ]
    histogram = await dialect.histogram_upsert(conn, table, rows, c.histogram, new.histogram)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[c.service_id, c.start],
            set_={
                **{name: c[name] + new[name] for name in SUMMED},
                "latency_min": dialect.least(
                    conn,
                    func.coalesce(c.latency_min, new.latency_min),
                    func.coalesce(new.latency_min, c.latency_min),
                ),
                "latency_max": dialect.greatest(
                    conn,
                    func.coalesce(c.latency_max, new.latency_max),
                    func.coalesce(new.latency_max, c.latency_max),
                ),
                "histogram": histogram,
            },
        ),
        rows,
    )
