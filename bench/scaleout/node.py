"""One node of the scale-out benchmark, in a process of its own.

`python -m bench.scaleout.node '<json parameters>'` monitors `services` targets at
`interval` on the PostgreSQL database `url` (in cluster mode when `lease` is given),
measures `duration` seconds from `window_start` (epoch seconds, the same for every
node of a run), stays until every node's window is over, and prints one JSON object:
checks started and on time (within 10 ms of their slot) in the window, the process's
CPU seconds in it, and the store's counters.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import structlog

from bench.measure import LatenessLog
from bench.monitor_run import _hook_schedules
from healthmon import HealthMonitor, HealthStore, ServiceDefinition
from healthmon.cluster import ClusterSettings
from healthmon.log import configure_logging


async def run(params: dict[str, Any]) -> dict[str, Any]:
    interval = params["interval"]
    log = LatenessLog(interval)
    undo = _hook_schedules(log)
    cluster = None
    if params.get("lease") is not None:
        cluster = ClusterSettings(node=params["node"], lease=params["lease"])
    try:
        async with HealthStore(params["url"]) as store:
            monitor = HealthMonitor(interval, store=store, cluster=cluster)
            for index, port in enumerate(params["ports"][: params["services"]]):
                monitor.add_service(
                    ServiceDefinition(
                        f"svc-{index:04d}", "http", "bench", [], f"http://127.0.0.1:{port}/healthy"
                    )
                )
            async with monitor:
                # Every node measures the same window (wall clock), after the warm-up.
                await asyncio.sleep(max(params["window_start"] - time.time(), 0.0))
                loop = asyncio.get_running_loop()
                t0, cpu0 = loop.time(), time.process_time()
                committed0 = monitor.store_stats.committed_results if monitor.store_stats else 0
                await asyncio.sleep(params["duration"])
                t1, cpu1 = loop.time(), time.process_time()
                stats = monitor.store_stats
                owned = len(monitor.cluster.held) if monitor.cluster else params["services"]
                # Stay until every node's window is over: leaving hands services over.
                await asyncio.sleep(
                    max(params["window_start"] + params["duration"] + 1 - time.time(), 0.0)
                )
        # Only the schedules that ran through the whole window: in cluster mode a node
        # also briefly ran services it handed over while the cluster settled.
        window = LatenessLog(interval)
        for key, first in log.first_slot.items():
            slots = [s for k, s, _ in log.samples if k == key]
            if first <= t0 and slots and slots[-1] >= t1 - 2 * interval:
                window.first_slot[key] = first
        window.samples = [s for s in log.samples if s[0] in window.first_slot]
        summary = window.summary(t0, t1)
    finally:
        undo()
    committed = (stats.committed_results if stats else 0) - committed0
    return {
        "node": params.get("node"),
        "services_owned": owned,
        "seconds": t1 - t0,
        "cpu_s": cpu1 - cpu0,
        "committed": committed,
        "fenced": stats.fenced_results if stats else 0,
        "dropped": stats.dropped_results if stats else 0,
        **summary,
    }


def main() -> None:
    configure_logging("warning", "json")
    structlog.get_logger("bench").debug("node_starting")
    params = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(run(params))), flush=True)


if __name__ == "__main__":
    main()
