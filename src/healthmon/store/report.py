"""History reports: status counts, uptime, latency, incidents, gaps, time series.

Every window is planned (store/plan.py) into pieces read from raw results, minute or
hour aggregates. All the windows of one call (a report, its incidents, a series'
buckets, every service of the fleet) share one query per tier and merged time range;
each window then sums the rows of its pieces, found by bisection in time order.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.micros import to_seconds, us_at_or_after
from healthmon.model import HealthStatus
from healthmon.store import dialect, raw
from healthmon.store.plan import RAW, Coverage, Plan, load_coverage, plan
from healthmon.store.schema import (
    AGGREGATE_TABLES,
    STATUS_BY_CODE,
    check_results,
    result_days,
    result_gaps,
    result_hours,
    result_minutes,
    services,
    staged_results,
    status_transitions,
)
from healthmon.store.sketch import Histogram
from healthmon.store.stats import (
    Gap,
    Incident,
    LatencyStats,
    ServiceReport,
    StatusCounts,
    WindowStats,
)

__all__ = [
    "MAX_BUCKETS",
    "bucket_edges",
    "report_series",
    "reports",
    "series",
    "service_ids",
    "windows",
]

MAX_BUCKETS = 100_000
"""The most buckets a series may have: more is a mistake (a bucket far too small)."""

_RANKS = (50, 90, 95, 99)
_HEALTHY = 0


async def service_ids(conn: AsyncConnection, names: Sequence[str] | None) -> dict[str, int]:
    """{name: id} of the named services (all when None); ValueError for unknown ones."""
    query = select(services.c.name, services.c.id).order_by(services.c.name)
    if names is not None:
        query = query.where(services.c.name.in_(names))
    found: dict[str, int] = {name: service_id for name, service_id in await conn.execute(query)}
    if names is not None and (missing := [name for name in names if name not in found]):
        raise ValueError(
            f"unknown service {missing[0]!r}: the database has no service of that name"
        )
    return found


async def reports(
    conn: AsyncConnection,
    ids: dict[str, int],
    since: float,
    until: float,
    *,
    gap_after: float,
    exact: bool = False,
) -> dict[str, ServiceReport]:
    """A report over [since, until) for each of `ids` ({name: service id}).

    Incidents, MTTR and MTBF say only what was observed: time before a service's
    first result and inside gaps is neither up nor down, so an incident is cut where
    results stop (it ends at the last one before a gap) and one still open when they
    resume is counted as already open (`began_before`), not as a new failure.
    """
    found, _ = await _reports(conn, ids, (since, until), gap_after=gap_after, exact=exact)
    return found


async def report_series(
    conn: AsyncConnection,
    ids: dict[str, int],
    window: tuple[float, float],
    *,
    bucket: float,
    gap_after: float,
) -> tuple[ServiceReport, list[WindowStats]]:
    """One service's report over the window and its series in buckets of `bucket`
    seconds (as `series()` makes them), from one reading of its rows: the report's
    sums are the buckets' sums, its histogram the sum of theirs. `ids` holds the one
    service ({name: id})."""
    ((name, service_id),) = ids.items()
    found, series = await _reports(conn, ids, window, gap_after=gap_after, bucket=bucket)
    return found[name], series[service_id]


async def _reports(
    conn: AsyncConnection,
    ids: dict[str, int],
    window: tuple[float, float],
    *,
    gap_after: float,
    exact: bool = False,
    bucket: float | None = None,
) -> tuple[dict[str, ServiceReport], dict[int, list[WindowStats]]]:
    """Reports (see `reports()`); with `bucket`, each service's window is read as the
    series' buckets, and their series comes too.

    Incidents, MTTR and MTBF say only what was observed: time before a service's
    first result and inside gaps is neither up nor down, so an incident is cut where
    results stop (it ends at the last one before a gap) and one still open when they
    resume is counted as already open (`began_before`), not as a new failure.
    """
    since, until = window
    coverage = await load_coverage(conn)
    whole = plan(since, until, coverage.raw_only() if exact else coverage)
    plans = []  # the series' buckets, as series() plans them
    if bucket is not None:
        edges = bucket_edges(since, until, bucket)
        plans = [plan(start, end, coverage) for start, end in itertools.pairwise(edges)]
    since, until = whole.since, whole.until
    service_ids = list(ids.values())
    # An empty window (all of it before what retention kept) has no incidents or gaps.
    transitions, gaps, first = {}, {}, {}
    if since < until:
        transitions = await _transitions(conn, service_ids, since, until)
        gaps = await _gaps(conn, service_ids, (since, until), gap_after, coverage.raw)
        first = await _first_results(conn, service_ids, coverage)
    unobserved = {
        service_id: _unobserved(since, until, first.get(service_id), gaps.get(service_id, ()))
        for service_id in service_ids
    }
    incidents = {
        service_id: _incidents(
            transitions.get(service_id, ()), since, until, unobserved[service_id]
        )
        for service_id in service_ids
    }
    # Each service's window, then one window per incident to count its checks.
    windows: list[tuple[int, Plan]] = []
    for service_id in service_ids:
        windows.extend(
            [(service_id, whole)] if bucket is None else [(service_id, p) for p in plans]
        )
    for service_id, spans in incidents.items():
        windows.extend(
            (service_id, plan(span.start, span.counted_until, coverage)) for span in spans
        )
    sums = await _collect(conn, windows)
    result = {}
    series: dict[int, list[WindowStats]] = {}
    for name, service_id in ids.items():
        if bucket is None:
            main, *span_sums = sums[service_id]
        else:
            buckets, span_sums = sums[service_id][: len(plans)], sums[service_id][len(plans) :]
            main = _Sums()
            for part in buckets:  # before their latency(), which adds raw latencies in
                part.histogram.compact()  # a part a bucket: the report merges 180, not 2,160
                main.merge(part)
            series[service_id] = [
                WindowStats(p.since, p.until, part.counts(), part.latency())
                for p, part in zip(plans, buckets, strict=True)
            ]
        found = [
            Incident(
                service_name=name,
                start=span.start,
                end=span.end,
                worst_status=span.worst,
                duration=span.stop - span.start,
                checks=checked.counts().total,
                began_before=span.began_before,
            )
            for span, checked in zip(incidents[service_id], span_sums, strict=True)
        ]
        service_gaps = [
            Gap(name, start, end, (until if end is None else end) - start)
            for start, end in gaps.get(service_id, ())
        ]
        counts = main.counts()
        result[name] = ServiceReport(
            service_name=name,
            since=since,
            until=until,
            counts=counts,
            latency=main.latency(),
            incidents=tuple(found),
            gaps=tuple(service_gaps),
            mttr=_mttr(found),
            mtbf=_mtbf(found, unobserved[service_id], since, until),
        )
    return result, series


async def windows(
    conn: AsyncConnection, ids: dict[str, int], since: float, until: float
) -> dict[str, WindowStats]:
    """Each service's counts and latency over [since, until): a report's figures
    without its incidents and gaps, which cost a query and a window per incident."""
    window = plan(since, until, await load_coverage(conn))
    sums = await _collect(conn, [(service_id, window) for service_id in ids.values()])
    result = {}
    for name, service_id in ids.items():
        found = sums[service_id][0]
        result[name] = WindowStats(window.since, window.until, found.counts(), found.latency())
    return result


async def series(
    conn: AsyncConnection, ids: Sequence[int], since: float, until: float, bucket: float
) -> list[WindowStats]:
    """Counts and latency per bucket [since + k * bucket, since + (k + 1) * bucket),
    the last one ending at until, summed over the services `ids`."""
    coverage = await load_coverage(conn)
    edges = bucket_edges(since, until, bucket)
    plans = [plan(start, end, coverage) for start, end in itertools.pairwise(edges)]
    sums = await _collect(conn, [(service_id, p) for service_id in ids for p in plans])
    result = []
    for index, p in enumerate(plans):
        total = _Sums()
        for service_id in ids:
            total.merge(sums[service_id][index])
        result.append(WindowStats(p.since, p.until, total.counts(), total.latency()))
    return result


def bucket_edges(since: float, until: float, bucket: float) -> list[float]:
    """The edges of the buckets [since + k * bucket, ...) up to until: every bucket
    that holds at least one microsecond of the window, none more.

    Counted on the stored grid (`us_at_or_after`), not by dividing floats: with since
    = 1735689599.999999 and until = since + 0.7, (until - since) / 0.7 is a hair over
    1, and a second bucket [until, until) would follow. Each bucket ends at the very
    float the next one begins with, so at the same microsecond: no result is counted
    twice, none missed. (A start plus a bucket can be an ulp off the next start.)
    """
    if not until > since:
        return [until]
    end = us_at_or_after(until)

    def holds_time(k: int) -> bool:  # bucket k begins before until, on the grid
        return us_at_or_after(since + k * bucket) < end

    count = max(1, math.ceil((until - since) / bucket))  # a first guess, off by one at most
    while count > 1 and not holds_time(count - 1):
        count -= 1
    while holds_time(count):
        count += 1
    return [min(since + k * bucket, until) for k in range(count)] + [until]


# -- sums of rows ------------------------------------------------------------------------


@dataclass(slots=True)
class _Sums:
    """Running sums of one window: raw rows and aggregate rows added as they come."""

    statuses: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    answered: int = 0
    latency_sum: float = 0.0
    latency_min: float = math.inf
    latency_max: float = -math.inf
    latencies: list[float] = field(default_factory=list)  # answered raw results
    histogram: Histogram = field(default_factory=Histogram)  # aggregates' histograms
    approximate: bool = False

    def add_raw(self, rows: Iterable[tuple[Any, ...]]) -> None:
        statuses, latencies = self.statuses, self.latencies
        for _, _, status, answered, latency_us in rows:
            statuses[status] += 1
            if answered:
                latencies.append(latency_us / 1000)

    def add_aggregates(self, rows: Iterable[tuple[Any, ...]]) -> None:
        statuses = self.statuses
        for _, _, healthy, unknown, degraded, unhealthy, answered, total, low, high, blob in rows:
            statuses[0] += healthy
            statuses[1] += unknown
            statuses[2] += degraded
            statuses[3] += unhealthy
            if answered:
                self.answered += answered
                self.latency_sum += total
                self.latency_min = min(self.latency_min, low)
                self.latency_max = max(self.latency_max, high)
                self.histogram.add_blob(blob)
                self.approximate = True

    def merge(self, other: _Sums) -> None:
        for status in range(4):
            self.statuses[status] += other.statuses[status]
        self.answered += other.answered
        self.latency_sum += other.latency_sum
        self.latency_min = min(self.latency_min, other.latency_min)
        self.latency_max = max(self.latency_max, other.latency_max)
        self.latencies.extend(other.latencies)
        self.histogram.extend(other.histogram)
        self.approximate = self.approximate or other.approximate

    def counts(self) -> StatusCounts:
        return StatusCounts(*self.statuses)

    def latency(self) -> LatencyStats:
        latencies = self.latencies
        count = self.answered + len(latencies)
        if not count:
            return LatencyStats()
        low = min(self.latency_min, *latencies) if latencies else self.latency_min
        high = max(self.latency_max, *latencies) if latencies else self.latency_max
        ranks = [-(-p * count // 100) for p in _RANKS]  # nearest rank: ceil(p * n / 100)
        if self.approximate:
            self.histogram.add_latencies(latencies)
            # An estimate never lies outside the values it stands for.
            values = [min(max(v, low), high) for v in self.histogram.percentiles(ranks)]
        else:
            ordered = sorted(latencies)
            values = [ordered[rank - 1] for rank in ranks]
        return LatencyStats(
            count=count,
            min=low,
            mean=(self.latency_sum + math.fsum(latencies)) / count,
            max=high,
            p50=values[0],
            p90=values[1],
            p95=values[2],
            p99=values[3],
            exact=not self.approximate,
        )


async def _collect(
    conn: AsyncConnection, windows: Sequence[tuple[int, Plan]]
) -> dict[int, list[_Sums]]:
    """The sums of each (service id, plan), listed per service in the given order."""
    spans: dict[int, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for service_id, p in windows:
        for piece in p.pieces:
            spans[piece.tier][service_id].append((piece.start, piece.end))
    rows: dict[int, dict[int, list[tuple[Any, ...]]]] = {}  # tier -> service -> rows
    for tier, by_service in spans.items():
        terms = [
            (service_id, start, end)
            for service_id in sorted(by_service)
            for start, end in _merge(by_service[service_id])
        ]
        rows[tier] = await _fetch(conn, tier, terms)
    times = {
        tier: {service_id: [row[1] for row in found] for service_id, found in by_service.items()}
        for tier, by_service in rows.items()
    }
    result: dict[int, list[_Sums]] = defaultdict(list)
    for service_id, p in windows:
        sums = _Sums()
        for piece in p.pieces:
            found = rows[piece.tier].get(service_id)
            if not found:
                continue
            stamps = times[piece.tier][service_id]
            start, end = _bounds(piece.tier, piece.start, piece.end)
            chosen = found[bisect_left(stamps, start) : bisect_left(stamps, end)]
            if piece.tier == RAW:
                sums.add_raw(chosen)
            else:
                sums.add_aggregates(chosen)
        result[service_id].append(sums)
    return result


def _bounds(tier: int, start: float, end: float) -> tuple[float, float]:
    """A piece's [start, end) in its tier's time unit: raw results are keyed by epoch
    microseconds, aggregates by epoch seconds."""
    if tier == RAW:
        return us_at_or_after(start), us_at_or_after(end)
    return start, end


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of the spans as sorted, disjoint ranges."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


_TERMS_PER_QUERY = 100


async def _fetch(
    conn: AsyncConnection, tier: int, terms: list[tuple[int, float, float]]
) -> dict[int, list[tuple[Any, ...]]]:
    """Rows of a tier in the (service id, start, end) ranges, per service, in time order.

    Each range is an index range on (service_id, time); SQLite reads the ranges of one
    query as a MULTI-INDEX OR, so a query costs what its rows cost.
    """
    if tier == RAW:
        return await _fetch_raw(conn, terms)
    c = AGGREGATE_TABLES[tier].c
    columns = select(
        c.service_id, c.start, c.healthy, c.unknown, c.degraded, c.unhealthy,
        c.answered, c.latency_sum, c.latency_min, c.latency_max, c.histogram,
    )  # fmt: skip
    when = c.start
    found: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for first in range(0, len(terms), _TERMS_PER_QUERY):
        chunk = [
            (sid, *_bounds(tier, start, end))
            for sid, start, end in terms[first : first + _TERMS_PER_QUERY]
        ]
        where = or_(
            *[and_(c.service_id == sid, when >= start, when < end) for sid, start, end in chunk]
        )
        # Chunks follow (service, time) order, so appending keeps each service's order.
        for row in await conn.execute(columns.where(where).order_by(c.service_id, when)):
            found[row[0]].append(tuple(row))
    return found


async def _fetch_raw(
    conn: AsyncConnection, terms: list[tuple[int, float, float]]
) -> dict[int, list[tuple[Any, ...]]]:
    """`_fetch` of raw results: from both their tables (store/staging.py), merged in
    the key's order."""
    found: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for first in range(0, len(terms), _TERMS_PER_QUERY):
        chunk = [
            (sid, *_bounds(RAW, start, end))
            for sid, start, end in terms[first : first + _TERMS_PER_QUERY]
        ]

        def arm(table: Table, chunk: list[tuple[int, Any, Any]] = chunk) -> Select[Any]:
            c = table.c
            where = or_(
                *[
                    and_(c.service_id == sid, c.ts_us >= start, c.ts_us < end)
                    for sid, start, end in chunk
                ]
            )
            if table is not check_results:  # a scan: the services first, then their ranges
                where = and_(c.service_id.in_({sid for sid, _, _ in chunk}), where)
            return select(c.service_id, c.ts_us, c.status, c.answered, c.response_time_us).where(
                where
            )

        both = raw.union(dialect.name(conn), arm).subquery("raw")
        r = both.c
        for row in await conn.execute(select(*r).order_by(r.service_id, r.ts_us)):
            found[row[0]].append(tuple(row))
    return found


