"""History bookkeeping when several writers share one database (cluster mode).

The single writer sums its open minutes in memory from the results it writes
(store/rollup.py). A cluster node's writer sees only its own services' results, so
here the aggregates are closed from the *committed* raw rows instead, by one node at
a time (`close_step`, run by cluster/historian.py), and every node's writer adds its
own late rows, those before a tier's mark, to that tier's rows itself (`SharedRollup`).

The coverage marks' rows (`history_coverage`, one per aggregate tier) are the lock
that keeps the two apart:

- a writer's flush locks the marks `FOR KEY SHARE` first of all (`hold_marks`, from the
  fence), held until it commits, and adds its rows before each mark to that tier (an
  upsert, merged with the row there);
- the closer takes them `FOR UPDATE`, which waits for every flush holding them and
  holds off every later one until it commits; it then sums the committed raw rows
  from the minute mark to the new one into minute rows, the minute rows of the hours
  now over into hour rows, and moves the marks.

So every raw row is summed once. A flush that locked the marks before the closer
committed before the closer's reads began (READ COMMITTED: each statement sees what
committed before it), and had added its rows before the old mark itself: the closer
sums those at or after it. A flush that comes after the closer reads the new marks (a
locking read returns the row's newest version) and adds its rows before them itself;
the closer never saw them (they were not committed). Rows of either kind are never
summed twice nor missed, whichever order the inserts and the closer take.

`FOR KEY SHARE` is the weakest row lock a `FOR UPDATE` still conflicts with: writers
never wait for each other, nor for retention raising `complete_since` (an UPDATE of
another column). Writers wait only while a closer holds the lock, so the closer keeps
it short: it sums the rows before taking it, then under it counts each service's rows
again and reads anew only those whose count changed (rows at or after the minute
mark are only ever inserted, so the same count is the same rows), and it gives up
after `LOCK_WAIT` rather than queue every writer behind a flush that is stuck.

Gaps are recorded by the writers, in their flushes, as the single writer records them:
a gap needs its service's previous result, and each service has one writer at a time
(the fence: two nodes' results for a service never interleave), which reads that
result from the database after a takeover (`ResultWriter.written_elsewhere`).

Tiers are generic: each is summed from the one below it (minutes from raw results)
once its mark passes a whole bucket.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, Table, case, func, insert, select, text, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from healthmon.micros import us_at_or_after
from healthmon.store import sketch
from healthmon.store.newest import Newest
from healthmon.store.rollup import (  # the single writer's own arithmetic: the same sums
    Rollup,
    Row,
    _add_rows,
    _scan,
    _summed,
)
from healthmon.store.schema import check_results, history_coverage, result_gaps, services
from healthmon.store.tiers import (
    COARSE,
    MINUTES,
    Changed,
    Key,
    Sums,
    Tier,
    merge_into,
    rolled_up,
    upsert,
)

__all__ = [
    "LOCK_WAIT",
    "SETTLE",
    "TIERS",
    "Closed",
    "SharedRollup",
    "Tier",
    "close_step",
    "hold_marks",
]

SETTLE = 5.0
"""Seconds after a minute's end (by the database's clock) before the closer closes it:
results reach the database within a flush interval or so of their time; one that
comes later (a node's buffer after an outage, a node whose clock is behind) is added
by its own writer, as a late row."""
LOCK_WAIT = "250ms"
"""How long the closer waits for the marks' lock (every writer's flush waits behind a
waiting closer): a flush stuck for longer (its node paused mid-flush) makes the
closer try again at its next step instead."""
MAX_SPAN = 600.0
"""Seconds of raw results a step sums at most (a closer far behind catches up in
bounded steps, each its own short transaction)."""


TIERS: tuple[Tier, ...] = (MINUTES, *COARSE)
"""Finest first: each is summed from the one before it (minutes from raw results)."""


@dataclass(frozen=True, slots=True)
class Closed:
    """What a `close_step` did."""

    marks: dict[str, float]
    """Each tier's mark after the step."""
    results: int
    """Raw results summed into minutes."""
    more: bool
    """Behind: another step is due at once."""
    locked_out: bool = False
    """The marks' lock was not had within LOCK_WAIT: nothing done."""


class SharedRollup(Rollup):
    """The writer's part of the history in cluster mode: its late rows added to the
    aggregates, its gaps recorded; no open minutes kept, no pruning (the closer's)."""

    async def write(self, conn: AsyncConnection, rows: Sequence[Row], before: Newest) -> None:
        if not rows:
            return
        self._changed = []
        marks = await _marks(conn, lock="share")
        late, _, gaps, out_of_order = _scan(
            rows, None, us_at_or_after(marks[TIERS[0].name]), dict(before), self._gap_after_us
        )
        if out_of_order:
            gaps = await self._regap(conn, gaps, out_of_order)
        if late:  # (reported to `on_late` once committed, as the single writer does)
            self._changed = await _add_late(conn, late, marks)
        if gaps:
            await conn.execute(insert(result_gaps), gaps)

    async def maintain(self, engine: AsyncEngine, now: float | None = None) -> frozenset[int]:
        """Pruning is the closer's (cluster/historian.py)."""
        return frozenset()


