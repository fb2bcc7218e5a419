"""`healthmon demo`: local targets monitored at 20 Hz into SQLite, a live table, a report.

Four real HTTP servers' worth of behaviour on 127.0.0.1 (one `TargetServer`):

    api        always healthy
    search     answers ever slower, crossing its degraded_after_ms threshold
    checkout   flaps: healthy and failing in turns, several times a second
    payments   goes down for a while in the middle of the run, then recovers

Nothing here is demo-only machinery: it is the monitor, the store and the history
report that `healthmon run` and `healthmon history` use.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from healthmon.model import HealthCheckResult, ServiceDefinition
from healthmon.monitor import HealthMonitor
from healthmon.render import render_table
from healthmon.store import HealthStore
from healthmon.targets import TargetServer

__all__ = ["CHECK_INTERVAL", "DEGRADED_AFTER_MS", "DemoRun", "demo_services", "run_demo"]

CHECK_INTERVAL = 0.05  # 20 Hz
DEGRADED_AFTER_MS = 100.0
_SLOWEST_MS = 2 * DEGRADED_AFTER_MS  # the slow target's latency at the end of the run


@dataclass(frozen=True, slots=True)
class DemoRun:
    """What a demo run did: its window, for the report, and what it saw."""

    database: Path
    services: tuple[str, ...]
    started: float
    ended: float
    changes: Counter[str]
    """Status changes heard per service (after commit)."""


def demo_services(targets: TargetServer, seconds: float) -> list[ServiceDefinition]:
    """The demo's four services, timed so each behaviour shows within `seconds`."""

    def service(name: str, path: str, degraded_after_ms: float | None = None) -> ServiceDefinition:
        return ServiceDefinition(
            name,
            "http",
            f"demo.{name}",
            [],
            targets.url(path),
            timeout=1.0,
            degraded_after_ms=degraded_after_ms,
        )

    return [
        service("api", "/healthy"),
        service(
            "search",
            f"/ramp?ms={_SLOWEST_MS:.0f}&period={seconds:.3f}",
            degraded_after_ms=DEGRADED_AFTER_MS,
        ),
        service("checkout", "/flip?period=0.4"),
        # Up for the first 40 % of the run, down for the next 40 %, up again to the end.
        service("payments", f"/flip?period={seconds * 0.4:.3f}"),
    ]


async def run_demo(
    seconds: float,
    database: Path,
    out: TextIO,
    *,
    live: bool | None = None,
    http: tuple[str, int] | None = None,
) -> DemoRun:
    """Monitor the demo targets for `seconds` (or until Ctrl-C), showing a live table:
    redrawn in place on a terminal, a plain line a second otherwise. With `http`
    (host, port), the status page is served there meanwhile (its address printed)."""
    live = out.isatty() if live is None else live
    changes: Counter[str] = Counter()

    async def on_change(result: HealthCheckResult) -> None:
        changes[result.service_name] += 1

    with TargetServer() as targets:
        services = demo_services(targets, seconds)
        async with HealthStore(database) as store:
            monitor = HealthMonitor(CHECK_INTERVAL, store=store)
            for definition in services:
                monitor.add_service(definition)
            monitor.subscribe(on_change)
            print(
                f"Monitoring {len(services)} local targets at {1 / CHECK_INTERVAL:.0f} Hz "
                f"for {seconds:g} s into {database} (Ctrl-C ends it early)\n",
                file=out,
            )
            started = time.time()
            async with monitor, _status_page(monitor, store, http, out):
                with _until_interrupted() as interrupted:
                    display = _LiveTable(out) if live else _PlainLines(out)
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + seconds
                    while (remaining := deadline - loop.time()) > 0 and not interrupted.is_set():
                        display.show(monitor, changes, seconds - remaining)
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(min(display.refresh, remaining)):
                                await interrupted.wait()
                    display.show(monitor, changes, min(seconds, time.time() - started))
            ended = time.time()
    return DemoRun(
        database=database,
        services=tuple(s.name for s in services),
        started=started,
        ended=ended,
        changes=changes,
    )


@contextlib.asynccontextmanager
async def _status_page(
    monitor: HealthMonitor, store: HealthStore, listen: tuple[str, int] | None, out: TextIO
) -> AsyncIterator[None]:
    """The status page served while the demo runs, if asked for and installed."""
    if listen is None:
        yield
        return
    try:
        from healthmon.http import HttpApi, HttpServer, HttpSettings  # noqa: PLC0415 - extra
    except ImportError:
        print("(the status page needs the http extra: pip install 'healthmon[http]')\n", file=out)
        yield
        return
    settings = HttpSettings(host=listen[0], port=listen[1])
    async with HttpServer(HttpApi(monitor, store, settings)) as server:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        print(f"Status page: http://{host}:{server.port}/\n", file=out)
        yield


@contextlib.contextmanager
def _until_interrupted() -> Iterator[asyncio.Event]:
    """An event set by SIGINT/SIGTERM while inside: the demo ends early, with its report."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, event.set)
    try:
        yield event
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def _rows(monitor: HealthMonitor, changes: Counter[str]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("SERVICE", "STATUS", "LATENCY", "CHANGES", "LAST ERROR")]
    for name, result in sorted(monitor.get_cluster_health().items()):
        rows.append(
            (
                name,
                result.effective_status.value,
                f"{result.response_time_ms:7.1f} ms",
                str(changes[name]),
                result.error or "",
            )
        )
    return rows


class _LiveTable:
    """The table, redrawn in place (ANSI: cursor up, clear to the end of the screen)."""

    refresh = 0.2

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._height = 0

    def show(self, monitor: HealthMonitor, changes: Counter[str], elapsed: float) -> None:
        stats = monitor.store_stats
        stored = stats.committed_results if stats else 0
        lines = [
            f"{elapsed:5.1f} s   cluster: {monitor.get_cluster_status().value:9}   "
            f"stored results: {stored}",
            "",
            *render_table(_rows(monitor, changes)),
        ]
        up = f"\x1b[{self._height}F" if self._height else ""
        self._out.write(up + "\x1b[J" + "\n".join(lines) + "\n")
        self._out.flush()
        self._height = len(lines)


class _PlainLines:
    """One line a second, for logs and pipes."""

    refresh = 1.0

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def show(self, monitor: HealthMonitor, changes: Counter[str], elapsed: float) -> None:
        if not monitor.get_cluster_health():
            return  # nothing checked yet
        parts = [
            f"{name} {result.effective_status.value} {result.response_time_ms:.0f}ms"
            for name, result in sorted(monitor.get_cluster_health().items())
        ]
        status = monitor.get_cluster_status().value
        print(f"{elapsed:5.1f} s  cluster {status:9} | " + " | ".join(parts), file=self._out)
        self._out.flush()
