"""Fixed-rate scheduling on the event loop's monotonic clock.

Slot k of a schedule is due at `start + k * interval`, whatever the checks
themselves take, so a schedule does not drift. A check that overruns its slot
makes the schedule skip the slots it missed (counted in `missed`) instead of
firing them in a burst: a health check that is late is worth less than the next.
"""

from __future__ import annotations

import asyncio
import math

__all__ = ["FixedRateSchedule"]


class FixedRateSchedule:
    """Slots every `interval` seconds from `start` (loop time; now if None)."""

    def __init__(self, interval: float, start: float | None = None) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        self.interval = interval
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time() if start is None else start
        self._index = 0  # slot times are computed from the index: no float drift
        self.missed = 0
        """Slots skipped because the previous check overran them."""

    @property
    def next_slot(self) -> float:
        return self._start + self._index * self.interval

    async def wait(self) -> float:
        """Sleep until the next due slot and return its scheduled time.

        If one or more whole slots have already passed, they are skipped and
        counted; a slot that is due but less than a full interval late still runs.
        """
        now = self._loop.time()
        behind = now - self.next_slot
        if behind >= self.interval:
            skipped = math.floor(behind / self.interval)
            self.missed += skipped
            self._index += skipped
        slot = self.next_slot
        if slot > now:
            await asyncio.sleep(slot - now)
        self._index += 1
        return slot
