"""What differs between SQLite and PostgreSQL in the store's SQL, in one place.

The rest of the store writes SQLAlchemy Core that both backends run as it is; where
they differ (upserts, the two-argument min/max, merging histograms in an upsert,
binding a JSON text, raw results' partitions) it asks this module.

- Upserts: `INSERT ... ON CONFLICT` is dialect-specific in SQLAlchemy (each dialect
  has its own `insert`), with the same API.
- min/max of two values: SQLite's scalar `min(a, b)`; PostgreSQL's `least`/`greatest`.
- Histograms in an upsert: SQLite merges them in SQL with the function
  `hm_merge_histograms` that store/engine.py registers on each connection (Python, in
  the process). PostgreSQL runs no Python: the stored histograms of the rows to upsert
  are read (locked) and merged here first, and the upsert writes the sum. Only late
  results take this path (a handful of rows), and one writer writes a service's rows.
- Reads: one snapshot per read transaction (`as_one_snapshot`).
- A details body is bound as the JSON text the writer compared (store/details.py):
  PostgreSQL is told it is JSON; SQLite stores the text as it is.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, ColumnElement, Table, Text, bindparam, cast, func, select, tuple_
from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from healthmon.store.sketch import merge_blobs

__all__ = [
    "POSTGRESQL",
    "SQLITE",
    "after_failure",
    "as_one_snapshot",
    "greatest",
    "histogram_upsert",
    "json_text",
    "least",
    "name",
    "upsert",
]

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


def name(conn: AsyncConnection) -> str:
    """The connection's dialect: SQLITE or POSTGRESQL."""
    return conn.dialect.name


async def after_failure(engine: AsyncEngine) -> None:
    """After a failed flush on PostgreSQL, the pool's idle connections are closed: the
    next flush connects anew, and so picks up what changed on the server (a database
    made writable again, a failover to a new primary behind the same name). SQLite's
    connections are files: nothing to do."""
    if engine.dialect.name == POSTGRESQL:
        await engine.dispose()


async def as_one_snapshot(conn: AsyncConnection) -> AsyncConnection:
    """The connection, set so that its next transaction reads one snapshot throughout
    (a report's coverage marks and rows, latest()'s results and statuses): SQLite's
    read transactions do; PostgreSQL's READ COMMITTED takes a snapshot per statement,
    REPEATABLE READ one per transaction (a read-only one never fails to serialise)."""
    if name(conn) == POSTGRESQL:
        return await conn.execution_options(isolation_level="REPEATABLE READ")
    return conn


def upsert(conn: AsyncConnection, table: Table) -> SqliteInsert | PostgresInsert:
    """An INSERT with `on_conflict_do_update`/`on_conflict_do_nothing`, for this dialect."""
    return postgres_insert(table) if name(conn) == POSTGRESQL else sqlite_insert(table)


def least(conn: AsyncConnection, a: Any, b: Any) -> ColumnElement[Any]:
    return func.least(a, b) if name(conn) == POSTGRESQL else func.min(a, b)


def greatest(conn: AsyncConnection, a: Any, b: Any) -> ColumnElement[Any]:
    return func.greatest(a, b) if name(conn) == POSTGRESQL else func.max(a, b)


def json_text(dialect_name: str, key: str) -> ColumnElement[Any]:
    """A bound parameter holding JSON text, for a JSON column."""
    param = bindparam(key, type_=Text())
    return cast(param, JSON) if dialect_name == POSTGRESQL else param


async def histogram_upsert(
    conn: AsyncConnection,
    table: Table,
    rows: list[dict[str, Any]],
    stored: ColumnElement[Any],
    new: ColumnElement[Any],
) -> ColumnElement[Any]:
    """The value an upsert of aggregate `rows` sets the `histogram` column to: the sum
    of the `stored` histogram and the `new` one. On PostgreSQL the rows' histograms are
    replaced here by the sums (read with FOR UPDATE in the caller's transaction)."""
    if name(conn) != POSTGRESQL:
        return func.hm_merge_histograms(stored, new)
    c = table.c
    keys = [(row["service_id"], row["start"]) for row in rows]
    found: dict[tuple[int, int], bytes] = {}
    for first in range(0, len(keys), 1000):
        query = (
            select(c.service_id, c.start, c.histogram)
            .where(tuple_(c.service_id, c.start).in_(keys[first : first + 1000]))
            .with_for_update()
        )
        found.update({(sid, start): blob for sid, start, blob in await conn.execute(query)})
    for row in rows:
        blob = found.get((row["service_id"], row["start"]))
        if blob is not None:
            row["histogram"] = merge_blobs(blob, row["histogram"])
    return new
