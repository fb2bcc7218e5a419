"""Where raw results are read from: check_results and, on SQLite, staged_results.

The writer stages new results on SQLite (store/staging.py): a service's staged rows are
later than all of its rows in check_results, and a compaction moves them in one
transaction, so every snapshot holds each result in exactly one of the two tables.
Every query of raw results reads both through this module: `union` runs a query per
table (each arm with its own table's access path: check_results' key, a scan of the
few thousand rows staged), `staged_span` groups the staged rows by service in one scan
for queries over many services, `has_staged` says whether a service has any.
PostgreSQL stages nothing (store/staging.py says why): check_results alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, CompoundSelect, Select, Table, exists, select, union_all

from healthmon.store import dialect
from healthmon.store.schema import check_results, staged_results

__all__ = ["has_staged", "staged_span", "tables", "union"]


def tables(dialect_name: str) -> tuple[Table, ...]:
    """The tables raw results are in: check_results and, on SQLite, staged_results."""
    if dialect_name == dialect.POSTGRESQL:
        return (check_results,)
    return (check_results, staged_results)


def union(
    dialect_name: str, build: Callable[[Table], Select[Any]]
) -> Select[Any] | CompoundSelect[Any]:
    """The query `build` makes of one table of raw results, over all of them (UNION
    ALL; each arm uses its own table's access path: the key for check_results, a scan
    of the few seconds staged)."""
    arms = [build(table) for table in tables(dialect_name)]
    return arms[0] if len(arms) == 1 else union_all(*arms)


def has_staged(service_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """Whether the service `service_id` (correlated) has staged rows (SQLite)."""
    s = staged_results.alias("any_staged").c
    return exists().where(s.service_id == service_id)


def staged_span(**columns: Callable[[ColumnElement[Any]], ColumnElement[Any]]) -> Any:
    """A subquery of the staged rows grouped by service: `service_id` and, for each
    keyword, the aggregate it makes of `ts_us` (e.g. `first=func.min`). One scan of
    the staging table, for queries over many services (correlated subqueries would
    scan it once per service)."""
    s = staged_results.c
    return (
        select(s.service_id, *[make(s.ts_us).label(name) for name, make in columns.items()])
        .group_by(s.service_id)
        .subquery("staged_span")
    )
