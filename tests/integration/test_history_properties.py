"""Every statistic of the history API against a brute-force computation over the raw
stream: random result streams written through the real writer (so the aggregates come
from the code path the monitor uses) into real SQLite files and real PostgreSQL
databases (the same expectations on both), random windows, windows across minute and
hour boundaries and across retention cut-offs."""

from __future__ import annotations

import asyncio
import itertools
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon import (
    HealthCheckResult,
    HealthStatus,
    HealthStore,
    Retention,
    ServiceReport,
    StatusTransition,
)
from healthmon.micros import to_us, us_at_or_after
from healthmon.store import plan as planning
from healthmon.store.engine import create_engine, database_url
from healthmon.store.retention import prune_step
from healthmon.store.rollup import DEFAULT_GAP_AFTER, is_answered
from healthmon.store.sketch import RELATIVE_ERROR
from tests import postgres

T0 = 1_800_000_000.0  # a whole hour, in 2027
STATUSES = list(HealthStatus)
SERVICES = ("api", "db")
EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    database=None,  # no example database left in the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _migrate(url: str) -> None:
    async def create() -> None:
        async with HealthStore(url):
            pass

    asyncio.run(create())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Iterator[str]]:
    """A migrated empty database per example: copies of a SQLite file (migrating takes
    longer), or one PostgreSQL database emptied again."""
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("examples")
        template = folder / "template.db"
        _migrate(str(template))

        def files() -> Iterator[str]:
            for index in range(10**9):
                path = folder / f"{index}.db"
                shutil.copyfile(template, path)
                yield str(path)

        yield files()
        return
    url = postgres.create_database(request.getfixturevalue("postgres_server"))
    _migrate(url)

    def emptied() -> Iterator[str]:
        while True:
            asyncio.run(_empty(url))
            yield url

    yield emptied()
    postgres.drop_database(url)


async def _empty(url: str) -> None:
    """The PostgreSQL database as migrated, without making a new one (which takes ~0.5 s):
    every row written since removed, the coverage marks as migration 0002 leaves them
    on an empty database."""
    engine = create_engine(database_url(url))
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "TRUNCATE check_results, result_details, status_transitions, result_minutes, "
                    "result_hours, result_days, result_gaps, services RESTART IDENTITY CASCADE"
                )
            )
            await conn.execute(
                text(
                    "UPDATE history_coverage SET complete_since = 0, complete_until = "
                    "CASE WHEN tier IN ('minute', 'hour', 'day') THEN 0 END"
                )
            )
    finally:
        await engine.dispose()


# -- streams -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    results: list[HealthCheckResult]
    transitions: list[StatusTransition]
    flush_after: frozenset[int]
    restart_at: int  # a new writer (and rollup) from this result on

    def of(self, name: str) -> list[HealthCheckResult]:
        """One service's results, in time order."""
        return sorted((r for r in self.results if r.service_name == name), key=_when)

    @property
    def end(self) -> float:
        return max(r.timestamp for r in self.results)

    @property
    def start(self) -> float:
        return min(r.timestamp for r in self.results)


