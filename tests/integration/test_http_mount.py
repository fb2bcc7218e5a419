"""The HTTP face as an ASGI app of someone else's server: mounted under a prefix in a
Starlette application, and served alone by uvicorn with the lifespan protocol."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from healthmon import HealthMonitor, HealthStore
from healthmon.http import HttpApi, HttpSettings

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

TOKEN = "mount-token-0123456789"


@contextlib.asynccontextmanager
async def uvicorn_serving(app: Any, lifespan: Literal["on", "off"]) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan=lifespan, log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), task
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def test_mounted_under_a_prefix_with_the_applications_lifespan(db_path: Path) -> None:
    async with HealthStore(db_path) as store, HealthMonitor(0.1, store=store) as monitor:
        api = HttpApi(monitor, store, HttpSettings(token=TOKEN))

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            async with api:
                yield

        outer = Starlette(routes=[Mount("/health", app=api)], lifespan=lifespan)
        async with uvicorn_serving(outer, "on") as base, httpx.AsyncClient() as client:
            assert (await client.get(f"{base}/health/livez")).status_code == 200
            assert (await client.get(f"{base}/health/api/v1/cluster")).status_code == 401
            cluster = await client.get(
                f"{base}/health/api/v1/cluster", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert cluster.status_code == 200
            assert cluster.json()["running"] is True
        assert not api.started  # the application's lifespan stopped it


async def test_served_alone_it_follows_the_lifespan_protocol(db_path: Path) -> None:
    async with HealthStore(db_path) as store, HealthMonitor(0.1, store=store) as monitor:
        api = HttpApi(monitor, store, HttpSettings())
        async with uvicorn_serving(api, "on") as base, httpx.AsyncClient() as client:
            assert api.started
            assert (await client.get(f"{base}/api/v1/cluster/status")).status_code == 200
        assert not api.started
        # Not started: a clear 503, not a hang.
        async with uvicorn_serving(api, "off") as base, httpx.AsyncClient() as client:
            response = await client.get(f"{base}/api/v1/cluster/status")
            assert response.status_code == 503
            assert response.json()["error"] == "not_started"
