"""The status page's figures against the store's own reports: the overview's running
sums (FleetHistory) across hours and a UTC midnight, and the store's batch reads."""

from __future__ import annotations

import math

import pytest

from healthmon import HealthCheckResult, HealthStatus, HealthStore, StatusTransition
from healthmon.http.pages.figures import WINDOWS, read_service, segments
from healthmon.http.pages.fleet import DAY, DAYS, FleetHistory, Summary
from healthmon.store import StatusCounts

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

MIDNIGHT = 1_800_000_000 // DAY * DAY + 10 * DAY  # a UTC midnight
START = MIDNIGHT - 40 * 3600 + 17 * 60  # 40 h before it, not on an hour
STEP = 30.0
GAP_AFTER = 90.0  # results every STEP s are not gaps (the default 10 s would cut them)
NAMES = ("api", "db")


def _status(name: str, ts: float) -> HealthStatus:
    """db fails for 20 minutes every 7 hours, api for 5 minutes every 11 hours."""
    period, length = (7 * 3600, 1200) if name == "db" else (11 * 3600, 300)
    return HealthStatus.UNHEALTHY if (ts - START) % period < length else HealthStatus.HEALTHY


async def _write(store: HealthStore, since: float, until: float) -> None:
    """Results every STEP s of both services in [since, until), through the writer."""
    writer = store.writer(flush_interval=0.05)
    for name in NAMES:
        writer.register_service(name, "http", None)
    await writer.start()
    ts = since
    last: dict[str, HealthStatus | None] = {name: None for name in NAMES}
    if since > START:
        last = {name: _status(name, since - STEP) for name in NAMES}
    while ts < until:
        for name in NAMES:
            status = _status(name, ts)
            latency = 2.0 + (ts // STEP) % 9 + (5.0 if name == "db" else 0.0)
            error = "HTTP 503" if status is HealthStatus.UNHEALTHY else None
            result = HealthCheckResult(name, status, latency, ts, error=error)
            transition = None
            if status is not last[name]:
                transition = StatusTransition(name, last[name], status, ts, cause=error)
                last[name] = status
            writer.submit(result, transition)
        ts += STEP
        if int(ts // STEP) % 2000 == 0:
            await writer.flush()  # in steps: stop() gives its last flush only 2 s
    await writer.flush()
    await writer.stop()


async def _summaries(history: FleetHistory) -> dict[str, Summary]:
    await history.start()
    _, found = await history.read()
    return found


async def _check(store: HealthStore, found: dict[str, Summary], now: float) -> None:
    coverage = await store.coverage()
    hour_mark = min(coverage.hour_until, now) // 3600 * 3600
    minute_mark = min(coverage.minute_until, now) // 60 * 60
    today = now // DAY * DAY
    days = await store.days(today - (DAYS - 1) * DAY, now)
    for name in NAMES:
        summary = found[name]
        report = await store.report(name, hour_mark - 24 * 3600, now)
        assert summary.uptime_24h == report.uptime
        aggregated = await store.report(name, hour_mark - 24 * 3600, minute_mark)
        assert aggregated.latency.p95 is not None
        assert summary.p95_24h == pytest.approx(aggregated.latency.p95, rel=0.02)
        expected = {d.day: d.counts for d in days[name]}
        assert len(summary.days) == DAYS
        for bar in summary.days:
            assert bar.counts == expected.get(bar.day, StatusCounts()), bar.day
        whole = StatusCounts(
            *(sum(getattr(d.counts, s) for d in days[name]) for s in StatusCounts.__slots__)
        )
        assert summary.uptime_90d == whole.uptime
        month = await store.report(name, today - 29 * DAY, now)
        assert summary.uptime_30d == month.uptime


async def test_the_overview_figures_equal_the_reports_across_hours_and_midnight(
    db_url: str,
) -> None:
    first_now = MIDNIGHT - 3600 - 7 * 60 - 13.5  # 22:52:46.5, the day before
    later = MIDNIGHT + 2 * 3600 + 31 * 60 + 5.25  # 02:31:05.25, past midnight
    clock = [first_now]
    async with HealthStore(db_url, gap_after=GAP_AFTER) as store:
        await _write(store, START, first_now)
        history = FleetHistory(store, clock=lambda: clock[0])
        try:
            await _check(store, await _summaries(history), first_now)
            # Later: the same history reads on (hours closed, a day settled) and agrees
            # with the store, and with a history that reads it all afresh.
            await _write(store, first_now, later)
            clock[0] = later
            _, found = await history.read()
            await _check(store, found, later)
            fresh = FleetHistory(store, clock=lambda: clock[0])
            try:
                assert await _summaries(fresh) == found
            finally:
                await fresh.stop()
        finally:
            await history.stop()


async def test_the_service_page_figures(db_url: str) -> None:
    now = MIDNIGHT - 3600 - 7 * 60 - 13.5
    async with HealthStore(db_url, gap_after=GAP_AFTER) as store:
        await _write(store, START, now)
        found = await read_service(store, "db", "24h", now)
        seconds, bucket = WINDOWS["24h"]
        assert found.until == now
        assert found.since % bucket == 0
        assert now - found.since <= seconds
        assert len(found.buckets) == math.ceil((now - found.since) / bucket)
        report = found.report
        assert len(report.incidents) >= 3
        assert found.causes == tuple(
            None if incident.began_before else "HTTP 503" for incident in report.incidents
        )
        kinds = [segment.kind for segment in found.strip]
        assert kinds.count("unhealthy") == len(report.incidents)
        for segment in found.strip:
            assert segment.left >= 0
            assert segment.left + segment.width <= 1 + 1e-9


@pytest.mark.parametrize(
    ("since", "until", "bucket"),
    [
        (START + 3600 * 2, START + 3600 * 30, 3600.0),  # whole hours: aggregates only
        (START + 7.25, START + 3600 * 30 + 41.5, 600.0),  # raw results at the edges
        (START - 86400, START + 3600 * 3 + 1, 900.0),  # starts before anything
        (START + 100, START + 100, 60.0),  # empty
    ],
)
async def test_a_report_and_its_series_read_at_once_equal_both_read_apart(
    db_url: str, since: float, until: float, bucket: float
) -> None:
    async with HealthStore(db_url, gap_after=GAP_AFTER) as store:
        await _write(store, START, START + 3600 * 31)
        for name in NAMES:
            report, series = await store.report_series(name, since, until, bucket=bucket)
            assert report == await store.report(name, since, until)
            assert series == await store.series(name, since, until, bucket=bucket)


async def test_the_strip_marks_what_was_not_observed(db_url: str) -> None:
    now = START + 3 * 3600
    async with HealthStore(db_url, gap_after=GAP_AFTER) as store:
        await _write(store, START, START + 3600)  # then nothing for two hours
        found = await read_service(store, "api", "24h", now)
        unseen = [s for s in found.strip if s.kind == "none"]
        # Before the first result, and after the last: not observed.
        assert unseen[0].start == found.since
        assert unseen[-1].end is None
        assert unseen[-1].start <= START + 3600 + 600
        assert segments(found.report, found.buckets, now, now) == []
