"""One run of the real HealthMonitor against the target server, instrumented from outside.

The library is used as an embedding application would use it (its public API, its
default HTTP client); the measurements hook in from the bench's side only:

- check starts: `FixedRateSchedule.wait` is wrapped (in this process) to note each
  slot's due time and the loop time when its check starts;
- checks done: the monitor's `_check_http_health` (the seed's name for "one check")
  is wrapped on the instance to count results and healthy ones;
- commits: the writer the store hands the monitor is captured, and its `_committed`
  step (called right after each COMMIT) is wrapped to timestamp the results and
  transitions it holds; a subscriber timestamps when it hears of each transition.

Each hook is a few list appends per check (~1 µs against the ~1 ms a check costs),
and the CPU runs use only the counter, so the figures are the monitor's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shutil
import statistics
import tempfile
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.measure import LatenessLog, percentile, postgres_storage, rss_bytes, storage_stats
from healthmon import HealthCheckResult, HealthMonitor, HealthStatus, HealthStore
from healthmon.model import ServiceDefinition
from healthmon.schedule import FixedRateSchedule
from healthmon.store import ResultWriter

__all__ = ["MonitorParams", "run_monitor"]


@dataclass
class MonitorParams:
    """What to run and what to measure; `ports` are the target server's."""

    ports: list[int]
    services: int = 50
    hz: float = 20.0
    store: bool = True
    warmup: float = 3.0
    duration: float = 10.0
    lateness: bool = False
    latency: bool = False
    flip: int = 0
    """How many of the services flip between 200 and 503 (the others always answer 200)."""
    sample_every: float = 1.0
    """Seconds between RSS and writer-backlog samples."""
    database: str | None = None
    """A PostgreSQL database's URL to store into; None: a SQLite file in a temporary folder."""
    what_if: list[str] = field(default_factory=list)
    """Experiments, never on by default: changes the library does not (yet) make,
    applied from here to measure what they would gain (see WHAT_IFS)."""


WHAT_IFS = {
    "stagger": "schedule i of n starts i/n of an interval later (slots spread, not aligned)",
    "gc-freeze": "gc.freeze() after warm-up: collections skip the long-lived objects",
    "no-gc-freeze": "HealthMonitor(freeze_gc=False): the collector as the process left it",
    "aiohttp-transport": "the monitor given one httpx.AsyncClient over httpx-aiohttp's transport",
}


def _aiohttp_transport_client() -> httpx.AsyncClient:
    """What-if: httpx's client over aiohttp's connection pool, without healthmon's cap."""
    from httpx_aiohttp import AiohttpTransport  # noqa: PLC0415 - only this what-if needs it

    transport: httpx.AsyncBaseTransport = AiohttpTransport()
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)


@dataclass
class _Counts:
    checks: int = 0
    healthy: int = 0


@dataclass
class _CommitLatency:
    """result (check completed) -> COMMIT, and COMMIT -> subscriber called."""

    recording: bool = False
    result_to_commit: list[float] = field(default_factory=list)
    commit_to_callback: list[float] = field(default_factory=list)
    # id(result) -> (result, loop time of its commit); the result is kept so that
    # its id cannot be reused before the subscriber hears of it.
    committed_at: dict[int, tuple[HealthCheckResult, float]] = field(default_factory=dict)

    def hook(self, writer: ResultWriter) -> None:
        original: Callable[..., None] = writer._committed
        loop = asyncio.get_running_loop()

        def committed(batch: Any, *rest: Any) -> None:
            if self.recording:
                now_wall, now = time.time(), loop.time()
                # Result timestamps are wall-clock (epoch) by design: compare like with like.
                self.result_to_commit.extend(now_wall - r.timestamp for r in batch.results)
                for result, _transition in batch.transitions:
                    self.committed_at[id(result)] = (result, now)
            original(batch, *rest)

        writer._committed = committed  # type: ignore[method-assign,assignment]  # bench-side hook

    async def subscriber(self, result: HealthCheckResult) -> None:
        entry = self.committed_at.pop(id(result), None)
        if entry is not None and self.recording:
            self.commit_to_callback.append(asyncio.get_running_loop().time() - entry[1])