latencies = st.one_of(
    st.just(0.0), st.floats(min_value=0.001, max_value=1e5, allow_nan=False, allow_infinity=False)
)
# Mostly a few checks a second; sometimes minutes or hours without any (gaps, and
# streams that reach across hour boundaries with few results).
steps = st.one_of(
    st.floats(min_value=0.05, max_value=3.0),
    st.floats(min_value=3.0, max_value=200.0),
    st.floats(min_value=200.0, max_value=5000.0),
)


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    start = T0 + draw(st.floats(min_value=0, max_value=7200))
    count = draw(st.integers(min_value=1, max_value=120))
    clock = dict.fromkeys(SERVICES, start)
    status: dict[str, HealthStatus] = {}
    results, transitions = [], []
    for _ in range(count):
        name = draw(st.sampled_from(SERVICES))
        clock[name] += draw(steps)
        new = draw(st.sampled_from(STATUSES))
        error = None
        if new is HealthStatus.UNHEALTHY:
            error = draw(
                st.sampled_from(["HTTP 503", "timeout after 500 ms", "connection refused"])
            )
        details = draw(st.sampled_from([None, {"status": "ok"}, {"status": "ok"}, {"n": 1}]))
        result = HealthCheckResult(name, new, draw(latencies), clock[name], details, error)
        results.append(result)
        if status.get(name) != new:
            transitions.append(StatusTransition(name, status.get(name), new, clock[name], error))
            status[name] = new
    # Mostly in completion order, as the monitor submits; a service may lag behind by
    # minutes (as results retried after a database outage do): late for the aggregates.
    lag = {name: draw(st.sampled_from([0.0, 0.0, 30.0, 400.0])) for name in SERVICES}
    # A few results come after later ones of their own service (a clock stepped back):
    # they split the gaps they fall in.
    stepped = draw(st.sets(st.integers(0, len(results) - 1), max_size=3))
    late = {id(results[index]): 3000.0 for index in stepped}
    results.sort(key=lambda r: r.timestamp + lag[r.service_name] + late.get(id(r), 0.0))
    flush_after = frozenset(draw(st.sets(st.integers(0, len(results) - 1), max_size=8)))
    restart_at = draw(st.integers(0, len(results)))
    return Stream(results, transitions, flush_after, restart_at)


async def write(store: HealthStore, stream: Stream) -> None:
    """Through the real writer, in several group commits, restarting once (a new
    writer rebuilds the open aggregates from the database)."""
    caused = {(t.service_name, t.timestamp): t for t in stream.transitions}
    restart = stream.restart_at
    for first, part in ((0, stream.results[:restart]), (restart, stream.results[restart:])):
        writer = store.writer(max_pending=10**6)
        await writer.start()  # (stop() releases only a started writer)
        for index, result in enumerate(part, start=first):
            writer.submit(result, caused.get((result.service_name, result.timestamp)))
            if index in stream.flush_after:
                assert await writer.flush()
        assert await writer.flush()
        await writer.stop()


def window(
    draw: Callable[[st.SearchStrategy[float]], float], stream: Stream
) -> tuple[float, float]:
    """A random window, often snapped to whole minutes or hours."""
    low, high = stream.start - 120, stream.end + 120

    def point() -> float:
        t = draw(st.floats(min_value=low, max_value=high))
        snap = draw(st.sampled_from([None, 60, 3600]))
        return t if snap is None else round(t / snap) * snap

    a, b = point(), point()
    return min(a, b), max(a, b)


# -- brute force -------------------------------------------------------------------------


def _when(result: HealthCheckResult) -> float:
    return result.timestamp


def nearest_rank(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered) / 100) - 1]


def check_window(results: list[HealthCheckResult], since: float, until: float, got: object) -> None:
    """Counts and latency of `got` (a report or a bucket) against the raw results."""
    inside = [r for r in results if since <= r.timestamp < until]
    counts = getattr(got, "counts")  # noqa: B009 - reports and buckets alike
    latency = getattr(got, "latency")  # noqa: B009
    for status in HealthStatus:
        assert getattr(counts, status.name.lower()) == sum(r.status is status for r in inside)
    known = [r for r in inside if r.status is not HealthStatus.UNKNOWN]
    up = [r for r in known if r.status in (HealthStatus.HEALTHY, HealthStatus.DEGRADED)]
    healthy = [r for r in known if r.status is HealthStatus.HEALTHY]
    assert counts.uptime == (len(up) / len(known) if known else None)
    assert counts.healthy_share == (len(healthy) / len(known) if known else None)
    times = [r.response_time_ms for r in inside if is_answered(r)]
    assert latency.count == len(times)
    if not times:
        assert latency.min is latency.p50 is latency.p99 is None
        return
    assert latency.min == min(times)
    assert latency.max == max(times)
    assert latency.mean == pytest.approx(math.fsum(times) / len(times), rel=1e-9)
    for p in (50, 90, 95, 99):
        expected, estimate = nearest_rank(times, p), getattr(latency, f"p{p}")
        if latency.exact:
            assert estimate == expected
        else:
            assert abs(estimate - expected) <= (RELATIVE_ERROR + 1e-9) * expected


@dataclass
class Span:
    start: float
    end: float | None
    statuses: list[tuple[float, HealthStatus]]


