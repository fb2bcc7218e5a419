"""The web stack's own cost per request: `python -m bench.http.stack`.

An in-process ASGI call (no socket, no server: what the framework adds), the same
JSON body, a bare ASGI function as the baseline, Starlette (what healthmon uses) and
FastAPI if it is installed (it is not a dependency: run this from a virtualenv that
has it, e.g. `python -m venv /tmp/fa && /tmp/fa/bin/pip install fastapi httpx`, with
PYTHONPATH pointing at this checkout). Best of 5 runs of 5,000 requests.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["main"]

PATH = "/api/v1/cluster/status"
BODY = {
    "status": "healthy",
    "index": 42,
    "running": True,
    "service_count": 100,
    "counts": {"healthy": 99, "unhealthy": 1, "degraded": 0, "unknown": 0},
}
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def _bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = json.dumps(BODY, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _starlette_endpoint(request: Request) -> Response:
    request.query_params.get("index")
    body = json.dumps(BODY, separators=(",", ":")).encode()
    return Response(body, media_type="application/json")


def _apps() -> dict[str, App]:
    apps: dict[str, App] = {
        "bare ASGI": _bare,
        "Starlette": Starlette(routes=[Route(PATH, _starlette_endpoint, methods=["GET"])]),
    }
    try:
        fastapi = importlib.import_module("fastapi")
    except ImportError:
        return apps
    app = fastapi.FastAPI()

    async def endpoint(index: int | None = None) -> dict[str, Any]:
        return BODY

    app.get(PATH)(endpoint)
    apps["FastAPI"] = app
    return apps


async def _run() -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"index=7",
        "headers": [(b"host", b"x")],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    count = 5000
    for name, app in _apps().items():
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(count):
                await app(dict(scope), receive, send)
            best = min(best, (time.perf_counter() - started) / count)
        print(f"{name:<10} {best * 1e6:7.1f} µs/request")


def main() -> None:
    asyncio.run(_run())


if __name__ == "__main__":
    main()
