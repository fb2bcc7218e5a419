"""Long work on the monitor's loop, cut by time: the loop let go every half millisecond.

Some work runs through every service on the monitor's own loop: an agents' round
(`check_agents_health`), the HTTP face's big answers (`/api/v1/cluster`, `/metrics`:
at 1,000 services 10-20 ms of formatting). Cut by count (100 services a slice), a
slice held the loop 1-3 ms, depending on the services and the machine. A request
arriving meanwhile waits for a slice at each of its turns of the loop (its bytes read,
then its answer: two turns at least) and for the slices of every other such work
under way. Cut by time, a slice holds the loop about `budget` (and one item more).

    pace = Pace()
    for name in names:
        if pace.due():
            await pace.rest()
        ...
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["Pace"]


class Pace:
    """Tells when `budget` seconds have passed since it was made or last let the loop go
    (so make it before the work it paces)."""

    __slots__ = ("_budget", "_until")

    def __init__(self, budget: float = 0.0005) -> None:
        self._budget = budget
        self._until = time.perf_counter() + budget

    def due(self) -> bool:
        """Whether the slice's time is up (a clock read: ~50 ns)."""
        return time.perf_counter() >= self._until

    async def rest(self) -> None:
        """Let the loop run what is ready (I/O, other tasks), then start a new slice."""
        await asyncio.sleep(0)
        self._until = time.perf_counter() + self._budget
