"""Details bodies, each stored once: `result_details` rows that results reference.

Most services answer the same body check after check (`{"status": "ok"}`), and
storing it with every result cost a quarter of the database. The writer remembers,
per service, the last body it wrote, the minute (UTC, of the result's time) it wrote
it for, and its id: the same body in the same minute reuses that id, anything else
inserts a new row. Bodies compare as the JSON text stored (`json.dumps`), so a body
that changes on every check costs one row per check, never more, and 1 versus 1.0
or a change of key order is a change.

Why per minute: a details row is then referenced only by one service's results
within one minute, so retention tells that a row is no longer referenced by reading
that minute alone (`unreferenced`), where an index on `check_results.details_id` would
cost ~19 bytes on every result. An unchanged body costs one row (~25 bytes) per
service and minute: under half a byte per result at 1 Hz, 0.02 at 20 Hz.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import structlog
from sqlalchemy import Insert, Select, Table, and_, bindparam, func, insert, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.store import dialect, raw
from healthmon.store.schema import check_results, result_details

__all__ = ["WINDOW_US", "Details", "Remembered", "copy_body", "unreferenced", "window_of"]

log = structlog.get_logger("healthmon.store")

WINDOW_US = 60_000_000
"""A details row is referenced only by one service's results within one such window
(a UTC minute) of epoch microseconds."""

Remembered = dict[int, tuple[int, str, int]]
"""service id -> (window, body text, details id) of the last body written."""

_QUERY_TERMS = 100  # (service, window) ranges per query, as report.py reads ranges


def window_of(ts_us: int) -> int:
    """The start of the window (minute) holding the time, in epoch microseconds."""
    return ts_us - ts_us % WINDOW_US


class Details:
    """The writer's memory of the bodies it wrote; see the module's docstring."""

    def __init__(self) -> None:
        self._last: Remembered = {}
        self._warned: set[int] = set()  # services whose bodies were not JSON
        self._inserts: dict[str, Insert] = {}  # by dialect

    async def link(
        self,
        conn: AsyncConnection,
        rows: Sequence[dict[str, Any]],
        bodies: Sequence[Mapping[str, Any] | None],
    ) -> Remembered:
        """Set each check_results row's `details_id` (rows and bodies pair up), inserting
        the bodies not stored yet. Returns what to `remember` once the transaction
        commits: until then nothing here changes, so a rollback leaves no stale id."""
        last = self._last
        changed: Remembered = {}
        new: list[str] = []
        for row, body in zip(rows, bodies, strict=True):
            if body is None:
                continue
            service_id = row["service_id"]
            window = window_of(row["ts_us"])
            text = self._serialise(service_id, body)
            known = changed.get(service_id) or last.get(service_id)
            if known is not None and known[0] == window and known[1] == text:
                row["details_id"] = known[2]
            else:  # a placeholder (negative) until the batch's new ids are known
                row["details_id"] = -1 - len(new)
                changed[service_id] = (window, text, -1 - len(new))
                new.append(text)
        if not new:
            return changed
        ids = await _next_ids(conn, len(new))
        await conn.execute(
            self._insert(conn), [{"id": ids[i], "body": text} for i, text in enumerate(new)]
        )
        for row in rows:
            ref = row["details_id"]
            if ref is not None and ref < 0:
                row["details_id"] = ids[-1 - ref]
        return {
            service_id: (window, text, ids[-1 - ref] if ref < 0 else ref)
            for service_id, (window, text, ref) in changed.items()
        }

    def _insert(self, conn: AsyncConnection) -> Insert:
        """The body is bound as the JSON text compared here, not serialised again."""
        name = dialect.name(conn)
        found = self._inserts.get(name)
        if found is None:
            found = self._inserts[name] = insert(result_details).values(
                id=bindparam("id"), body=dialect.json_text(name, "body")
            )
        return found

    def remember(self, changed: Remembered) -> None:
        """The transaction of `link` committed: its ids exist."""
        self._last.update(changed)

    def forget(self, ids: Collection[int]) -> None:
        """Never reuse those rows: deleted (retention), or now referenced in another
        minute than the one remembered (results moved there, store/keys.py)."""
        if ids:
            self._last = {sid: last for sid, last in self._last.items() if last[2] not in ids}

    def clear(self) -> None:
        """Forget everything (a failed write, a new database): the next body of each
        service inserts a new row, which is always safe."""
        self._last = {}

    def _serialise(self, service_id: int, body: Mapping[str, Any]) -> str:
        try:
            return json.dumps(body)
        except (TypeError, ValueError) as exc:  # not JSON: kept readable rather than lost
            if service_id not in self._warned:
                self._warned.add(service_id)
                log.warning(
                    "details_not_json",
                    service_id=service_id,
                    error=str(exc),
                    stored_as="values that are not JSON as their repr()",
                )
            try:
                return json.dumps(body, default=repr)
            except (TypeError, ValueError):  # e.g. a circular structure
                return json.dumps({"unserialisable": repr(body)[:1000]})


async def copy_body(conn: AsyncConnection, details_id: int) -> int:
    """A new row with the body of `details_id`: for results moved into another window
    (store/keys.py moves a colliding result's time forward), so windows stay apart."""
    (new_id,) = await _next_ids(conn, 1)
    await conn.execute(
        insert(result_details).from_select(
            ["id", "body"],
            select(literal(new_id), result_details.c.body).where(result_details.c.id == details_id),
        )
    )
    return new_id


async def unreferenced(
    conn: AsyncConnection, candidates: Iterable[tuple[int, int, int]]
) -> set[int]:
    """Which of the (details id, service id, window) candidates no check_results row
    references any more: one range read of the service's results in that window each,
    100 windows per query."""
    windows: dict[tuple[int, int], set[int]] = defaultdict(set)
    for details_id, service_id, window in candidates:
        windows[service_id, window].add(details_id)
    if not windows:
        return set()
    terms = sorted(windows)
    referenced: set[int | None] = set()
    for first in range(0, len(terms), _QUERY_TERMS):
        chunk = terms[first : first + _QUERY_TERMS]

        def arm(table: Table, chunk: list[tuple[int, int]] = chunk) -> Select[Any]:
            c = table.c
            where = or_(
                *[
                    and_(c.service_id == sid, c.ts_us >= window, c.ts_us < window + WINDOW_US)
                    for sid, window in chunk
                ]
            )
            if table is not check_results:  # staged rows (a scan): the services first
                where = and_(c.service_id.in_({sid for sid, _ in chunk}), where)
            return select(c.details_id).distinct().where(where)

        referenced.update(await conn.scalars(raw.union(dialect.name(conn), arm)))
    return {i for ids in windows.values() for i in ids if i not in referenced}


async def _next_ids(conn: AsyncConnection, count: int) -> list[int]:
    """Ids for `count` new rows, given here rather than by the insert, so that one
    executemany inserts a batch's bodies and every row knows its id without RETURNING.

    SQLite has one writer: the ids after the largest. PostgreSQL may have several
    (cluster mode, healthmon/cluster/), so they come from the column's sequence, which
    no two transactions share (migration 0005 set it past the ids given before)."""
    if dialect.name(conn) == dialect.POSTGRESQL:
        found = await conn.scalars(
            select(func.nextval(_SEQUENCE)).select_from(func.generate_series(1, count))
        )
        return list(found)
    largest = await conn.scalar(select(func.max(result_details.c.id)))
    return [(largest or 0) + 1 + i for i in range(count)]


_SEQUENCE = "result_details_id_seq"
"""PostgreSQL's sequence of result_details.id (the serial column's)."""
