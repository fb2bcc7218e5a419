"""Compact results: check_results keyed by (service, microsecond), details stored once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

`check_results` becomes a WITHOUT ROWID table with the primary key (service_id,
ts_us), which replaces both the rowid and the (service_id, ts) index: times are
integer epoch microseconds, response times integer microseconds, and the details
JSON moves to `result_details`, one row per distinct body of a service within a
minute (UTC), referenced by `details_id`. A healthy result took about 71 bytes on
disk; it takes about 28 (bench/README.md).

Existing rows are copied: times rounded to the microsecond; results of one service
that fall on the same microsecond (two results with one time, or times within half a
microsecond) are moved 1 us apart, later ones forward, so none is lost (the count is
checked and the move logged). `results_view` keeps its columns for SQL readers:
`ts` (seconds, REAL), `at` (ISO 8601), `response_time_ms` (REAL) and `details` (the
JSON text), plus `ts_us` to filter on the key; its `id` column is gone with the rowid.

Downgrading restores the 0002 layout, with ids in time order.

On PostgreSQL (`_upgrade_postgresql`, `_downgrade_postgresql`: the dialect's
differences in one place) `check_results` is partitioned by time instead: declarative
range partitions of `ts_us`, one per UTC day, named `check_results_pYYYYMMDD`, which the
store creates ahead of time (store/partitions.py) and retention drops whole. Its
`details_id` has no foreign key there: PostgreSQL would check a deleted details row by
scanning every partition (no index on `details_id`, on purpose); retention deletes a
details row only once no result refers to it, as on SQLite.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import structlog
from alembic import context, op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = structlog.get_logger("healthmon.store")

# Written out rather than generated from the code: a migration must not change with it.
RESULTS_VIEW = """
        SELECT s.name AS service,
               strftime('%Y-%m-%dT%H:%M:%fZ', r.ts_us / 1000000.0, 'unixepoch') AS at,
               st.name AS status, r.response_time_us / 1000.0 AS response_time_ms,
               r.answered, r.error, d.body AS details, r.service_id,
               r.ts_us / 1000000.0 AS ts, r.ts_us
        FROM check_results r
        JOIN services s ON s.id = r.service_id
        JOIN statuses st ON st.code = r.status
        LEFT JOIN result_details d ON d.id = r.details_id"""
RESULTS_VIEW_0002 = """
        SELECT r.id, s.name AS service,
               strftime('%Y-%m-%dT%H:%M:%fZ', r.ts, 'unixepoch') AS at, st.name AS status,
               r.response_time_ms, r.answered, r.error, r.details, r.service_id, r.ts
        FROM check_results r
        JOIN services s ON s.id = r.service_id
        JOIN statuses st ON st.code = r.status"""

_ANSWERED_COMMENT = "the target answered (not a timeout or transport error): latency counts"
_DAY_US = 86_400_000_000


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        _upgrade_postgresql()
        return
    op.execute("DROP VIEW results_view")
    op.create_table(
        "result_details",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_result_details")),
        comment="check results' details (JSON), each body stored once per service and minute",
    )
    op.create_table(
        "check_results_0003",
        sa.Column("service_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column(
            "ts_us",
            sa.BigInteger(),
            autoincrement=False,
            nullable=False,
            comment="epoch microseconds, UTC, when the check completed",
        ),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column(
            "response_time_us",
            sa.Integer(),
            nullable=False,
            comment="microseconds, rounded to the nearest",
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "details_id",
            sa.Integer(),
            nullable=True,
            comment="the body's details (JSON), NULL without any",
        ),
        sa.Column(
            "answered",
            sa.Boolean(),
            server_default=sa.text("1"),
            nullable=False,
            comment=_ANSWERED_COMMENT,
        ),
        sa.CheckConstraint("status BETWEEN 0 AND 3", name=op.f("ck_check_results_status_code")),
        sa.ForeignKeyConstraint(
            ["details_id"],
            ["result_details.id"],
            name=op.f("fk_check_results_details_id_result_details"),
        ),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_check_results_service_id_services")
        ),
        sa.PrimaryKeyConstraint("service_id", "ts_us", name=op.f("pk_check_results")),
        comment="one row per check; read it through results_view for seconds and JSON",
        sqlite_with_rowid=False,
    )
    # Each service's rows in time order, placed on distinct microseconds: the k-th row
    # goes to max(its own time, the previous row's + 1), which in closed form is
    # k + max(ts_us - k) over the rows up to it.
    op.execute(
        "CREATE TEMP TABLE results_0003 AS "
        "SELECT *, rn + max(ts_us - rn) OVER ("
        "    PARTITION BY service_id ORDER BY ts_us, id ROWS UNBOUNDED PRECEDING"
        ") AS placed_us FROM ("
        "  SELECT *, row_number() OVER (PARTITION BY service_id ORDER BY ts_us, id) AS rn"
        "  FROM (SELECT id, service_id, CAST(round(ts * 1000000) AS INTEGER) AS ts_us, status,"
        "               CAST(round(response_time_ms * 1000) AS INTEGER) AS response_time_us,"
        "               error, details, answered"
        "        FROM check_results)"
        ")"
    )
    # One details row per distinct body of a service within a minute (floor division
    # of the time), as the writer keeps them (store/details.py): pruning relies on it.
    op.execute(
        "CREATE TEMP TABLE details_0003 AS "
        "SELECT row_number() OVER (ORDER BY min(placed_us), service_id) AS id, "
        "       service_id, placed_us / 60000000 - (placed_us % 60000000 < 0) AS minute,"
        "       details AS body "
        "FROM results_0003 WHERE details IS NOT NULL "
        "GROUP BY service_id, minute, details"
    )
    op.execute(
        "CREATE UNIQUE INDEX temp.details_0003_key ON details_0003 (service_id, minute, body)"
    )
    op.execute(
        "INSERT INTO result_details (id, body) SELECT id, body FROM details_0003 ORDER BY id"
    )
    op.execute(
        "INSERT INTO check_results_0003 "
        "(service_id, ts_us, status, response_time_us, error, details_id, answered) "
        "SELECT r.service_id, r.placed_us, r.status, r.response_time_us, r.error, d.id, "
        "       r.answered "
        "FROM results_0003 r LEFT JOIN details_0003 d "
        "  ON d.service_id = r.service_id"
        "  AND d.minute = r.placed_us / 60000000 - (r.placed_us % 60000000 < 0)"
        "  AND d.body = r.details "
        "ORDER BY r.service_id, r.placed_us"
    )
    moved = _count("SELECT count(*) FROM results_0003 WHERE placed_us <> ts_us")
    _same_count("check_results", "check_results_0003")
    if moved:  # (None when writing SQL offline: nothing was counted)
        log.warning(
            "results_time_nudged",
            count=moved,
            reason="results of one service on the same microsecond were moved 1 us apart "
            "(the key is service and time)",
        )
    op.execute("DROP TABLE temp.results_0003")
    op.execute("DROP TABLE temp.details_0003")
    op.drop_table("check_results")
    op.rename_table("check_results_0003", "check_results")
    op.execute(f"CREATE VIEW results_view AS {RESULTS_VIEW}")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        _downgrade_postgresql()
        return
    op.execute("DROP VIEW results_view")
    op.create_table(
        "check_results_0002",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column(
            "ts", sa.Float(), nullable=False, comment="epoch seconds, UTC, when the check completed"
        ),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("response_time_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(none_as_null=True), nullable=True),
        sa.Column(
            "answered",
            sa.Boolean(),
            server_default=sa.text("1"),
            nullable=False,
            comment=_ANSWERED_COMMENT,
        ),
        sa.CheckConstraint("status BETWEEN 0 AND 3", name=op.f("ck_check_results_status_code")),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_check_results_service_id_services")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_check_results")),
    )
    op.execute(
        "INSERT INTO check_results_0002 "
        "(service_id, ts, status, response_time_ms, error, details, answered) "
        "SELECT r.service_id, r.ts_us / 1000000.0, r.status, r.response_time_us / 1000.0, "
        "       r.error, d.body, r.answered "
        "FROM check_results r LEFT JOIN result_details d ON d.id = r.details_id "
        "ORDER BY r.ts_us, r.service_id"
    )
    _same_count("check_results", "check_results_0002")
    op.drop_table("check_results")
    op.rename_table("check_results_0002", "check_results")
    with op.batch_alter_table("check_results", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_check_results_service_id_ts"), ["service_id", "ts"], unique=False
        )
    op.drop_table("result_details")
    op.execute(f"CREATE VIEW results_view AS {RESULTS_VIEW_0002}")


def _count(query: str) -> int | None:
    """The query's count; None in offline mode (`alembic upgrade --sql`), which has no
    database to ask."""
    if context.is_offline_mode():
        return None
    return int(op.get_bind().exec_driver_sql(query).scalar_one())


def _same_count(source: str, copy: str) -> None:
    """Refuse to go on (the transaction rolls back) unless every row was copied."""
    before, after = (_count(f"SELECT count(*) FROM {name}") for name in (source, copy))  # noqa: S608 - our names
    if before != after:
        raise RuntimeError(
            f"migration 0003 copied {after} of {before} rows of {source}; "
            "the database is left as it was: please report this"
        )


# -- PostgreSQL ----------------------------------------------------------------------------


def _pg_view(body: str) -> str:
    """A view's SQL in PostgreSQL's words: timestamps through to_char."""
    return re.sub(
        r"strftime\('%Y-%m-%dT%H:%M:%fZ', ([^,]+), 'unixepoch'\)",
        lambda m: (
            f"""to_char(to_timestamp({m[1]}) AT TIME ZONE 'UTC', """
            """'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""
        ),
        body,
    )


