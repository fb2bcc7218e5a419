"""Cluster mode: nodes, service leases, the transition feed, and who took each result.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

Cluster mode (healthmon/cluster/, docs/cluster.md) runs on PostgreSQL only, but its
tables are created on both dialects: they are three small tables, and one schema for
both keeps `alembic check` and the models the same everywhere.

- `cluster_nodes`: one row per node process (a restart is a new row, so a paused old
  process and its restarted self are never taken for one another).
- `service_leases`: which node checks which service, until when (the database's
  clock), at which epoch (the fencing token).
- `cluster_feed`: one row whose lock orders the transition feed by commit.
- `check_results.node_id`, `status_transitions.node_id`: the node that took the result
  or recorded the transition (NULL outside cluster mode); `status_transitions.seq`:
  its position in the feed. Nullable columns added at the end: no table is rewritten
  (SQLite's ALTER TABLE ADD COLUMN, PostgreSQL's catalog-only change).
- PostgreSQL only: `result_details_id_seq` set past the ids given so far, which the
  store now takes its details ids from (several writers at once).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False, comment="--node, or host:pid"),
        sa.Column(
            "started_at",
            sa.Float(),
            nullable=False,
            comment="epoch seconds, the database's clock",
        ),
        sa.Column(
            "heartbeat_at",
            sa.Float(),
            nullable=False,
            comment="epoch seconds, the database's clock",
        ),
        sa.Column(
            "stopped_at",
            sa.Float(),
            nullable=True,
            comment="a clean stop; NULL while running",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_nodes")),
        comment="one row per cluster node process (a restart is a new row): its leases, "
        "results and transitions refer to it",
    )
    op.create_table(
        "service_leases",
        sa.Column("service", sa.String(), nullable=False, comment="the service's name"),
        sa.Column("node_id", sa.Integer(), nullable=True, comment="the holder; NULL when free"),
        sa.Column(
            "epoch",
            sa.BigInteger(),
            server_default="0",
            nullable=False,
            comment="bumped by every claim: the fencing token writes are checked against",
        ),
        sa.Column(
            "expires_at",
            sa.Float(),
            server_default="0",
            nullable=False,
            comment="epoch seconds, the database's clock",
        ),
        sa.PrimaryKeyConstraint("service", name=op.f("pk_service_leases")),
        comment="which cluster node checks which service",
    )
    op.create_index(op.f("ix_service_leases_node_id"), "service_leases", ["node_id"], unique=False)
    op.create_table(
        "cluster_feed",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column(
            "last_seq",
            sa.BigInteger(),
            nullable=False,
            comment="the last status_transitions.seq handed out",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_feed")),
        comment="one row: its lock, held from a writer's numbering to its commit, makes "
        "the transition feed's order the commit order",
    )
    op.execute("INSERT INTO cluster_feed (id, last_seq) VALUES (1, 0)")
    op.add_column(
        "check_results",
        sa.Column(
            "node_id",
            sa.Integer(),
            nullable=True,
            comment="cluster mode: the cluster_nodes row of the process that took it",
        ),
    )
    op.add_column(
        "status_transitions",
        sa.Column(
            "node_id",
            sa.Integer(),
            nullable=True,
            comment="cluster mode: the cluster_nodes row of the process that recorded it",
        ),
    )
    op.add_column(
        "status_transitions",
        sa.Column(
            "seq",
            sa.BigInteger(),
            nullable=True,
            comment="cluster mode: the transition feed's position, in commit order",
        ),
    )
    op.create_index(op.f("ix_status_transitions_seq"), "status_transitions", ["seq"], unique=True)
    if op.get_context().dialect.name == "postgresql":
        # result_details ids now come from the column's sequence on PostgreSQL, where
        # several writers may insert at once (store/details.py): past those given so far.
        op.execute(
            "SELECT setval('result_details_id_seq', coalesce(max(id), 0) + 1, false) "
            "FROM result_details"
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_status_transitions_seq"), table_name="status_transitions")
    # SQLite drops a column in place (3.35+) unless an index or constraint names it.
    op.drop_column("status_transitions", "seq")
    op.drop_column("status_transitions", "node_id")
    op.drop_column("check_results", "node_id")
    op.drop_table("cluster_feed")
    op.drop_index(op.f("ix_service_leases_node_id"), table_name="service_leases")
    op.drop_table("service_leases")
    op.drop_table("cluster_nodes")