def all_incidents(transitions: list[StatusTransition], name: str) -> list[Span]:
    spans: list[Span] = []
    current: Span | None = None
    for t in (t for t in transitions if t.service_name == name):
        if t.to_status is HealthStatus.HEALTHY:
            if current is not None:
                current.end = t.timestamp
                current = None
        elif current is None:
            current = Span(t.timestamp, None, [(t.timestamp, t.to_status)])
            spans.append(current)
        else:
            current.statuses.append((t.timestamp, t.to_status))
    return spans


def check_report(
    stream: Stream,
    name: str,
    report: ServiceReport,
    coverage: planning.Coverage | None = None,
) -> None:
    """All of `report` against the stream; with `coverage`, after pruning."""
    coverage = coverage or planning.Coverage()
    since, until = report.since, report.until
    results = stream.of(name)
    check_window(results, since, until, report)

    stamps = [r.timestamp for r in results]
    gaps = []
    for before, after in itertools.pairwise(stamps):
        # Longer than gap_after, to the microsecond (the stored resolution).
        longer = to_us(after) - to_us(before) > to_us(DEFAULT_GAP_AFTER)
        if longer and before < until and after > since:
            gaps.append((max(before, since), after if after < until else None))
    earlier = [t for t in stamps if t < until]
    later = [t for t in stamps if t >= until]
    if earlier and not later and until - earlier[-1] > DEFAULT_GAP_AFTER:
        gaps.append((max(earlier[-1], since), None))
    if since == until:  # an empty window has none
        gaps = []
    assert [(g.start, g.end) for g in report.gaps] == gaps
    for gap in report.gaps:
        assert gap.duration == (until if gap.end is None else gap.end) - gap.start

    observed = observed_spans(since, until, first_result(stamps, coverage), gaps)
    changes = [(t.timestamp, t.to_status) for t in stream.transitions if t.service_name == name]
    expected = expected_incidents(results, changes, observed, until, coverage)
    got = [
        (i.start, i.end, i.worst_status, i.duration, i.checks, i.began_before)
        for i in report.incidents
    ]
    assert got == expected

    complete = [i for i in report.incidents if i.end is not None and not i.began_before]
    mttr = sum(i.duration for i in complete) / len(complete) if complete else None
    assert report.mttr == (None if mttr is None else pytest.approx(mttr))
    failures = sum(not i.began_before for i in report.incidents)
    if not failures:
        assert report.mtbf is None
    else:
        # Observed and up: the observed time outside incidents.
        down = sum(i.duration for i in report.incidents)
        up = sum(b - a for a, b in observed) - down
        assert report.mtbf == pytest.approx(up / failures)


def observed_spans(
    since: float, until: float, first: float, gaps: list[tuple[float, float | None]]
) -> list[tuple[float, float]]:
    """From the first result on, outside gaps; half-open like the window."""
    unobserved = [(since, min(max(first, since), until))] if first > since else []
    unobserved += [(start, until if end is None else end) for start, end in gaps]
    observed, t = [], since
    for start, stop in sorted(unobserved):
        if start > t:
            observed.append((t, start))
        t = max(t, stop)
    if t < until:
        observed.append((t, until))
    return observed


def expected_incidents(
    results: list[HealthCheckResult],
    changes: list[tuple[float, HealthStatus]],
    observed: list[tuple[float, float]],
    until: float,
    coverage: planning.Coverage,
) -> list[tuple[float, float | None, HealthStatus, float, int, bool]]:
    """Runs of status not HEALTHY in each observed span."""

    def status_at(when: float) -> HealthStatus:
        return ([s for ts, s in changes if ts <= when] or [HealthStatus.HEALTHY])[-1]

    def began_at(when: float) -> float | None:  # when the incident in effect began
        began = None
        for ts, status in changes:
            if ts > when:
                break
            if status is HealthStatus.HEALTHY:
                began = None
            elif began is None:
                began = ts
        return began

    expected = []
    for low, high in observed:  # runs of segments not HEALTHY in each observed span
        points = [low] + [ts for ts, _ in changes if low < ts < high] + [high]
        run: list[tuple[float, HealthStatus]] = []
        for a, b in itertools.pairwise(points):
            status = status_at(a)
            if status is not HealthStatus.HEALTHY:
                run.append((a, status))
            if run and (status is HealthStatus.HEALTHY or b == high):
                start = run[0][0]
                stop = a if status is HealthStatus.HEALTHY else b
                recovered = stop < high  # else cut where observation stops
                # Cut by a gap, the last result before it is in the incident too.
                last = stop == high and high < until
                counted = planning.plan(start, stop + (1e-6 if last else 0.0), coverage)
                checks = sum(counted.since <= r.timestamp < counted.until for r in results)
                worst = max((s for _, s in run), key=lambda s: s.severity)
                began = began_at(low)
                before = start == low and began is not None and began < low
                expected.append(
                    (start, stop if recovered else None, worst, stop - start, checks, before)
                )
                run = []
    return expected


