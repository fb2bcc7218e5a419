"""The HTTP clients' share of the store: reads on their behalf wait their turn.

The monitor's process runs its checks first. Each store read an API client asks for
(a report, a series, a page of transitions or results) takes CPU from the same
process: SQLite's work on the driver's threads, the decoding on the store's thread.
Fifty clients asking for reports as fast as they are answered took a whole core and
left checks tens of milliseconds late (issue 14). So reads go through one
`ReadBudget`: at most `at_once` of them at a time, and together busy at most `share`
of the time in the long run (a token bucket of reading seconds, `burst` deep: a
page's handful of reads goes at once). A read over the budget waits before it
starts; one under way is never interrupted. Under load, clients wait longer for
history; checks keep their slots. A read is charged its wall time (queueing on the
store's thread included: conservative), and the debt is capped at `burst`, so one
pathological read does not lock the others out for long.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["ReadBudget"]


class ReadBudget:
    """At most `at_once` reads at a time, busy at most `share` of the time."""

    def __init__(self, *, at_once: int = 4, share: float = 0.25, burst: float = 0.5) -> None:
        if at_once < 1:
            raise ValueError(f"at_once must be at least 1, got {at_once!r}")
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share!r}")
        if not burst > 0:
            raise ValueError(f"burst must be a positive number of seconds, got {burst!r}")
        self.at_once = at_once
        self.share = share
        self.burst = burst
        self._slots = asyncio.Semaphore(at_once)
        self._credit = burst  # seconds of reading that may start now
        self._credited_at: float | None = None  # loop time of the last refill
        self.waited = 0.0
        """Seconds reads have waited for the budget (not for a slot), in total."""
        self.queued = 0
        """Reads waiting for a slot now."""

    def _refill(self, now: float) -> None:
        if self._credited_at is not None:
            self._credit = min(self.burst, self._credit + (now - self._credited_at) * self.share)
        self._credited_at = now

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold a read's turn: wait for a slot and for the budget, then charge the
        read's duration to the budget when it ends."""
        self.queued += 1
        try:
            await self._slots.acquire()
        finally:
            self.queued -= 1
        try:
            loop = asyncio.get_running_loop()
            self._refill(loop.time())
            while self._credit <= 0:  # spent: wait until a little is earned back
                pause = -self._credit / self.share + 0.001
                await asyncio.sleep(pause)
                self.waited += pause
                self._refill(loop.time())
            started = loop.time()
            try:
                yield
            finally:
                self._refill(loop.time())
                self._credit = max(-self.burst, self._credit - (loop.time() - started))
        finally:
            self._slots.release()
