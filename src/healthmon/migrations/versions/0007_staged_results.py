"""Staged results: a rowid table new results are appended to, compacted into check_results.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

Issue 16 (write amplification): on SQLite a flush appends its results to
`staged_results` (check_results' columns, no key, no index, no foreign keys) and the
writer moves them into check_results every few seconds (store/staging.py).
`results_view` reads both tables on SQLite. On PostgreSQL the table is created too (one
schema for both keeps `alembic check` and the models the same) but stays empty: the
store writes check_results directly there, and its views are unchanged.

Downgrade: on SQLite the staged rows are moved into check_results first (nothing is
lost), then the table is dropped and the view restored.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = "service_id, ts_us, status, response_time_us, error, details_id, answered, node_id"

# Written out rather than generated from the code: a migration must not change with it.
_VIEW_SELECT = """
        SELECT s.name AS service,
               strftime('%Y-%m-%dT%H:%M:%fZ', r.ts_us / 1000000.0, 'unixepoch') AS at,
               st.name AS status, r.response_time_us / 1000.0 AS response_time_ms,
               r.answered, r.error, d.body AS details, r.service_id,
               r.ts_us / 1000000.0 AS ts, r.ts_us
        FROM {source} r
        JOIN services s ON s.id = r.service_id
        JOIN statuses st ON st.code = r.status
        LEFT JOIN result_details d ON d.id = r.details_id"""
RESULTS_VIEW_0003 = _VIEW_SELECT.format(source="check_results")
RESULTS_VIEW = _VIEW_SELECT.format(
    source=f"(SELECT {_COLUMNS} FROM check_results "  # noqa: S608 - constants only
    f"UNION ALL SELECT {_COLUMNS} FROM staged_results)"
)


def _sqlite() -> bool:
    return op.get_context().dialect.name == "sqlite"


def upgrade() -> None:
    op.create_table(
        "staged_results",
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("ts_us", sa.BigInteger(), nullable=False, comment="epoch microseconds, UTC"),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("response_time_us", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("details_id", sa.Integer(), nullable=True),
        sa.Column("answered", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("status BETWEEN 0 AND 3", name=op.f("ck_staged_results_status_code")),
        comment="SQLite: the newest check results in commit order, moved into check_results "
        "every few seconds (store/staging.py); read check_results through results_view",
    )
    if _sqlite():
        op.execute("DROP VIEW results_view")
        op.execute(f"CREATE VIEW results_view AS {RESULTS_VIEW}")


def downgrade() -> None:
    if _sqlite():
        op.execute("DROP VIEW results_view")
        op.execute(
            f"INSERT INTO check_results ({_COLUMNS}) SELECT {_COLUMNS} "  # noqa: S608 - constants
            "FROM staged_results "
            "ORDER BY service_id, ts_us"
        )
        op.execute(f"CREATE VIEW results_view AS {RESULTS_VIEW_0003}")
    op.drop_table("staged_results")
