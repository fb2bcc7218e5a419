"""The scale-out benchmark: one node against two sharing the fleet, and the cost of
the lease and feed machinery, on a PostgreSQL server of its own (pgserver's
binaries, default settings: durable commits), targets from bench/server.py.

    python -m bench.scaleout [--services 150] [--rate 20] [--duration 15]

1. Scale-out: `services` targets at `rate` Hz checked by one cluster node, then by two
   nodes sharing them (each its own process and database connections). Reported:
   checks/s committed, the share of checks started within 10 ms of their slot, CPU.
2. Machinery: one node at `machinery_services` (100) services, without cluster mode
   and with it (leases renewed, every flush fenced, the feed read), same database
   server, same targets: the CPU per committed check, and the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.run import pct, table
from bench.server import TargetProcess

ROOT = Path(__file__).resolve().parent.parent.parent
_STARTUP_S = 3.0  # a node process's imports and joining, before its warm-up counts


def _node(params: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bench.scaleout.node", json.dumps(params)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _collect(processes: list[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
    figures = []
    for process in processes:
        out, _ = process.communicate(timeout=timeout)
        if process.returncode != 0:
            raise RuntimeError(f"a bench node failed ({process.returncode}); see its stderr")
        figures.append(json.loads(out.strip().splitlines()[-1]))
    return figures


def _nodes(
    url: str, ports: list[int], count: int, services: int, args: argparse.Namespace, **extra: Any
) -> list[dict[str, Any]]:
    started = []
    window_start = time.time() + _STARTUP_S + args.warmup
    for number in range(count):
        params = {
            "url": url,
            "ports": ports,
            "services": services,
            "interval": 1 / args.rate,
            "window_start": window_start,
            "duration": args.duration,
            "node": f"n{number}",
            **extra,
        }
        started.append(_node(params))
    return _collect(started, timeout=_STARTUP_S + args.warmup + args.duration + 120)


def _row(label: str, figures: list[dict[str, Any]]) -> list[str]:
    scheduled = sum(f["scheduled"] for f in figures)
    on_time = sum(f["on_time"] for f in figures)
    seconds = max(f["seconds"] for f in figures)
    committed = sum(f["committed"] for f in figures)
    cpu = sum(f["cpu_s"] for f in figures)
    return [
        label,
        "/".join(str(f["services_owned"]) for f in figures),
        f"{committed / seconds:,.0f}",
        pct(on_time / scheduled if scheduled else None, 2),
        "/".join(f"{100 * f['cpu_s'] / f['seconds']:.0f} %" for f in figures),
        f"{1e6 * cpu / committed:.0f}" if committed else "-",
        str(sum(f["fenced"] + f["dropped"] for f in figures)),
    ]


async def _database(admin: str) -> str:
    from tests.postgres import create_database  # noqa: PLC0415 - dev only

    url = await asyncio.to_thread(create_database, admin)
    from healthmon import HealthStore  # noqa: PLC0415

    async with HealthStore(url):  # migrated once, before the nodes start
        pass
    return url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__)
    parser.add_argument("--services", type=int, default=150)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--machinery-services", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)

    from tests.postgres import LocalPostgres  # noqa: PLC0415 - dev only

    server = LocalPostgres(settings=())
    server.start()
    results: dict[str, Any] = {}
    try:
        with TargetProcess(ports=max(args.services, args.machinery_services), lifetime=1800) as t:
            rows = []
            for label, count in (("one node", 1), ("two nodes", 2)):
                url = asyncio.run(_database(server.url))
                figures = _nodes(url, t.ports, count, args.services, args, lease=args.lease)
                results[label] = figures
                rows.append(_row(label, figures))
            table(
                f"Scale-out: {args.services} services at {args.rate:g} Hz on PostgreSQL "
                f"(lease {args.lease:g} s, {args.duration:g} s measured after "
                f"{args.warmup:g} s)",
                ["nodes", "services", "checks/s", "on time (10 ms)", "CPU", "us/check",
                 "fenced+dropped"],
                rows,
            )  # fmt: skip
            rows = []
            for label, lease in (("single (no cluster)", None), ("cluster node", args.lease)):
                url = asyncio.run(_database(server.url))
                figures = _nodes(url, t.ports, 1, args.machinery_services, args, lease=lease)
                results[label] = figures
                rows.append(_row(label, figures))
            single, node = (results[k][0] for k in ("single (no cluster)", "cluster node"))
            per = [f["cpu_s"] / f["committed"] for f in (single, node)]
            table(
                f"Lease and feed machinery: one node, {args.machinery_services} services at "
                f"{args.rate:g} Hz, with and without cluster mode "
                f"(cluster's extra CPU per check: {100 * (per[1] / per[0] - 1):+.1f} %)",
                ["mode", "services", "checks/s", "on time (10 ms)", "CPU", "us/check",
                 "fenced+dropped"],
                rows,
            )  # fmt: skip
    finally:
        server.delete()
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
