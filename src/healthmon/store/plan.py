"""Which rows answer a window: day aggregates in the middle, hour and minute
aggregates around them, raw results at the unaligned edges.

A window [since, until) is cut into pieces, each read from one tier: whole UTC days
from `result_days`, whole hours from `result_hours`, whole minutes from
`result_minutes`, the rest from `check_results`. So a 30-day report reads ~30 day
rows, up to 46 hour rows, up to 118 minute rows and under two minutes of raw results,
and its counts are still exact.

`history_coverage` says from when each tier is complete (retention raises the marks
as it prunes; aggregates start at the migration that created them). A piece uses a
tier only where it is complete. When the start of a window lies before the raw
results still kept, the window starts at the first time some tier can answer exactly
(e.g. the next whole minute); its end is cut likewise. The plan says what it covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.store.schema import history_coverage

__all__ = ["DAY", "RAW", "Coverage", "Piece", "Plan", "load_coverage", "plan"]

RAW = 0
"""The tier of raw results; aggregate tiers are named by their width (60, 3600, 86400)."""
DAY = 86_400


@dataclass(frozen=True, slots=True)
class Coverage:
    """From when each tier holds every result (epoch seconds)."""

    raw: float = -math.inf
    minute: float = -math.inf
    hour: float = -math.inf
    events: float = -math.inf
    minute_until: float = math.inf  # where the writer's open (unwritten) minutes begin
    hour_until: float = math.inf
    day: float = -math.inf
    day_until: float = math.inf

    def raw_only(self) -> Coverage:
        """The same coverage without aggregates: for exact percentiles."""
        return Coverage(
            self.raw, math.inf, math.inf, self.events, -math.inf, -math.inf, math.inf, -math.inf
        )


@dataclass(frozen=True, slots=True)
class Piece:
    tier: int
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Plan:
    since: float
    until: float
    pieces: tuple[Piece, ...]


async def load_coverage(conn: AsyncConnection) -> Coverage:
    c = history_coverage.c
    marks = {}
    for tier, since, until in await conn.execute(
        select(c.tier, c.complete_since, c.complete_until)
    ):
        marks[tier] = since
        if tier in ("minute", "hour", "day") and until is not None:
            marks[f"{tier}_until"] = until
    return Coverage(**marks)


def plan(since: float, until: float, coverage: Coverage) -> Plan:
    """The pieces that answer [since, until) exactly, and the window they cover."""
    start = t = min(_first_answerable(since, coverage), until)
    pieces: list[Piece] = []
    while t < until:
        if t % DAY == 0 and t >= coverage.day and t + DAY <= min(until, coverage.day_until):
            end = t + (min(until, coverage.day_until) - t) // DAY * DAY
            tier = DAY
        elif t % 3600 == 0 and t >= coverage.hour and t + 3600 <= min(until, coverage.hour_until):
            # Up to the next day, where the day tier may answer.
            end = min(t + (min(until, coverage.hour_until) - t) // 3600 * 3600, _next(t, DAY))
            tier = 3600
        elif t % 60 == 0 and t >= coverage.minute and t + 60 <= min(until, coverage.minute_until):
            end = min(min(until, coverage.minute_until) // 60 * 60, _next(t, 3600))
            tier = 60
        elif t >= coverage.raw:
            end = _next(t, 60)
            if end < coverage.minute:  # no minutes there: stay raw until there are
                end = max(end, _ceil(coverage.minute, 60))
            if _ceil(t, 60) + 60 > min(until, coverage.minute_until) and _ceil(
                t, 3600
            ) + 3600 > min(until, coverage.hour_until):
                # No whole minute or hour of aggregates fits before `until`: raw to the
                # end at once. (A minute at a time, 90 days on a new database took
                # 130,000 turns of this loop: 0.6 s of the event loop.)
                end = until
            end = min(until, end)
            tier = RAW
        else:  # only possible past the window's start: the rest cannot be exact
            break
        if pieces and pieces[-1].tier == tier and pieces[-1].end == t:
            pieces[-1] = Piece(tier, pieces[-1].start, end)
        else:
            pieces.append(Piece(tier, t, end))
        t = end
    return Plan(start, t, tuple(pieces))


def _first_answerable(since: float, coverage: Coverage) -> float:
    """The first time from `since` on where some tier answers exactly."""
    if since >= coverage.raw:
        return since
    return min(
        coverage.raw,
        max(_ceil(since, 60), _ceil(coverage.minute, 60)),
        max(_ceil(since, 3600), _ceil(coverage.hour, 3600)),
        max(_ceil(since, DAY), _ceil(coverage.day, DAY)),
    )


def _ceil(t: float, width: int) -> float:
    return t if math.isinf(t) else math.ceil(t / width) * width


def _next(t: float, width: int) -> float:
    """The first multiple of `width` after t."""
    return (t // width + 1) * width
