"""The status page in headless chromium: statuses, live changes, charts, escaping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
import pytest_asyncio

from healthmon import HealthCheckResult, HealthStatus, HealthStore, StatusTransition
from healthmon.targets import TargetServer
from tests.browser.conftest import ARTIFACTS, Console
from tests.conftest import http_service, wait_for
from tests.integration.http_helpers import Served, serve

if TYPE_CHECKING:
    from playwright.async_api import Browser, Locator, Page

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

EVIL = "<script>alert(1)</script>"
EVIL_CAUSE = '<img src=x onerror="window.__xss=1;alert(2)"><b>HTTP 503</b>'


async def _history(db_path: Path, url: str) -> None:
    """An hour of history of the service named EVIL, every 5 s, with one incident whose
    cause is HTML, written through the store's own writer (aggregates and all)."""
    now = time.time()
    start = now - 3600
    async with HealthStore(db_path) as store:
        writer = store.writer(flush_interval=0.05)
        writer.register_service(EVIL, "http", url)
        await writer.start()
        status: HealthStatus | None = None
        for i in range(int(3600 / 5) - 2):
            ts = start + i * 5
            down = 1200 <= i * 5 < 1500
            new = HealthStatus.UNHEALTHY if down else HealthStatus.HEALTHY
            error = EVIL_CAUSE if down else None
            result = HealthCheckResult(EVIL, new, 3.0 + (i % 7), ts, error=error)
            transition = None
            if new is not status:
                transition = StatusTransition(EVIL, status, new, ts, cause=error)
                status = new
            writer.submit(result, transition)
        await writer.flush()  # all of it now: stop() gives a flush only 2 s
        await writer.stop()


@pytest_asyncio.fixture
async def served(db_path: Path, targets: TargetServer, browser: Browser) -> AsyncIterator[Served]:
    """The pages served over a monitor; after `browser`, so that without one the test
    skips before anything starts."""
    await _history(db_path, targets.url("/healthy"))
    async with serve(db_path, targets.url("/healthy"), token=None) as served:
        monitor = served.monitor
        monitor.add_service(http_service("db", targets.url("/fail")))
        monitor.add_service(http_service("cache", targets.url("/scripted")))
        monitor.add_service(http_service(EVIL, targets.url("/healthy")))
        # Not served.flip(): the other services' first transitions move the feed too.
        served.agents.health["queue"] = "degraded"
        await monitor.check_agents_health(served.agents)
        await wait_for(lambda: served.api.feed.latest("agent:queue") is not None)
        names = {"web", "db", "cache", EVIL, "agent:queue"}
        await wait_for(lambda: names <= monitor.health_cache.keys())
        await wait_for(lambda: monitor.health_cache["db"].effective_status.value == "unhealthy")
        yield served


async def _open(browser: Browser, console: Console, url: str, *, javascript: bool = True) -> Page:
    context = await browser.new_context(
        viewport={"width": 1280, "height": 800}, java_script_enabled=javascript
    )
    page = await context.new_page()

    def on_console(message: object) -> None:
        if getattr(message, "type", "") == "error":
            console.errors.append(str(getattr(message, "text", message)))

    page.on("console", on_console)
    page.on("pageerror", lambda error: console.errors.append(str(error)))

    async def on_dialog(dialog: object) -> None:
        console.dialogs.append(str(getattr(dialog, "message", dialog)))
        await dialog.dismiss()  # type: ignore[attr-defined] # playwright's Dialog

    page.on("dialog", on_dialog)
    await page.goto(url)
    return page


async def wait_for_text(locator: Locator, text: str) -> None:
    deadline = time.monotonic() + 5
    while text not in (await locator.text_content() or ""):
        assert time.monotonic() < deadline, f"{text!r} not shown"
        await asyncio.sleep(0.05)


async def _statuses(page: Page) -> list[tuple[str, str]]:
    rows = await page.locator("#fleet tbody tr").all()
    found = []
    for row in rows:
        name = await row.get_attribute("data-service")
        badge = await row.locator(".st .badge").text_content()
        found.append((name or "", (badge or "").strip().lower()))
    return found


async def test_overview_lists_the_services_worst_first(
    served: Served, browser: Browser, console: Console
) -> None:
    page = await _open(browser, console, served.base + "/")
    await page.wait_for_selector("#live.on")  # connected to the event stream
    found = dict(await _statuses(page))
    cache = served.monitor.health_cache
    assert found == {name: cache[name].effective_status.value for name in cache}
    assert found["db"] == "unhealthy"
    assert found["agent:queue"] == "degraded"
    assert found["web"] == "healthy"
    order = [status for _, status in await _statuses(page)]
    severity = ["unhealthy", "degraded", "unknown", "healthy"]
    assert order == sorted(order, key=severity.index)  # worst first
    # The service with history has its bars and figures; the day's tooltip comes on hover.
    row = page.locator("#fleet tbody tr", has_text=EVIL)
    assert await row.locator("td.bars svg path").count() >= 1
    bars = row.locator("td.bars svg")
    box = await bars.bounding_box()
    assert box is not None
    await bars.hover(position={"x": box["width"] - 2, "y": 5})  # today
    tip = page.locator("#tip")
    await tip.wait_for(state="visible")
    await wait_for_text(tip, "% up,")  # the day's figures: uptime, checks, failed
    await bars.hover(position={"x": 2, "y": 5})  # 89 days ago
    await wait_for_text(tip, "not observed")
    await page.screenshot(path=ARTIFACTS / "overview.png", full_page=True)