def first_result(stamps: list[float], coverage: planning.Coverage) -> float:
    """As the report finds it: the oldest raw result kept, or where retention pruned
    older ones, the oldest minute (hour) row wholly before the raw (minute) rows kept."""
    if not stamps:
        return math.inf
    kept = [t for t in stamps if t >= coverage.raw] + stamps[-1:]
    times = [min(kept)]
    for t in stamps:
        minute, hour = t // 60 * 60, t // 3600 * 3600
        if minute + 60 <= coverage.raw and coverage.minute <= minute < coverage.minute_until:
            times.append(minute)
        if hour + 3600 <= coverage.minute and coverage.hour <= hour < coverage.hour_until:
            times.append(hour)
    return min(times)


# -- the properties ----------------------------------------------------------------------


@pytest.mark.timeout(300)  # hypothesis shrinks a failure for minutes; passing takes ~10 s
@EXAMPLES
@given(data=st.data(), stream=streams())
def test_reports_and_series_match_brute_force(
    databases: Iterator[str], data: st.DataObject, stream: Stream
) -> None:
    path = next(databases)

    async def run() -> None:
        async with HealthStore(path) as store:
            await write(store, stream)
            for _ in range(3):
                since, until = window(data.draw, stream)
                for name in SERVICES:
                    if not stream.of(name):
                        continue
                    assert await store.results(name, since, until) == [
                        r for r in stream.of(name) if since <= r.timestamp < until
                    ]  # times, latencies and details as they were made
                    report = await store.report(name, since, until)
                    assert (report.since, report.until) == (since, until)  # all kept
                    check_report(stream, name, report)
                    exact = await store.report(name, since, until, exact=True)
                    assert exact.latency.exact
                    check_report(stream, name, exact)
                fleet = await store.reports(since, until)
                assert set(fleet) == {name for name in SERVICES if stream.of(name)}
                for name, report in fleet.items():
                    check_report(stream, name, report)
                bucket = data.draw(st.sampled_from([60.0, 300.0, 3600.0, 97.5]))
                if (until - since) / bucket <= 500:
                    buckets = await store.series(None, since, until, bucket=bucket)
                    # Every bucket that holds a microsecond of the window, none more.
                    end, expected = us_at_or_after(until), []
                    for k in itertools.count():
                        if us_at_or_after(since + k * bucket) >= end:
                            break
                        expected.append(since + k * bucket)
                    expected = expected or ([since] if since < until else [])
                    assert [got.since for got in buckets] == expected
                    # Each ends where the next begins: every result in exactly one.
                    ends = [got.since for got in buckets[1:]] + [until] if buckets else []
                    assert [got.until for got in buckets] == ends
                    for got in buckets:
                        check_window(stream.results, got.since, got.until, got)

    asyncio.run(run())


