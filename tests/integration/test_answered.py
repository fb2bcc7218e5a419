"""`answered`: decided by whether an HTTP response arrived, not by the error's text."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from healthmon import CheckPolicy, HealthMonitor, HealthStore, ServiceDefinition
from healthmon.targets import TargetServer


def stored_answered(db_path: Path) -> dict[str, bool]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT service, answered FROM results_view").fetchall()
    conn.close()
    return {name: bool(answered) for name, answered in rows}


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_answered_means_an_http_response_arrived(
    targets: TargetServer, refused_url: str, db_path: Path
) -> None:
    # Issue 11 #3: HTTP 200 with {"status": "DOWN"} was stored as not answered, so its
    # latency was left out of the statistics.
    cases: dict[str, tuple[str, dict[str, Any], bool]] = {
        "body-down": ("/json?status=DOWN", {}, True),
        "health-json-fail": ("/health+json?status=fail", {}, True),
        "actuator-down": ("/actuator?status=DOWN", {}, True),
        "http-503": ("/status/503", {}, True),
        "body-over-cap": ("/big?bytes=5000", {"max_body_bytes": 1000}, True),
        "too-many-redirects": ("/redirect-loop", {"follow_redirects": True}, True),
        "healthy": ("/healthy", {}, True),
        "slow": ("/slow?ms=30", {"degraded_after_ms": 1.0}, True),
        "times-out": ("/hang", {"timeout": 0.2}, False),
        "mid-body-timeout": ("/drip?interval=0.15", {"timeout": 0.3}, False),
    }
    async with HealthStore(db_path) as store:
        monitor = HealthMonitor(policy=CheckPolicy(timeout=2.0), store=store)
        for name, (path, overrides, _) in cases.items():
            monitor.add_service(
                ServiceDefinition(name, "http", "m", [], targets.url(path), **overrides)
            )
        monitor.add_service(ServiceDefinition("refused", "http", "m", [], refused_url))
        errors = {name: (await monitor.check_health(name)).error for name in monitor.services}
        await monitor.stop_monitoring()
        report = await store.report("body-down", 0)
    expected = {name: answered for name, (_, _, answered) in cases.items()} | {"refused": False}
    assert stored_answered(db_path) == expected, errors
    assert errors["body-down"] == "body status DOWN"
    assert errors["body-over-cap"] == "body over 1000 bytes"
    assert errors["too-many-redirects"] == "too many redirects"
    assert report.latency.count == 1  # an answered failure has a latency


@pytest.mark.parametrize("client", ["healthmon's", "the application's own"])
@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_answered_is_the_same_whichever_client_checks(
    targets: TargetServer, refused_url: str, client: str
) -> None:
    # Review of issue 11: `answered` came from a mark left by healthmon's own transport,
    # so through an application's own httpx client a connection closed mid-body (the
    # headers had come) was not answered, though its error says it was.
    cases = {
        "/reset": ("connection closed mid-body", True),
        "/redirect-loop": ("too many redirects", True),
        "/status/503": ("HTTP 503", True),
        "/hang": ("timeout after 300 ms", False),
    }
    async with contextlib.AsyncExitStack() as stack:
        own = None
        if client != "healthmon's":
            own = await stack.enter_async_context(httpx.AsyncClient())
        monitor = HealthMonitor(policy=CheckPolicy(timeout=0.3), http_client=own)
        for path in cases:
            url = targets.url(path)
            monitor.add_service(
                ServiceDefinition(path, "http", "m", [], url, follow_redirects=True)
            )
        monitor.add_service(ServiceDefinition("refused", "http", "m", [], refused_url))
        results = {name: await monitor.check_health(name) for name in monitor.services}
    expected = cases | {"refused": ("connection refused", False)}
    assert {name: (r.error, r.answered) for name, r in results.items()} == expected