# -- incidents ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Span:
    start: float
    end: float | None
    stop: float  # end, the window's end, or the last result before a gap
    worst: HealthStatus
    began_before: bool
    counted_until: float  # its checks are those before this: stop, or just after
    # the last result before a gap (that result is in the incident too)


async def _transitions(
    conn: AsyncConnection, ids: list[int], since: float, until: float
) -> dict[int, list[tuple[float, int]]]:
    """(ts, to_status) per service: the newest before since, then those in the window."""
    t = status_transitions.c
    before = (
        select(t.id)
        .where(t.service_id == services.c.id, t.ts < since)
        .order_by(t.ts.desc(), t.id.desc())
        .limit(1)
        .correlate(services)
        .scalar_subquery()
    )
    query = (
        select(t.service_id, t.ts, t.to_status)
        .join(services, services.c.id == t.service_id)
        .where(t.service_id.in_(ids), (t.id == before) | ((t.ts >= since) & (t.ts < until)))
        .order_by(t.service_id, t.ts, t.id)
    )
    found: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for service_id, ts, status in await conn.execute(query):
        found[service_id].append((ts, status))
    return found


def _incidents(
    transitions: Iterable[tuple[float, int]], since: float, until: float, unobserved: Spans
) -> list[_Span]:
    """The observed spans of [since, until) in which the confirmed status was not
    HEALTHY.

    `transitions` are the newest before since, then those in the window, in order.
    The status in effect at since is the newest transition at or before it (one on
    since itself replaces the one before, which is then not in effect inside the
    window), though an incident open across since began before the window.

    Only observed time is in an incident (`unobserved`: before the first result, and
    gaps): one open when the results stop ends there, unrecovered (`end` None), and
    one still open when they resume is already open then (`began_before`), not a new
    failure. Each part's worst status is the worst in effect in it.
    """
    items = list(transitions)
    at_start = 0  # transitions at or before since
    while at_start < len(items) and items[at_start][0] <= since:
        at_start += 1
    status, began = _in_effect(items[:at_start])
    events = _events(items[at_start:], since, until, unobserved)
    observing = not (unobserved and unobserved[0][0] <= since)
    spans: list[_Span] = []
    start: float | None = None
    # The worst status held for some time in the open span: a status replaced on the
    # very microsecond it took effect (two transitions at one time) was never in effect.
    worst, held_since, began_before = _HEALTHY, since, False

    def open_at(at: float, *, before: bool) -> None:
        nonlocal start, worst, held_since, began_before
        start, worst, held_since, began_before = at, _HEALTHY, at, before

    def held_until(at: float) -> None:  # the status in effect changes (or ends) at `at`
        nonlocal worst, held_since
        if at > held_since:
            worst = max(worst, status)
        held_since = at

    def close(at: float, end: float | None, *, last_result: bool = False) -> None:
        nonlocal start
        if start is not None and at > start:
            held_until(at)
            counted = to_seconds(us_at_or_after(at) + 1) if last_result else at
            spans.append(_Span(start, end, at, STATUS_BY_CODE[worst], began_before, counted))
        start = None

    if observing and status != _HEALTHY:
        open_at(since, before=began is not None and began < since)
    for ts, kind, code in events:
        if kind == _STOP:
            close(ts, None, last_result=True)
            observing = False
        elif kind == _RESUME:
            observing = True
            if status != _HEALTHY:
                open_at(ts, before=True)
        else:
            if observing:
                if code == _HEALTHY:
                    close(ts, ts)
                elif start is None:
                    open_at(ts, before=False)
                else:
                    held_until(ts)
            status = code
    if observing:
        close(until, None)
    return spans


