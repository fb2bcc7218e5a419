"""Read queries over the stored history. Times are epoch seconds (UTC), windows are
half-open [since, until), rows come oldest first."""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.model import HealthCheckResult, HealthStatus, StatusTransition
from healthmon.store.schema import STATUS_BY_CODE, check_results, services, status_transitions

__all__ = [
    "current_statuses",
    "latest_results",
    "result_from_row",
    "results",
    "results_query",
    "transition_from_row",
    "transitions",
    "transitions_query",
]

ResultRow = tuple[str, int, float, float, dict[str, object] | None, str | None]
TransitionRow = tuple[str, int | None, int, float, str | None]


async def results(
    conn: AsyncConnection,
    service_name: str,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
) -> list[HealthCheckResult]:
    """One service's results in [since, until), oldest first; the first `limit` of them."""
    query = results_query(service_name, since, until)
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


def results_query(
    service_name: str | None, since: float | None, until: float | None
) -> Select[str, int, float, float, dict[str, object] | None, str | None]:
    """Results in [since, until): one service's oldest first (the (service_id, ts) index
    gives that order without a sort), or all services' in the order they were written."""
    query = _results_query()
    if service_name is None:
        query = query.order_by(check_results.c.id)  # the rowid: no sort of every row
    else:
        query = query.where(services.c.name == service_name).order_by(
            check_results.c.ts, check_results.c.id
        )
    if since is not None:
        query = query.where(check_results.c.ts >= since)
    if until is not None:
        query = query.where(check_results.c.ts < until)
    return query


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
    # One index seek per service on (service_id, ts), not a scan of all results.
    inner = check_results.alias("newest")
    newest = (
        select(inner.c.id)
        .where(inner.c.service_id == services.c.id)
        .order_by(inner.c.ts.desc(), inner.c.id.desc())
        .limit(1)
        .correlate(services)
        .scalar_subquery()
    )
    rows = await conn.execute(_results_query().where(check_results.c.id == newest))
    found = (result_from_row(row) for row in rows)
    return {result.service_name: result for result in found}


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


def _results_query() -> Select[str, int, float, float, dict[str, object] | None, str | None]:
    return select(
        services.c.name,
        check_results.c.status,
        check_results.c.response_time_ms,
        check_results.c.ts,
        check_results.c.details,
        check_results.c.error,
    ).join(services, services.c.id == check_results.c.service_id)


def result_from_row(row: ResultRow) -> HealthCheckResult:
    name, code, response_time_ms, ts, details, error = row
    return HealthCheckResult(
        service_name=name,
        status=STATUS_BY_CODE[code],
        response_time_ms=response_time_ms,
        timestamp=ts,
        details=details,
        error=error,
    )
