"""The writer's side of the history: aggregates, gaps and pruning.

`Rollup.write` runs inside the writer's flush transaction, right after the batch's
rows are inserted: it sums the batch per (service, minute) and per (service, hour) in
Python and adds the sums to `result_minutes`/`result_hours` with one executemany
upsert per table (histograms are added by the SQL function `hm_merge_histograms`,
see store/engine.py). Aggregates commit or roll back with the rows they describe, so
they cannot drift from them.

It also records gaps: a span longer than `gap_after` between two consecutive results
of a service (compared in time order with the service's previous committed result).
A result older than its service's previous one does not split a recorded gap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from sqlalchemy import Table, func, insert, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from healthmon.model import HealthCheckResult, HealthStatus
from healthmon.store import sketch
from healthmon.store.retention import Retention, prune_step
from healthmon.store.schema import (
    check_results,
    result_gaps,
    result_hours,
    result_minutes,
)

__all__ = ["DEFAULT_GAP_AFTER", "Rollup", "is_answered"]

log = structlog.get_logger("healthmon.store")

DEFAULT_GAP_AFTER = 10.0
"""Seconds without a result that make a gap: over 3 checks at the slowest rate (1 Hz)
and over twice the default check timeout (5 s), so a hanging target, whose checks
time out, is an outage and not a gap."""

Row = Mapping[str, Any]
"""A check_results row as the writer inserts it."""

_SUMMED = ("healthy", "unknown", "degraded", "unhealthy", "answered", "latency_sum")

# The per-bucket sums, as a list for speed on the hot path:
# [healthy, unknown, degraded, unhealthy, answered, latency sum, min, max, {bin: count}]
_Sums = list[Any]


def is_answered(result: HealthCheckResult) -> bool:
    """The target answered, so the response time measures it: every result but a
    failure without an HTTP status (a timeout, a refused or reset connection, TLS or
    DNS errors), whose time measures the timeout or the network instead."""
    return (
        result.status is not HealthStatus.UNHEALTHY
        or result.error is None
        or result.error.startswith("HTTP ")
    )


class Rollup:
    """Keeps aggregates and gaps with every flush, and prunes between flushes."""

    def __init__(
        self,
        *,
        gap_after: float = DEFAULT_GAP_AFTER,
        retention: Retention | None = None,
        prune_batch: int = 2000,
        prune_interval: float = 60.0,
    ) -> None:
        if not gap_after > 0:
            raise ValueError(f"gap_after must be a positive number of seconds, got {gap_after!r}")
        if prune_batch < 1:
            raise ValueError(f"prune_batch must be at least 1, got {prune_batch!r}")
        if not prune_interval > 0:
            raise ValueError(f"prune_interval must be positive, got {prune_interval!r}")
        self.gap_after = float(gap_after)
        self.retention = Retention() if retention is None else retention
        self.prune_batch = prune_batch
        self.prune_interval = prune_interval
        self._last_ts: dict[int, float] = {}  # each service's newest committed result
        self._pending_last_ts: dict[int, float] = {}
        self._next_prune = 0.0

    def reset(self) -> None:
        """Forget what was learnt of the database (it was recreated: new service ids)."""
        self._last_ts = {}
        self._pending_last_ts = {}

    async def write(self, conn: AsyncConnection, rows: Sequence[Row]) -> None:
        """Add a batch of just-inserted check_results rows to the aggregates and gaps."""
        self._pending_last_ts = {}
        if not rows:
            return
        minutes: dict[tuple[int, int], _Sums] = {}
        times: dict[int, list[float]] = {}
        log_growth, floor_ms, zero_bin = sketch.INV_LOG_GROWTH, sketch.FLOOR_MS, sketch.ZERO_BIN
        log, ceil = math.log, math.ceil
        for row in rows:
            service_id, ts = row["service_id"], row["ts"]
            key = (service_id, int(ts // 60) * 60)
            sums = minutes.get(key)
            if sums is None:
                sums = minutes[key] = [0, 0, 0, 0, 0, 0.0, math.inf, -math.inf, {}]
                times.setdefault(service_id, [])
            times[service_id].append(ts)
            sums[row["status"]] += 1
            if row["answered"]:
                latency = row["response_time_ms"]
                sums[4] += 1
                sums[5] += latency
                sums[6] = min(sums[6], latency)
                sums[7] = max(sums[7], latency)
                index = ceil(log(latency) * log_growth) if latency >= floor_ms else zero_bin
                bins = sums[8]
                bins[index] = bins.get(index, 0) + 1
        hours: dict[tuple[int, int], _Sums] = {}
        for (service_id, start), sums in minutes.items():
            key = (service_id, start - start % 3600)
            total = hours.get(key)
            if total is None:
                hours[key] = [*sums[:8], dict(sums[8])]
            else:
                _add(total, sums)
        await _upsert(conn, result_minutes, minutes)
        await _upsert(conn, result_hours, hours)
        await self._record_gaps(conn, times)

    def committed(self) -> None:
        """The transaction of the last `write` committed: remember what it ended with."""
        self._last_ts.update(self._pending_last_ts)
        self._pending_last_ts = {}

    async def maintain(self, engine: AsyncEngine, now: float | None = None) -> None:
        """One pruning step when one is due; errors are logged, never raised, since
        pruning can wait and the writer must go on."""
        now = time.time() if now is None else now
        if now < self._next_prune:
            return
        try:
            async with engine.begin() as conn:
                more = await prune_step(conn, self.retention, self.prune_batch, now)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("history_prune_failed", error=str(exc).splitlines()[0])
            more = False
        self._next_prune = now if more else now + self.prune_interval

    async def _record_gaps(self, conn: AsyncConnection, times: dict[int, list[float]]) -> None:
        unknown = [service_id for service_id in times if service_id not in self._last_ts]
        previous = dict(self._last_ts)
        for service_id in unknown:  # once per service and writer: its newest older result
            found = await conn.scalar(
                select(func.max(check_results.c.ts)).where(
                    check_results.c.service_id == service_id,
                    check_results.c.ts < min(times[service_id]),
                )
            )
            if found is not None:
                previous[service_id] = found
        gap_after = self.gap_after
        gaps = []
        for service_id, stamps in times.items():
            stamps.sort()
            last = previous.get(service_id)
            for ts in stamps:
                if last is not None and ts - last > gap_after:
                    gaps.append({"service_id": service_id, "start_ts": last, "end_ts": ts})
                if last is None or ts > last:
                    last = ts
            if last is not None:
                self._pending_last_ts[service_id] = last
        if gaps:
            await conn.execute(insert(result_gaps), gaps)


def _add(total: _Sums, sums: _Sums) -> None:
    for i in range(6):
        total[i] += sums[i]
    total[6] = min(total[6], sums[6])
    total[7] = max(total[7], sums[7])
    bins = total[8]
    for index, count in sums[8].items():
        bins[index] = bins.get(index, 0) + count


async def _upsert(
    conn: AsyncConnection, table: Table, buckets: dict[tuple[int, int], _Sums]
) -> None:
    statement = sqlite_insert(table)
    new = statement.excluded
    c = table.c
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[c.service_id, c.start],
            set_={
                **{name: c[name] + new[name] for name in _SUMMED},
                "latency_min": func.min(
                    func.coalesce(c.latency_min, new.latency_min),
                    func.coalesce(new.latency_min, c.latency_min),
                ),
                "latency_max": func.max(
                    func.coalesce(c.latency_max, new.latency_max),
                    func.coalesce(new.latency_max, c.latency_max),
                ),
                "histogram": func.hm_merge_histograms(c.histogram, new.histogram),
            },
        ),
        [
            {
                "service_id": service_id,
                "start": start,
                "healthy": sums[0],
                "unknown": sums[1],
                "degraded": sums[2],
                "unhealthy": sums[3],
                "answered": sums[4],
                "latency_sum": sums[5],
                "latency_min": sums[6] if sums[4] else None,
                "latency_max": sums[7] if sums[4] else None,
                "histogram": sketch.encode(sums[8]),
            }
            for (service_id, start), sums in buckets.items()
        ],
    )
