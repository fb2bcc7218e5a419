"""`/metrics` over a real socket: values from the monitor, and `promtool check metrics`."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from healthmon.targets import TargetServer
from tests.conftest import wait_for
from tests.integration.http_helpers import serve

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

PROMTOOL = shutil.which("promtool")
# .ci/run installs promtool and sets this: there, a missing promtool is a failure.
PROMTOOL_REQUIRED = os.environ.get("HEALTHMON_REQUIRE_PROMTOOL") == "1"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_read_the_monitor(targets: TargetServer, db_path: Path) -> None:
    async with serve(db_path, targets.url("/healthy"), metrics_max_age=0) as served:
        await wait_for(lambda: served.api.feed.latest("web") is not None)
        down = await served.flip("db", "unhealthy")
        response = await served.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        samples = _samples(response.text)
        web = (("service", "web"),)
        assert samples[("healthmon_service_status", (*web, ("status", "healthy")))] == 1
        assert samples[("healthmon_service_status", (*web, ("status", "unhealthy")))] == 0
        db = (("service", "agent:db"),)
        assert samples[("healthmon_service_status", (*db, ("status", "unhealthy")))] == 1
        assert samples[("healthmon_service_check_success", web)] == 1
        assert samples[("healthmon_service_check_success", db)] == 0
        assert 0 < samples[("healthmon_service_check_duration_seconds", web)] < 5
        assert samples[("healthmon_service_status_since_timestamp_seconds", db)] == (
            down.transition.timestamp
        )
        checks = served.monitor.check_counts["web"]
        counted = samples[("healthmon_service_checks_total", (*web, ("status", "healthy")))]
        assert 1 <= counted <= checks[next(iter(checks))] + 20
        # (a busy machine may make a slot be skipped: the page says what the monitor had)
        missed = samples[("healthmon_service_missed_checks_total", web)]
        assert 0 <= missed <= served.monitor.missed_checks["web"]
        assert samples[("healthmon_cluster_status", (("status", "unhealthy"),))] == 1
        assert samples[("healthmon_services", (("status", "healthy"),))] == 1
        assert samples[("healthmon_last_transition_id", ())] == down.id
        assert samples[("healthmon_store_healthy", ())] == 1
        assert samples[("healthmon_store_committed_results_total", ())] >= 2
        assert samples[("healthmon_store_dropped_results_total", ())] == 0
        assert samples[("healthmon_monitor_running", ())] == 1
        assert ("process_resident_memory_bytes", ()) in samples
        assert ("healthmon_check_workers", ()) not in samples  # none configured


async def test_metrics_count_the_check_workers(targets: TargetServer, db_path: Path) -> None:
    async with serve(db_path, targets.url("/healthy"), metrics_max_age=0, check_workers=2) as s:
        await wait_for(lambda: s.api.feed.latest("web") is not None)
        samples = _samples((await s.client.get("/metrics")).text)
        assert samples[("healthmon_check_workers", ())] == 2
        assert samples[("healthmon_check_worker_restarts_total", ())] == 0
        assert samples[("healthmon_service_check_success", (("service", "web"),))] == 1


async def test_metrics_are_rendered_once_per_max_age(db_path: Path) -> None:
    async with serve(db_path, metrics_max_age=30) as served:
        first = (await served.client.get("/metrics")).text
        await served.flip("a", "unhealthy")
        assert (await served.client.get("/metrics")).text == first
        served.api.metrics._max_age = 0  # what a scrape after max_age sees
        assert 'service="agent:a"' in (await served.client.get("/metrics")).text


@pytest.mark.skipif(
    PROMTOOL is None and not PROMTOOL_REQUIRED,
    reason="promtool is not installed (Debian: apt-get install prometheus); .ci/run installs it",
)
async def test_promtool_finds_the_exposition_valid(
    targets: TargetServer, db_path: Path, tmp_path: Path
) -> None:
    assert PROMTOOL is not None, "HEALTHMON_REQUIRE_PROMTOOL=1 but promtool is not on PATH"
    served_by = serve(db_path, targets.url("/healthy"), metrics_max_age=0, check_workers=1)
    async with served_by as served:
        await wait_for(lambda: served.api.feed.latest("web") is not None)
        await served.flip("db", "degraded")
        await served.flip('weird "name"\\ with\nnewline', "unhealthy")
        text = (await served.client.get("/metrics")).content
    checked = await asyncio.to_thread(
        subprocess.run,
        [PROMTOOL, "check", "metrics"],
        input=text,
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert checked.stdout.decode().strip() == "", checked.stdout.decode()
    assert b"healthmon_check_worker_restarts_total 0.0" in text  # checked with the rest
