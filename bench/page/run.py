"""The status page benchmark: a fleet of N services with 90 days of 20 Hz history
(fill.py), then the pages' server-side times, against a bare route of the same app
in the same run. Prints tables; asserts nothing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import text

from bench.page.fill import Fleet, fill_fleet
from healthmon import HealthCheckResult, HealthMonitor, HealthStatus, HealthStore
from healthmon.http import HttpApi, HttpServer, HttpSettings, parse_listen
from healthmon.http.pages.figures import read_service
from healthmon.model import ServiceDefinition

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.page", description=__doc__)
    parser.add_argument("--services", type=int, default=1000, help="services (1000)")
    parser.add_argument("--repeat", type=int, default=15, help="timings per figure (15)")
    parser.add_argument("--keep", type=Path, help="keep (or reuse) the filled database here")
    parser.add_argument(
        "--serve",
        metavar="HOST:PORT",
        help="instead of measuring, serve the status page over the fleet until Ctrl-C",
    )
    args = parser.parse_args(argv)
    asyncio.run(_run(args))
    return 0


async def _run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="healthmon-bench-page-") as folder:
        path = args.keep or Path(folder) / "fleet.db"
        fresh = not path.exists()
        async with HealthStore(path) as store:
            if fresh:
                started = time.perf_counter()
                fleet = await fill_fleet(store.engine, args.services, time.time())
                async with store.engine.connect() as conn:  # as the writer's checkpoints
                    await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))  # leave it
                print(f"Filled {path} in {time.perf_counter() - started:.0f} s: {fleet.rows}")
            else:
                names = await store.service_names()
                async with store.engine.connect() as conn:
                    newest = await conn.scalar(text("SELECT max(ts_us) FROM check_results"))
                failing = [
                    n for n, s in (await store.current_statuses()).items() if s.value != "healthy"
                ]
                fleet = Fleet(names, (newest or 0) / 1e6 + 1e-3, failing, {})
                print(f"Reusing {path} ({len(names)} services)")
            print(f"({path.stat().st_size / 1e6:,.0f} MB)\n")
            if args.serve:
                await _serve(store, fleet, args.serve)
            else:
                await _measure(store, fleet, args.repeat)


def _monitor(fleet: Fleet, store: HealthStore) -> HealthMonitor:
    """A monitor with the fleet registered (not running: no checks), its cache holding
    each service's latest result as the fleet's data has it."""
    monitor = HealthMonitor(0.05, store=store)
    failing = set(fleet.failing)
    for i, name in enumerate(fleet.names):
        monitor.add_service(
            ServiceDefinition(name, "http", "bench", [], f"http://127.0.0.1:9/{name}")
        )
        status = HealthStatus.UNHEALTHY if name in failing else HealthStatus.HEALTHY
        monitor.health_cache[name] = HealthCheckResult(
            name, status, 4.0 + i % 7, fleet.now, error="HTTP 503" if name in failing else None
        )
    return monitor


async def _measure(store: HealthStore, fleet: Fleet, repeat: int) -> None:
    monitor = _monitor(fleet, store)
    api = _Api(monitor, store, HttpSettings())
    # The pages' clock runs from the data's "now" (the end of the fill), as if the
    # monitor had just written the newest results.
    api.zero = fleet.now - time.time()
    transport = httpx.ASGITransport(app=api)
    rows: list[tuple[str, str, str]] = []
    history = api.pages.history
    started = time.perf_counter()
    await api.start()  # begins the first reading in the background
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        cold = await _get(client, "/")
        marked = "reading…" in (await client.get("/")).text
        rows.append((f"overview, first page view ({'figures reading' if marked else 'read'})",
                     _ms([cold[0]]), cold[1]))  # fmt: skip
        # Polled: the reading publishes its two steps without an event to wait on.
        while history._reading is None:  # noqa: ASYNC110 - the 24 h figures read
            await asyncio.sleep(0.005)
        rows.append(("first reading done (24 h figures), from start",
                     _ms([time.perf_counter() - started]), ""))  # fmt: skip
        while not history.ready:  # noqa: ASYNC110 - the settled days: 30 d, 90 d, bars
            await asyncio.sleep(0.005)
        rows.append(("every figure read (days too), from start",
                     _ms([time.perf_counter() - started]), ""))  # fmt: skip
        rows += await _parts(store, fleet.now)
        api.pages.history.max_age = 0.0  # every view refreshes: reads what is new, counts tail
        refresh = [await _get(client, "/") for _ in range(repeat)]
        rows.append(("overview, history refreshed each view", _ms([t for t, _ in refresh]),
                     refresh[-1][1]))  # fmt: skip
        api.pages.history.max_age = 3600.0
        shared = [await _get(client, "/") for _ in range(repeat)]
        rows.append(("overview, history shared (within max_age)", _ms([t for t, _ in shared]),
                     shared[-1][1]))  # fmt: skip
        bare = [await _get(client, "/livez") for _ in range(repeat)]
        rows.append(("baseline: GET /livez, same app", _ms([t for t, _ in bare]), ""))
        name = fleet.names[1]
        data = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            await read_service(store, name, "90d", time.time())
            data.append(time.perf_counter() - t0)
        rows.append((f"service page's 90-day data ({name})", _ms(data), ""))
        page = [await _get(client, f"/services/{name}?window=90d") for _ in range(repeat)]
        rows.append(("service page, 90 d, whole request", _ms([t for t, _ in page]), page[-1][1]))
        weight = await _weight(client, name)
    await api.stop()
    print(f"Status page, {len(fleet.names)} services (median / max of {repeat}; targets: "
          "overview < 300 ms, 90-day data < 100 ms)\n")  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"{'what':{width}} | ms (median / max) | server-timing")
    print(f"{'-' * width}-+-------------------+--------------")
    for what, ms, timing in rows:
        print(f"{what:{width}} | {ms:17} | {timing}")
    print("\nPage weight (bytes: HTML + CSS + JS; target < 200 KB)\n")
    for what, size in weight:
        print(f"{what:40} | {size:>9,}")


async def _parts(store: HealthStore, now: float) -> list[tuple[str, str, str]]:
    """What a first reading reads, each read alone (after it: the pages are warm)."""
    coverage = await store.coverage()
    hour_mark = min(coverage.hour_until, now) // 3600 * 3600
    minute_mark = min(coverage.minute_until, now) // 60 * 60
    today = now // 86_400 * 86_400
    reads = [
        (
            "  alone: 24 hour rows a service",
            store.aggregates(3600, hour_mark - 86_400, hour_mark),
        ),
        (
            "  alone: the current hour's minute rows",
            store.aggregates(60, hour_mark, minute_mark),
        ),
        ("  alone: raw results since the minute mark", store.minute_counts(minute_mark, now)),
        ("  alone: 89 days' counts (day rows)", store.days(today - 89 * 86_400, today)),
    ]
    found = []
    for what, read in reads:
        t0 = time.perf_counter()
        await read
        found.append((what, _ms([time.perf_counter() - t0]), ""))
    return found


class _Api(HttpApi):
    zero = 0.0

    def now(self) -> float:
        return time.time() + self.zero


async def _serve(store: HealthStore, fleet: Fleet, listen: str) -> None:
    host, port = parse_listen(listen)
    api = _Api(_monitor(fleet, store), store, HttpSettings(host=host, port=port))
    api.zero = fleet.now - time.time()
    async with HttpServer(api) as server:
        print(f"Status page over the fleet: http://{host}:{server.port}/ (Ctrl-C ends it)")
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()


async def _get(client: httpx.AsyncClient, url: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    response = await client.get(url)
    elapsed = time.perf_counter() - t0
    response.raise_for_status()
    return elapsed, response.headers.get("server-timing", "")


async def _weight(client: httpx.AsyncClient, name: str) -> list[tuple[str, int]]:
    async def size(url: str) -> int:
        return len((await client.get(url)).content)

    css = await size("/static/status.css")
    js = await size("/static/status.js")
    uplot = await size("/static/vendor/uplot/uPlot.iife.min.js")
    uplot_css = await size("/static/vendor/uplot/uPlot.min.css")
    overview = await size("/")
    service = await size(f"/services/{name}?window=90d")
    return [
        ("overview, first page (100 rows)", overview + css + js),
        ("service page, 90 d", service + css + js + uplot + uplot_css),
    ]


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} / {max(values) * 1000:.1f}"