@pytest.mark.timeout(300)  # hypothesis shrinks a failure for minutes; passing takes ~10 s
@EXAMPLES
@given(data=st.data(), stream=streams())
def test_reports_stay_exact_across_retention_cutoffs(
    databases: Iterator[str], data: st.DataObject, stream: Stream
) -> None:
    path = next(databases)
    span = stream.end - stream.start
    now = stream.end + data.draw(st.floats(min_value=0, max_value=3600))
    raw = data.draw(st.floats(min_value=1, max_value=span + 3600))
    minute = raw + data.draw(st.floats(min_value=0, max_value=span + 3600))
    retention = Retention(raw, minute, minute + data.draw(st.floats(0, span + 7200)))

    async def run() -> None:
        async with HealthStore(path) as store:
            await write(store, stream)
            while True:  # small batches, as the writer prunes between flushes
                async with store.engine.begin() as conn:
                    if not (await prune_step(conn, retention, batch_size=5, now=now)).more:
                        break
            async with store.engine.connect() as conn:
                coverage = await planning.load_coverage(conn)
            assert coverage.raw == now - raw
            for name in SERVICES:  # raw results before the cut-off are gone but the newest
                kept = await store.results(name, until=coverage.raw)
                assert kept == [r for r in stream.of(name)[-1:] if r.timestamp < coverage.raw]
                later = await store.results(name, since=coverage.raw)
                assert later == [r for r in stream.of(name) if r.timestamp >= coverage.raw]
            async with store.engine.connect() as db:  # no result lost its details row,
                dangling = await db.scalar(  # and no details row outlived its results
                    text(
                        "SELECT count(*) FROM (SELECT details_id FROM check_results UNION ALL "
                        "SELECT details_id FROM staged_results) r LEFT JOIN result_details d "
                        "ON d.id = r.details_id WHERE r.details_id IS NOT NULL AND d.id IS NULL"
                    )
                )
                orphans = await db.scalar(
                    text(
                        "SELECT count(*) FROM result_details d WHERE NOT EXISTS "
                        "(SELECT 1 FROM check_results r WHERE r.details_id = d.id) AND NOT EXISTS "
                        "(SELECT 1 FROM staged_results r WHERE r.details_id = d.id)"
                    )
                )
            assert (dangling, orphans) == (0, 0)
            for _ in range(3):
                since, until = window(data.draw, stream)
                for name in SERVICES:
                    if not stream.of(name):
                        continue
                    report = await store.report(name, since, until)
                    assert since <= report.since <= report.until <= until
                    if since >= coverage.raw:
                        assert (report.since, report.until) == (since, until)
                    elif since >= coverage.minute:  # at most to the next whole minute
                        assert report.since - since < 60
                    check_report(stream, name, report, coverage)

    asyncio.run(run())


@settings(
    max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(stream=streams())
def test_views_read_like_the_api(databases: Iterator[str], stream: Stream) -> None:
    path = next(databases)

    async def run() -> None:
        async with HealthStore(path) as store:
            await write(store, stream)
            async with store.engine.connect() as conn:
                await check_views(conn, stream)

    asyncio.run(run())


async def check_views(conn: AsyncConnection, stream: Stream) -> None:
    """The views SQL users read agree with the API (incidents, minutes, results)."""
    for name in SERVICES:
        incidents = (
            await conn.execute(
                text(
                    "SELECT start_ts, end_ts, worst_status FROM incidents_view "
                    "WHERE service = :name ORDER BY start_ts"
                ),
                {"name": name},
            )
        ).all()
        expected = [
            (s.start, s.end, max((x for _, x in s.statuses), key=lambda x: x.severity).value)
            for s in all_incidents(stream.transitions, name)
        ]
        assert [tuple(row) for row in incidents] == expected
        checks = await conn.scalar(
            text("SELECT coalesce(sum(checks), 0) FROM minutes_view WHERE service = :name"),
            {"name": name},
        )
        written_until = await conn.scalar(
            text("SELECT complete_until FROM history_coverage WHERE tier = 'minute'")
        )
        assert checks == sum(r.timestamp < written_until for r in stream.of(name))
        first = (
            await conn.execute(
                text(
                    "SELECT at, status FROM results_view WHERE service = :name ORDER BY ts LIMIT 1"
                ),
                {"name": name},
            )
        ).first()
        if stream.of(name):
            result = stream.of(name)[0]
            assert first is not None
            assert first[0].endswith("Z")  # ISO 8601 in UTC, to the millisecond
            at = datetime.fromisoformat(first[0].replace("Z", "+00:00"))
            assert at.tzinfo == UTC
            assert abs(at.timestamp() - result.timestamp) <= 0.001  # shown to the ms
            assert first[1] == result.status.value
