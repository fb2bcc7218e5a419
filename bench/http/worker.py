"""One measured process: a monitor with a store, its HTTP face on a real port, and a
load process (bench/http/load.py) as its clients. `python -m bench.http.worker
SCENARIO PARAMS_JSON OUT LIMIT_S`; the figures go to OUT as JSON.

- `checks`: `services` HTTP services at `hz` against the target server, checks'
  lateness logged by the same hook as bench/ (FixedRateSchedule.wait), with or
  without the `mixed` load: the run without is the bare baseline.
- `fleet`: `services` agents reported every second (so many results a second through
  the writer), `flips` of them changing each second (transitions); the writer's
  commits timestamped (its `_committed` step, as bench/ does); the `fleet` load's
  event streams and blocking queries note when each arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.measure import LatenessLog, percentile
from bench.monitor_run import _hook_schedules, _service
from healthmon import HealthMonitor, HealthStore
from healthmon.http import HttpApi, HttpServer, HttpSettings
from healthmon.log import configure_logging
from healthmon.store import ResultWriter

__all__ = ["main"]

TOKEN = "bench-token-0123456789"  # noqa: S105 - a throwaway token for the run
ROOT = Path(__file__).resolve().parents[2]


def _ms(values: list[float], q: float) -> float | None:
    found = percentile(values, q)
    return None if found is None else found * 1000


async def _load(port: int, params: dict[str, Any], folder: Path) -> tuple[Any, Path]:
    out = folder / f"load-{time.monotonic_ns()}.json"
    load = {"base": f"http://127.0.0.1:{port}", "token": TOKEN, **params}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.http.load", json.dumps(load), str(out), cwd=ROOT
    )
    return process, out


async def run_checks(
    *,
    ports: list[int],
    services: int,
    hz: float,
    warmup: float,
    duration: float,
    load: dict[str, Any] | None,
    check_workers: int = 0,
) -> dict[str, Any]:
    interval = 1.0 / hz
    lateness = LatenessLog(interval)
    undo = _hook_schedules(lateness)
    folder = Path(tempfile.mkdtemp(prefix="healthmon-bench-http-"))
    if check_workers:  # the workers log their slots with the same hook (hooked_child.py)
        (folder / "lateness").mkdir()
        os.environ["HEALTHMON_BENCH_LATENESS"] = str(folder / "lateness")
        # (workers start with `python -P`: the bench's folder is put on their path here)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
        )
        from healthmon.workers import pool as workers_pool  # noqa: PLC0415 - not in older commits

        workers_pool._CHILD = "bench.http.hooked_child"
    try:
        async with HealthStore(folder / "bench.db") as store:
            # (the keyword only when used: the bench also runs older commits, for A/B runs)
            workers: dict[str, Any] = {"check_workers": check_workers} if check_workers else {}
            monitor = HealthMonitor(interval, store=store, **workers)
            for index, port in enumerate(ports[:services]):
                monitor.add_service(_service(index, port, flip=False))
            async with monitor:
                api = HttpApi(monitor, store, HttpSettings(port=0, token=TOKEN))
                async with HttpServer(api) as server:
                    assert server.port is not None
                    process = out = None
                    if load is not None:
                        names = [f"svc-{i:04d}" for i in range(services)]
                        seconds = warmup + duration + 0.5
                        process, out = await _load(
                            server.port,
                            {**load, "mode": "mixed", "seconds": seconds, "service_names": names},
                            folder,
                        )
                    await asyncio.sleep(warmup)
                    loop = asyncio.get_running_loop()
                    pool = getattr(monitor, "_workers", None)
                    pids = pool.pids if pool is not None else []
                    t0, cpu0 = loop.time(), time.process_time()
                    workers_cpu0 = _cpu_seconds(pids)
                    await asyncio.sleep(duration)
                    t1, cpu1 = loop.time(), time.process_time()
                    workers_cpu = _cpu_seconds(pids) - workers_cpu0
                    figures: dict[str, Any] = {
                        "services": services,
                        "hz": hz,
                        "check_workers": check_workers,
                        "cpu_share": (cpu1 - cpu0) / (t1 - t0),
                        "workers_cpu_share": workers_cpu / (t1 - t0),
                    }
                    if process is not None and out is not None:
                        await process.wait()
                        figures["load"] = _mixed_summary(json.loads(out.read_text()), duration)
        if check_workers:  # stopped: each worker has written its slots
            for found in (folder / "lateness").glob("*.json"):
                logged = json.loads(found.read_text())
                pid = int(found.stem) << 48  # ids of objects, unique within one process
                for key, first in logged["first_slot"].items():
                    lateness.first_slot[pid + int(key)] = first
                lateness.samples += [(pid + k, slot, late) for k, slot, late in logged["samples"]]
        return figures | lateness.summary(t0, t1)
    finally:
        undo()
        shutil.rmtree(folder, ignore_errors=True)


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / ticks


def _mixed_summary(load: dict[str, Any], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"errors": load["errors"], "load_cpu_s": load["load_cpu_s"]}
    for kind, values in load["latencies"].items():
        out[kind] = {
            "n": len(values),
            "p50_ms": _ms(values, 50),
            "p99_ms": _ms(values, 99),
        }
    return out


class _Agents:
    def __init__(self, count: int) -> None:
        self.health = {f"agent-{i:04d}": "healthy" for i in range(count)}

    def get_agent_statuses(self) -> dict[str, dict[str, str]]:
        return {
            name: {"status": "running", "health": health} if health == "healthy" else {}
            for name, health in self.health.items()
        }


def _hook_commits(store: HealthStore, commits: dict[tuple[str, float], float]) -> None:
    """Note when each change is committed (right after COMMIT), monotonic clock. First
    statuses are left out: the first round commits a thousand of them in one burst."""
    make = store.writer

    def writer(**kwargs: Any) -> ResultWriter:
        made = make(**kwargs)
        committed = made._committed

        def timed(batch: Any, *rest: Any) -> None:
            now = time.monotonic()
            for _, transition in batch.transitions:
                if transition.from_status is not None:  # not a first status: a change
                    commits[(transition.service_name, transition.timestamp)] = now
            committed(batch, *rest)

        made._committed = timed  # type: ignore[method-assign,assignment]  # bench-side hook
        return made

    store.writer = writer  # type: ignore[method-assign]  # bench-side hook


async def run_fleet(
    *, services: int, flips: int, warmup: float, duration: float, load: dict[str, Any]
) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="healthmon-bench-http-"))
    commits: dict[tuple[str, float], float] = {}
    try:
        async with HealthStore(folder / "bench.db") as store:
            _hook_commits(store, commits)
            monitor = HealthMonitor(1.0, store=store)
            agents = _Agents(services)
            names = list(agents.health)

            async def report() -> None:
                round_ = 0
                while True:
                    for i in range(flips):  # a different few change each second
                        name = names[(round_ * flips + i) % len(names)]
                        agents.health[name] = (
                            "unhealthy" if agents.health[name] == "healthy" else "healthy"
                        )
                    await monitor.check_agents_health(agents)
                    round_ += 1
                    await asyncio.sleep(1.0)

            async with monitor:
                reporter = asyncio.create_task(report())
                settings = HttpSettings(port=0, token=TOKEN, metrics_max_age=0)
                api = HttpApi(monitor, store, settings)
                try:
                    async with HttpServer(api) as server:
                        assert server.port is not None
                        # The prober in a process of its own: the streams' and polls'
                        # bursts on a client's loop would delay reading its answers.
                        fleet = {**load, "mode": "fleet", "seconds": warmup + duration}
                        loads = [
                            await _load(server.port, {**fleet, "probe_paths": []}, folder),
                            await _load(server.port, {**fleet, "streams": 0, "polls": 0}, folder),
                        ]
                        await asyncio.sleep(warmup)
                        window_start = time.monotonic()
                        render = await _time_render(api, duration)
                        results = []
                        for process, out in loads:
                            await process.wait()
                            results.append(json.loads(out.read_text()))
                        result = {
                            "received": results[0]["received"],
                            "answers": results[0]["answers"],
                            "probes": results[1]["probes"],
                            "load_cpu_s": results[0]["load_cpu_s"] + results[1]["load_cpu_s"],
                            "errors": results[0]["errors"] + results[1]["errors"],
                        }
                finally:
                    reporter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reporter
                ids = {
                    record.id: (record.transition.service_name, record.transition.timestamp)
                    for record in await store.transitions_after(0, limit=1_000_000)
                }
        return {"services": services, "flips_per_s": flips, "metrics_render": render} | (
            _fleet_summary(result, commits, ids, window_start)
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _time_render(api: HttpApi, duration: float) -> dict[str, Any]:
    """/metrics rendered in this process (no HTTP), twice a second over the window."""
    times = []
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        started = time.perf_counter()
        page = await api.metrics.render()
        times.append(time.perf_counter() - started)
        await asyncio.sleep(0.5)
    return {"n": len(times), "p50_ms": _ms(times, 50), "p99_ms": _ms(times, 99), "bytes": len(page)}


def _fleet_summary(
    load: dict[str, Any],
    commits: dict[tuple[str, float], float],
    ids: dict[int, tuple[str, float]],
    window_start: float,
) -> dict[str, Any]:
    """Latencies of the transitions committed in the measured window only (the warm-up
    holds the first round's 1,000 first statuses, committed as one burst)."""
    sse = [
        got - commits[(service, ts)]
        for service, ts, got in load["received"]
        if commits.get((service, ts), 0.0) >= window_start
    ]
    polls = []
    for index, sent, got in load["answers"]:
        committed = commits.get(ids.get(index, ("", 0.0)))
        if committed is None or committed < window_start:
            continue
        if sent < committed:  # it was waiting when it came
            polls.append(got - committed)
    probes = {}
    for path, timed in load["probes"].items():
        values = [took for sent, took in timed if sent >= window_start]  # not the warm-up's
        probes[path] = {"n": len(values), "p50_ms": _ms(values, 50), "p99_ms": _ms(values, 99)}
    return {
        "transitions_committed": sum(1 for t in commits.values() if t >= window_start),
        "sse": {"n": len(sse), "p50_ms": _ms(sse, 50), "p99_ms": _ms(sse, 99)},
        "long_poll": {"n": len(polls), "p50_ms": _ms(polls, 50), "p99_ms": _ms(polls, 99)},
        "probes": probes,
        "load_cpu_s": load["load_cpu_s"],
        "errors": load["errors"],
    }


def main() -> None:
    scenario, params, out, limit = sys.argv[1:5]
    signal.alarm(max(1, int(float(limit))))
    configure_logging("warning", "json")
    p = json.loads(params)
    runner = run_checks if scenario == "checks" else run_fleet
    Path(out).write_text(json.dumps(asyncio.run(runner(**p))))


if __name__ == "__main__":
    main()