async def test_a_target_that_fails_shows_unhealthy_within_3_s_and_a_lost_connection_is_told(
    served: Served, browser: Browser, console: Console, targets: TargetServer
) -> None:
    page = await _open(browser, console, served.base + "/")
    await page.wait_for_selector("#live.on")
    cache_row = page.locator("#fleet tbody tr", has_text="cache")
    assert await cache_row.locator(".badge").text_content() == "HEALTHY"
    targets.script(*[503] * 500)  # the target fails from its next check on
    flipped = time.monotonic()
    await cache_row.locator('.badge[data-status="unhealthy"]').wait_for(timeout=3000)
    assert time.monotonic() - flipped < 3.0
    assert "UNHEALTHY" in (await cache_row.locator(".badge").text_content() or "")
    await page.screenshot(path=ARTIFACTS / "overview-live.png", full_page=True)
    await served.server.stop()  # the connection drops; the page says so
    await page.wait_for_selector("#live.lost", timeout=10_000)
    assert "connection lost at" in (await page.locator("#live").text_content() or "")
    console.errors.clear()  # the browser logs each refused reconnection: expected here


async def test_the_service_page_draws_its_latency_chart_and_incidents(
    served: Served, browser: Browser, console: Console
) -> None:
    url = f"{served.base}/services/{quote(EVIL, safe='')}?window=1h"
    page = await _open(browser, console, url)
    chart = page.locator("#chart")
    await chart.locator("canvas").wait_for()
    assert await chart.get_attribute("data-points") == "60"  # 1 h of 1-minute buckets
    drawn = int(await chart.get_attribute("data-drawn") or 0)
    assert drawn >= 55  # an hour of history, every minute observed
    # The lines are on the canvas: count its coloured pixels (axes and grid are grey).
    coloured = await page.evaluate(
        """() => {
            const canvas = document.querySelector('#chart canvas');
            const context = canvas.getContext('2d');
            const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
            let n = 0;
            for (let i = 0; i < data.length; i += 4) {
                const high = Math.max(data[i], data[i + 1], data[i + 2]);
                const low = Math.min(data[i], data[i + 1], data[i + 2]);
                if (high - low > 100 && data[i + 3] > 200) n++;
            }
            return n;
        }"""
    )
    assert coloured > 1000  # three lines across the hour
    incidents = page.locator("table.incidents tbody tr")
    assert await incidents.count() == 1
    assert await incidents.locator("td").nth(3).text_content() == "UNHEALTHY"
    assert await incidents.locator("td").nth(4).text_content() == EVIL_CAUSE  # as text
    strip = page.locator(".strip .seg.k-unhealthy")
    assert await strip.count() == 1
    await page.screenshot(path=ARTIFACTS / "service.png", full_page=True)


async def test_html_in_names_and_errors_is_shown_as_text_and_never_runs(
    served: Served, browser: Browser, console: Console
) -> None:
    page = await _open(browser, console, served.base + "/")
    assert await page.locator("#fleet tbody th a", has_text=EVIL).count() == 1
    url = f"{served.base}/services/{quote(EVIL, safe='')}?window=1h"
    await page.goto(url)
    assert await page.locator("h1 .name").text_content() == EVIL
    assert await page.evaluate("() => window.__xss") is None
    assert await page.locator("script:not([src]):not([type='application/json'])").count() == 0
    assert await page.locator("img").count() == 0  # the cause's <img> is text, not an image
    assert not console.dialogs


async def test_the_pages_read_without_javascript(
    served: Served, browser: Browser, console: Console
) -> None:
    page = await _open(browser, console, served.base + "/", javascript=False)
    found = dict(await _statuses(page))
    assert found["db"] == "unhealthy"
    assert "need JavaScript" in (await page.locator("#live").text_content() or "")
    await page.goto(f"{served.base}/services/{quote(EVIL, safe='')}?window=1h")
    rows = page.locator("table.series tbody tr")
    assert await rows.count() == 60  # the chart's figures, as a table
    assert await page.locator("table.incidents tbody tr").count() == 1
    await page.screenshot(path=ARTIFACTS / "service-no-js.png", full_page=True)