def _in_effect(transitions: list[tuple[float, int]]) -> tuple[int, float | None]:
    """The status the transitions leave in effect, and when its incident began."""
    status, began = _HEALTHY, None
    for ts, code in transitions:
        if code == _HEALTHY:
            began = None
        elif began is None:
            began = ts
        status = code
    return status, began


_RESUME, _STOP, _CHANGE = 0, 1, 2


def _events(
    transitions: list[tuple[float, int]], since: float, until: float, unobserved: Spans
) -> list[tuple[float, int, int]]:
    """(time, kind, status) in time order. Observed time is half-open like the
    window: [first result or gap end, gap start or until). So at one time,
    observation resumes or stops before a transition there takes effect: one on a
    gap's end is observed, one on its start (the last result before it) is not."""
    events = [(ts, _CHANGE, code) for ts, code in transitions]
    for gap_start, gap_stop in unobserved:
        if gap_start > since:
            events.append((gap_start, _STOP, 0))
        if gap_stop < until:
            events.append((gap_stop, _RESUME, 0))
    events.sort(key=lambda event: (event[0], event[1]))
    return events


Spans = list[tuple[float, float]]
"""Sorted, disjoint [start, stop) spans."""


def _unobserved(
    since: float,
    until: float,
    first: float | None,
    gaps: Iterable[tuple[float, float | None]],
) -> Spans:
    """The parts of [since, until) the monitor did not observe the service in: before
    its first result (all of it without one) and its gaps."""
    spans: Spans = []
    if first is None or first >= until:
        return [(since, until)] if since < until else []
    if first > since:
        spans.append((since, first))
    spans += [(start, until if end is None else end) for start, end in gaps]
    return _merge(spans)