def _pg_partitions_for(query: str) -> None:
    """A partition for each UTC day (epoch us) the query lists. Offline (`--sql`) there
    are no rows to see: the store creates the partitions it needs when it opens."""
    if context.is_offline_mode():
        return
    for (day,) in op.get_bind().exec_driver_sql(query):
        start = int(day) * _DAY_US
        name = datetime.fromtimestamp(start / 1e6, UTC).strftime("check_results_p%Y%m%d")
        op.execute(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF check_results "
            f"FOR VALUES FROM ({start}) TO ({start + _DAY_US})"
        )


def _upgrade_postgresql() -> None:
    op.execute("DROP VIEW results_view")
    op.create_table(
        "result_details",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_result_details")),
        comment="check results' details (JSON), each body stored once per service and minute",
    )
    op.execute("ALTER TABLE check_results RENAME TO check_results_0002")
    op.execute(
        "ALTER TABLE check_results_0002 RENAME CONSTRAINT pk_check_results TO pk_check_results_0002"
    )
    # Columns widest first: no padding between them (8 bytes a row less than the
    # model's order, with PostgreSQL's 8-byte alignment of bigint).
    op.create_table(
        "check_results",
        sa.Column(
            "ts_us",
            sa.BigInteger(),
            autoincrement=False,
            nullable=False,
            comment="epoch microseconds, UTC, when the check completed",
        ),
        sa.Column("service_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column(
            "response_time_us",
            sa.Integer(),
            nullable=False,
            comment="microseconds, rounded to the nearest",
        ),
        sa.Column(
            "details_id",
            sa.Integer(),
            nullable=True,
            comment="the body's details (JSON), NULL without any",
        ),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column(
            "answered",
            sa.Boolean(),
            server_default=sa.true(),
            nullable=False,
            comment=_ANSWERED_COMMENT,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("status BETWEEN 0 AND 3", name=op.f("ck_check_results_status_code")),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_check_results_service_id_services")
        ),
        sa.PrimaryKeyConstraint("service_id", "ts_us", name=op.f("pk_check_results")),
        comment="one row per check; read it through results_view for seconds and JSON",
        postgresql_partition_by="RANGE (ts_us)",
    )
    # As on SQLite (see `upgrade`): each service's rows on distinct microseconds.
    op.execute(
        "CREATE TEMP TABLE results_0003 ON COMMIT DROP AS "
        "SELECT *, rn + max(ts_us - rn) OVER ("
        "    PARTITION BY service_id ORDER BY ts_us, id ROWS UNBOUNDED PRECEDING"
        ") AS placed_us FROM ("
        "  SELECT *, row_number() OVER (PARTITION BY service_id ORDER BY ts_us, id) AS rn"
        "  FROM (SELECT id, service_id, CAST(round(ts * 1000000) AS BIGINT) AS ts_us, status,"
        "               CAST(round(response_time_ms * 1000) AS INTEGER) AS response_time_us,"
        "               error, CAST(details AS TEXT) AS details, answered"
        "        FROM check_results_0002) AS rounded"
        ") AS numbered"
    )
    op.execute(
        "CREATE TEMP TABLE details_0003 ON COMMIT DROP AS "
        "SELECT row_number() OVER (ORDER BY min(placed_us), service_id) AS id, "
        "       service_id, CAST(floor(placed_us / 60000000.0) AS BIGINT) AS minute,"
        "       details AS body "
        "FROM results_0003 WHERE details IS NOT NULL "
        "GROUP BY service_id, CAST(floor(placed_us / 60000000.0) AS BIGINT), details"
    )
    op.execute(
        "INSERT INTO result_details (id, body) "
        "SELECT id, CAST(body AS JSON) FROM details_0003 ORDER BY id"
    )
    _pg_partitions_for(
        f"SELECT DISTINCT CAST(floor(placed_us / {_DAY_US}.0) AS BIGINT) FROM results_0003"  # noqa: S608 - a constant
    )
    op.execute(
        "INSERT INTO check_results "
        "(service_id, ts_us, status, response_time_us, error, details_id, answered) "
        "SELECT r.service_id, r.placed_us, r.status, r.response_time_us, r.error, d.id, "
        "       r.answered "
        "FROM results_0003 r LEFT JOIN details_0003 d "
        "  ON d.service_id = r.service_id"
        "  AND d.minute = CAST(floor(r.placed_us / 60000000.0) AS BIGINT)"
        "  AND d.body = r.details "
        "ORDER BY r.service_id, r.placed_us"
    )
    moved = _count("SELECT count(*) FROM results_0003 WHERE placed_us <> ts_us")
    _same_count("check_results_0002", "check_results")
    if moved:
        log.warning(
            "results_time_nudged",
            count=moved,
            reason="results of one service on the same microsecond were moved 1 us apart "
            "(the key is service and time)",
        )
    op.drop_table("check_results_0002")
    op.execute(f"CREATE VIEW results_view AS {_pg_view(RESULTS_VIEW)}")


