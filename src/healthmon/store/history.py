"""Read queries over the stored history. Times are epoch seconds (UTC), windows are
half-open [since, until), rows come oldest first."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, and_, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.micros import to_seconds, us_at_or_after, us_to_ms
from healthmon.model import HealthCheckResult, HealthStatus, StatusTransition
from healthmon.store import dialect, raw
from healthmon.store.schema import (
    STATUS_BY_CODE,
    check_results,
    history_coverage,
    result_details,
    services,
    staged_results,
    status_transitions,
)

__all__ = [
    "ResultColumns",
    "TransitionColumns",
    "TransitionRecord",
    "current_statuses",
    "last_transition_id",
    "latest_results",
    "latest_transitions",
    "raw_mark",
    "result_from_row",
    "results",
    "results_query",
    "service_names",
    "transition_from_row",
    "transitions",
    "transitions_after",
    "transitions_query",
    "visible",
]

ResultColumns = tuple[str, int, int, int, dict[str, object] | None, str | None, bool]
"""name, status code, response time (us), time (epoch us), details, error, answered"""
ResultRow = ResultColumns
TransitionColumns = tuple[str, int | None, int, float, str | None]
TransitionRow = TransitionColumns


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """A stored transition and its id. Ids grow in commit order (one writer inserts
    them), so "every transition after id N" is a cursor a reader can follow."""

    id: int
    transition: StatusTransition


async def results(
    conn: AsyncConnection,
    service_name: str,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
) -> list[HealthCheckResult]:
    """One service's results in [since, until), oldest first; the first `limit` of them."""
    query = results_query(service_name, since, until, await raw_mark(conn), dialect.name(conn))
    if limit is not None:
        query = query.limit(limit)
    return [result_from_row(row) for row in await conn.execute(query)]


