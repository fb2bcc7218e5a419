"""The writer's side of the history: aggregates, gaps and pruning.

`Rollup.write` runs inside the writer's flush transaction, right after the batch's
rows are inserted. It sums the results per (service, minute) in memory (a few tenths
of a microsecond per result) and writes a minute's row once the minute is over (a
result 2 s past its end has come), an hour's row, summed from its minutes, once the
hour is over, and a day's row, summed from its hours, once the day is over (the hour
and day tiers: store/tiers.py); `history_coverage.complete_until` of each tier moves
with them, in the same transaction. So everything before those marks is in the
aggregates and nothing after them: reports read raw results past the marks, and the
aggregates cannot drift from the results. A result older than the minute mark (late:
e.g. retried after a database outage) is added to its minute, hour and day rows at
once, by upserts that merge histograms with the SQL function `hm_merge_histograms`
(store/engine.py); after the commit, the rows it changed are reported (`on_late`).

The sums in memory are rebuilt from the database when a writer starts or a write was
rolled back: from the results after the minute mark, from the minute rows after the
hour mark, and from the hour rows after the day mark.

It also records gaps: a span longer than `gap_after` between a result and the newest
earlier one of its service. Results come in time order per service (one check in
flight at a time), but not always: one older than its service's newest (a clock
stepped back, a batch retried) splits the gap it falls in, if any, into the parts
still longer than `gap_after`; one older than every result of its service makes a
gap to the next one if that is longer.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import mul
from typing import Any

import structlog
from sqlalchemy import Select, Table, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from healthmon.micros import to_seconds, to_us, us_at_or_after
from healthmon.model import HealthCheckResult, HealthStatus
from healthmon.store import dialect, raw, sketch
from healthmon.store.engine import begin_unchecked
from healthmon.store.newest import Newest
from healthmon.store.retention import Retention, prune_step
from healthmon.store.schema import (
    check_results,
    history_coverage,
    result_gaps,
    result_minutes,
    services,
)
from healthmon.store.tiers import Changed, CoarseTiers, Key, Sums, upsert

__all__ = ["ANSWERED_ERRORS", "DEFAULT_GAP_AFTER", "Rollup", "is_answered"]

log = structlog.get_logger("healthmon.store")

DEFAULT_GAP_AFTER = 10.0
"""Seconds without a result that make a gap: over 3 checks at the slowest rate (1 Hz)
and over twice the default check timeout (5 s), so a hanging target, whose checks
time out, is an outage and not a gap."""

Row = Mapping[str, Any]
"""A check_results row as the writer inserts it (times and latencies in microseconds)."""

_SUMMED = ("healthy", "unknown", "degraded", "unhealthy", "answered", "latency_sum")

CLOSE_AFTER_US = 2_000_000
"""A minute's aggregate is written once a result 2 s past its end has come: results
arrive about in time order, within the writer's flush interval (a later one is still
added to its bucket, with an upsert in its own flush)."""
_MINUTE_US = 60_000_000

# An open minute: [healthy, unknown, degraded, unhealthy, [answered latencies in us]]
_OpenMinute = list[Any]


ANSWERED_ERRORS = (
    "HTTP ",
    "body status ",
    "health+json status ",
    "slow: ",
    "body over ",
    "too many redirects",
    "connection closed mid-body",
    "body could not be decoded",
    "agent report ",
)
"""How the errors of answered failures begin (probe.py, formats.py, monitor.py): for
results that do not say, and for rows stored before they did (migration 0004)."""


def is_answered(result: HealthCheckResult) -> bool:
    """The target answered, so the response time measures it (`result.answered`):
    an HTTP response arrived before the timeout. A result that does not say is taken
    by its error: answered unless it is UNHEALTHY with an error other than those of
    answered failures (`ANSWERED_ERRORS`): a timeout, a refused or reset connection,
    TLS or DNS errors, whose time measures the timeout or the network instead."""
    if result.answered is not None:
        return result.answered
    return (
        result.status is not HealthStatus.UNHEALTHY
        or result.error is None
        or result.error.startswith(ANSWERED_ERRORS)
    )


class Rollup:
    """Keeps aggregates and gaps with every flush, and prunes between flushes."""

    def __init__(
        self,
        *,
        gap_after: float = DEFAULT_GAP_AFTER,
        retention: Retention | None = None,
        prune_batch: int = 1000,
        prune_interval: float = 60.0,
        on_late: Callable[[Changed], None] | None = None,
    ) -> None:
        """`on_late`: called after each commit in which late results changed written
        aggregate rows, with those rows' (width, service id, start), for readers
        that keep sums of rows they read once (the status page)."""
        if not gap_after > 0:
            raise ValueError(f"gap_after must be a positive number of seconds, got {gap_after!r}")
        if prune_batch < 1:
            raise ValueError(f"prune_batch must be at least 1, got {prune_batch!r}")
        if not prune_interval > 0:
            raise ValueError(f"prune_interval must be positive, got {prune_interval!r}")
        self.gap_after = float(gap_after)
        self._gap_after_us = to_us(self.gap_after)
        self.retention = Retention() if retention is None else retention
        self.prune_batch = prune_batch
        self.prune_interval = prune_interval
        self._state: _Open | None = None  # None until loaded from the database
        self._uncommitted = False  # a write whose transaction has not committed (yet)
        self._next_prune = 0.0
        self._on_late = on_late
        self._changed: Changed = []  # by late results in the write not committed yet

    def reset(self) -> None:
        """Forget what was learnt of the database (it was recreated: new service ids)."""
        self._state = None
        self._changed = []

    async def write(self, conn: AsyncConnection, rows: Sequence[Row], before: Newest) -> None:
        """Account for a batch of check_results rows just inserted in this transaction;
        `before`: each of their services' newest time stored before them (None: none)."""
        if not rows:
            return
        if self._uncommitted:  # the last write rolled back: its sums are in the state
            self._state = None
        self._uncommitted = True
        self._changed = []
        state, fresh = self._state, False
        if state is None:  # the open buckets as committed, this batch included
            state = self._state = await _load(conn)
            fresh = True
        minutes = None if fresh else state.minutes  # (a fresh load counted this batch)
        late, newest, gaps, out_of_order = _scan(
            rows, minutes, us_at_or_after(state.minute_mark), dict(before), self._gap_after_us
        )
        if out_of_order:
            gaps = await self._regap(conn, gaps, out_of_order)
        if late:  # results of buckets already written: added to their rows directly
            collected: dict[Key, _OpenMinute] = {}
            _add_rows(collected, late)
            late_minutes = {key: _summed(minute) for key, minute in collected.items()}
            await upsert(conn, result_minutes, late_minutes)
            self._changed += [(60, sid, start) for sid, start in late_minutes]
            self._changed += await state.coarse.late(conn, late_minutes)
        await self._close(conn, state, (newest - CLOSE_AFTER_US) // _MINUTE_US * 60)
        if gaps:
            await conn.execute(insert(result_gaps), gaps)

    def committed(self) -> None:
        """The transaction of the last `write` committed."""
        self._uncommitted = False
        changed, self._changed = self._changed, []
        if changed and self._on_late is not None:
            self._on_late(changed)

    async def maintain(self, engine: AsyncEngine, now: float | None = None) -> frozenset[int]:
        """One pruning step when one is due; returns the ids of the result_details rows
        it deleted (the writer must not reuse them). Errors are logged, never raised,
        since pruning can wait and the writer must go on."""
        now = time.time() if now is None else now
        if now < self._next_prune:
            return frozenset()
        deleted: frozenset[int] = frozenset()
        try:
            # Without SQLite's foreign-key check: prune_step makes sure the details rows
            # it deletes are unreferenced, where SQLite would scan every result to.
            async with begin_unchecked(engine) as conn:
                pruned = await prune_step(conn, self.retention, self.prune_batch, now)
            more, deleted = pruned.more, pruned.details
        except (SQLAlchemyError, OSError) as exc:
            log.warning("history_prune_failed", error=str(exc).splitlines()[0])
            more = False
        self._next_prune = now if more else now + self.prune_interval
        return deleted

    async def _close(self, conn: AsyncConnection, state: _Open, minute_mark: float) -> None:
        """Write the buckets that end before the new marks, and move the marks."""
        if minute_mark <= state.minute_mark:
            return
        closed = {k: _summed(v) for k, v in state.minutes.items() if k[1] < minute_mark}
        for key in closed:
            del state.minutes[key]
        await upsert(conn, result_minutes, closed)
        state.minute_mark = minute_mark
        await conn.execute(
            update(history_coverage)
            .where(history_coverage.c.tier == "minute")
            .values(complete_until=minute_mark)
        )
        await state.coarse.closed(conn, closed, minute_mark)

    async def _regap(
        self,
        conn: AsyncConnection,
        gaps: list[dict[str, Any]],
        out_of_order: dict[int, list[int]],
    ) -> list[dict[str, Any]]:
        """Results older than their service's newest (`out_of_order`: service id ->
        times, us) change the gaps around them: from the result before the oldest of
        them to the one after the newest, the gaps (recorded, or of this batch) are
        made anew from the results there. The batch's rows are inserted already, so
        the database holds all of them. (Rare: a clock stepped back, results submitted
        out of order; a few index reads each.)"""
        g, r = result_gaps.c, check_results.c
        for service_id, times in out_of_order.items():
            oldest, newest = min(times), max(times)
            before = await conn.scalar(
                select(func.max(r.ts_us)).where(r.service_id == service_id, r.ts_us < oldest)
            )
            after = await conn.scalar(
                select(func.min(r.ts_us)).where(r.service_id == service_id, r.ts_us > newest)
            )
            first = oldest if before is None else before
            last = newest if after is None else after
            around = await conn.scalars(
                select(r.ts_us)
                .where(r.service_id == service_id, r.ts_us >= first, r.ts_us <= last)
                .order_by(r.ts_us)
            )
            await conn.execute(
                delete(result_gaps).where(
                    g.service_id == service_id,
                    g.start_ts >= to_seconds(first),
                    g.end_ts <= to_seconds(last),
                )
            )
            gaps = [
                gap
                for gap in gaps
                if gap["service_id"] != service_id
                or not first <= to_us(gap["start_ts"]) <= to_us(gap["end_ts"]) <= last
            ]
            gaps += [
                _gap(service_id, a, b)
                for a, b in itertools.pairwise(around.all())
                if b - a > self._gap_after_us
            ]
        return gaps


@dataclass(slots=True)
class _Open:
    """The buckets not written yet: minutes from `minute_mark` on (summed from
    results), and the coarser tiers' (summed from the minutes written since)."""

    minute_mark: float
    minutes: dict[Key, _OpenMinute]
    coarse: CoarseTiers


async def _load(conn: AsyncConnection) -> _Open:
    """The open buckets from what is committed: results from the minute mark on, and
    the coarser tiers' from the rows below them."""
    c = history_coverage.c
    minute_mark = (await conn.scalar(select(c.complete_until).where(c.tier == "minute"))) or 0.0

    def arm(table: Table) -> Select[Any]:
        r = table.c
        return (
            select(r.service_id, r.ts_us, r.status, r.answered, r.response_time_us)
            .select_from(services)
            .join(table, r.service_id == services.c.id)
            .where(r.ts_us >= us_at_or_after(minute_mark))
        )

    rows = await conn.execute(raw.union(dialect.name(conn), arm))  # staged ones too
    minutes: dict[Key, _OpenMinute] = {}
    _add_rows(minutes, [row._asdict() for row in rows])
    return _Open(minute_mark, minutes, await CoarseTiers.load(conn, minute_mark))


def _scan(
    rows: Sequence[Row],
    minutes: dict[Key, _OpenMinute] | None,
    mark: int,
    last: Newest,
    gap_after: int,
) -> tuple[list[Row], int, list[dict[str, Any]], dict[int, list[int]]]:
    """The hot path, one pass over a batch: count each result into its open minute
    (as `_add_rows` does, inlined), and return the late rows (before `mark`), the
    newest time, the gaps before the results (after `last`: each service's newest
    time, brought up to date), and the times of results older than their service's
    newest, per service. Times in microseconds."""
    late, gaps, newest = [], [], -(2**63)
    out_of_order: dict[int, list[int]] = {}
    for row in rows:
        ts, service_id = row["ts_us"], row["service_id"]
        if ts > newest:  # noqa: PLR1730 - a comparison costs less than a call here
            newest = ts
        before = last.get(service_id)
        if before is None:  # its first result: nothing before it
            last[service_id] = ts
        elif ts > before:
            if ts - before > gap_after:
                gaps.append(_gap(service_id, before, ts))
            last[service_id] = ts
        else:
            out_of_order.setdefault(service_id, []).append(ts)
        if ts < mark:
            late.append(row)
        elif minutes is not None:
            key = (service_id, ts // _MINUTE_US * 60)
            minute = minutes.get(key)
            if minute is None:
                minute = minutes[key] = [0, 0, 0, 0, []]
            minute[row["status"]] += 1
            if row["answered"]:
                minute[4].append(row["response_time_us"])
    return late, newest, gaps, out_of_order


def _gap(service_id: int, start_us: int, end_us: int) -> dict[str, Any]:
    return {
        "service_id": service_id,
        "start_ts": to_seconds(start_us),
        "end_ts": to_seconds(end_us),
    }


def _add_rows(buckets: dict[Key, _OpenMinute], rows: Iterable[Row]) -> None:
    """Count results into per-(service, minute) buckets, keeping the answered ones'
    latencies: the hot path, kept to a few operations per result (`_summed` does the
    rest once per minute, in C loops)."""
    for row in rows:
        key = (row["service_id"], row["ts_us"] // _MINUTE_US * 60)
        minute = buckets.get(key)
        if minute is None:
            minute = buckets[key] = [0, 0, 0, 0, []]
        minute[row["status"]] += 1
        if row["answered"]:
            minute[4].append(row["response_time_us"])


def _summed(minute: _OpenMinute) -> Sums:
    """An open minute's counts and latencies as the sums its row holds (in ms)."""
    if not minute[4]:
        return [*minute[:4], 0, 0.0, math.inf, -math.inf, {}]
    latencies = [us / 1000 for us in minute[4]]  # as reports read raw results
    floor_ms, k = sketch.FLOOR_MS, sketch.INV_LOG_GROWTH
    positive = [v for v in latencies if v >= floor_ms]
    bins = Counter(map(math.ceil, map(mul, map(math.log, positive), repeat(k))))
    if len(positive) < len(latencies):
        bins[sketch.ZERO_BIN] += len(latencies) - len(positive)
    return [
        *minute[:4],
        len(latencies),
        math.fsum(latencies),
        min(latencies),
        max(latencies),
        dict(bins),
    ]
