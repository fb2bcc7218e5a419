"""Result keys: one check_results row per (service, microsecond), and no result lost.

Two results of one service on the same microsecond are possible only with a clock
stepped back (or results submitted through the API), and both must be kept: the
later one is stored 1 us later, as many times as it takes to find a free key.

The writer inserts a batch with one executemany. Guarding every batch with a
savepoint, so that a conflict can be undone and the batch written again row by row,
costs two more statements per flush (~5 us per result at 100 results a flush, a
third of the writer's CPU), so only batches that could conflict are guarded: a
result later than everything stored of its service cannot. `ResultKeys` remembers
each service's newest stored time (read once from the database for a service new to
this writer; retention never deletes it), and a batch whose every result is later
than its service's newest goes in unguarded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import func, insert, literal, select, union_all
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.store.details import WINDOW_US, copy_body
from healthmon.store.schema import check_results

__all__ = ["Newest", "ResultKeys"]

log = structlog.get_logger("healthmon.store")

Newest = dict[int, int | None]
"""service id -> the newest stored time (epoch us) of the service; None for none."""

_PER_QUERY = 400  # SQLite allows 500 terms in a compound SELECT


class ResultKeys:
    """Inserts check_results rows so that none is lost to a taken key."""

    def __init__(self) -> None:
        self._newest: Newest = {}
        c = check_results.c
        self._insert_or_skip = sqlite_insert(check_results).on_conflict_do_nothing(
            index_elements=[c.service_id, c.ts_us]
        )

    async def insert(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> Newest:
        """Insert the rows, moving a colliding one's `ts_us` forward (in the row itself,
        so that what comes after sees where it went). Returns what to `remember` once
        the transaction commits."""
        newest = await self._known(conn, rows)
        safe = True
        for row in rows:
            service_id, ts = row["service_id"], row["ts_us"]
            last = newest[service_id]
            if last is None or ts > last:
                newest[service_id] = ts
            else:
                safe = False
        if safe:
            await conn.execute(insert(check_results), rows)
            return newest
        try:
            async with conn.begin_nested():
                await conn.execute(insert(check_results), rows)
        except IntegrityError:
            pass  # undone to the savepoint; any other error fails the flush
        else:
            return newest
        await self._one_by_one(conn, rows)
        for row in rows:
            service_id, ts = row["service_id"], row["ts_us"]
            last = newest[service_id]
            newest[service_id] = ts if last is None else max(last, ts)
        return newest

    def remember(self, newest: Newest) -> None:
        """The transaction of `insert` committed."""
        self._newest.update(newest)

    def clear(self) -> None:
        """Forget everything (a failed write, a new database): read again when needed."""
        self._newest = {}

    async def _known(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> Newest:
        """The newest stored time of each service of the batch (a copy of the ones
        remembered, plus those read from the database)."""
        remembered = self._newest
        wanted = {row["service_id"] for row in rows}
        known = {sid: remembered[sid] for sid in wanted if sid in remembered}
        unknown = sorted(wanted - known.keys())
        c = check_results.c
        for first in range(0, len(unknown), _PER_QUERY):
            queries = [
                select(literal(sid), func.max(c.ts_us)).where(c.service_id == sid)
                for sid in unknown[first : first + _PER_QUERY]
            ]
            known.update({sid: ts for sid, ts in await conn.execute(union_all(*queries))})
        return known

    async def _one_by_one(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        moved: list[int] = []
        for row in rows:
            wanted = row["ts_us"]
            while (await conn.execute(self._insert_or_skip, row)).rowcount == 0:
                row["ts_us"] += 1
                if row["details_id"] is not None and row["ts_us"] % WINDOW_US == 0:
                    # Into the next minute: its details row belongs to the one it left.
                    row["details_id"] = await copy_body(conn, row["details_id"])
            if row["ts_us"] != wanted:
                moved.append(row["ts_us"] - wanted)
        if moved:
            log.warning(
                "results_time_nudged",
                count=len(moved),
                max_us=max(moved),
                reason="results of one service with the same time (to the microsecond) "
                "are stored 1 us apart; was the clock stepped back?",
            )
