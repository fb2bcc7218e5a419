"""Filling a database to volume, fast but through the real aggregation code.

Raw rows go in with one executemany per ten minutes of data (as the writer's inserts
do, without the HealthCheckResult-to-row step); the same rows then go through
`Rollup.write` in the same transaction, exactly as the writer calls it, so the
aggregates, histograms and gaps are the ones the monitor would have made.

Each service gets a deterministic stream: latencies log-normal around 4 ms; an incident
about every 8 hours (1 to 10 minutes UNHEALTHY, a third of its checks timeouts without
an answer); the monitor down for 5 minutes once a day (a gap).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from healthmon.micros import ms_to_us, to_us
from healthmon.store.rollup import Rollup
from healthmon.store.schema import check_results, services, status_transitions

__all__ = ["DAY", "Stream", "add_services", "fill"]

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Stream:
    service_id: int
    start: float
    end: float
    rate: float  # checks per second
    raw: bool = True  # False: aggregates only, as after raw retention pruned them


async def add_services(engine: AsyncEngine, names: list[str]) -> dict[str, int]:
    async with engine.begin() as conn:
        await conn.execute(
            insert(services),
            [{"name": name, "kind": "http", "url": None, "created_at": 0.0} for name in names],
        )
    return {name: index + 1 for index, name in enumerate(names)}


async def fill(engine: AsyncEngine, rollup: Rollup, streams: list[Stream]) -> int:
    """Write the streams' results in time order, ten minutes of all of them per
    transaction (as the writer would have); returns how many."""
    sources = [_Source(stream, seed) for seed, stream in enumerate(streams)]
    t = min(stream.start for stream in streams)
    end = max(stream.end for stream in streams)
    written = 0
    newest: dict[int, int] = {}
    while t < end:
        rows, raw, transitions = [], [], []
        for source in sources:
            found, changes = source.take(t, t + 600)
            rows += found
            raw += found if source.stream.raw else []
            transitions += changes
        async with engine.begin() as conn:
            if raw:
                await conn.execute(insert(check_results), raw)
            if transitions:
                await conn.execute(insert(status_transitions), transitions)
            before = {row["service_id"]: newest.get(row["service_id"]) for row in rows}
            await rollup.write(conn, rows, before)
        rollup.committed()
        for row in rows:  # each service's newest written time, as the writer keeps it
            newest[row["service_id"]] = max(row["ts_us"], newest.get(row["service_id"], 0))
        written += len(rows)
        t += 600
    return written


class _Source:
    """One service's deterministic stream of rows."""

    def __init__(self, stream: Stream, seed: int) -> None:
        self.stream = stream
        self._rng = rng = random.Random(seed)
        self._incidents = _spans(rng, stream.start, stream.end, every=8 * 3600, low=60, high=600)
        self._downtime = _spans(rng, stream.start, stream.end, every=DAY, low=300, high=301)
        self._was_down: bool | None = None

    def take(self, since: float, until: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The rows and transitions in [since, until)."""
        stream, rng = self.stream, self._rng
        first = max(0, math.ceil((since - stream.start) * stream.rate))
        last = min(
            math.ceil((until - stream.start) * stream.rate),
            math.ceil((stream.end - stream.start) * stream.rate),
        )
        rows, transitions = [], []
        for i in range(first, last):
            ts = stream.start + i / stream.rate
            if ts in self._downtime:
                continue
            down = ts in self._incidents
            if down and rng.random() < 1 / 3:
                status, latency, error, answered = 3, 5000.0, "timeout after 5000 ms", False
            elif down:
                status, latency, error, answered = 3, rng.lognormvariate(1.4, 0.5), "HTTP 503", True
            else:
                status, latency, error, answered = 0, rng.lognormvariate(1.4, 0.5), None, True
            rows.append(
                {
                    "service_id": stream.service_id,
                    "ts_us": to_us(ts),
                    "status": status,
                    "response_time_us": ms_to_us(latency),
                    "error": error,
                    "details_id": None,
                    "answered": answered,
                }
            )
            if down != self._was_down:
                transitions.append(
                    {
                        "service_id": stream.service_id,
                        "ts": ts,
                        "from_status": None if self._was_down is None else 3 * self._was_down,
                        "to_status": status,
                        "cause": error,
                    }
                )
                self._was_down = down
        return rows, transitions


def _spans(
    rng: random.Random, start: float, end: float, *, every: float, low: float, high: float
) -> _Spans:
    spans = []
    t = start + rng.uniform(0, every)
    while t < end:
        spans.append((t, t + rng.uniform(low, high)))
        t += rng.uniform(0.5, 1.5) * every
    return _Spans(spans)


class _Spans:
    """Membership of increasing times in sorted, disjoint spans: a moving pointer."""

    def __init__(self, spans: list[tuple[float, float]]) -> None:
        self._spans = spans
        self._next = 0

    def __contains__(self, ts: float) -> bool:
        spans = self._spans
        while self._next < len(spans) and spans[self._next][1] <= ts:
            self._next += 1
        return self._next < len(spans) and spans[self._next][0] <= ts
