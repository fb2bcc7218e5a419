"""`healthmon status` shows the confirmed status: UNKNOWN until there is one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from healthmon import HealthMonitor, HealthStatus, HealthStore, ServiceDefinition
from healthmon.cli.status import EXIT_CODES, read_status
from tests.conftest import wait_for


@pytest.mark.parametrize(
    "overrides",
    [{"start_period": 60.0}, {"failure_threshold": 1000}],
    ids=["start-period", "failure-threshold"],
)
@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_status_during_a_start_period_is_unknown_not_an_outage(
    tmp_path: Path, refused_url: str, overrides: dict[str, Any]
) -> None:
    # Issue 11 #4: status showed the newest result's `unhealthy` (exit 5) while no
    # status was confirmed yet: an orchestrator polling it saw an outage.
    async with HealthStore(tmp_path / "health.db") as store:
        monitor = HealthMonitor(check_interval=0.05, store=store)
        monitor.add_service(ServiceDefinition("api", "http", "m", [], refused_url, **overrides))
        async with monitor:
            await wait_for(lambda: (monitor.store_stats or _NONE).committed_results >= 3)
            report = await read_status(store, "health.db")
    (service,) = report.services
    assert service.last is not None
    assert service.last.status is HealthStatus.UNHEALTHY
    assert service.status is HealthStatus.UNKNOWN
    assert report.cluster_status is HealthStatus.UNKNOWN
    assert report.exit_code == EXIT_CODES[HealthStatus.UNKNOWN] == 3


class _NoStats:
    committed_results = 0


_NONE = _NoStats()
