"""The status page over real sockets, without a browser: routes, paging and filter,
bad input, the token, the static files, the demo's address."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest

from healthmon.demo import run_demo
from healthmon.http.pages import PAGE_SIZE
from healthmon.targets import TargetServer
from tests.conftest import http_service, wait_for
from tests.integration.http_helpers import TOKEN, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def test_the_pages_and_their_files(db_path: Path, targets: TargetServer) -> None:
    async with serve(db_path, targets.url("/healthy"), token=None) as served:
        await wait_for(lambda: "web" in served.monitor.health_cache)
        # Its first results committed, and the history read since (a view shows the last
        # reading, begun at the start and up to max_age old: it may be from before them).
        await wait_for(lambda: (served.monitor.store_stats or _none()).committed_results > 0)
        await served.api.pages.history.read()
        client = served.client
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert 'data-service="web"' in page.text
        service = await client.get("/services/web?window=7d")
        assert service.status_code == 200
        assert 'id="chart-data"' in service.text
        for path in ("/static/status.js", "/static/status.css",
                     "/static/vendor/uplot/uPlot.iife.min.js"):  # fmt: skip
            assert (await client.get(path)).status_code == 200, path
        days = (await client.get("/days", params={"service": "web"})).json()
        assert len(days) == 90
        assert days[-1]["checks"] >= 0
        assert (await client.get("/services/nope")).status_code == 404
        assert (await client.get("/services/web?window=2y")).status_code == 400
        assert (await client.get("/?page=2")).status_code == 400  # one page only
        assert (await client.get("/days")).status_code == 400
        assert (await client.get("/days?service=nope")).status_code == 404
        assert (await client.post("/")).status_code == 405


def _none() -> Any:
    raise AssertionError("the monitor has no store")


async def test_many_services_are_paged_worst_first_and_filtered(
    db_path: Path, targets: TargetServer
) -> None:
    async with serve(db_path, token=None) as served:
        monitor = served.monitor
        for i in range(PAGE_SIZE + 20):
            path = "/fail" if i == PAGE_SIZE + 10 else "/healthy"
            monitor.add_service(http_service(f"svc-{i:03d}", targets.url(path)))
        await wait_for(lambda: len(monitor.health_cache) == PAGE_SIZE + 20, timeout=20)
        first = (await served.client.get("/")).text
        assert first.count("<tr data-service=") == PAGE_SIZE
        assert first.index(f'data-service="svc-{PAGE_SIZE + 10:03d}"') > 0  # failing: page 1
        second = (await served.client.get("/?page=2")).text
        assert second.count("<tr data-service=") == 20
        found = (await served.client.get("/", params={"q": "SVC-00"})).text
        assert found.count("<tr data-service=") == 10


async def test_the_pages_need_the_token_when_one_is_set(
    db_path: Path, targets: TargetServer
) -> None:
    async with serve(db_path, targets.url("/healthy"), token=TOKEN) as served:
        async with httpx.AsyncClient(base_url=served.base) as anonymous:
            assert (await anonymous.get("/")).status_code == 401
        assert (await served.client.get("/")).status_code == 200


async def test_the_demo_serves_the_page_and_prints_its_address(tmp_path: Path) -> None:
    out = io.StringIO()
    run = await run_demo(2.0, tmp_path / "demo.db", out, live=False, http=("127.0.0.1", 0))
    text = out.getvalue()
    assert "Status page: http://127.0.0.1:" in text
    assert run.services
