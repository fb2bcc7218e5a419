"""Result keys: one check_results row per (service, microsecond), and no result lost.

Two results of one service on the same microsecond are possible only with a clock
stepped back (or results submitted through the API), and both must be kept: the
later one is stored at max(its own time, its service's previous result in the batch
+ 1 us), or at the first free microsecond after that, as migration 0003 places them.
A burst of n results on one microsecond so costs n statements, not n^2 / 2.

A result moved into the next minute takes its details row along when nothing in the
minute it left refers to that row any more (the row was made for it), and a copy of
it otherwise: a details row is referenced within one service's minute only
(store/details.py), and none is left referenced by nothing. (Deleting a details row
left behind instead would cost a scan of every result: SQLite looks for references to
a deleted row, and `details_id` has no index, store/engine.py `begin_unchecked`.)

The writer inserts a batch with one executemany. Guarding every batch with a
savepoint, so that a conflict can be undone and the batch written again row by row,
costs two more statements per flush (~5 us per result at 100 results a flush, a
third of the writer's CPU), so only the services that could conflict are guarded: a
result later than everything stored of its service cannot. The writer passes in each
service's newest stored time (store/newest.py owns it); the rows of services whose every result is
later than their newest go in unguarded, the others under a savepoint, and only
those are written again row by row after a conflict.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import bindparam, exists, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.store import dialect
from healthmon.store.details import copy_body, unreferenced, window_of
from healthmon.store.newest import Newest
from healthmon.store.schema import check_results

__all__ = ["Inserted", "ResultKeys"]

log = structlog.get_logger("healthmon.store")


@dataclass(frozen=True, slots=True)
class Inserted:
    """What `ResultKeys.insert` did that must be remembered once it commits."""

    newest: Newest
    """Each service's newest stored time once this commits (for `NewestTimes.remember`)."""
    moved_details: frozenset[int] = field(default_factory=frozenset)
    """Details rows now referenced in another minute than the one they were made for
    (their results moved there): the writer must not reuse them for that one."""


