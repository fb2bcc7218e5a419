"""Check workers: the HTTP checks of one monitor spread over processes of their own.

One CPython process makes ~2,000 checks a second on one core, and everything else
the monitor does (recording, the HTTP face, the store's thread) shares that core and
its interpreter lock. With `HealthMonitor(check_workers=N)` the checks run in N child
processes instead (child.py): each keeps its share of the schedules and sends the
results back in batches; the monitor's own loop only records them. Clients of the
HTTP face, reports and garbage collections of the monitor then delay no check.

A worker that dies, or that has not been heard from for 5 s (stopped, its loop
blocked: it is killed), is started again and given its schedules back (one second
later if it lived less than one: a worker that cannot start is retried once a second,
not in a tight loop); its checks pause meanwhile, the slots counted as missed. No
worker outlives `stop()`; a worker whose monitor dies sees its input close and ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import site
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from healthmon.model import HealthCheckResult, HealthStatus
from healthmon.workers.wire import CheckOrder, ResultRow, frame, read_frame

__all__ = ["MAX_CHECK_WORKERS", "CheckWorkers", "validate_check_workers"]

log = structlog.get_logger("healthmon")

MAX_CHECK_WORKERS = 64
_STOP_TIMEOUT = 5.0
"""Seconds a worker has to cancel its checks and exit once told; then it is killed."""
_RESTART_PAUSE = 1.0
_SILENCE = 5.0
"""Seconds without a message (results, or the one-a-second "alive") after which a
worker is taken for hung and killed."""
_CHILD = "healthmon.workers.child"
"""The worker's program, a module run with `python -m`."""
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
"""The folder holding the healthmon package a worker must import (this one)."""
_SITE = {str(Path(p).resolve()) for p in (*site.getsitepackages(), site.getusersitepackages())}
"""Where an installed healthmon is: on a worker's path already (the same interpreter),
and not to be put before the standard library."""

_STATUSES = {status.value: status for status in HealthStatus}


def validate_check_workers(count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"check_workers must be a whole number of processes, got {count!r}")
    if not 0 <= count <= MAX_CHECK_WORKERS:
        raise ValueError(
            f"check_workers must be between 0 (checks on the monitor's loop) and "
            f"{MAX_CHECK_WORKERS}, got {count}"
        )
    return count


@dataclass(eq=False)
class _Schedule:
    """A service's schedule, as given to a worker."""

    name: str
    token: int
    rate: float  # checks a second
    order: CheckOrder
    worker: _Worker
    missed: int = 0  # slots skipped, in every worker that ran it
    missed_before: int = 0  # ... in the workers before the one that runs it now
    last_slot: float | None = None  # of its last result received


@dataclass(eq=False)
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    started: float  # time.monotonic()
    schedules: dict[int, _Schedule] = field(default_factory=dict)
    reading: asyncio.Task[None] | None = None
    heard_at: float = 0.0  # time.monotonic() of its last message (or its start)

    @property
    def rate(self) -> float:
        return sum(schedule.rate for schedule in self.schedules.values())

    def send(self, message: tuple[Any, ...]) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.write(frame(message))


