"""Soak: N minutes at 20 Hz with flapping and hanging targets; tasks, fds and memory flat.

    .venv/bin/python -m bench.soak --minutes 10 [--services 40]

The targets (healthmon.targets, the routes the tests use) run in a separate process,
so that only the monitor's own tasks, file descriptors and memory are measured. Every
`--every` seconds a line: healthmon's tasks, all tasks, open fds, RSS. The verdict
compares the end with the state after the first minute (the warm-up: connections,
caches, the first aggregates): healthmon's tasks equal, fds within +3 (hanging checks
reconnect), RSS within +5 MB. The short version of this runs in the test suite
(tests/integration/test_reliability.py::test_short_soak_has_no_growth).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from healthmon import CheckPolicy, HealthMonitor, HealthStore, ServiceDefinition
from healthmon.log import configure_logging

__all__ = ["main"]

_TARGETS = """
import sys
from healthmon.targets import TargetServer
with TargetServer() as server:
    print(server.port, flush=True)
    sys.stdin.read()  # until the soak closes our stdin (or dies)
"""


def _sample() -> tuple[int, int, int, float]:
    tasks = asyncio.all_tasks()
    ours = sum(1 for t in tasks if t.get_name().startswith("healthmon"))
    fds = sum(1 for _ in Path("/proc/self/fd").iterdir())
    rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return ours, len(tasks), fds, rss / 2**20


async def soak(base: str, minutes: float, services: int, every: float) -> bool:
    with tempfile.TemporaryDirectory() as folder:
        async with HealthStore(Path(folder) / "soak.db") as store:
            monitor = HealthMonitor(0.05, store=store, policy=CheckPolicy(timeout=0.5))
            for i in range(services):
                # a quarter each: flapping fast, flapping slow, hanging, healthy
                path = ["/flip?period=0.3", "/flip?period=2", "/hang", "/healthy"][i % 4]
                monitor.add_service(ServiceDefinition(f"s{i}", "http", "bench", [], base + path))
            return await _watch(monitor, minutes, every)


async def _watch(monitor: HealthMonitor, minutes: float, every: float) -> bool:
    started = time.monotonic()
    columns = ("s", "ours", "tasks", "fds", "RSS MB", "committed", "dropped")
    print(" ".join(f"{c:>9}" for c in columns))
    warm: tuple[int, int, int, float] | None = None
    async with monitor:
        while time.monotonic() - started < minutes * 60:
            await asyncio.sleep(every)
            elapsed = time.monotonic() - started
            sample = _sample()
            stats = monitor.store_stats
            committed = stats.committed_results if stats else 0
            dropped = stats.dropped_results if stats else 0
            ours, tasks, fds, rss = sample
            row = (f"{elapsed:.0f}", ours, tasks, fds, f"{rss:.1f}", committed, dropped)
            print(" ".join(f"{v:>9}" for v in row))
            if warm is None and elapsed >= min(60.0, minutes * 30):
                warm = sample
        end = _sample()
    assert warm is not None
    flat = end[0] == warm[0] and end[2] <= warm[2] + 3 and end[3] - warm[3] < 5.0
    print(
        f"after warm-up: healthmon tasks {warm[0]} -> {end[0]}, fds {warm[2]} -> {end[2]}, "
        f"RSS {warm[3]:.1f} -> {end[3]:.1f} MB: {'flat' if flat else 'GROWTH'}"
    )
    return flat


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--services", type=int, default=40, help="services at 20 Hz (default 40)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    args = parser.parse_args()
    configure_logging("error", "json")  # transitions of flapping targets would flood stdout
    targets = subprocess.Popen(  # noqa: S603 - our own interpreter running our own targets
        [sys.executable, "-c", _TARGETS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert targets.stdout is not None
        base = f"http://127.0.0.1:{targets.stdout.readline().strip()}"
        flat = asyncio.run(soak(base, args.minutes, args.services, args.every))
    finally:
        if targets.stdin is not None:
            targets.stdin.close()  # the targets exit when their stdin closes
        targets.wait(timeout=10)
    sys.exit(0 if flat else 1)


if __name__ == "__main__":
    main()
