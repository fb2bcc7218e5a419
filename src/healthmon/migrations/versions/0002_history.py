"""History: answered flag, minute and hour aggregates, gaps, coverage, readable views.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Aggregates start empty: `history_coverage` says they are complete only from the hour
after the newest existing result (and up to it: the writer moves that end), so
reports read the raw rows before it. Gaps of
existing results are found here once, with the default threshold (10 s).

PostgreSQL differs in the SQL of the views and of the data statements (`_SQL` says
how, in one place): timestamps shown with to_char, booleans summed as integers,
subqueries named.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than generated from the code: a migration must not change with it.
# ISO 8601 (UTC, to the millisecond) of epoch seconds, per dialect.
ISO = {
    "sqlite": "strftime('%Y-%m-%dT%H:%M:%fZ', {}, 'unixepoch')",
    "postgresql": "to_char(to_timestamp({}) AT TIME ZONE 'UTC', "
    """'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')""",
}
VIEWS = {
    "results_view": """
        SELECT r.id, s.name AS service,
               strftime('%Y-%m-%dT%H:%M:%fZ', r.ts, 'unixepoch') AS at, st.name AS status,
               r.response_time_ms, r.answered, r.error, r.details, r.service_id, r.ts
        FROM check_results r
        JOIN services s ON s.id = r.service_id
        JOIN statuses st ON st.code = r.status""",
    "transitions_view": """
        SELECT t.id, s.name AS service, strftime('%Y-%m-%dT%H:%M:%fZ', t.ts, 'unixepoch') AS at,
               f.name AS from_status, n.name AS to_status, t.cause, t.service_id, t.ts
        FROM status_transitions t
        JOIN services s ON s.id = t.service_id
        LEFT JOIN statuses f ON f.code = t.from_status
        JOIN statuses n ON n.code = t.to_status""",
    "gaps_view": """
        SELECT s.name AS service, strftime('%Y-%m-%dT%H:%M:%fZ', g.start_ts, 'unixepoch') AS since,
               strftime('%Y-%m-%dT%H:%M:%fZ', g.end_ts, 'unixepoch') AS until,
               g.end_ts - g.start_ts AS seconds,
               g.service_id, g.start_ts, g.end_ts
        FROM result_gaps g JOIN services s ON s.id = g.service_id""",
    # One row per incident: from a transition away from healthy to the next one back.
    "incidents_view": """
        WITH marked AS (
            SELECT service_id, id, ts, to_status,
                   to_status <> 0 AND coalesce(from_status, 0) = 0 AS opens,
                   to_status = 0 AND coalesce(from_status, 0) <> 0 AS closes
            FROM status_transitions
        ), numbered AS (
            SELECT *, sum(opens OR closes) OVER (PARTITION BY service_id ORDER BY ts, id)
                      AS segment
            FROM marked
        ), segments AS (
            SELECT service_id, max(opens) AS is_incident, min(ts) AS start_ts,
                   max(to_status) AS worst,
                   lead(min(ts)) OVER (PARTITION BY service_id ORDER BY segment) AS end_ts
            FROM numbered GROUP BY service_id, segment
        )
        SELECT s.name AS service, strftime('%Y-%m-%dT%H:%M:%fZ', g.start_ts, 'unixepoch') AS since,
               strftime('%Y-%m-%dT%H:%M:%fZ', g.end_ts, 'unixepoch') AS until,
               st.name AS worst_status,
               g.end_ts - g.start_ts AS seconds, g.service_id, g.start_ts, g.end_ts
        FROM segments g
        JOIN services s ON s.id = g.service_id
        JOIN statuses st ON st.code = g.worst
        WHERE g.is_incident""",
}
_AGGREGATE_VIEW = """
        SELECT s.name AS service, strftime('%Y-%m-%dT%H:%M:%fZ', a.start, 'unixepoch') AS at,
               a.healthy + a.unknown + a.degraded + a.unhealthy AS checks,
               a.healthy, a.unknown, a.degraded, a.unhealthy,
               (a.healthy + a.degraded) * 1.0 / nullif(a.healthy + a.degraded + a.unhealthy, 0)
                   AS uptime,
               a.answered, a.latency_sum / nullif(a.answered, 0) AS latency_mean_ms,
               a.latency_min AS latency_min_ms, a.latency_max AS latency_max_ms,
               a.service_id, a.start
        FROM result_TIERs a JOIN services s ON s.id = a.service_id"""
for _tier in ("minute", "hour"):
    VIEWS[f"{_tier}s_view"] = _AGGREGATE_VIEW.replace("TIER", _tier)

# The incidents view in PostgreSQL's words: booleans are not numbers there.
_PG_INCIDENTS = (
    VIEWS["incidents_view"]
    .replace("sum(opens OR closes)", "sum(CAST(opens OR closes AS INTEGER))")
    .replace("max(opens) AS is_incident", "bool_or(opens) AS is_incident")
)

# Data statements whose SQL differs: PostgreSQL casts a float to an integer by
# rounding (SQLite truncates), and wants every subquery named.
_SQL = {
    "sqlite": {
        "marks": "INSERT INTO history_coverage (tier, complete_since, complete_until) "
        "SELECT tier, mark, mark FROM (SELECT coalesce("
        "  (SELECT (CAST(max(ts) / 3600 AS INTEGER) + 1) * 3600 FROM check_results), 0"
        ") AS mark), (SELECT 'minute' AS tier UNION ALL SELECT 'hour')",
        "not_answered": "UPDATE check_results SET answered = 0 "
        "WHERE status = 3 AND error IS NOT NULL AND error NOT LIKE 'HTTP %'",
    },
    "postgresql": {
        "marks": "INSERT INTO history_coverage (tier, complete_since, complete_until) "
        "SELECT tier, mark, mark FROM (SELECT coalesce("
        "  (SELECT (floor(max(ts) / 3600) + 1) * 3600 FROM check_results), 0"
        ") AS mark) AS marks, (SELECT 'minute' AS tier UNION ALL SELECT 'hour') AS tiers",
        "not_answered": "UPDATE check_results SET answered = false "
        "WHERE status = 3 AND error IS NOT NULL AND error NOT LIKE 'HTTP %'",
    },
}


def _view(name: str, dialect: str) -> str:
    """A view's SQL in the dialect's words."""
    if dialect == "sqlite":
        return VIEWS[name]
    body = _PG_INCIDENTS if name == "incidents_view" else VIEWS[name]
    return re.sub(
        r"strftime\('%Y-%m-%dT%H:%M:%fZ', ([^,]+), 'unixepoch'\)",
        lambda match: ISO[dialect].format(match[1]),
        body,
    )


def _dialect() -> str:
    return op.get_context().dialect.name


def _aggregate_table(name: str, width: str) -> None:
    op.create_table(
        name,
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("start", sa.Integer(), nullable=False, comment=f"epoch seconds, UTC, a {width}"),
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
            ["service_id"], ["services.id"], name=op.f(f"fk_{name}_service_id_services")
        ),
        sa.PrimaryKeyConstraint("service_id", "start", name=op.f(f"pk_{name}")),
        comment=f"results per service and {width}, kept by the writer in its transactions",
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    with op.batch_alter_table("check_results", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "answered",
                sa.Boolean(),
                server_default=sa.true(),
                nullable=False,
                comment="the target answered (not a timeout or transport error): latency counts",
            )
        )
    sql = _SQL[_dialect()]
    # What store/rollup.py's `answered` decides for new results.
    op.execute(sql["not_answered"])

    _aggregate_table("result_minutes", "minute")
    _aggregate_table("result_hours", "hour")
    op.create_table(
        "result_gaps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("start_ts", sa.Float(), nullable=False, comment="the last result before the gap"),
        sa.Column("end_ts", sa.Float(), nullable=False, comment="the first result after it"),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_result_gaps_service_id_services")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_result_gaps")),
        comment="spans longer than the store's gap_after without any result of a service",
    )
    with op.batch_alter_table("result_gaps", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_result_gaps_service_id_start_ts"), ["service_id", "start_ts"]
        )
    op.create_table(
        "history_coverage",
        sa.Column(
            "tier", sa.String(length=16), nullable=False, comment="raw, minute, hour or events"
        ),
        sa.Column(
            "complete_since",
            sa.Float(),
            nullable=False,
            comment="the tier holds everything at or after this time (epoch seconds, UTC)",
        ),
        sa.Column(
            "complete_until",
            sa.Float(),
            nullable=True,
            comment="aggregates: the tier holds everything before this time, and nothing after",
        ),
        sa.PrimaryKeyConstraint("tier", name=op.f("pk_history_coverage")),
    )
    op.execute(
        "INSERT INTO result_gaps (service_id, start_ts, end_ts) "
        "SELECT service_id, previous, ts FROM ("
        "  SELECT service_id, ts, lag(ts) OVER (PARTITION BY service_id ORDER BY ts) AS previous"
        "  FROM check_results"
        ") AS ordered WHERE ts - previous > 10.0"
    )
    op.execute(
        "INSERT INTO history_coverage (tier, complete_since) VALUES ('raw', 0), ('events', 0)"
    )
    op.execute(sql["marks"])
    for name in VIEWS:
        op.execute(f"CREATE VIEW {name} AS {_view(name, _dialect())}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW {name}")
    op.drop_table("history_coverage")
    with op.batch_alter_table("result_gaps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_result_gaps_service_id_start_ts"))
    op.drop_table("result_gaps")
    op.drop_table("result_hours")
    op.drop_table("result_minutes")
    with op.batch_alter_table("check_results", schema=None) as batch_op:
        batch_op.drop_column("answered")
