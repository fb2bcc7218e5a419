"""Answered failures stored as unanswered: `check_results.answered` corrected.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

Until now the writer decided `answered` from the error's text and took only an HTTP
status for an answer: a target that answered with a failure in its body (`body
status DOWN`, `health+json status fail`), a body over the cap, too many redirects, a
connection closed mid-body, a body that could not be decoded, and an agent's report
that could not be read, were stored with `answered` 0, and their latencies were left
out of every statistic. This sets `answered` to 1 on those rows (UNHEALTHY, with such
an error) and adds their latencies to the minute and hour aggregates already
written (answered count, latency sum, min, max and histogram), so that a report read
from raw results and one read from aggregates still agree. The open minutes and
hours are summed from raw results by the writer when it starts.

Results already pruned cannot be corrected (their latencies are gone): the
aggregates of those minutes and hours keep them out of latency, as before.

No schema change. Downgrading leaves the corrected rows as they are: the writer of
0003 reads and writes them alike.

Plain SQLAlchemy Core on the migration's connection: the same on every dialect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
import structlog
from alembic import op

# The histogram BLOB format and its bins are the stored data format, as fixed as the
# columns: read and written with the functions that define it.
from healthmon.store.sketch import bin_of, decode, encode

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = structlog.get_logger("healthmon.store")

# Written out rather than imported: a migration must not change with the code.
_UNHEALTHY = 3
_ANSWERED_ERRORS = (
    "body status ",
    "health+json status ",
    "body over ",
    "too many redirects",
    "connection closed mid-body",
    "body could not be decoded",
    "agent report ",
)
_MINUTE_US = 60_000_000

results = sa.table(
    "check_results",
    sa.column("service_id", sa.Integer),
    sa.column("ts_us", sa.BigInteger),
    sa.column("status", sa.SmallInteger),
    sa.column("response_time_us", sa.BigInteger),
    sa.column("error", sa.Text),
    sa.column("answered", sa.Boolean),
)
coverage = sa.table(
    "history_coverage", sa.column("tier", sa.String), sa.column("complete_until", sa.Float)
)


def _aggregate(name: str) -> sa.TableClause:
    return sa.table(
        name,
        sa.column("service_id", sa.Integer),
        sa.column("start", sa.Float),
        sa.column("answered", sa.Integer),
        sa.column("latency_sum", sa.Float),
        sa.column("latency_min", sa.Float),
        sa.column("latency_max", sa.Float),
        sa.column("histogram", sa.LargeBinary),
    )


def upgrade() -> None:
    bind = op.get_bind()
    wrong = sa.and_(
        results.c.status == _UNHEALTHY,
        results.c.answered == sa.false(),
        sa.or_(
            *[results.c.error.startswith(prefix, autoescape=True) for prefix in _ANSWERED_ERRORS]
        ),
    )
    # Each minute's latencies to add: [count, sum, min, max, {bin: count}] (ms).
    minutes: dict[tuple[int, int], list[Any]] = {}
    found = bind.execute(
        sa.select(results.c.service_id, results.c.ts_us, results.c.response_time_us).where(wrong)
    )
    count = 0
    for service_id, ts_us, response_time_us in found:
        ms = response_time_us / 1000
        key = (service_id, ts_us // _MINUTE_US * 60)
        sums = minutes.setdefault(key, [0, 0.0, math.inf, -math.inf, {}])
        sums[0] += 1
        sums[1] += ms
        sums[2], sums[3] = min(sums[2], ms), max(sums[3], ms)
        bins = sums[4]
        bins[bin_of(ms)] = bins.get(bin_of(ms), 0) + 1
        count += 1
    if not count:
        return
    bind.execute(sa.update(results).where(wrong).values(answered=sa.true()))
    marks = dict(bind.execute(sa.select(coverage.c.tier, coverage.c.complete_until)).all())
    minute_mark, hour_mark = marks.get("minute") or 0.0, marks.get("hour") or 0.0
    # Only buckets already written hold sums (the open ones are summed from results).
    written = {key: sums for key, sums in minutes.items() if key[1] < minute_mark}
    hours: dict[tuple[int, int], list[Any]] = {}
    for (service_id, start), sums in written.items():
        hour = (service_id, start - start % 3600)
        if hour[1] < hour_mark:
            _merge(hours.setdefault(hour, [0, 0.0, math.inf, -math.inf, {}]), sums)
    _add_to(bind, _aggregate("result_minutes"), written)
    _add_to(bind, _aggregate("result_hours"), hours)
    log.info("answered_failures_corrected", results=count, minutes=len(written))


def _merge(total: list[Any], sums: list[Any]) -> None:
    total[0] += sums[0]
    total[1] += sums[1]
    total[2], total[3] = min(total[2], sums[2]), max(total[3], sums[3])
    for index, n in sums[4].items():
        total[4][index] = total[4].get(index, 0) + n


def _add_to(bind: sa.Connection, table: sa.TableClause, buckets: dict[Any, list[Any]]) -> None:
    """Add the latencies to the rows of the buckets that have one (a bucket whose row
    retention deleted has none)."""
    c = table.c
    for (service_id, start), sums in buckets.items():
        row = bind.execute(
            sa.select(c.answered, c.latency_sum, c.latency_min, c.latency_max, c.histogram).where(
                c.service_id == service_id, c.start == start
            )
        ).first()
        if row is None:
            continue
        answered, total, low, high, blob = row
        low_bin, counts = decode(blob or b"")
        bins = {low_bin + i: n for i, n in enumerate(counts) if n}
        for index, n in sums[4].items():
            bins[index] = bins.get(index, 0) + n
        bind.execute(
            sa.update(table)
            .where(c.service_id == service_id, c.start == start)
            .values(
                answered=answered + sums[0],
                latency_sum=total + sums[1],
                latency_min=sums[2] if low is None else min(low, sums[2]),
                latency_max=sums[3] if high is None else max(high, sums[3]),
                histogram=encode(bins),
            )
        )


def downgrade() -> None:
    """Nothing to undo: the corrected rows are right under 0003 as well."""
