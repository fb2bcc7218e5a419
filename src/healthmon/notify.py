"""Delivery of status changes to subscribers, off the checking path.

One task delivers changes in the order they were committed. Each callback runs
under a time limit; one that raises or overruns is logged and the next is called,
so a bad subscriber delays others by at most its limit and never stops checking.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

import structlog

from healthmon.model import HealthCheckResult

__all__ = ["Notifier"]

log = structlog.get_logger("healthmon.notify")


class Notifier:
    """A queue of changes and the task that hands them to `deliver`, in order."""

    def __init__(
        self,
        deliver: Callable[[HealthCheckResult], Awaitable[None]],
        *,
        max_queued: int = 10_000,
    ) -> None:
        self._deliver = deliver
        self._queue: deque[HealthCheckResult] = deque()
        self._max_queued = max_queued
        self._ready = asyncio.Event()  # something is queued
        self._idle = asyncio.Event()  # everything queued has been delivered
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        """Changes never delivered: the queue overflowed, or stop() ran out of time."""

    def put(self, results: Iterable[HealthCheckResult]) -> None:
        """Queue changes for delivery (never waits)."""
        self._queue.extend(results)
        overflow = len(self._queue) - self._max_queued
        if overflow > 0:
            for _ in range(overflow):
                self._queue.popleft()
            self._count_dropped(overflow, "notification queue full: subscribers too slow")
        if self._queue:
            self._idle.clear()
            self._ready.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="healthmon-notifier")

    async def stop(self, timeout: float = 1.0) -> None:
        """Deliver what is queued within `timeout`, then stop; the rest is counted as dropped."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._queue:
            self._count_dropped(len(self._queue), "monitor stopped before they were delivered")
            self._queue.clear()
        self._idle.set()

    async def _run(self) -> None:
        while True:
            while self._queue:
                await self._deliver(self._queue.popleft())
            self._ready.clear()
            self._idle.set()
            await self._ready.wait()

    def _count_dropped(self, count: int, reason: str) -> None:
        self.dropped += count
        log.error("notifications_dropped", count=count, reason=reason)