def _mttr(incidents: list[Incident]) -> float | None:
    repaired = [i.duration for i in incidents if i.end is not None and not i.began_before]
    return sum(repaired) / len(repaired) if repaired else None


def _mtbf(incidents: list[Incident], unobserved: Spans, since: float, until: float) -> float | None:
    """The observed time outside incidents, per incident that began in the window."""
    failures = sum(not i.began_before for i in incidents)
    if not failures:
        return None
    spans = [(i.start, i.start + i.duration) for i in incidents] + unobserved
    down = math.fsum(stop - start for start, stop in _merge(spans))
    return (until - since - down) / failures


async def _first_results(
    conn: AsyncConnection, ids: list[int], coverage: Coverage
) -> dict[int, float]:
    """Each service's first result: its oldest raw result or, where retention pruned
    older ones, the start of its oldest minute (hour, day) row wholly before the raw
    (minute, hour) rows kept: to the minute (hour, day) there. (A minute that straddles
    the raw cut-off is not looked at: the first result is then its oldest kept, at most
    a minute late.)"""
    r, m, h, d = check_results.c, result_minutes.c, result_hours.c, result_days.c
    # Staged rows (store/staging.py) are later than the others of their service: they
    # count where check_results has none (of the service, or from the raw mark on).
    kept_us = us_at_or_after(coverage.raw) if math.isfinite(coverage.raw) else None
    staged = _staged(conn, first=func.min, last=func.max, first_kept=_min_from(kept_us))
    oldest: ColumnElement[Any] = (
        select(func.min(r.ts_us))
        .where(r.service_id == services.c.id)
        .correlate(services)
        .scalar_subquery()
    )
    if staged is not None:
        oldest = func.coalesce(oldest, staged.c.first)
    if kept_us is not None:  # of the results before the raw mark, only each
        # service's newest is kept (history.visible)
        newest: ColumnElement[Any] = (
            select(func.max(r.ts_us))
            .where(r.service_id == services.c.id)
            .correlate(services)
            .scalar_subquery()
        )
        oldest_kept: ColumnElement[Any] = (
            select(func.min(r.ts_us))
            .where(r.service_id == services.c.id, r.ts_us >= kept_us)
            .correlate(services)
            .scalar_subquery()
        )
        if staged is not None:
            newest = func.coalesce(staged.c.last, newest)
            oldest_kept = func.coalesce(oldest_kept, staged.c.first_kept)
        oldest = case((newest < kept_us, newest), else_=oldest_kept)
    columns = [oldest]
    for tier, width, pruned_before in (
        (m, 60, coverage.raw),
        (h, 3600, coverage.minute),
        (d, 86_400, coverage.hour),
    ):
        if math.isfinite(pruned_before):
            columns.append(
                select(func.min(tier.start))
                .where(tier.service_id == services.c.id, tier.start + width <= pruned_before)
                .correlate(services)
                .scalar_subquery()
            )
    found: dict[int, float] = {}
    query = select(services.c.id, *columns).where(services.c.id.in_(ids))
    if staged is not None:
        query = query.outerjoin(staged, staged.c.service_id == services.c.id)
    for service_id, raw_us, *aggregated in await conn.execute(query):
        times = [t for t in aggregated if t is not None]
        if raw_us is not None:
            times.append(to_seconds(raw_us))
        if times:
            found[service_id] = min(times)
    return found