def _stagger_schedules(services: int) -> Callable[[], None]:
    """What-if: spread the schedules' phases over the interval; returns the undo."""
    original = FixedRateSchedule.__init__
    made = [0]

    def init(schedule: FixedRateSchedule, interval: float, start: float | None = None) -> None:
        if start is None:
            offset = (made[0] % services) / services * interval
            start = asyncio.get_running_loop().time() + offset
        made[0] += 1
        original(schedule, interval, start)

    FixedRateSchedule.__init__ = init  # type: ignore[method-assign,assignment]  # a what-if

    def undo() -> None:
        FixedRateSchedule.__init__ = original  # type: ignore[method-assign]  # undo it

    return undo


def _hook_schedules(log: LatenessLog) -> Callable[[], None]:
    """Wrap FixedRateSchedule.wait (in this process only); returns the undo."""
    original = FixedRateSchedule.wait

    async def wait(schedule: FixedRateSchedule) -> float:
        slot = await original(schedule)
        log.record(id(schedule), slot, asyncio.get_running_loop().time())
        return slot

    FixedRateSchedule.wait = wait  # type: ignore[method-assign,assignment]  # bench-side hook

    def undo() -> None:
        FixedRateSchedule.wait = original  # type: ignore[method-assign]  # undo the hook

    return undo


def _count_checks(monitor: HealthMonitor, counts: _Counts) -> None:
    original = monitor._check_http_health

    async def check(service_name: str, url: str, timeout: float | None = None) -> HealthCheckResult:
        result = await original(service_name, url, timeout)
        counts.checks += 1
        counts.healthy += result.status is HealthStatus.HEALTHY
        return result

    monitor._check_http_health = check  # type: ignore[method-assign]  # bench-side hook


@dataclass
class _Flushes:
    """How long each of the writer's flushes takes, BEGIN to COMMIT (loop clock)."""

    recording: bool = False
    # Arrays, not lists of objects: 8 bytes a flush in the memory run's figures.
    seconds: array[float] = field(default_factory=lambda: array("d"))
    results: array[int] = field(default_factory=lambda: array("q"))

    def summary(self) -> dict[str, Any]:
        return {
            "flush_n": len(self.seconds),
            "flush_p50_ms": _ms(percentile(self.seconds, 50)),
            "flush_p99_ms": _ms(percentile(self.seconds, 99)),
            "flush_max_ms": _ms(max(self.seconds, default=None)),
            "results_per_flush": sum(self.results) / len(self.results) if self.results else None,
        }


def _capture_writer(store: HealthStore, captured: list[ResultWriter], flushes: _Flushes) -> None:
    """Keep the writer the monitor gets (to read its counters even after stop), and
    time its flushes."""
    original = store.writer

    def writer(**kwargs: Any) -> ResultWriter:
        made = original(**kwargs)
        captured.append(made)
        flush = made._flush

        async def timed_flush() -> bool:
            loop = asyncio.get_running_loop()
            started, before = loop.time(), made.stats.committed_results
            done = await flush()
            if flushes.recording:
                flushes.seconds.append(loop.time() - started)
                flushes.results.append(made.stats.committed_results - before)
            return done

        made._flush = timed_flush  # type: ignore[method-assign]  # bench-side hook
        return made

    store.writer = writer  # type: ignore[method-assign]  # bench-side hook


def _service(index: int, port: int, flip: bool) -> ServiceDefinition:
    # Flipping targets get different periods so that their transitions spread out.
    path = f"/flip?period={0.2 + 0.05 * index:.2f}" if flip else "/healthy"
    return ServiceDefinition(
        f"svc-{index:04d}", "http", "bench.target", [], f"http://127.0.0.1:{port}{path}"
    )


def _rss_summary(samples: Sequence[tuple[float, int]], warmup: float) -> dict[str, Any]:
    """RSS after warm-up vs at the end (medians of 3 samples, against noise) and its slope."""
    after = [(t, rss) for t, rss in samples if t >= warmup]
    if len(after) < 3:
        return {}
    start = statistics.median(rss for _, rss in after[:3])
    end = statistics.median(rss for _, rss in after[-3:])
    slope = statistics.linear_regression([t for t, _ in after], [rss for _, rss in after]).slope
    return {
        "rss_after_warmup_mb": start / 2**20,
        "rss_end_mb": end / 2**20,
        "rss_max_mb": max(rss for _, rss in after) / 2**20,
        "rss_growth_mb": (end - start) / 2**20,
        "rss_slope_mb_per_min": slope * 60 / 2**20,
        # Every tenth sample (one per 10 s), from the start: the curve's shape, in the JSON.
        "rss_series_mb": [(round(t, 1), round(rss / 2**20, 2)) for t, rss in samples[::10]],
    }


