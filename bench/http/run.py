"""The HTTP face's benchmark: prints tables, asserts nothing (see bench/README.md).

1. Checks on time: 100 services at 20 Hz with a store, the HTTP face serving, first
   with no client (the bare baseline), then with 50 concurrent API clients in another
   process (cluster status, /metrics, one service's 24 h report, each client pausing
   `--think` seconds between requests; 0 = as fast as answered).
2. The API at 1,000 services (agents, 1,000 results/s through the writer, 10
   transitions/s): cluster status and /metrics latency from a client one request at a
   time, /metrics rendered in-process, and a committed transition's way to 20 event
   streams and 20 blocked long-polls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.server import TargetProcess

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[2]


def _worker(scenario: str, params: dict[str, Any], limit: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="healthmon-bench-http-") as folder:
        out = Path(folder) / "out.json"
        subprocess.run(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "bench.http.worker",
                scenario,
                json.dumps(params),
                str(out),
                str(limit),
            ],
            cwd=ROOT,
            check=True,
            timeout=limit + 10,
        )
        figures: dict[str, Any] = json.loads(out.read_text())
        return figures


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--think", type=float, nargs="+", default=[0.1, 0.0])
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--fleet", type=int, default=1000)
    parser.add_argument(
        "--mix",
        default="cluster_status,metrics,report_24h",
        help="what each client asks for in turn (of cluster_status, metrics, report_24h)",
    )
    parser.add_argument(
        "--parts", type=int, nargs="+", choices=(1, 2), default=[1, 2], help="which to run"
    )
    parser.add_argument(
        "--check-workers",
        type=int,
        nargs="+",
        default=[0, 2],
        help="part 1 with each of these HealthMonitor(check_workers=N)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument(
        "--smoke", action="store_true", help="the smallest run (a few seconds): the harness works"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.services, args.clients, args.think, args.fleet = 5, 5, [0.1], 50
        args.warmup, args.duration = 0.5, 1.5
    limit = args.warmup + args.duration + 60
    figures: dict[str, Any] = {
        "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_average_before": os.getloadavg(),
    }
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the start")

    if 1 in args.parts:
        _checks_part(args, figures, limit)
    if 2 in args.parts:
        _fleet_part(args, figures, limit)
    figures["load_average_after"] = os.getloadavg()
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


def _checks_part(args: argparse.Namespace, figures: dict[str, Any], limit: float) -> None:
    with TargetProcess(ports=args.services, lifetime=3600) as targets:
        common = {"ports": targets.ports, "services": args.services, "hz": 20.0,
                  "warmup": args.warmup, "duration": args.duration}  # fmt: skip
        loads = [("no API clients (baseline)", None)] + [
            (
                f"{args.clients} clients, think {think:g} s",
                {"clients": args.clients, "think": think, "mix": args.mix.split(",")},
            )
            for think in args.think
        ]
        runs = [
            (f"{label}{f' [{n} workers]' if n else ''}", load, n)
            for n in args.check_workers
            for label, load in loads
        ]
        print(f"\n1. {args.services} services at 20 Hz with a store, HTTP face serving")
        print(f"{'load [check workers]':<40}{'on time':>9}{'late p50':>10}{'late p99':>10}"
              f"{'CPU':>11}{'req/s':>7}{'status p99':>11}{'metrics p99':>12}"
              f"{'report p99':>11}")  # fmt: skip
        figures["checks"] = []
        for label, load, workers in runs:
            found = _worker("checks", {**common, "load": load, "check_workers": workers}, limit)
            figures["checks"].append({"label": label, **found})
            served = found.get("load", {})
            requests = sum(v["n"] for k, v in served.items() if isinstance(v, dict) and "n" in v)
            cpu = _f(100 * found["cpu_share"], 0)
            if workers:
                cpu += f"+{_f(100 * found['workers_cpu_share'], 0)}"
            print(
                f"{label:<40}{_f(100 * found['on_time_fraction']) + ' %':>9}"
                f"{_f(found['lateness_p50_ms']) + ' ms':>10}"
                f"{_f(found['lateness_p99_ms']) + ' ms':>10}"
                f"{cpu + ' %':>11}"
                f"{_f(requests / (args.warmup + args.duration) if load else None, 0):>7}"
                f"{_f(served.get('cluster_status', {}).get('p99_ms')) + ' ms':>11}"
                f"{_f(served.get('metrics', {}).get('p99_ms')) + ' ms':>12}"
                f"{_f(served.get('report_24h', {}).get('p99_ms')) + ' ms':>11}"
            )
            if served.get("errors"):
                print(f"    errors: {served['errors']}")


def _fleet_part(args: argparse.Namespace, figures: dict[str, Any], limit: float) -> None:
    fleet = _worker(
        "fleet",
        {
            "services": args.fleet,
            "flips": 10,
            "warmup": args.warmup,
            "duration": args.duration,
            "load": {
                "streams": 20,
                "polls": 20,
                "probe_pause": 0.05,
                "probe_paths": ["/livez", "/api/v1/cluster/status", "/api/v1/cluster", "/metrics"],
            },
        },
        limit,
    )
    figures["fleet"] = fleet
    print(f"\n2. {args.fleet} services (agents, {args.fleet} results/s, 10 transitions/s)")
    print(f"{'measure':<44}{'n':>6}{'p50':>10}{'p99':>10}")
    rows = [(f"GET {path} (one at a time)", value) for path, value in fleet["probes"].items()]
    rows += [
        ("/metrics rendered in-process", fleet["metrics_render"]),
        ("transition committed -> SSE client (20)", fleet["sse"]),
        ("transition committed -> long-poll (20)", fleet["long_poll"]),
    ]
    for label, value in rows:
        print(f"{label:<44}{value['n']:>6}{_f(value['p50_ms'])+' ms':>10}"
              f"{_f(value['p99_ms'])+' ms':>10}")  # fmt: skip
    print(f"    /metrics page: {fleet['metrics_render']['bytes']} bytes; "
          f"transitions committed: {fleet['transitions_committed']}")  # fmt: skip
    if fleet["errors"]:
        print(f"    clients that failed: {fleet['errors']}")
