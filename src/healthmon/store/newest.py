"""Each service's newest committed result time: one owner for the writer's parts.

The writer's result keys (store/keys.py: which rows could collide) and its rollup
(store/rollup.py: gaps, and results written out of time order) both ask "what is
this service's newest stored result?" before a batch. `NewestTimes` answers from
memory, reading a service's newest from the database once when it is new to the
writer, and learns the batch's times only once its transaction commits: a
rolled-back flush leaves it as it was, and any failure makes it forget (read again).
Retention never deletes a service's newest result, so the answer stays true.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.store import dialect
from healthmon.store.schema import check_results, staged_results

__all__ = ["Newest", "NewestTimes"]

Newest = dict[int, int | None]
"""service id -> the newest stored time (epoch us) of the service; None for none."""

_PER_QUERY = 400  # SQLite allows 500 terms in a compound SELECT


class NewestTimes:
    """Each service's newest committed result time (epoch microseconds)."""

    def __init__(self) -> None:
        self._newest: Newest = {}

    async def read(self, conn: AsyncConnection, service_ids: Iterable[int]) -> Newest:
        """The newest committed time of each of the services: a new dict, from memory
        and, for services not known yet, from the database."""
        remembered = self._newest
        wanted = set(service_ids)
        known = {sid: remembered[sid] for sid in wanted if sid in remembered}
        unknown = sorted(wanted - known.keys())
        c = check_results.c
        for first in range(0, len(unknown), _PER_QUERY):
            chunk = unknown[first : first + _PER_QUERY]
            queries = [
                select(literal(sid), func.max(c.ts_us)).where(c.service_id == sid) for sid in chunk
            ]
            known.update({sid: ts for sid, ts in await conn.execute(union_all(*queries))})
            if dialect.name(conn) != dialect.POSTGRESQL:
                # Staged rows (store/staging.py) are later than the service's others:
                # one scan of the staging table for the chunk.
                s = staged_results.c
                staged = await conn.execute(
                    select(s.service_id, func.max(s.ts_us))
                    .where(s.service_id.in_(chunk))
                    .group_by(s.service_id)
                )
                known.update({sid: ts for sid, ts in staged})
        return known

    def remember(self, newest: Newest) -> None:
        """The transaction that wrote up to these times committed."""
        self._newest.update(newest)

    def clear(self) -> None:
        """Forget everything (a failed write, a new database): read again when needed."""
        self._newest = {}
