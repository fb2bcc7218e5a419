"""A monitor with a store, served over real sockets by the HTTP face, for the tests.

Transitions are made on demand through an agent (`Served.flip`), so that a test
knows exactly which transition it waits for; one HTTP service checks a real target.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from healthmon import HealthMonitor, HealthStore
from healthmon.http import HttpApi, HttpServer, HttpSettings
from healthmon.store import TransitionRecord
from tests.conftest import http_service, wait_for

__all__ = ["TOKEN", "Agents", "Served", "serve"]

TOKEN = "test-token-0123456789"


@dataclass
class Agents:
    """An agents adapter whose reports the test sets."""

    health: dict[str, str] = field(default_factory=dict)

    def get_agent_statuses(self) -> dict[str, dict[str, str]]:
        return {name: _REPORTS[health] for name, health in self.health.items()}


_REPORTS = {  # reports that agent_health_status() reads as each status
    "healthy": {"status": "running", "health": "healthy"},
    "degraded": {"status": "running", "health": "degraded"},
    "unknown": {"status": "running"},
    "unhealthy": {"status": "stopped"},
}


@dataclass
class Served:
    monitor: HealthMonitor
    store: HealthStore
    api: HttpApi
    server: HttpServer
    client: httpx.AsyncClient
    agents: Agents
    base: str

    async def flip(self, agent: str, health: str) -> TransitionRecord:
        """Report `agent` as `health` (a change) and wait until the feed has read the
        committed transition; return it."""
        before = self.api.feed.index
        self.agents.health[agent] = health
        await self.monitor.check_agents_health(self.agents)
        await wait_for(lambda: self.api.feed.index > before)
        record = self.api.feed.latest(f"agent:{agent}")
        assert record is not None
        return record


@contextlib.asynccontextmanager
async def serve(
    db_path: Path,
    target_url: str | None = None,
    *,
    token: str | None = TOKEN,
    check_workers: int = 0,
    **settings: Any,
) -> AsyncIterator[Served]:
    async with HealthStore(db_path) as store:
        monitor = HealthMonitor(0.1, store=store, flush_interval=0.02, check_workers=check_workers)
        if target_url is not None:
            monitor.add_service(http_service("web", target_url))
        agents = Agents()
        async with monitor:
            api = HttpApi(monitor, store, HttpSettings(port=0, token=token, **settings))
            async with HttpServer(api) as server:
                base = f"http://127.0.0.1:{server.port}"
                headers = {} if token is None else {"Authorization": f"Bearer {token}"}
                async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
                    yield Served(monitor, store, api, server, client, agents, base)