async def transitions(
    conn: AsyncConnection,
    service_name: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[StatusTransition]:
    """Status transitions in [since, until), of one service or all, oldest first."""
    query = transitions_query(service_name, since, until)
    return [transition_from_row(row) for row in await conn.execute(query)]


async def raw_mark(conn: AsyncConnection) -> float:
    """From when the raw tier holds every result (retention's cut-off); before it only
    each service's newest result is kept."""
    c = history_coverage.c
    found = await conn.scalar(select(c.complete_since).where(c.tier == "raw"))
    return -math.inf if found is None else float(found)


def visible(
    kept_since: float, table: Table = check_results, dialect_name: str = dialect.SQLITE
) -> ColumnElement[bool]:
    """The results retention keeps: those from `kept_since` (the raw mark) on, and each
    service's newest. SQLite deletes the others row by row, in steps behind the mark;
    PostgreSQL drops them a whole day (partition) at a time: the rest of the day at the
    edge stays on disk, and this keeps it out of sight. `table`: check_results or
    staged_results (store/staging.py), whose rows are later than the others of their
    service: a service's newest in check_results is its newest only without any."""
    c = table.c
    inner = table.alias("kept_newest").c
    newest = (
        select(func.max(inner.ts_us))
        .where(inner.service_id == c.service_id)
        .correlate(table)
        .scalar_subquery()
    )
    is_newest = c.ts_us == newest
    if table is check_results and staged_results in raw.tables(dialect_name):
        is_newest = and_(is_newest, ~raw.has_staged(c.service_id))
    return or_(c.ts_us >= us_at_or_after(kept_since), is_newest)


def results_query(
    service_name: str | None,
    since: float | None,
    until: float | None,
    kept_since: float = -math.inf,
    dialect_name: str = dialect.SQLITE,
) -> Select[str, int, int, int, dict[str, object] | None, str | None, bool]:
    """Results in [since, until), in the key's order, which needs no sort: one service's
    oldest first; all services' one service after another (by id, the order they were
    first registered), each oldest first. (All services' in time order would sort the
    whole window before the first row: see bench/README.md.) Only results retention
    keeps (`visible`) when the window starts before `kept_since`, the raw mark.

    Over both tables of raw results (store/staging.py): SQLite merges the arms in the
    key's order (each arm in its own order: check_results' key, a sort of the few
    staged rows), so this still needs no sort of the window."""

    def arm(table: Table) -> Select[Any]:
        c = table.c
        query = _results_query(table).add_columns(c.service_id.label("sid"))
        if (-math.inf if since is None else since) < kept_since:
            query = query.where(visible(kept_since, table, dialect_name))
        if service_name is None:
            # One key range per service, as retention reads: a window over all services
            # must not scan every result.
            query = query.where(c.service_id.in_(select(services.c.id)))
        else:
            query = query.where(services.c.name == service_name)
        if since is not None:
            query = query.where(c.ts_us >= us_at_or_after(since))
        if until is not None:
            query = query.where(c.ts_us < us_at_or_after(until))
        return query

    both = raw.union(dialect_name, arm).subquery("raw")
    r = both.c
    return select(
        r.name, r.status, r.response_time_us, r.ts_us, r.body, r.error, r.answered
    ).order_by(r.sid, r.ts_us)


def transitions_query(
    service_name: str | None, since: float | None, until: float | None
) -> Select[str, int | None, int, float, str | None]:
    """Transitions in [since, until), of one service or all, oldest first."""
    query = (
        select(
            services.c.name,
            status_transitions.c.from_status,
            status_transitions.c.to_status,
            status_transitions.c.ts,
            status_transitions.c.cause,
        )
        .join(services, services.c.id == status_transitions.c.service_id)
        .order_by(status_transitions.c.ts, status_transitions.c.id)
    )
    if service_name is not None:
        query = query.where(services.c.name == service_name)
    if since is not None:
        query = query.where(status_transitions.c.ts >= since)
    if until is not None:
        query = query.where(status_transitions.c.ts < until)
    return query


def transition_from_row(row: TransitionRow) -> StatusTransition:
    name, from_code, to_code, ts, cause = row
    return StatusTransition(
        service_name=name,
        from_status=None if from_code is None else STATUS_BY_CODE[from_code],
        to_status=STATUS_BY_CODE[to_code],
        timestamp=ts,
        cause=cause,
    )


async def latest_results(conn: AsyncConnection) -> dict[str, HealthCheckResult]:
    """The newest stored result of every service that has one."""

    def arm(table: Table) -> Select[Any]:
        c = table.c
        keys: Select[Any]
        if table is check_results:
            # Two seeks on the key per service. (Written as `ts_us = newest(service)`,
            # SQLite scans every result and looks the newest up for each.)
            inner = check_results.alias("newest")
            newest = (
                select(func.max(inner.c.ts_us))
                .where(inner.c.service_id == services.c.id)
                .correlate(services)
                .scalar_subquery()
            )
            keys = select(services.c.id, newest)
        else:  # the staged rows, grouped in one scan (no index to seek)
            keys = select(c.service_id, func.max(c.ts_us)).group_by(c.service_id)
        query: Select[Any] = _results_query(table)  # type: ignore[assignment]  # (typed rows as Any)
        return query.where(tuple_(c.service_id, c.ts_us).in_(keys))

    found: dict[str, HealthCheckResult] = {}
    for row in await conn.execute(raw.union(dialect.name(conn), arm)):
        result = result_from_row(row)
        known = found.get(result.service_name)
        if known is None or known.timestamp < result.timestamp:  # staged: the later
            found[result.service_name] = result
    return found


async def current_statuses(conn: AsyncConnection) -> dict[str, HealthStatus]:
    """Each service's status as its newest transition left it."""
    inner = status_transitions.alias("newest")
    newest = (
        select(inner.c.id)
        .where(inner.c.service_id == services.c.id)
        .order_by(inner.c.ts.desc(), inner.c.id.desc())
        .limit(1)
        .correlate(services)
        .scalar_subquery()
    )
    rows = await conn.execute(
        select(services.c.name, status_transitions.c.to_status)
        .join(services, services.c.id == status_transitions.c.service_id)
        .where(status_transitions.c.id == newest)
    )
    return {name: STATUS_BY_CODE[code] for name, code in rows}


def _results_query(
    table: Table = check_results,
) -> Select[str, int, int, int, dict[str, object] | None, str | None, bool]:
    c = table.c
    return (
        select(
            services.c.name,
            c.status,
            c.response_time_us,
            c.ts_us,
            result_details.c.body,
            c.error,
            c.answered,
        )
        .select_from(table)
        .join(services, services.c.id == c.service_id)
        .outerjoin(result_details, result_details.c.id == c.details_id)
    )


def result_from_row(row: ResultRow) -> HealthCheckResult:
    name, code, response_time_us, ts_us, details, error, answered = row
    return HealthCheckResult(
        service_name=name,
        status=STATUS_BY_CODE[code],
        response_time_ms=us_to_ms(response_time_us),
        timestamp=to_seconds(ts_us),
        details=details,
        error=error,
        answered=bool(answered),
    )


async def transitions_after(
    conn: AsyncConnection, after: int, limit: int, service_names: Sequence[str] | None = None
) -> list[TransitionRecord]:
    """The first `limit` transitions whose id is above `after`, in id (commit) order;
    of the named services only, if given."""
    t = status_transitions.c
    query = (
        select(t.id, services.c.name, t.from_status, t.to_status, t.ts, t.cause)
        .join(services, services.c.id == t.service_id)
        .where(t.id > after)
        .order_by(t.id)
        .limit(limit)
    )
    if service_names is not None:
        query = query.where(services.c.name.in_(service_names))
    rows = await conn.execute(query)
    return [TransitionRecord(row[0], transition_from_row(row[1:])) for row in rows]


async def last_transition_id(conn: AsyncConnection) -> int:
    """The id of the newest transition; 0 when there is none."""
    found = await conn.scalar(select(func.max(status_transitions.c.id)))
    return 0 if found is None else int(found)


async def latest_transitions(conn: AsyncConnection) -> dict[str, TransitionRecord]:
    """Each service's newest transition (the highest id: the last committed)."""
    t = status_transitions.c
    newest = select(func.max(t.id)).group_by(t.service_id).scalar_subquery()
    rows = await conn.execute(
        select(t.id, services.c.name, t.from_status, t.to_status, t.ts, t.cause)
        .join(services, services.c.id == t.service_id)
        .where(t.id.in_(newest))
    )
    return {row[1]: TransitionRecord(row[0], transition_from_row(row[1:])) for row in rows}


async def service_names(conn: AsyncConnection) -> list[str]:
    """Every service the database knows, in the order they were first stored."""
    return list(await conn.scalars(select(services.c.name).order_by(services.c.id)))
