"""Raw results' partitions on PostgreSQL: one range partition of `check_results` per
UTC day of `ts_us`, named `check_results_pYYYYMMDD`.

PostgreSQL refuses a row that no partition holds, so the writer makes sure, in the
flush that writes them, that the days of its rows have partitions, and the next day
too: a partition is then normally made a day ahead, not at midnight. Which days
exist is read from the catalogue once, then remembered (a rolled-back flush or a
failure forgets it: read again).

Retention (store/retention.py) drops the partitions that lie wholly before the raw
cut-off instead of deleting their rows one by one (`drop_expired`).

SQLite has no partitions: every function here does nothing there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.store import dialect
from healthmon.store.schema import check_results, result_details, services

__all__ = [
    "DAY_US",
    "PARTITION_NAME",
    "Dropped",
    "Partitions",
    "create",
    "drop_expired",
    "existing_days",
    "partition_name",
]

DAY_US = 86_400_000_000
PARTITION_NAME = re.compile(r"check_results_p\d{8}")


def partition_name(day: int) -> str:
    """The partition of day `day` (epoch microseconds // DAY_US)."""
    return datetime.fromtimestamp(day * 86_400, UTC).strftime("check_results_p%Y%m%d")


async def existing_days(conn: AsyncConnection) -> set[int]:
    """The days that have a partition (read from the partitions' bounds)."""
    rows = await conn.execute(
        text(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'check_results'::regclass"
        )
    )
    days = set()
    for (bound,) in rows:
        found = re.search(r"FROM \('?(-?\d+)'?\)", bound or "")
        if found is not None:
            days.add(int(found[1]) // DAY_US)
    return days


class Partitions:
    """The writer's memory of which days have a partition."""

    def __init__(self) -> None:
        self._days: set[int] | None = None  # None: not read yet (or forgotten)
        self._made: set[int] = set()  # made in the transaction not committed yet

    async def ensure(self, conn: AsyncConnection, times: Iterable[int]) -> None:
        """Make the partitions the times (epoch us) need, and the next day's."""
        if dialect.name(conn) != dialect.POSTGRESQL:
            return
        days = {ts // DAY_US for ts in times}
        if not days:
            return
        days.add(max(days) + 1)
        if self._days is None:
            self._days = await existing_days(conn)
        for day in sorted(days - self._days - self._made):
            await create(conn, day)
            self._made.add(day)

    def committed(self) -> None:
        if self._days is not None:
            self._days |= self._made
        self._made = set()

    def clear(self) -> None:
        """Forget everything (a failed write, a dropped partition): read it again."""
        self._days = None
        self._made = set()


_CREATING = 0x484D5052  # "HMPR": the advisory lock space of partitions being made
"""`CREATE TABLE IF NOT EXISTS` is not safe against a concurrent one: two writers (two
cluster nodes' first flushes of a day) both find no table and the second fails on
commit of the first with "already exists" (a writer crash, seen in CI). A lock held
until the transaction ends makes the second wait, then find the table. (A lock
on a name, taken and released with a flush: not the leases' ownership, which stays
in rows.)"""


async def create(conn: AsyncConnection, day: int) -> None:
    start = day * DAY_US
    await conn.execute(text(f"SELECT pg_advisory_xact_lock({_CREATING}, {day})"))
    await conn.execute(
        text(
            f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF check_results "
            f"FOR VALUES FROM ({start}) TO ({start + DAY_US})"
        )
    )


@dataclass(frozen=True, slots=True)
class Dropped:
    """What `drop_expired` did."""

    partitions: int
    details: set[int]
    """The ids of the result_details rows deleted with the partitions' results."""
    more: bool
    """Another expired partition is left for the next step."""


async def drop_expired(conn: AsyncConnection, cutoff_us: int) -> Dropped:
    """Drop the oldest partition that lies wholly before `cutoff_us` (one a step: each
    step is one short transaction), with the details rows only its results referenced.

    Each service's newest result is kept, as retention keeps it on SQLite (`latest()`,
    and a gap still open at the end of a report, need it): those few rows are copied
    out and put back into a new, empty partition for the same day. A partition holding
    nothing else is left alone.
    """
    s, r = services.c, check_results.c
    newest = (
        select(func.max(r.ts_us)).where(r.service_id == s.id).correlate(services).scalar_subquery()
    )
    expired = sorted(day for day in await existing_days(conn) if (day + 1) * DAY_US <= cutoff_us)
    kept_everywhere = [
        (service_id, ts) for service_id, ts in await conn.execute(select(s.id, newest))
        if ts is not None
    ]  # fmt: skip
    for index, day in enumerate(expired):
        start, end = day * DAY_US, (day + 1) * DAY_US
        name = partition_name(day)
        kept = [(sid, ts) for sid, ts in kept_everywhere if start <= ts < end]
        in_kept = f"(service_id, ts_us) IN ({_keys(kept)})"
        if kept and not await conn.scalar(
            text(f"SELECT EXISTS (SELECT 1 FROM {name} WHERE NOT {in_kept})")  # noqa: S608 - ours
        ):
            continue  # only newest results: nothing to drop
        kept_rows: list[dict[str, Any]] = []
        if kept:
            found = await conn.execute(text(f"SELECT * FROM {name} WHERE {in_kept}"))  # noqa: S608
            kept_rows = [dict(row) for row in found.mappings()]
        details = set(
            await conn.scalars(
                text(f"SELECT DISTINCT details_id FROM {name} WHERE details_id IS NOT NULL")  # noqa: S608
            )
        )
        details -= {row["details_id"] for row in kept_rows}
        gone = sorted(details)
        for first in range(0, len(gone), 10_000):
            await conn.execute(
                delete(result_details).where(result_details.c.id.in_(gone[first : first + 10_000]))
            )
        # Last: dropping a partition locks check_results whole until the commit.
        await conn.execute(text(f"DROP TABLE {name}"))
        if kept_rows:
            await create(conn, day)
            await conn.execute(insert(check_results), kept_rows)
        return Dropped(1, set(gone), index + 1 < len(expired))
    return Dropped(0, set(), False)


def _keys(keys: list[tuple[int, int]]) -> str:
    """(service id, time) pairs as SQL literals (integers only)."""
    return ", ".join(f"({int(sid)}, {int(ts)})" for sid, ts in keys) or "(NULL, NULL)"