class CheckWorkers:
    """`count` check worker processes; `on_results` gets each batch of results (from
    the loop that called `start()`), of services still attached only."""

    def __init__(
        self, count: int, on_results: Callable[[Sequence[HealthCheckResult]], None]
    ) -> None:
        self.count = validate_check_workers(count)
        self._on_results = on_results
        self._workers: list[_Worker] = []
        self._by_name: dict[str, _Schedule] = {}
        self._by_token: dict[int, _Schedule] = {}
        self._tokens = 0
        self._stopping = False
        self._watching: asyncio.Task[None] | None = None
        self.restarts = 0
        """Workers started again after one died."""

    @property
    def running(self) -> int:
        """Worker processes alive now."""
        return sum(1 for worker in self._workers if worker.process.returncode is None)

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    @property
    def missed(self) -> dict[str, int]:
        """Slots skipped per attached service (its previous check overran them)."""
        return {name: schedule.missed for name, schedule in self._by_name.items()}

    def attached(self, name: str) -> bool:
        return name in self._by_name

    async def start(self) -> None:
        try:
            for index in range(self.count):
                self._workers.append(await self._spawn(index))
            self._watching = asyncio.create_task(self._watch(), name="healthmon-check-workers")
        except BaseException:
            await self.stop()
            raise

    def attach(self, order: CheckOrder) -> None:
        """Check `order.name` as it says, on the least busy worker."""
        name = order.name
        self.detach(name)
        worker = min(self._workers, key=lambda w: w.rate)
        self._tokens += 1
        token = self._tokens
        schedule = _Schedule(name, token, 1.0 / order.interval, order, worker)
        self._by_name[name] = self._by_token[token] = worker.schedules[token] = schedule
        worker.send(("add", token, order))

    def detach(self, name: str) -> None:
        """Stop checking `name`; results of it still on their way are dropped."""
        schedule = self._by_name.pop(name, None)
        if schedule is None:
            return
        del self._by_token[schedule.token]
        del schedule.worker.schedules[schedule.token]
        schedule.worker.send(("remove", schedule.token))

    async def stop(self) -> None:
        """Tell every worker to stop, record what they send until they exit (killing
        one that takes over 5 s), and forget every schedule."""
        self._stopping = True
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
            self._watching = None
        workers, self._workers = self._workers, []
        try:
            await asyncio.gather(*(self._stop(worker) for worker in workers))
        finally:
            self._by_name.clear()
            self._by_token.clear()

    async def _stop(self, worker: _Worker) -> None:
        process = worker.process
        worker.send(("stop",))
        if process.stdin is not None:
            process.stdin.close()
        try:
            async with asyncio.timeout(_STOP_TIMEOUT):
                if worker.reading is not None:
                    await asyncio.shield(worker.reading)
                await process.wait()
        except TimeoutError:
            log.error("check_worker_killed", pid=process.pid, after_s=_STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        except BaseException:  # the stop itself cancelled: the process ends all the same
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        finally:
            if worker.reading is not None:
                worker.reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.reading

    async def _spawn(self, index: int) -> _Worker:
        env = dict(os.environ)
        if _PACKAGE_ROOT not in _SITE:  # a source tree: the worker imports this healthmon
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p
            )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",  # the current folder not first on sys.path: a module there shadows nothing
            "-m",
            _CHILD,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # a Ctrl-C to the terminal is the monitor's to handle
        )
        worker = _Worker(index, process, time.monotonic(), heard_at=time.monotonic())
        worker.reading = asyncio.create_task(
            self._read(worker), name=f"healthmon-check-worker:{index}"
        )
        log.debug("check_worker_started", worker=index, pid=process.pid)
        return worker

    async def _read(self, worker: _Worker) -> None:
        stdout = worker.process.stdout
        assert stdout is not None
        try:
            while (message := await read_frame(stdout)) is not None:
                worker.heard_at = time.monotonic()
                if message[0] == "alive":
                    continue
                if message[0] == "results":
                    self._take(message[1])
                elif message[0] == "log":
                    _, level, event, fields = message
                    getattr(log, level, log.info)(event, worker_pid=worker.process.pid, **fields)
                else:
                    raise ValueError(f"unknown message {message[0]!r}")
        except (ValueError, LookupError, TypeError) as exc:
            # A broken stream or a message not as sent: replaced like a dead worker.
            log.error("check_worker_stream_broken", pid=worker.process.pid, error=str(exc))
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
        if not self._stopping:
            await self._replace(worker)

    def _take(self, rows: list[ResultRow]) -> None:
        results = []
        by_token = self._by_token
        for token, status, took, at, details, error, answered, slot, missed in rows:
            schedule = by_token.get(token)
            if schedule is None:  # detached while it was on its way
                continue
            schedule.missed = schedule.missed_before + missed
            schedule.last_slot = slot
            results.append(
                HealthCheckResult(
                    service_name=schedule.name,
                    status=_STATUSES[status],
                    response_time_ms=took,
                    timestamp=at,
                    details=details,
                    error=error,
                    answered=answered,
                )
            )
        if results:
            try:
                self._on_results(results)
            except Exception as exc:  # the reading goes on: the next batch may do
                log.error("check_results_not_recorded", batch=len(results), error=repr(exc))

    async def _watch(self) -> None:
        """Kill a worker not heard from within _SILENCE: its reader then replaces it."""
        ticked = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if now - ticked > 2.0:  # this loop was held: the workers' messages wait unread
                for worker in self._workers:
                    worker.heard_at = now
            ticked = now
            for worker in self._workers:
                if worker.process.returncode is None and now - worker.heard_at > _SILENCE:
                    log.error(
                        "check_worker_unresponsive",
                        worker=worker.index,
                        pid=worker.process.pid,
                        silent_s=round(now - worker.heard_at, 1),
                    )
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()
                    worker.heard_at = now  # (killed once: its reader takes it from here)

    async def _replace(self, dead: _Worker) -> None:
        code = await dead.process.wait()
        lived = time.monotonic() - dead.started
        log.error(
            "check_worker_exited",
            worker=dead.index,
            pid=dead.process.pid,
            returncode=code,
            services=len(dead.schedules),
        )
        while True:
            if lived < _RESTART_PAUSE:
                await asyncio.sleep(_RESTART_PAUSE)
            if self._stopping:
                return
            try:
                worker = await self._spawn(dead.index)
                break
            except OSError as exc:  # no process could be started: try again, once a second
                log.error("check_worker_not_started", worker=dead.index, error=repr(exc))
                lived = 0.0
        if self._stopping:  # stop() came while it started: it has the dead one only
            await self._stop(worker)
            return
        self.restarts += 1
        self._workers[self._workers.index(dead)] = worker
        for token, schedule in dead.schedules.items():
            schedule.worker = worker
            worker.schedules[token] = schedule
            order = schedule.order
            if schedule.last_slot is not None:  # on from the slot after its last result
                start = schedule.last_slot + order.interval
                order = dataclasses.replace(order, start=start, resumed=True)
            schedule.missed_before = schedule.missed
            worker.send(("add", token, order))
