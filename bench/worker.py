"""One measurement in a fresh process: `python -m bench.worker SCENARIO PARAMS OUT`.

Every measurement runs in its own process so that none inherits another's memory,
connections, caches or imports (an RSS or CPU figure is then that run's alone), and
so that a wedged run can be killed without taking the suite down. PARAMS is a JSON
object of keyword arguments; the figures are written to the file OUT as JSON (stdout
and stderr stay free for logs). The process exits by itself after `--limit` seconds
at the latest (SIGALRM), whatever state it is in.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from healthmon.log import configure_logging

__all__ = ["main", "run_scenario"]


def run_scenario(scenario: str, params: dict[str, Any]) -> dict[str, Any]:
    # Imports inside: a worker loads only its own scenario's modules (a monitor run
    # never imports the bare clients, whose libraries it might otherwise warm up).
    if scenario == "monitor":
        from bench.monitor_run import MonitorParams, run_monitor  # noqa: PLC0415 - see above

        return asyncio.run(run_monitor(MonitorParams(**params)))
    if scenario == "open-loop":
        from bench.clients import run_open_loop  # noqa: PLC0415 - see above

        return asyncio.run(run_open_loop(**params))
    if scenario == "closed-loop":
        from bench.clients import run_closed_loop  # noqa: PLC0415 - see above

        return asyncio.run(run_closed_loop(**params))
    if scenario == "client-cost":
        from bench.clients import run_client_cost  # noqa: PLC0415 - see above

        return asyncio.run(run_client_cost(**params))
    if scenario == "cluster":
        from bench.cluster import run_cluster  # noqa: PLC0415 - see above

        return run_cluster(**params)
    raise ValueError(f"unknown scenario {scenario!r}")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        sys.exit("usage: python -m bench.worker SCENARIO PARAMS_JSON OUT_PATH LIMIT_S")
    scenario, params, out, limit = args
    signal.alarm(max(1, int(float(limit))))  # default SIGALRM action: the process ends
    # What an application embedding healthmon would do: JSON log lines to stderr
    # (which the parent keeps in a file), the httpx logger at WARNING.
    configure_logging("info", "json")
    figures = run_scenario(scenario, json.loads(params))
    Path(out).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
