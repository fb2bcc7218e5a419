"""Delivery of committed changes to subscribers, off the checking path.

Each subscriber has a lane of its own: a queue and a task that calls it with the
changes in commit order, each call under a time limit. A subscriber that raises
or hangs holds up only its own lane, never checking and never the others. A lane
holds at most `max_queued` changes; beyond that, and at stop, what could not be
delivered is counted and logged, never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence

import structlog

from healthmon.model import HealthCheckResult

__all__ = ["Notifier"]

log = structlog.get_logger("healthmon.notify")

Callback = Callable[[HealthCheckResult], Awaitable[None]]


class _Lane:
    """One subscriber's queue and the task that delivers it."""

    def __init__(self, call: Callable[[HealthCheckResult], Awaitable[None]]) -> None:
        self.queue: deque[HealthCheckResult] = deque()
        self.ready = asyncio.Event()  # something is queued
        self.idle = asyncio.Event()  # everything queued has been delivered
        self.idle.set()
        self.task = asyncio.create_task(self._run(call), name="healthmon-notify")

    def put(self, result: HealthCheckResult) -> None:
        self.queue.append(result)
        self.idle.clear()
        self.ready.set()

    async def _run(self, call: Callable[[HealthCheckResult], Awaitable[None]]) -> None:
        while True:
            while self.queue:
                await call(self.queue[0])
                self.queue.popleft()  # only now: a change is never lost mid-delivery
            self.ready.clear()
            self.idle.set()
            await self.ready.wait()


class Notifier:
    """Fans committed changes out to the current subscribers, one lane each."""

    def __init__(
        self,
        subscribers: Callable[[], Sequence[Callback]],
        call: Callable[[Callback, HealthCheckResult], Awaitable[None]],
        *,
        max_queued: int = 10_000,
    ) -> None:
        self._subscribers = subscribers
        self._call = call
        self._max_queued = max_queued
        self._lanes: dict[Callback, _Lane] = {}
        self._retired: list[_Lane] = []  # lanes of unsubscribed callbacks, ending
        self.dropped = 0
        """Changes not delivered: a lane overflowed, or stop() ran out of time."""

    def put(self, results: Iterable[HealthCheckResult]) -> None:
        """Queue changes for every current subscriber (never waits)."""
        results = list(results)
        subscribers = self._subscribers()
        for gone in [cb for cb in self._lanes if cb not in subscribers]:
            retired = self._lanes.pop(gone)  # unsubscribed: what it had queued is not owed
            retired.task.cancel()
            self._retired.append(retired)
        for callback in subscribers:
            lane = self._lanes.get(callback)
            if lane is None:
                lane = self._lanes[callback] = _Lane(functools.partial(self._call, callback))
            for result in results:
                lane.put(result)
            overflow = len(lane.queue) - self._max_queued
            if overflow > 0:
                for _ in range(overflow):
                    lane.queue.pop()  # the newest: the oldest may be being delivered
                self._count_dropped(overflow, "a subscriber's queue is full: it is too slow")

    async def stop(self, timeout: float = 1.0) -> None:
        """Deliver what is queued within `timeout`, then stop; the rest is counted."""
        lanes, self._lanes = list(self._lanes.values()), {}
        retired, self._retired = self._retired, []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(lane.idle.wait() for lane in lanes))
        for lane in lanes:
            lane.task.cancel()
        await asyncio.gather(*(lane.task for lane in lanes + retired), return_exceptions=True)
        undelivered = sum(len(lane.queue) for lane in lanes)
        if undelivered:
            self._count_dropped(undelivered, "monitor stopped before they were delivered")

    def _count_dropped(self, count: int, reason: str) -> None:
        self.dropped += count
        log.error("notifications_dropped", count=count, reason=reason)
