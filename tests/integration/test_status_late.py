"""Late results on the open status page (issue 15): a result committed after the rows it
belongs to were read reaches the overview's figures without a restart; and the first
view after a start is served at once, its figures marked as being read."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from healthmon import HealthCheckResult, HealthMonitor, HealthStatus, HealthStore
from healthmon.http import HttpApi, HttpServer, HttpSettings
from healthmon.http.pages.fleet import DAY
from healthmon.store import Coverage
from tests.conftest import http_service

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

TODAY = 1_800_000_000 // DAY * DAY + 20 * DAY  # a UTC midnight
NOW = TODAY + 13 * 3600 + 20 * 60 + 5.5  # 13:20:05.5
YESTERDAY = TODAY - DAY
LATE_AT = YESTERDAY + 20 * 3600  # yesterday 20:00: in the last 24 h, in the last 30 days


class _Api(HttpApi):
    """The app with its clock at NOW."""

    def now(self) -> float:
        return NOW


def _results(since: float, until: float, step: float) -> list[HealthCheckResult]:
    found, t = [], since
    while t < until:
        found.append(HealthCheckResult("api", HealthStatus.HEALTHY, 3.0, t))
        t += step
    return found


def _figures(html: str) -> tuple[str, str, str]:
    """The api row's 24 h, 30 d and 90 d uptime cells."""
    row = re.search(r'<tr data-service="api".*?</tr>', html, re.DOTALL)
    assert row is not None
    cells = re.findall(r'<td class="num[^"]*">([^<]*)</td>', row[0])
    return cells[0], cells[1], cells[2]


async def test_a_late_result_for_yesterday_reaches_the_open_page(db_path: Path) -> None:
    async with HealthStore(db_path) as store:
        writer = store.writer(flush_interval=0.02)
        writer.register_service("api", "http", None)
        await writer.start()
        for result in _results(YESTERDAY - 2 * DAY, NOW - 5, 60.0):
            writer.submit(result)
        assert await writer.flush()
        monitor = HealthMonitor(0.1, store=store)  # not running: the writer is ours
        monitor.add_service(http_service("api", "http://127.0.0.1:9/"))
        api = _Api(monitor, store, HttpSettings(port=0, token=None))
        try:
            async with HttpServer(api) as server:
                base = f"http://127.0.0.1:{server.port}"
                async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                    await api.pages.history.read()  # the page open, its history read
                    before = _figures((await client.get("/")).text)
                    days = (await client.get("/days", params={"service": "api"})).json()
                    assert before == ("100 %", "100 %", "100 %")
                    assert days[-2]["failed"] == 0

                    # 30 failures of yesterday evening, committed late (a retried batch).
                    for k in range(30):
                        writer.submit(
                            HealthCheckResult(
                                "api",
                                HealthStatus.UNHEALTHY,
                                4.0,
                                LATE_AT + k + 0.5,
                                error="HTTP 503",
                            )
                        )
                    assert await writer.flush()
                    assert store.late.version > 0
                    # The next reading (due every max_age; a view waits for it only
                    # briefly) reads those rows again: no restart.
                    await api.pages.history.read()
                    after = _figures((await client.get("/")).text)
                    days_after = (await client.get("/days", params={"service": "api"})).json()

                    hour_mark = NOW // 3600 * 3600
                    day = await store.report("api", hour_mark - 24 * 3600, NOW)
                    month = await store.report("api", TODAY - 29 * DAY, NOW)
                    assert day.counts.unhealthy == month.counts.unhealthy == 30
                    assert after[0] == _pct(day.uptime) != before[0]
                    assert after[1] == _pct(month.uptime) != before[1]
                    assert days_after[-2]["failed"] == 30
                    assert days_after[-2]["checks"] == days[-2]["checks"] + 30
        finally:
            await writer.stop()


def _pct(share: float | None) -> str:
    assert share is not None
    return f"{int(share * 100_000) / 1000:.3f} %"


async def test_the_first_view_waits_at_most_wait_and_marks_its_figures(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reading slower than `wait`: the first view is served meanwhile, every figure
    marked "reading…" (none shown from part of the rows); the next has them."""
    async with HealthStore(db_path) as store:
        writer = store.writer(flush_interval=0.02)
        writer.register_service("api", "http", None)
        await writer.start()
        for result in _results(YESTERDAY, NOW - 5, 60.0):
            writer.submit(result)
        assert await writer.flush()
        await writer.stop()
        monitor = HealthMonitor(0.1, store=store)
        monitor.add_service(http_service("api", "http://127.0.0.1:9/"))
        api = _Api(monitor, store, HttpSettings(port=0, token=None))
        gate = asyncio.Event()
        coverage = store.coverage

        async def slow_coverage() -> Coverage:  # a slow database: held back
            await gate.wait()
            return await coverage()

        monkeypatch.setattr(store, "coverage", slow_coverage)
        async with HttpServer(api) as server:
            base = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                first = (await client.get("/")).text
                assert _figures(first) == ("reading…", "reading…", "reading…")
                assert "The history is being read" in first
                gate.set()
                await api.pages.history.read()
                second = (await client.get("/")).text
                assert _figures(second) == ("100 %", "100 %", "100 %")
                assert "Figures as of" in second