def _downgrade_postgresql() -> None:
    op.execute("DROP VIEW results_view")
    op.execute("ALTER TABLE check_results RENAME TO check_results_0003")
    op.execute(
        "ALTER TABLE check_results_0003 RENAME CONSTRAINT pk_check_results TO pk_check_results_0003"
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
        sa.Column(
            "answered",
            sa.Boolean(),
            server_default=sa.true(),
            nullable=False,
            comment=_ANSWERED_COMMENT,
        ),
        sa.CheckConstraint("status BETWEEN 0 AND 3", name=op.f("ck_check_results_status_code")),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_check_results_service_id_services")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_check_results")),
    )
    op.execute(
        "INSERT INTO check_results "
        "(service_id, ts, status, response_time_ms, error, details, answered) "
        "SELECT r.service_id, r.ts_us / 1000000.0, r.status, r.response_time_us / 1000.0, "
        "       r.error, d.body, r.answered "
        "FROM check_results_0003 r LEFT JOIN result_details d ON d.id = r.details_id "
        "ORDER BY r.ts_us, r.service_id"
    )
    _same_count("check_results_0003", "check_results")
    op.drop_table("check_results_0003")  # and its partitions
    op.create_index(op.f("ix_check_results_service_id_ts"), "check_results", ["service_id", "ts"])
    op.drop_table("result_details")
    op.execute(f"CREATE VIEW results_view AS {_pg_view(RESULTS_VIEW_0002)}")