async def close_step(
    engine: AsyncEngine,
    *,
    now: float | None = None,
    settle: float = SETTLE,
    max_span: float = MAX_SPAN,
) -> Closed:
    """Close what is over: minutes up to `now - settle` (by default the database's
    clock), at most `max_span` seconds of raw results, and the tiers above them."""
    # One snapshot for the sums' two reads (they must agree on which rows there are).
    async with engine.connect() as plain:
        conn = await plain.execution_options(isolation_level="REPEATABLE READ")
        marks = await _marks(conn, lock=None)
        if now is None:
            now = float(await conn.scalar(text("SELECT extract(epoch from clock_timestamp())")))
        start = marks[TIERS[0].name]
        target = (now - settle) // 60 * 60
        if target <= start:
            return Closed(marks, 0, more=False)
        # Skip a stretch without results at once (a new database's mark is 0).
        first = await _first_after(conn, start)
        end = target
        if first is not None:
            end = min(target, (max(start, first // 60 * 60) + max(max_span, 60)) // 60 * 60)
        # Summed before the lock, checked under it (writers wait while it is held).
        summed = await _raw_sums(conn, start, end)
    try:
        async with engine.begin() as conn:
            return await _close(conn, summed, start, end, more=end < target)
    except _LockedOutError:
        return Closed(marks, 0, more=False, locked_out=True)


class _LockedOutError(Exception):
    """The marks' lock was not had within LOCK_WAIT."""


async def _close(
    conn: AsyncConnection,
    summed: dict[int, tuple[int, dict[Key, Sums]]],
    start: float,
    end: float,
    *,
    more: bool,
) -> Closed:
    """Under the marks' lock: minutes [start, end) from `summed` ({service: (rows,
    minutes)}: summed anew where the count changed), the tiers above, the marks."""
    await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
    try:
        locked = await _marks(conn, lock="update")
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", getattr(exc.orig, "pgcode", None)) == "55P03":
            raise _LockedOutError from exc
        raise
    await conn.execute(text("SET LOCAL lock_timeout = 0"))
    if locked[TIERS[0].name] != start:  # another closer moved it meanwhile
        return Closed(locked, 0, more=True)
    counts = await _counts(conn, start, end)
    changed = {
        sid for sid in counts.keys() | summed.keys() if counts[sid] != summed.get(sid, (0, {}))[0]
    }
    if changed:  # committed meanwhile: those services' rows read and summed again
        summed.update(await _raw_sums(conn, start, end, sorted(changed)))
    minutes = {key: sums for _, found in summed.values() for key, sums in found.items()}
    summed_rows = sum(count for count, _ in summed.values())
    await upsert(conn, TIERS[0].table, dict(sorted(minutes.items())))
    new = {TIERS[0].name: end}
    for lower, tier in itertools.pairwise(TIERS):
        mark = locked[tier.name]
        until = new[lower.name] // tier.width * tier.width
        if until > mark:
            sums = await _sums(conn, lower.table, mark, until, tier.width)
            await upsert(conn, tier.table, dict(sorted(sums.items())))
        new[tier.name] = max(until, mark)
    for name, mark in new.items():
        await conn.execute(
            update(history_coverage)
            .where(history_coverage.c.tier == name)
            .values(complete_until=mark)
        )
    return Closed(new, summed_rows, more=more)


async def hold_marks(conn: AsyncConnection) -> None:
    """Lock the marks `FOR KEY SHARE` until the transaction ends: a cluster writer's
    first statement in every flush (cluster/fence.py), before it creates a partition
    or inserts a row. (Taken later, after a partition's DDL, a flush held
    check_results exclusively while it waited for a closer that waited to read
    check_results: a deadlock, found by test_cluster_history.py.)"""
    await _marks(conn, lock="share")


async def _marks(conn: AsyncConnection, *, lock: str | None) -> dict[str, float]:
    """Each aggregate tier's `complete_until`, locked FOR KEY SHARE ("share"), FOR
    UPDATE ("update") or not at all."""
    c = history_coverage.c
    query = select(c.tier, c.complete_until).where(c.tier.in_([t.name for t in TIERS]))
    query = query.order_by(c.tier)  # one order for every locker
    if lock == "share":
        query = query.with_for_update(read=True, key_share=True)
    elif lock == "update":
        query = query.with_for_update()
    found = {tier: until for tier, until in await conn.execute(query)}
    return {t.name: float(found.get(t.name) or 0.0) for t in TIERS}


async def _add_late(
    conn: AsyncConnection, late: Iterable[Row], marks: Mapping[str, float]
) -> Changed:
    """Rows before the minute mark into each tier whose bucket is closed already; the
    rows changed."""
    collected: dict[Key, list[Any]] = {}
    _add_rows(collected, late)
    minutes = {key: _summed(minute) for key, minute in collected.items()}
    changed: Changed = []
    for tier in TIERS:
        buckets = minutes if tier is MINUTES else rolled_up(minutes, tier.width)
        closed = {k: v for k, v in sorted(buckets.items()) if k[1] < marks[tier.name]}
        if not closed:
            break  # (marks never pass the finer tier's: none coarser either)
        await upsert(conn, tier.table, closed)
        changed += [(tier.width, sid, start) for sid, start in closed]
    return changed


async def _first_after(conn: AsyncConnection, since: float) -> float | None:
    """The time of the first result at or after `since`: one index seek per service."""
    r = check_results.c
    first = (
        select(func.min(r.ts_us))
        .where(r.service_id == services.c.id, r.ts_us >= us_at_or_after(since))
        .correlate(services)
        .scalar_subquery()
    )
    found = await conn.scalar(select(func.min(first)))
    return None if found is None else found / 1_000_000


def _in_window(since: float, until: float, ids: Sequence[int] | None) -> Any:
    r = check_results.c
    # `service_id IN (...)`: an index range per service (as the rollup reads).
    chosen = select(services.c.id) if ids is None else ids
    return (
        r.service_id.in_(chosen),
        r.ts_us >= us_at_or_after(since),
        r.ts_us < us_at_or_after(until),
    )


async def _raw_sums(
    conn: AsyncConnection, since: float, until: float, ids: Sequence[int] | None = None
) -> dict[int, tuple[int, dict[Key, Sums]]]:
    """Each service's count of raw rows in [since, until), and their minute sums, as
    the single writer makes them (rollup.py `_summed`), summed by PostgreSQL: a few
    rows a minute reach this process rather than every result (the closer shares its
    node's event loop with the checks). The histogram bins are the same function of
    the same doubles (`ln` is the C library's `log` in both); the latency sum is the
    exact sum of the microseconds, in ms (the writer's `fsum` of the milliseconds
    may differ in the last bit)."""
    r = check_results.c
    minute = (r.ts_us // 60_000_000).label("minute")  # ts >= 0: the minute
    answered = r.answered.is_(True)
    found = await conn.execute(
        select(
            r.service_id,
            minute,
            *[func.count().filter(r.status == code) for code in range(4)],
            func.count().filter(answered),
            func.sum(r.response_time_us).filter(answered),
            func.min(r.response_time_us).filter(answered),
            func.max(r.response_time_us).filter(answered),
        )
        .where(*_in_window(since, until, ids))
        .group_by(r.service_id, minute)
    )
    summed: dict[int, tuple[int, dict[Key, Sums]]] = {sid: (0, {}) for sid in ids or ()}
    for service_id, start, *counts, latency_us, low, high in found:
        count, minutes = summed.get(service_id, (0, {}))
        sums = [*counts, 0.0 if latency_us is None else int(latency_us) / 1000]
        sums += [math.inf, -math.inf] if low is None else [low / 1000, high / 1000]
        minutes[(service_id, int(start) * 60)] = [*sums, {}]
        summed[service_id] = (count + sum(counts[:4]), minutes)
    ms = sql_cast(r.response_time_us, Float) / 1000
    bin_of = case(
        (ms >= sketch.FLOOR_MS, func.ceil(func.ln(ms) * sketch.INV_LOG_GROWTH)),
        else_=sketch.ZERO_BIN,
    ).label("bin")
    for service_id, start, index, count in await conn.execute(
        select(r.service_id, minute, bin_of, func.count())
        .where(*_in_window(since, until, ids), answered)
        .group_by(r.service_id, minute, bin_of)
    ):
        summed[service_id][1][(service_id, int(start) * 60)][8][int(index)] = count
    return summed


async def _counts(conn: AsyncConnection, since: float, until: float) -> Counter[int]:
    r = check_results.c
    found = await conn.execute(
        select(r.service_id, func.count())
        .where(*_in_window(since, until, None))
        .group_by(r.service_id)
    )
    return Counter({sid: count for sid, count in found})


async def _sums(
    conn: AsyncConnection, table: Table, since: float, until: float, width: int
) -> dict[Key, Sums]:
    """The rows of an aggregate table in [since, until), summed into buckets of `width`."""
    c = table.c
    buckets: dict[Key, Sums] = {}
    found = await conn.execute(
        select(
            c.service_id,
            c.start,
            c.healthy,
            c.unknown,
            c.degraded,
            c.unhealthy,
            c.answered,
            c.latency_sum,
            c.latency_min,
            c.latency_max,
            c.histogram,
        )
        .where(c.start >= since, c.start < until)
        .order_by(c.service_id, c.start)
    )
    for service_id, start, *counts, low, high, blob in found:
        low_bin, bins = sketch.decode(blob)
        sums = [
            *counts,
            math.inf if low is None else low,
            -math.inf if high is None else high,
            {low_bin + i: n for i, n in enumerate(bins) if n},
        ]
        merge_into(buckets, {(service_id, start - start % width): sums})
    return buckets
