"""Bare HTTP clients against the same targets: the baselines the monitor is compared with.

- `run_open_loop`: aiohttp at the monitor's schedule (one task per service, slot k
  due at start + k * interval, overrun slots skipped, as FixedRateSchedule does),
  so that "CPU per request" is measured at the same request rate as the monitor's
  "CPU per check". The loop does the least a check must: GET, read the body, look
  at the status code.
- `run_closed_loop`: `concurrency` workers, each sending its next request as soon as
  the previous answer is read, through one of several HTTP stacks: the figures the
  choice of the monitor's HTTP client rests on.
- `run_client_cost`: CPU per `AsyncClient.get()` over a transport that answers from
  memory: what httpx's client costs by itself, whatever the network stack under it.

aiohttp is healthmon's dependency; httpx-aiohttp is in the `bench` extra (and `dev`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from bench.measure import LatenessLog
from healthmon.probe import CheckClient, new_http_client

__all__ = ["STACKS", "run_client_cost", "run_closed_loop", "run_open_loop"]

_TIMEOUT_S = 5.0  # as the monitor's default check_timeout


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}/healthy"


async def run_open_loop(
    ports: list[int],
    services: int,
    hz: float,
    warmup: float,
    duration: float,
    *,
    stagger: bool = False,
) -> dict[str, Any]:
    """aiohttp, one shared session, each service on its own fixed-rate schedule.

    Without `stagger` every schedule starts at once, as the monitor's do, so all
    services' slots fall on the same instants and each slot is a burst of `services`
    requests; with it, service i's slots are offset by i/services of the interval.
    """
    loop = asyncio.get_running_loop()
    interval = 1.0 / hz
    lateness = LatenessLog(interval)
    done = [0, 0]  # requests, answered 200

    async def service(session: aiohttp.ClientSession, key: int, url: str) -> None:
        start, index = loop.time() + (key / services * interval if stagger else 0.0), 0
        while True:
            now = loop.time()
            behind = now - (start + index * interval)
            if behind >= interval:  # skip whole slots missed, as the monitor does
                index += math.floor(behind / interval)
            slot = start + index * interval
            if slot > now:
                await asyncio.sleep(slot - now)
            index += 1
            lateness.record(key, slot, loop.time())
            try:
                async with session.get(url) as response:
                    await response.read()
                    done[1] += response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                pass
            done[0] += 1

    # One connection per service, as the monitor's client keeps: no pool limit.
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [
            asyncio.create_task(service(session, key, _url(port)))
            for key, port in enumerate(ports[:services])
        ]
        try:
            await asyncio.sleep(warmup)
            requests0, ok0 = done
            t0, cpu0 = loop.time(), time.process_time()
            await asyncio.sleep(duration)
            t1, cpu1 = loop.time(), time.process_time()
            requests1, ok1 = done
            await asyncio.sleep(0.3)  # let slots due just before t1 be logged
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    requests = requests1 - requests0
    return {
        "services": services,
        "hz": hz,
        "stagger": stagger,
        "window_s": t1 - t0,
        "cpu_s": cpu1 - cpu0,
        "requests": requests,
        "requests_per_s": requests / (t1 - t0),
        "ok_fraction": (ok1 - ok0) / requests if requests else None,
        "cpu_per_request_us": (cpu1 - cpu0) / requests * 1e6 if requests else None,
        "lateness": lateness.summary(t0, t1),
    }


Get = Callable[[int], Awaitable[int]]
"""Send one GET to the worker's target; return the status code."""


@dataclass(frozen=True)
class Stack:
    label: str
    open: Callable[[list[str]], contextlib.AbstractAsyncContextManager[Get]]


@contextlib.asynccontextmanager
async def _httpx_shared(
    urls: list[str], factory: Callable[[], httpx.AsyncClient]
) -> AsyncIterator[Get]:
    async with factory() as client:

        async def get(worker: int) -> int:
            response = await client.get(urls[worker], timeout=_TIMEOUT_S)
            return response.status_code

        yield get


@contextlib.asynccontextmanager
async def _httpx_per_service(
    urls: list[str], factory: Callable[[], httpx.AsyncClient]
) -> AsyncIterator[Get]:
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(factory()) for _ in urls]

        async def get(worker: int) -> int:
            response = await clients[worker].get(urls[worker], timeout=_TIMEOUT_S)
            return response.status_code

        yield get


@contextlib.asynccontextmanager
async def _aiohttp(urls: list[str]) -> AsyncIterator[Get]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def get(worker: int) -> int:
            async with session.get(urls[worker]) as response:
                await response.read()
                status: int = response.status
                return status

        yield get


