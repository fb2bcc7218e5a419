"""API clients in a process of their own: `python -m bench.http.load PARAMS_JSON OUT`.

Their CPU is theirs, not the monitor's: the process measured (bench/http/worker.py)
serves them over real sockets. Times are `time.monotonic()`, the system's
CLOCK_MONOTONIC, the same clock in every process: a receipt here and a commit there
can be subtracted.

Modes:
- `mixed`: `clients` clients, each looping over the cluster status, /metrics and one
  service's 24 h report, `think` seconds between requests (0: as fast as answered).
- `fleet`: `streams` event-stream clients and `polls` blocking-query clients
  (`/api/v1/cluster/status?index=N&wait=30s`, re-issued at once), noting when each
  transition or answer arrives; and one prober timing `probe_paths` one request at a
  time. Over raw connections (bench/http/raw.py), so that the times are the server's.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.http.raw import RawConnection

__all__ = ["main"]


async def _mixed(client: httpx.AsyncClient, p: dict[str, Any], deadline: float) -> dict[str, Any]:
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)

    async def one(index: int) -> None:
        paths = {
            "cluster_status": "/api/v1/cluster/status",
            "metrics": "/metrics",
            "report_24h": f"/api/v1/services/{p['service_names'][index % len(p['service_names'])]}"
            "/report?since=24h",
        }
        mix = [(kind, paths[kind]) for kind in p.get("mix", list(paths))]
        while time.monotonic() < deadline:
            for kind, path in mix:
                started = time.monotonic()
                try:
                    response = await client.get(path)
                    why = str(response.status_code)
                except httpx.HTTPError as exc:
                    why = type(exc).__name__
                if why == "200":
                    latencies[kind].append(time.monotonic() - started)
                else:
                    errors[f"{kind} {why}"] += 1
                if p["think"]:
                    await asyncio.sleep(p["think"])

    await asyncio.gather(*(one(i) for i in range(p["clients"])))
    return {"latencies": latencies, "errors": errors}


async def _fleet(p: dict[str, Any], deadline: float) -> dict[str, Any]:
    """Over raw connections (bench/http/raw.py): the times are the server's, not
    httpx's."""
    received: list[tuple[str, float, float]] = []  # (service, transition ts, received at)
    answers: list[tuple[int, float, float]] = []  # (index, sent at, received at)
    probes: dict[str, list[tuple[float, float]]] = defaultdict(list)  # (sent at, took)
    url = urlsplit(p["base"])
    host, port = url.hostname or "127.0.0.1", url.port or 80

    def connection() -> RawConnection:
        return RawConnection(host, port, p["token"])

    async def stream() -> None:
        async with connection() as http:
            pending = b""
            async for chunk in http.stream("/api/v1/events"):
                got = time.monotonic()
                *events, pending = (pending + chunk).split(b"\n\n")
                for event in events:
                    for line in event.split(b"\n"):
                        if line.startswith(b"data: "):
                            data = json.loads(line[6:])
                            received.append((data["service"], data["ts"], got))

    async def poll() -> None:
        async with connection() as http:
            _, headers, _ = await http.get("/api/v1/cluster/status")
            index = int(headers["x-healthmon-index"])
            while time.monotonic() < deadline:
                sent = time.monotonic()
                _, headers, _ = await http.get(f"/api/v1/cluster/status?index={index}&wait=30s")
                got = time.monotonic()
                new = int(headers["x-healthmon-index"])
                if new > index:
                    answers.append((new, sent, got))
                index = new

    async def probe() -> None:
        async with connection() as http:
            while time.monotonic() < deadline:
                for path in p["probe_paths"]:
                    started = time.monotonic()
                    status, _, _ = await http.get(path)
                    if status == 200:
                        probes[path].append((started, time.monotonic() - started))
                await asyncio.sleep(p["probe_pause"])

    tasks = [asyncio.create_task(stream()) for _ in range(p["streams"])]
    tasks += [asyncio.create_task(poll()) for _ in range(p["polls"])]
    if p["probe_paths"]:
        tasks.append(asyncio.create_task(probe()))
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    for task in tasks:
        task.cancel()
    ended = await asyncio.gather(*tasks, return_exceptions=True)
    # A client that failed is told, not left out of the figures unseen.
    errors = [repr(e) for e in ended if isinstance(e, Exception)]
    return {"received": received, "answers": answers, "probes": probes, "errors": errors}


async def run(p: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + p["seconds"]
    cpu = time.process_time()
    if p["mode"] == "fleet":
        out = await _fleet(p, deadline)
    else:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(
            base_url=p["base"],
            headers={"Authorization": f"Bearer {p['token']}"},
            limits=limits,
            timeout=60,
        ) as client:
            out = await _mixed(client, p, deadline)
    out["load_cpu_s"] = time.process_time() - cpu
    return out


def main() -> None:
    params, out = sys.argv[1:3]
    p = json.loads(params)
    signal.alarm(int(p["seconds"]) + 120)
    Path(out).write_text(json.dumps(asyncio.run(run(p))))


if __name__ == "__main__":
    main()
