"""The database schema as SQLAlchemy Core tables.

The schema changes only through the alembic migrations in `healthmon/migrations/`;
this module is what they are compared with (`alembic check`), and what queries use.

Rows are kept small because there are many of them (one service at 20 Hz writes
1.7 million results a day): statuses are small integer codes, a service is referenced
by its integer id, and `check_results` is a WITHOUT ROWID table keyed by (service,
time) with times and durations as integer microseconds, its details bodies stored
once in `result_details` (see store/details.py). Other tables keep times as epoch
seconds (UTC) as REAL; the views show check_results that way too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    true,
)
from sqlalchemy.engine import Dialect

from healthmon.model import HealthStatus

__all__ = [
    "AGGREGATE_TABLES",
    "STATUS_BY_CODE",
    "STATUS_CODES",
    "check_results",
    "cluster_feed",
    "cluster_nodes",
    "history_coverage",
    "metadata",
    "result_days",
    "result_details",
    "result_gaps",
    "result_hours",
    "result_minutes",
    "service_leases",
    "services",
    "staged_results",
    "status_transitions",
    "statuses",
]

# Constraint names are derived, never left to the database, so that migrations can
# name what they alter (alembic's batch mode for SQLite needs names).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# Stored status codes. They equal the severity rank, so that SQL's max(status) is the
# worst status of a set of rows. Stored data depends on them: never renumber.
STATUS_CODES: dict[HealthStatus, int] = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.UNKNOWN: 1,
    HealthStatus.DEGRADED: 2,
    HealthStatus.UNHEALTHY: 3,
}
STATUS_BY_CODE: dict[int, HealthStatus] = {code: status for status, code in STATUS_CODES.items()}

_STATUS_RANGE = "BETWEEN 0 AND 3"

services = Table(
    "services",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String, nullable=False, unique=True),
    Column("kind", String(16), nullable=False, comment="http, agent or other"),
    Column("url", String, nullable=True, comment="health check URL, credentials redacted"),
    Column("created_at", Float, nullable=False, comment="epoch seconds, UTC"),
)

statuses = Table(
    "statuses",
    metadata,
    Column("code", SmallInteger, primary_key=True, autoincrement=False),
    Column("name", String(16), nullable=False, unique=True),
    comment="status code -> name, for people reading the database with SQL",
)

result_details = Table(
    "result_details",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("body", JSON, nullable=False),
    comment="check results' details (JSON), each body stored once per service and minute",
)

check_results = Table(
    "check_results",
    metadata,
    Column("service_id", Integer, ForeignKey("services.id"), primary_key=True, autoincrement=False),
    Column(
        "ts_us",
        BigInteger,
        primary_key=True,
        autoincrement=False,
        comment="epoch microseconds, UTC, when the check completed",
    ),
    Column("status", SmallInteger, nullable=False),
    Column(
        "response_time_us",
        Integer,
        nullable=False,
        comment="microseconds, rounded to the nearest",
    ),
    Column("error", Text, nullable=True),
    Column(
        "details_id",
        Integer,
        ForeignKey("result_details.id"),
        nullable=True,
        comment="the body's details (JSON), NULL without any",
    ),
    Column(
        "answered",
        Boolean,
        nullable=False,
        server_default=true(),
        comment="the target answered (not a timeout or transport error): latency counts",
    ),
    Column(
        "node_id",
        Integer,
        nullable=True,
        comment="cluster mode: the cluster_nodes row of the process that took it",
    ),
    CheckConstraint(f"status {_STATUS_RANGE}", name="status_code"),
    comment="one row per check; read it through results_view for seconds and JSON",
    sqlite_with_rowid=False,
    # A range partition per UTC day on PostgreSQL (migration 0003, store/partitions.py).
    postgresql_partition_by="RANGE (ts_us)",
)

staged_results = Table(
    "staged_results",
    metadata,
    # No foreign keys: SQLite would look each row's parents up on every insert, and
    # would delete the rows one by one instead of emptying the table whole; the rows
    # are checked when a compaction moves them into check_results.
    Column("service_id", Integer, nullable=False),
    Column("ts_us", BigInteger, nullable=False, comment="epoch microseconds, UTC"),
    Column("status", SmallInteger, nullable=False),
    Column("response_time_us", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Column("details_id", Integer, nullable=True),
    Column("answered", Boolean, nullable=False, server_default=true()),
    Column("node_id", Integer, nullable=True),
    CheckConstraint(f"status {_STATUS_RANGE}", name="status_code"),
    comment="SQLite: the newest check results in commit order, moved into check_results "
    "every few seconds (store/staging.py); read check_results through results_view",
)
"""check_results' columns in a rowid table without any index: a flush appends its rows
to the last pages instead of writing one leaf page per service (store/staging.py)."""

status_transitions = Table(
    "status_transitions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("service_id", Integer, ForeignKey("services.id"), nullable=False),
    Column("ts", Float, nullable=False, comment="epoch seconds, UTC"),
    Column("from_status", SmallInteger, nullable=True, comment="NULL for a first status"),
    Column("to_status", SmallInteger, nullable=False),
    Column("cause", Text, nullable=True),
    Column(
        "node_id",
        Integer,
        nullable=True,
        comment="cluster mode: the cluster_nodes row of the process that recorded it",
    ),
    Column(
        "seq",
        BigInteger,
        nullable=True,
        comment="cluster mode: the transition feed's position, in commit order",
    ),
    CheckConstraint(f"from_status {_STATUS_RANGE}", name="from_status_code"),
    CheckConstraint(f"to_status {_STATUS_RANGE}", name="to_status_code"),
    Index(None, "service_id", "ts"),
    Index(None, "seq", unique=True),
)


class WholeSeconds(TypeDecorator[int]):
    """Epoch seconds stored as an integer (an aggregate's start). Callers compare it
    with times that are floats of whole seconds; asyncpg binds an integer parameter
    only from an int, so such a float is bound as the int it equals."""

    impl = Integer
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value


def _aggregate_table(name: str, width: str) -> Table:
    return Table(
        name,
        metadata,
        Column("service_id", Integer, ForeignKey("services.id"), primary_key=True),
        Column("start", WholeSeconds, primary_key=True, comment=f"epoch seconds, UTC, a {width}"),
        Column("healthy", Integer, nullable=False),
        Column("unknown", Integer, nullable=False),
        Column("degraded", Integer, nullable=False),
        Column("unhealthy", Integer, nullable=False),
        Column("answered", Integer, nullable=False, comment="results with a latency"),
        Column("latency_sum", Float, nullable=False, comment="ms, answered results"),
        Column("latency_min", Float, nullable=True),
        Column("latency_max", Float, nullable=True),
        Column("histogram", LargeBinary, nullable=False, comment="see store/sketch.py"),
        comment=f"results per service and {width}, kept by the writer in its transactions",
        sqlite_with_rowid=False,
    )


result_minutes = _aggregate_table("result_minutes", "minute")
result_hours = _aggregate_table("result_hours", "hour")
result_days = _aggregate_table("result_days", "day")
AGGREGATE_TABLES = {60: result_minutes, 3600: result_hours, 86_400: result_days}
"""Aggregate tables by bucket width in seconds, finest first."""

result_gaps = Table(
    "result_gaps",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("service_id", Integer, ForeignKey("services.id"), nullable=False),
    Column("start_ts", Float, nullable=False, comment="the last result before the gap"),
    Column("end_ts", Float, nullable=False, comment="the first result after it"),
    Index(None, "service_id", "start_ts"),
    comment="spans longer than the store's gap_after without any result of a service",
)

history_coverage = Table(
    "history_coverage",
    metadata,
    Column("tier", String(16), primary_key=True, comment="raw, minute, hour or events"),
    Column(
        "complete_since",
        Float,
        nullable=False,
        comment="the tier holds everything at or after this time (epoch seconds, UTC)",
    ),
    Column(
        "complete_until",
        Float,
        nullable=True,
        comment="aggregates: the tier holds everything before this time, and nothing after",
    ),
)


# -- cluster mode (healthmon/cluster/): tables on both dialects, used on PostgreSQL only --

cluster_nodes = Table(
    "cluster_nodes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String, nullable=False, comment="--node, or host:pid"),
    Column("started_at", Float, nullable=False, comment="epoch seconds, the database's clock"),
    Column("heartbeat_at", Float, nullable=False, comment="epoch seconds, the database's clock"),
    Column("stopped_at", Float, nullable=True, comment="a clean stop; NULL while running"),
    comment="one row per cluster node process (a restart is a new row): its leases, "
    "results and transitions refer to it",
)

service_leases = Table(
    "service_leases",
    metadata,
    Column("service", String, primary_key=True, comment="the service's name"),
    Column("node_id", Integer, nullable=True, comment="the holder; NULL when free"),
    Column(
        "epoch",
        BigInteger,
        nullable=False,
        server_default="0",
        comment="bumped by every claim: the fencing token writes are checked against",
    ),
    Column(
        "expires_at",
        Float,
        nullable=False,
        server_default="0",
        comment="epoch seconds, the database's clock",
    ),
    Index(None, "node_id"),
    comment="which cluster node checks which service",
)

cluster_feed = Table(
    "cluster_feed",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column(
        "last_seq",
        BigInteger,
        nullable=False,
        comment="the last status_transitions.seq handed out",
    ),
    comment="one row: its lock, held from a writer's numbering to its commit, makes the "
    "transition feed's order the commit order",
)