@contextlib.asynccontextmanager
async def _raw_streams(urls: list[str]) -> AsyncIterator[Get]:
    """Hand-written HTTP/1.1 over asyncio streams: the floor any client sits on."""
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for url in urls:
            parts = httpx.URL(url)
            connections.append(await asyncio.open_connection(parts.host, parts.port))
        requests = [
            f"GET {httpx.URL(url).raw_path.decode()} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
            for url in urls
        ]

        async def get(worker: int) -> int:
            reader, writer = connections[worker]
            writer.write(requests[worker])
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            return int(head.split(b" ", 2)[1])

        yield get
    finally:
        for _, writer in connections:
            writer.close()


def _plain() -> httpx.AsyncClient:
    """httpx as it comes (default pool limits: 100 connections, 20 kept alive)."""
    return httpx.AsyncClient(follow_redirects=False, trust_env=False)


def _unlimited_pool() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    return httpx.AsyncClient(follow_redirects=False, trust_env=False, limits=limits)


def _aiohttp_transport() -> httpx.AsyncClient:
    return httpx.AsyncClient(follow_redirects=False, trust_env=False, transport=AiohttpTransport())


STACKS: dict[str, Stack] = {
    "httpx-shared": Stack(
        "httpx AsyncClient, one shared, default pool limits",
        lambda urls: _httpx_shared(urls, _plain),
    ),
    "httpx-shared-unlimited": Stack(
        "httpx AsyncClient, one shared, no pool limits",
        lambda urls: _httpx_shared(urls, _unlimited_pool),
    ),
    "httpx-per-service": Stack(
        "httpx AsyncClient, one per service", lambda urls: _httpx_per_service(urls, _plain)
    ),
    "healthmon-per-service": Stack(
        "healthmon.probe.new_http_client(), one per service (what the monitor uses)",
        lambda urls: _httpx_per_service(urls, new_http_client),
    ),
    "httpx-aiohttp": Stack(
        "httpx AsyncClient over httpx-aiohttp's AiohttpTransport, one shared",
        lambda urls: _httpx_shared(urls, _aiohttp_transport),
    ),
    "aiohttp": Stack("aiohttp ClientSession, one shared (bare baseline)", _aiohttp),
    "raw-streams": Stack("raw asyncio streams, one connection per worker", _raw_streams),
}


async def run_closed_loop(
    stack: str, ports: list[int], concurrency: int, warmup: float, duration: float
) -> dict[str, Any]:
    """`concurrency` workers, worker i against port i, as fast as answers come."""
    loop = asyncio.get_running_loop()
    urls = [_url(ports[i % len(ports)]) for i in range(concurrency)]
    done = [0, 0]  # requests, answered 200

    async with STACKS[stack].open(urls) as get:

        async def worker(index: int) -> None:
            while True:
                try:
                    # Not `done[1] += await ...`: that reads done[1] before awaiting and
                    # writes back a stale sum when other workers counted meanwhile.
                    ok = await get(index) == 200
                    done[1] += ok
                except (httpx.HTTPError, aiohttp.ClientError, OSError, TimeoutError):
                    await asyncio.sleep(0.01)  # do not spin on a broken connection
                done[0] += 1

        tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
        try:
            await asyncio.sleep(warmup)
            requests0, ok0 = done
            t0, cpu0 = loop.time(), time.process_time()
            await asyncio.sleep(duration)
            t1, cpu1 = loop.time(), time.process_time()
            requests1, ok1 = done
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    requests = requests1 - requests0
    return {
        "stack": stack,
        "label": STACKS[stack].label,
        "concurrency": concurrency,
        "window_s": t1 - t0,
        "requests": requests,
        "requests_per_s": requests / (t1 - t0),
        "ok_fraction": (ok1 - ok0) / requests if requests else None,
        "cpu_per_request_us": (cpu1 - cpu0) / requests * 1e6 if requests else None,
        "cpu_share": (cpu1 - cpu0) / (t1 - t0),
    }


class _InMemory(httpx.AsyncBaseTransport):
    """Answers every request as the targets do, without I/O."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers=[(b"content-type", b"application/json"), (b"content-length", b"16")],
            content=b'{"status":"ok"}\n',
        )


async def run_client_cost(gets: int) -> dict[str, Any]:
    """CPU µs per `get()` (and reading its body) of httpx's client as it comes and of
    the monitor's (which keeps no cookies), both over `_InMemory`."""
    clients = {
        "httpx.AsyncClient": httpx.AsyncClient(transport=_InMemory(), trust_env=False),
        "healthmon CheckClient": CheckClient(transport=_InMemory(), trust_env=False),
    }
    figures: dict[str, Any] = {}
    for name, client in clients.items():
        async with client:
            for _ in range(gets // 10):  # warm-up
                await client.get(_url(0), timeout=_TIMEOUT_S)
            cpu0 = time.process_time()
            for _ in range(gets):
                await client.get(_url(0), timeout=_TIMEOUT_S)
            figures[name] = (time.process_time() - cpu0) / gets * 1e6
    return {"cpu_per_get_us": figures}