@dataclass
class _GcPauses:
    """Garbage-collector pauses (they stop the event loop, so they delay checks).

    Kept as running totals, not a list: young collections come ~60 times a second,
    and a list of them would grow the very memory the memory run measures."""

    recording: bool = False
    collections: list[int] = field(default_factory=lambda: [0, 0, 0])  # per generation
    longest: float = 0.0
    total: float = 0.0
    _started: float = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self.recording:
            pause = time.perf_counter() - self._started
            self.collections[info["generation"]] += 1
            self.longest = max(self.longest, pause)
            self.total += pause

    def summary(self, seconds: float) -> dict[str, Any]:
        return {
            "gc_collections": list(self.collections),
            "gc_max_pause_ms": self.longest * 1000,
            "gc_ms_per_s": self.total * 1000 / seconds,
        }


@dataclass
class _Instruments:
    """Everything a run records, filled in by the hooks and the sampler."""

    lateness: LatenessLog | None
    latency: _CommitLatency | None
    counts: _Counts = field(default_factory=_Counts)
    writers: list[ResultWriter] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)
    backlog: list[int] = field(default_factory=list)
    gc: _GcPauses = field(default_factory=_GcPauses)
    flushes: _Flushes = field(default_factory=_Flushes)

    def committed(self) -> int:
        return self.writers[0].stats.committed_results if self.writers else 0

    async def sample(self, every: float) -> None:
        """RSS and the writer's backlog, every `every` seconds, until cancelled."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            self.rss.append((loop.time() - started, rss_bytes()))
            if self.writers:
                self.backlog.append(self.writers[0].stats.pending_results)
            await asyncio.sleep(every)


@dataclass
class _Window:
    """Readings at the start (…0) and end (…1) of the measured window."""

    t0: float
    cpu0: float
    checks0: int
    healthy0: int
    committed0: int
    t1: float = 0.0
    cpu1: float = 0.0
    checks1: int = 0
    healthy1: int = 0
    committed1: int = 0
    missed_slots: int = 0


async def _measure(
    monitor: HealthMonitor, params: MonitorParams, instruments: _Instruments
) -> _Window:
    """Start, warm up, read, run the window, read, stop."""
    loop = asyncio.get_running_loop()
    counts, latency = instruments.counts, instruments.latency
    sampler = asyncio.create_task(instruments.sample(params.sample_every))
    gc.callbacks.append(instruments.gc)
    await monitor.start_monitoring()
    if latency is not None and instruments.writers:
        latency.hook(instruments.writers[0])
    try:
        await asyncio.sleep(params.warmup)
        if "gc-freeze" in params.what_if:  # everything alive after warm-up is long-lived
            gc.collect()
            gc.freeze()
        if latency is not None:
            latency.recording = True
        instruments.gc.recording = instruments.flushes.recording = True
        window = _Window(
            loop.time(), time.process_time(), counts.checks, counts.healthy, instruments.committed()
        )
        await asyncio.sleep(params.duration)
        window.t1, window.cpu1 = loop.time(), time.process_time()
        window.checks1, window.healthy1 = counts.checks, counts.healthy
        window.committed1 = instruments.committed()
        if latency is not None:
            latency.recording = False
        instruments.gc.recording = instruments.flushes.recording = False
        window.missed_slots = sum(monitor.missed_checks.values())
        await asyncio.sleep(0.3)  # let checks due just before t1 start and be logged
    finally:
        sampler.cancel()
        gc.callbacks.remove(instruments.gc)
        await monitor.stop_monitoring()
    return window


def _figures(params: MonitorParams, instruments: _Instruments, window: _Window) -> dict[str, Any]:
    seconds, cpu = window.t1 - window.t0, window.cpu1 - window.cpu0
    checks = window.checks1 - window.checks0
    out: dict[str, Any] = {
        "services": params.services,
        "hz": params.hz,
        "store": params.store,
        "window_s": seconds,
        "cpu_s": cpu,
        "checks": checks,
        "checks_per_s": checks / seconds,
        "scheduled_per_s": params.services * params.hz,
        "healthy_fraction": (window.healthy1 - window.healthy0) / checks if checks else None,
        "cpu_per_check_us": cpu / checks * 1e6 if checks else None,
        "total_checks": instruments.counts.checks,
        "missed_slots": window.missed_slots,
    } | instruments.gc.summary(seconds)
    if instruments.writers:
        stats = instruments.writers[0].stats
        persisted = window.committed1 - window.committed0
        out |= {
            "persisted": persisted,
            "cpu_per_persisted_us": cpu / persisted * 1e6 if persisted else None,
            "committed_results": stats.committed_results,
            "dropped_results": stats.dropped_results,
            "flushes": stats.flushes,
            "backlog_max": max(instruments.backlog, default=0),
        } | instruments.flushes.summary()
    if instruments.lateness is not None:
        out["lateness"] = instruments.lateness.summary(window.t0, window.t1)
    latency = instruments.latency
    if latency is not None:
        out |= {
            "result_to_commit_p50_ms": _ms(percentile(latency.result_to_commit, 50)),
            "result_to_commit_p99_ms": _ms(percentile(latency.result_to_commit, 99)),
            "result_to_commit_n": len(latency.result_to_commit),
            "commit_to_callback_p50_ms": _ms(percentile(latency.commit_to_callback, 50)),
            "commit_to_callback_p99_ms": _ms(percentile(latency.commit_to_callback, 99)),
            "commit_to_callback_n": len(latency.commit_to_callback),
        }
    return out | _rss_summary(instruments.rss, params.warmup)


async def run_monitor(params: MonitorParams) -> dict[str, Any]:
    """Monitor `params.services` targets for warm-up + duration; return the figures."""
    if params.services > len(params.ports):
        raise ValueError(f"{params.services} services but only {len(params.ports)} ports")
    interval = 1.0 / params.hz
    folder = Path(tempfile.mkdtemp(prefix="healthmon-bench-"))
    database = folder / "bench.db"
    instruments = _Instruments(
        lateness=LatenessLog(interval) if params.lateness else None,
        latency=_CommitLatency() if params.latency else None,
    )
    unknown = set(params.what_if) - WHAT_IFS.keys()
    if unknown:
        raise ValueError(f"unknown what-if {sorted(unknown)}; known: {sorted(WHAT_IFS)}")
    undos = [] if instruments.lateness is None else [_hook_schedules(instruments.lateness)]
    if "stagger" in params.what_if:
        undos.append(_stagger_schedules(params.services))
    try:
        async with contextlib.AsyncExitStack() as stack:
            store = None
            if params.store:
                store = await stack.enter_async_context(HealthStore(params.database or database))
                _capture_writer(store, instruments.writers, instruments.flushes)
            client = None
            if "aiohttp-transport" in params.what_if:
                client = _aiohttp_transport_client()
                stack.push_async_callback(client.aclose)
            monitor = HealthMonitor(
                interval,
                store=store,
                http_client=client,
                freeze_gc="no-gc-freeze" not in params.what_if,
            )
            _count_checks(monitor, instruments.counts)
            for index, port in enumerate(params.ports[: params.services]):
                monitor.add_service(_service(index, port, flip=index < params.flip))
            if instruments.latency is not None:
                monitor.subscribe(instruments.latency.subscriber)
            window = await _measure(monitor, params, instruments)
        out = _figures(params, instruments, window)
        if params.store and params.database is not None:
            out["storage"] = await postgres_storage(params.database)
            out["all_committed"] = (
                out["dropped_results"] == 0 and out["storage"]["rows"] == instruments.counts.checks
            )
        elif params.store:  # the store is closed now: count what reached the file
            out["storage"] = storage_stats(database)
            out["all_committed"] = (
                out["dropped_results"] == 0 and out["storage"]["rows"] == instruments.counts.checks
            )
        return out
    finally:
        for undo in undos:
            undo()
        shutil.rmtree(folder, ignore_errors=True)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0