class ResultKeys:
    """Inserts check_results rows so that none is lost to a taken key."""

    def __init__(self) -> None:
        c = check_results.c
        # Just after the first key of the service at or after :at whose next is free.
        after = check_results.alias("after").c
        self._free_after_query = (
            select(c.ts_us + 1)
            .where(
                c.service_id == bindparam("sid"),
                c.ts_us >= bindparam("at"),
                ~exists().where(after.service_id == c.service_id, after.ts_us == c.ts_us + 1),
            )
            .order_by(c.ts_us)
            .limit(1)
        )
        self._relink = (
            update(check_results)
            .where(c.service_id == bindparam("b_service_id"), c.ts_us == bindparam("b_ts_us"))
            .values(details_id=bindparam("b_details_id"))
        )

    async def insert(
        self, conn: AsyncConnection, rows: Sequence[dict[str, Any]], before: Newest
    ) -> Inserted:
        """Insert the rows, moving a colliding one's `ts_us` forward (in the row itself,
        so that what comes after sees where it went, and its `details_id` with it).
        `before`: the newest stored time of each service of the rows."""
        newest = dict(before)
        guarded: set[int] = set()  # services with a result not later than their newest
        for row in rows:
            service_id, ts = row["service_id"], row["ts_us"]
            last = newest[service_id]
            if last is None or ts > last:
                newest[service_id] = ts
            else:
                guarded.add(service_id)
        if not guarded:
            await conn.execute(insert(check_results), rows)
            return Inserted(newest)
        safe = [row for row in rows if row["service_id"] not in guarded]
        unsafe = [row for row in rows if row["service_id"] in guarded]
        if safe:
            await conn.execute(insert(check_results), safe)
        try:
            async with conn.begin_nested():
                await conn.execute(insert(check_results), unsafe)
        except IntegrityError:
            pass  # undone to the savepoint; any other error fails the flush
        else:
            return Inserted(newest)
        moved_details = await self._one_by_one(conn, unsafe)
        for row in unsafe:
            service_id, ts = row["service_id"], row["ts_us"]
            last = newest[service_id]
            newest[service_id] = ts if last is None else max(last, ts)
        return Inserted(newest, moved_details)

    async def insert_each(
        self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]
    ) -> frozenset[int]:
        """Insert the rows one at a time, a row whose key is taken moved forward (see
        `_one_by_one`): for rows that met a key taken behind the writer's back."""
        return await self._one_by_one(conn, rows)

    async def _one_by_one(
        self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]
    ) -> frozenset[int]:
        """Insert the rows one at a time, each at its own time if that is free, else at
        max(its time, its service's previous row's + 1 us) or, if that is taken too
        (by a stored result), at the first free microsecond after it: one statement a
        row, two or three for a row that must move. Returns the details rows that
        moved to another minute with their results (`_move_details`)."""
        previous: dict[int, int] = {}  # service id -> where its last row went
        taken: set[tuple[int, int]] = set()  # the keys these rows took
        moved: list[int] = []
        crossed: list[tuple[dict[str, Any], int]] = []  # (row, the minute it left)
        for row in rows:
            service_id, wanted = row["service_id"], row["ts_us"]
            if (service_id, wanted) in taken or not await self._put(conn, row, wanted):
                last = previous.get(service_id)
                at = wanted if last is None or last < wanted else last + 1
                if at == wanted or not await self._put(conn, row, at):
                    while True:  # `at` is taken: each query finds a later key
                        at = await self._free_after(conn, service_id, at)
                        if await self._put(conn, row, at):
                            break
                moved.append(at - wanted)
                if row["details_id"] is not None and window_of(at) != window_of(wanted):
                    crossed.append((row, window_of(wanted)))
            previous[service_id] = row["ts_us"]
            taken.add((service_id, row["ts_us"]))
        if moved:
            log.warning(
                "results_time_nudged",
                count=len(moved),
                max_us=max(moved),
                reason="results of one service with the same time (to the microsecond) "
                "are stored 1 us apart; was the clock stepped back?",
            )
        return await self._move_details(conn, crossed) if crossed else frozenset()

    async def _move_details(
        self, conn: AsyncConnection, crossed: Sequence[tuple[dict[str, Any], int]]
    ) -> frozenset[int]:
        """The rows moved into another minute (each with the minute it left) went in
        with the details row made for the minute they left. Those that nothing in that
        minute refers to any more (made for these results alone) move with them, to
        the first minute they went to; every other minute gets a copy. Returns the ids
        of the details rows that moved."""
        made_for: dict[int, tuple[int, int]] = {}  # details id -> (service id, minute)
        went_to: defaultdict[int, defaultdict[int, list[dict[str, Any]]]] = defaultdict(
            lambda: defaultdict(list)
        )  # details id -> minute -> its rows there
        for row, left in crossed:
            made_for[row["details_id"]] = (row["service_id"], left)
            went_to[row["details_id"]][window_of(row["ts_us"])].append(row)
        free = await unreferenced(conn, [(i, *where) for i, where in made_for.items()])
        relinked: list[dict[str, int]] = []
        for details_id, windows in went_to.items():
            later = sorted(windows)
            if details_id in free:
                del later[0]  # the first minute it went to takes it along
            for window in later:
                copy = await copy_body(conn, details_id)
                for row in windows[window]:
                    row["details_id"] = copy
                    relinked.append(
                        {
                            "b_service_id": row["service_id"],
                            "b_ts_us": row["ts_us"],
                            "b_details_id": copy,
                        }
                    )
        if relinked:
            await conn.execute(self._relink, relinked)
        return frozenset(free)

    async def _put(self, conn: AsyncConnection, row: dict[str, Any], at: int) -> bool:
        """Insert the row at time `at` unless that key is taken; False if it is. (Its
        details row stays the one it has: `_move_details` sees to it afterwards.)"""
        row["ts_us"] = at
        c = check_results.c
        insert_or_skip = dialect.upsert(conn, check_results).on_conflict_do_nothing(
            index_elements=[c.service_id, c.ts_us]
        )
        return bool((await conn.execute(insert_or_skip, row)).rowcount)

    async def _free_after(self, conn: AsyncConnection, service_id: int, taken: int) -> int:
        """The first microsecond after `taken` (a time of the service's results) that
        holds none: one read of the run of taken keys that follows it."""
        found = await conn.scalar(self._free_after_query, {"sid": service_id, "at": taken})
        return taken + 1 if found is None else int(found)
