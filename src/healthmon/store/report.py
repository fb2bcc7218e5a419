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

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.micros import to_seconds, us_at_or_after
from healthmon.model import HealthStatus
from healthmon.store.plan import RAW, Plan, load_coverage, plan
from healthmon.store.schema import (
    AGGREGATE_TABLES,
    STATUS_BY_CODE,
    check_results,
    result_gaps,
    services,
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

__all__ = ["MAX_BUCKETS", "report_series", "reports", "series", "service_ids", "windows"]

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
    """A report over [since, until) for each of `ids` ({name: service id})."""
    coverage = await load_coverage(conn)
    window = plan(since, until, coverage.raw_only() if exact else coverage)
    since, until = window.since, window.until
    # An empty window (all of it before what retention kept) has no incidents or gaps.
    transitions = (
        await _transitions(conn, list(ids.values()), since, until) if since < until else {}
    )
    incidents = {
        service_id: _incidents(transitions.get(service_id, ()), since, until)
        for service_id in ids.values()
    }
    # Each service's window, then one window per incident to count its checks.
    windows: list[tuple[int, Plan]] = [(service_id, window) for service_id in ids.values()]
    for service_id, spans in incidents.items():
        windows.extend((service_id, plan(span.start, span.stop, coverage)) for span in spans)
    sums = await _collect(conn, windows)
    gaps = await _gaps(conn, list(ids.values()), (since, until), gap_after) if since < until else {}
    result = {}
    for name, service_id in ids.items():
        main, *span_sums = sums[service_id]
        result[name] = _report(
            name, main, (incidents[service_id], span_sums), gaps.get(service_id, ()), (since, until)
        )
    return result


async def report_series(
    conn: AsyncConnection,
    ids: dict[str, int],
    window: tuple[float, float],
    *,
    bucket: float,
    gap_after: float,
) -> tuple[ServiceReport, list[WindowStats]]:
    """One service's report over [since, until) and its series in buckets of `bucket`
    seconds from `since` (as `series()` makes them), from one reading of its rows: the
    report's sums are the buckets' sums, its histogram the sum of theirs. `ids` holds
    the one service ({name: id})."""
    ((name, service_id),) = ids.items()
    since, until = window
    coverage = await load_coverage(conn)
    whole = plan(since, until, coverage)
    count = math.ceil((until - since) / bucket)
    edges = [min(since + k * bucket, until) for k in range(count)] + [until]
    plans = [plan(start, end, coverage) for start, end in itertools.pairwise(edges)]
    since, until = whole.since, whole.until
    transitions = await _transitions(conn, [service_id], since, until) if since < until else {}
    spans = _incidents(transitions.get(service_id, ()), since, until)
    windows = [(service_id, p) for p in plans]
    windows += [(service_id, plan(span.start, span.stop, coverage)) for span in spans]
    sums = (await _collect(conn, windows))[service_id]
    buckets, span_sums = sums[: len(plans)], sums[len(plans) :]
    main = _Sums()
    for found in buckets:  # before their latency(), which adds their raw latencies in
        found.histogram.compact()  # one part a bucket: the report merges 180, not 2,160
        main.merge(found)
    series = [
        WindowStats(p.since, p.until, found.counts(), found.latency())
        for p, found in zip(plans, buckets, strict=True)
    ]
    gaps = await _gaps(conn, [service_id], (since, until), gap_after) if since < until else {}
    report = _report(name, main, (spans, span_sums), gaps.get(service_id, ()), (since, until))
    return report, series


def _report(
    name: str,
    main: _Sums,
    incidents: tuple[Sequence[_Span], Sequence[_Sums]],
    gaps: Iterable[tuple[float, float | None]],
    window: tuple[float, float],
) -> ServiceReport:
    """A report from its sums: the window's, and each incident's span and sums."""
    spans, span_sums = incidents
    since, until = window
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
        for span, checked in zip(spans, span_sums, strict=True)
    ]
    service_gaps = [
        Gap(name, start, end, (until if end is None else end) - start) for start, end in gaps
    ]
    return ServiceReport(
        service_name=name,
        since=since,
        until=until,
        counts=main.counts(),
        latency=main.latency(),
        incidents=tuple(found),
        gaps=tuple(service_gaps),
        mttr=_mttr(found),
        mtbf=_mtbf(found, service_gaps, since, until),
    )


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
    count = math.ceil((until - since) / bucket)
    # Each bucket ends at the very float the next one begins with, so at the same
    # microsecond (us_at_or_after): no result is counted twice, none missed. (A start
    # plus a bucket can be an ulp off the next start, and a microsecond off with it.)
    edges = [min(since + k * bucket, until) for k in range(count)] + [until]
    plans = [plan(start, end, coverage) for start, end in itertools.pairwise(edges)]
    sums = await _collect(conn, [(service_id, p) for service_id in ids for p in plans])
    result = []
    for index, p in enumerate(plans):
        total = _Sums()
        for service_id in ids:
            total.merge(sums[service_id][index])
        result.append(WindowStats(p.since, p.until, total.counts(), total.latency()))
    return result


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
        c = check_results.c
        columns: Select[Any] = select(
            c.service_id, c.ts_us, c.status, c.answered, c.response_time_us
        )
        when = c.ts_us
    else:
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


# -- incidents ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Span:
    start: float
    end: float | None
    stop: float  # end, or the window's end
    worst: HealthStatus
    began_before: bool


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


def _incidents(transitions: Iterable[tuple[float, int]], since: float, until: float) -> list[_Span]:
    spans: list[_Span] = []
    start: float | None = None
    worst = _HEALTHY
    began_before = False
    for ts, status in transitions:
        at = max(ts, since)
        if status == _HEALTHY:
            if start is not None and at > start:
                spans.append(_Span(start, at, at, STATUS_BY_CODE[worst], began_before))
            start = None
        elif start is None:
            start, worst, began_before = at, status, ts < since
        else:
            worst = max(worst, status)
    if start is not None and until > start:
        spans.append(_Span(start, None, until, STATUS_BY_CODE[worst], began_before))
    return spans


def _mttr(incidents: list[Incident]) -> float | None:
    repaired = [i.duration for i in incidents if i.end is not None and not i.began_before]
    return sum(repaired) / len(repaired) if repaired else None


def _mtbf(incidents: list[Incident], gaps: list[Gap], since: float, until: float) -> float | None:
    failures = sum(not i.began_before for i in incidents)
    if not failures:
        return None
    spans = [(i.start, until if i.end is None else i.end) for i in incidents]
    spans += [(g.start, until if g.end is None else g.end) for g in gaps]
    down = 0.0
    reach = since
    for start, end in sorted(spans):
        if end > reach:
            down += end - max(start, reach)
            reach = end
    return (until - since - down) / failures


# -- gaps --------------------------------------------------------------------------------


async def _gaps(
    conn: AsyncConnection,
    ids: list[int],
    window: tuple[float, float],
    gap_after: float,
) -> dict[int, list[tuple[float, float | None]]]:
    """(start, end or None) per service, clipped to the window."""
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
    last = (
        select(func.max(r.ts_us))
        .where(r.service_id == services.c.id, r.ts_us < us_at_or_after(until))
        .correlate(services)
        .scalar_subquery()
    )
    for service_id, newest_us in await conn.execute(
        select(services.c.id, last).where(services.c.id.in_(ids))
    ):
        if newest_us is None or service_id in open_ended:
            continue
        newest = to_seconds(newest_us)
        if until - newest > gap_after:
            found[service_id].append((max(newest, since), None))
    return found
