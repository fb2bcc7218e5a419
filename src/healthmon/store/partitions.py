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
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.store import dialect

__all__ = [
    "DAY_US",
    "PARTITION_NAME",
    "Partitions",
    "create",
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


async def create(conn: AsyncConnection, day: int) -> None:
    start = day * DAY_US
    await conn.execute(
        text(
            f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF check_results "
            f"FOR VALUES FROM ({start}) TO ({start + DAY_US})"
        )
    )
