"""Day aggregates: `result_days`, backfilled from the hour aggregates, and `days_view`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

A day row is to the hour rows what an hour row is to the minute rows: one row per
service and UTC day, the same columns, summed from its 24 hours. A 90-day report or
overview then reads 90 rows per service instead of 2,160.

The backfill sums, per service, the hour rows of every whole day the hour tier holds
completely ([complete_since, complete_until) of its `history_coverage` row, rounded
inwards to whole days); the day tier's coverage row says exactly those days. The
writer closes each later day when its last hour is closed (store/rollup.py).

Plain SQLAlchemy Core on the migration's connection: the same on every dialect (the
aggregate tables are not partitioned on PostgreSQL; only raw results are).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
import structlog
from alembic import op

# The histogram BLOB format is the stored data format, as fixed as the columns: read
# and written with the functions that define it.
from healthmon.store.sketch import Histogram, encode

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = structlog.get_logger("healthmon.store")

# Written out rather than imported: a migration must not change with the code.
_DAY = 86_400
# The hours view of 0002, for days (ISO 8601 times in each dialect's words).
_VIEW_SQL = """
        SELECT s.name AS service, {at} AS at,
               a.healthy + a.unknown + a.degraded + a.unhealthy AS checks,
               a.healthy, a.unknown, a.degraded, a.unhealthy,
               (a.healthy + a.degraded) * 1.0 / nullif(a.healthy + a.degraded + a.unhealthy, 0)
                   AS uptime,
               a.answered, a.latency_sum / nullif(a.answered, 0) AS latency_mean_ms,
               a.latency_min AS latency_min_ms, a.latency_max AS latency_max_ms,
               a.service_id, a.start
        FROM result_days a JOIN services s ON s.id = a.service_id"""
_VIEW = {
    "sqlite": _VIEW_SQL.format(at="strftime('%Y-%m-%dT%H:%M:%fZ', a.start, 'unixepoch')"),
    "postgresql": _VIEW_SQL.format(
        at="""to_char(to_timestamp(a.start) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""
    ),
}
_COLUMNS = ("healthy", "unknown", "degraded", "unhealthy", "answered", "latency_sum")


def _aggregate(name: str) -> sa.TableClause:
    return sa.table(
        name,
        sa.column("service_id", sa.Integer),
        sa.column("start", sa.Integer),
        *[sa.column(column, sa.Integer) for column in _COLUMNS[:5]],
        sa.column("latency_sum", sa.Float),
        sa.column("latency_min", sa.Float),
        sa.column("latency_max", sa.Float),
        sa.column("histogram", sa.LargeBinary),
    )


def upgrade() -> None:
    op.create_table(
        "result_days",
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("start", sa.Integer(), nullable=False, comment="epoch seconds, UTC, a day"),
        sa.Column("healthy", sa.Integer(), nullable=False),
        sa.Column("unknown", sa.Integer(), nullable=False),
        sa.Column("degraded", sa.Integer(), nullable=False),
        sa.Column("unhealthy", sa.Integer(), nullable=False),
        sa.Column("answered", sa.Integer(), nullable=False, comment="results with a latency"),
        sa.Column("latency_sum", sa.Float(), nullable=False, comment="ms, answered results"),
        sa.Column("latency_min", sa.Float(), nullable=True),
        sa.Column("latency_max", sa.Float(), nullable=True),
        sa.Column("histogram", sa.LargeBinary(), nullable=False, comment="see store/sketch.py"),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_result_days_service_id_services")
        ),
        sa.PrimaryKeyConstraint("service_id", "start", name=op.f("pk_result_days")),
        comment="results per service and day, kept by the writer in its transactions",
        sqlite_with_rowid=False,
    )
    bind = op.get_bind()
    coverage = sa.table(
        "history_coverage",
        sa.column("tier", sa.String),
        sa.column("complete_since", sa.Float),
        sa.column("complete_until", sa.Float),
    )
    found = bind.execute(
        sa.select(coverage.c.complete_since, coverage.c.complete_until).where(
            coverage.c.tier == "hour"
        )
    ).first()
    hour_since, hour_until = (0.0, 0.0) if found is None else found
    if hour_until is None:
        hour_until = hour_since
    since = math.ceil(hour_since / _DAY) * _DAY
    until = math.floor(hour_until / _DAY) * _DAY
    days = _backfill(bind, since, until) if since < until else 0
    bind.execute(sa.insert(coverage).values(tier="day", complete_since=since, complete_until=until))
    op.execute(f"CREATE VIEW days_view AS {_VIEW[bind.dialect.name]}")
    log.info("day_aggregates_backfilled", days=days, since=since, until=until)


def _backfill(bind: sa.Connection, since: int, until: int) -> int:
    """Sum each service's hour rows in [since, until) into day rows; returns how many."""
    hours, days = _aggregate("result_hours"), _aggregate("result_days")
    h = hours.c
    service_ids: list[int] = list(
        bind.scalars(sa.select(sa.column("id", sa.Integer)).select_from(sa.table("services")))
    )
    written = 0
    for service_id in sorted(service_ids):
        rows = bind.execute(
            sa.select(
                h.start,
                *[h[name] for name in _COLUMNS],
                h.latency_min,
                h.latency_max,
                h.histogram,
            )
            .where(h.service_id == service_id, h.start >= since, h.start < until)
            .order_by(h.start)
        )
        sums: dict[int, list[Any]] = {}
        histograms: dict[int, Histogram] = {}
        for start, *counts, low, high, blob in rows:
            day = start - start % _DAY
            found = sums.get(day)
            if found is None:
                found = sums[day] = [0] * 5 + [0.0, None, None]
                histograms[day] = Histogram()
            for index, value in enumerate(counts):
                found[index] += value
            if low is not None:
                found[6] = low if found[6] is None else min(found[6], low)
            if high is not None:
                found[7] = high if found[7] is None else max(found[7], high)
            histograms[day].add_blob(blob or b"")  # added up once a day, in C loops
        if sums:
            bind.execute(
                sa.insert(days),
                [
                    {
                        "service_id": service_id,
                        "start": start,
                        **dict(zip(_COLUMNS, day[:6], strict=True)),
                        "latency_min": day[6],
                        "latency_max": day[7],
                        "histogram": _encoded(histograms[start]),
                    }
                    for start, day in sums.items()
                ],
            )
            written += len(sums)
    return written


def _encoded(histogram: Histogram) -> bytes:
    low, counts = histogram.dense()
    return encode({low + i: n for i, n in enumerate(counts) if n})


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS days_view")
    op.execute("DELETE FROM history_coverage WHERE tier = 'day'")
    op.drop_table("result_days")