# -- gaps --------------------------------------------------------------------------------


async def _gaps(
    conn: AsyncConnection,
    ids: list[int],
    window: tuple[float, float],
    gap_after: float,
    kept_since: float,
) -> dict[int, list[tuple[float, float | None]]]:
    """(start, end or None) per service, clipped to the window. Of the results before
    `kept_since` (the raw mark) only each service's newest counts (history.visible)."""
    since, until = window
    g = result_gaps.c
    rows = await conn.execute(
        select(g.service_id, g.start_ts, g.end_ts)
        .where(g.service_id.in_(ids), g.start_ts < until, g.end_ts > since)
        .order_by(g.service_id, g.start_ts)
    )
    found: dict[int, list[tuple[float, float | None]]] = defaultdict(list)
    open_ended: dict[int, float] = {}
    for service_id, start, end in rows:
        found[service_id].append((max(start, since), None if end >= until else end))
        if end >= until:
            open_ended[service_id] = start
    # A gap that has not ended yet has no row: the last result is too old. (Pruning
    # keeps each service's newest result, so this finds it however old it is.)
    r = check_results.c
    until_us = us_at_or_after(until)
    kept_us = None if math.isinf(kept_since) else us_at_or_after(kept_since)
    # Staged rows (store/staging.py) are later than the others of their service: the
    # last of them before `until` (from the raw mark on) comes first.
    staged = _staged(
        conn,
        last=func.max,
        last_before=_max_before(until_us, kept_us),
    )
    last_kept = (
        select(func.max(r.ts_us))
        .where(r.service_id == services.c.id, r.ts_us < until_us)
        .correlate(services)
    )
    last: ColumnElement[Any] = last_kept.scalar_subquery()
    if kept_us is not None:
        newest: ColumnElement[Any] = (
            select(func.max(r.ts_us))
            .where(r.service_id == services.c.id)
            .correlate(services)
            .scalar_subquery()
        )
        if staged is not None:
            newest = func.coalesce(staged.c.last, newest)
        last = func.coalesce(
            last_kept.where(r.ts_us >= kept_us).scalar_subquery(),
            case((newest < until_us, newest)),
        )
    query = select(services.c.id, last).where(services.c.id.in_(ids))
    if staged is not None:
        query = (
            select(services.c.id, func.coalesce(staged.c.last_before, last))
            .where(services.c.id.in_(ids))
            .outerjoin(staged, staged.c.service_id == services.c.id)
        )
    for service_id, last_us in await conn.execute(query):
        if last_us is None or service_id in open_ended:
            continue
        seen = to_seconds(last_us)
        if until - seen > gap_after:
            found[service_id].append((max(seen, since), None))
    return found


def _staged(conn: AsyncConnection, **columns: Any) -> Any:
    """`staging.staged_span` on SQLite; None on PostgreSQL (nothing staged)."""
    if staged_results not in raw.tables(dialect.name(conn)):
        return None
    return raw.staged_span(**columns)


def _min_from(kept_us: int | None) -> Any:
    """For `staging.staged_span`: the oldest time at or after the raw mark."""
    return lambda ts: func.min(ts if kept_us is None else case((ts >= kept_us, ts)))


def _max_before(until_us: int, kept_us: int | None) -> Any:
    """For `staging.staged_span`: the newest time before `until_us` (and at or after
    the raw mark: the others, but a service's newest, are out of sight)."""
    if kept_us is None:
        return lambda ts: func.max(case((ts < until_us, ts)))
    return lambda ts: func.max(case((and_(ts < until_us, ts >= kept_us), ts)))
