"""Initial schema: services, statuses, check results, status transitions.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False, comment="http, agent or other"),
        sa.Column(
            "url", sa.String(), nullable=True, comment="health check URL, credentials redacted"
        ),
        sa.Column("created_at", sa.Float(), nullable=False, comment="epoch seconds, UTC"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_services")),
        sa.UniqueConstraint("name", name=op.f("uq_services_name")),
    )
    statuses = op.create_table(
        "statuses",
        sa.Column("code", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_statuses")),
        sa.UniqueConstraint("name", name=op.f("uq_statuses_name")),
        comment="status code -> name, for people reading the database with SQL",
    )
    op.create_table(
        "check_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column(
            "ts", sa.Float(), nullable=False, comment="epoch seconds, UTC, when the check completed"
        ),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("response_time_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(none_as_null=True), nullable=True),
        sa.CheckConstraint("status BETWEEN 0 AND 3", name=op.f("ck_check_results_status_code")),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_check_results_service_id_services")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_check_results")),
    )
    with op.batch_alter_table("check_results", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_check_results_service_id_ts"), ["service_id", "ts"], unique=False
        )

    op.create_table(
        "status_transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False, comment="epoch seconds, UTC"),
        sa.Column(
            "from_status", sa.SmallInteger(), nullable=True, comment="NULL for a first status"
        ),
        sa.Column("to_status", sa.SmallInteger(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "from_status BETWEEN 0 AND 3", name=op.f("ck_status_transitions_from_status_code")
        ),
        sa.CheckConstraint(
            "to_status BETWEEN 0 AND 3", name=op.f("ck_status_transitions_to_status_code")
        ),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_status_transitions_service_id_services")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_transitions")),
    )
    with op.batch_alter_table("status_transitions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_status_transitions_service_id_ts"), ["service_id", "ts"], unique=False
        )

    # Fixed codes (equal to the severity rank, so max(status) is the worst status).
    # Written out here rather than imported: a migration must not change with the code.
    op.bulk_insert(
        statuses,
        [
            {"code": 0, "name": "healthy"},
            {"code": 1, "name": "unknown"},
            {"code": 2, "name": "degraded"},
            {"code": 3, "name": "unhealthy"},
        ],
    )


def downgrade() -> None:
    with op.batch_alter_table("status_transitions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_status_transitions_service_id_ts"))

    op.drop_table("status_transitions")
    with op.batch_alter_table("check_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_check_results_service_id_ts"))

    op.drop_table("check_results")
    op.drop_table("statuses")
    op.drop_table("services")
