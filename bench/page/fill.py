"""A fleet's database for the status page: N services at 20 Hz with 90 days of history.

Writing 90 days of 1,000 services at 20 Hz through the writer would take days, so the
rows are made directly, in the shape the writer leaves them after months of running:
- hour aggregates for every whole hour of the 90 days before the current hour (72,000
  checks an hour), their histograms drawn from a few log-normal streams around 4 ms
  encoded by store/sketch.py (the writer's own encoding); day aggregates summed from
  them for every whole day before today (as the writer closes days);
- minute aggregates for the whole minutes of the current hour (1,200 checks each), raw
  results at 20 Hz since the current minute began;
- incidents about every 3 days per service (1 to 30 minutes UNHEALTHY), as
  transitions and as the unhealthy counts of their hours; some services failing now;
  a few services added 20 days ago (their earlier days are "not observed"), and gaps;
- `history_coverage` marks saying so (raw results only since the current minute, as
  if retention had pruned the rest), so reports plan their reads as on a real database.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from healthmon.micros import to_us
from healthmon.store import sketch
from healthmon.store.schema import (
    check_results,
    history_coverage,
    result_days,
    result_gaps,
    result_hours,
    result_minutes,
    services,
    status_transitions,
)

__all__ = ["Fleet", "fill_fleet"]

RATE = 20  # checks per second
DAY, HOUR, MINUTE = 86_400, 3600, 60
_BATCH = 20_000


@dataclass(frozen=True, slots=True)
class Fleet:
    names: list[str]
    now: float
    failing: list[str]  # services whose newest transition is not HEALTHY
    rows: dict[str, int]  # rows written per table


def _template(rng: random.Random, checks: int) -> dict[str, Any]:
    """An aggregate row's latency columns for `checks` answered results."""
    mu = rng.uniform(1.2, 1.6)
    latencies = [rng.lognormvariate(mu, 0.4) for _ in range(checks)]
    counts: dict[int, int] = {}
    for latency in latencies:
        index = sketch.bin_of(latency)
        counts[index] = counts.get(index, 0) + 1
    return {
        "answered": checks,
        "latency_sum": math.fsum(latencies),
        "latency_min": min(latencies),
        "latency_max": max(latencies),
        "histogram": sketch.encode(counts),
    }


async def fill_fleet(engine: AsyncEngine, count: int, now: float, days: int = 90) -> Fleet:
    rng = random.Random(15)
    hour0 = int(now // HOUR * HOUR)
    minute0 = int(now // MINUTE * MINUTE)
    start = hour0 - days * 86_400
    names = [f"svc-{i:04d}" for i in range(count)]
    hour_templates = [_template(rng, HOUR * RATE // 8) for _ in range(6)]
    minute_templates = [_template(rng, MINUTE * RATE) for _ in range(6)]
    for template in hour_templates:  # drawn from 1/8 of an hour's checks: scale up
        template["answered"] *= 8
        template["latency_sum"] *= 8
        low, dense = sketch.decode(template["histogram"])
        template["histogram"] = sketch.encode({low + i: n * 8 for i, n in enumerate(dense) if n})
    written = dict.fromkeys(("days", "hours", "minutes", "raw", "transitions", "gaps"), 0)
    day0 = hour0 // DAY * DAY  # today: days before it are closed
    first_day = -(-start // DAY) * DAY  # the first whole day of hours
    failing: list[str] = []
    async with engine.begin() as conn:
        await conn.execute(
            insert(services),
            [{"name": n, "kind": "http", "url": None, "created_at": 0.0} for n in names],
        )
        await conn.execute(delete(history_coverage))
        await conn.execute(
            insert(history_coverage),
            [
                {"tier": "raw", "complete_since": minute0, "complete_until": None},
                {"tier": "minute", "complete_since": hour0, "complete_until": minute0},
                {"tier": "hour", "complete_since": start, "complete_until": hour0},
                {"tier": "day", "complete_since": first_day, "complete_until": day0},
                {"tier": "events", "complete_since": start, "complete_until": None},
            ],
        )
    for sid, name in enumerate(names, start=1):
        late = sid % 97 == 0  # added 20 days ago: older days not observed
        first = hour0 - 20 * 86_400 if late else start
        down = _incidents(rng, first, hour0)
        now_failing = sid % 31 == 0
        transitions: list[dict[str, Any]] = [
            # Every row names every column: executemany takes the first row's keys.
            {"service_id": sid, "ts": first, "from_status": None, "to_status": 0, "cause": None}
        ]
        for begin, end in down:
            transitions.append({"service_id": sid, "ts": begin, "from_status": 0, "to_status": 3,
                                "cause": "HTTP 503"})  # fmt: skip
            transitions.append({"service_id": sid, "ts": end, "from_status": 3, "to_status": 0,
                                "cause": None})  # fmt: skip
        if now_failing:
            when = now - rng.uniform(60, 1800)
            status = 3 if sid % 2 else 2
            transitions.append({"service_id": sid, "ts": when, "from_status": 0,
                                "to_status": status, "cause": "HTTP 503"})  # fmt: skip
            failing.append(name)
        hours = []
        for t in range(first, hour0, HOUR):
            bad = _overlap(down, t, t + HOUR) * RATE
            template = hour_templates[(sid + t // HOUR) % len(hour_templates)]
            hours.append({"service_id": sid, "start": t, "healthy": HOUR * RATE - bad,
                          "unknown": 0, "degraded": 0, "unhealthy": bad, **template})  # fmt: skip
        day_rows = _days(hours, first_day, day0)
        minutes = []
        status_now = 3 if now_failing and sid % 2 else 2 if now_failing else 0
        for t in range(hour0, minute0, MINUTE):
            n = MINUTE * RATE
            template = minute_templates[(sid + t // MINUTE) % len(minute_templates)]
            counts = [n if status_now == code else 0 for code in range(4)]
            minutes.append({"service_id": sid, "start": t, "healthy": counts[0], "unknown": 0,
                            "degraded": counts[2], "unhealthy": counts[3], **template})  # fmt: skip
        raw = [
            {
                "service_id": sid,
                "ts_us": to_us(minute0 + i / RATE),
                "status": status_now,
                "response_time_us": int(rng.lognormvariate(8.3, 0.4)),
                "error": None,
                "details_id": None,
                "answered": True,
            }
            for i in range(int((now - minute0) * RATE))
        ]
        gaps = []
        if sid % 7 == 0:  # the monitor stopped for 5 minutes once
            at = first + rng.uniform(0, hour0 - first - 600)
            gaps.append({"service_id": sid, "start_ts": at, "end_ts": at + 300})
        async with engine.begin() as conn:
            for table, rows, key in (
                (result_days, day_rows, "days"),
                (result_hours, hours, "hours"),
                (result_minutes, minutes, "minutes"),
                (check_results, raw, "raw"),
                (status_transitions, transitions, "transitions"),
                (result_gaps, gaps, "gaps"),
            ):
                for chunk in _chunks(rows):
                    await conn.execute(insert(table), chunk)
                written[key] += len(rows)
    return Fleet(names, now, failing, written)


def _days(hours: list[dict[str, Any]], first_day: int, day0: int) -> list[dict[str, Any]]:
    """The day rows of the hour rows in whole days [first_day, day0), as the writer sums
    them."""
    days: dict[int, dict[str, Any]] = {}
    histograms: dict[int, sketch.Histogram] = {}
    for hour in hours:
        day = hour["start"] // DAY * DAY
        if not first_day <= day < day0:
            continue
        found = days.get(day)
        if found is None:
            days[day] = {**hour, "start": day}
            histograms[day] = sketch.Histogram()
        else:
            for column in ("healthy", "unknown", "degraded", "unhealthy", "answered"):
                found[column] += hour[column]
            found["latency_sum"] += hour["latency_sum"]
            found["latency_min"] = min(found["latency_min"], hour["latency_min"])
            found["latency_max"] = max(found["latency_max"], hour["latency_max"])
        histograms[day].add_blob(hour["histogram"])
    for day, row in days.items():
        low, dense = histograms[day].dense()
        row["histogram"] = sketch.encode({low + i: n for i, n in enumerate(dense) if n})
    return list(days.values())


def _incidents(rng: random.Random, first: float, last: float) -> list[tuple[float, float]]:
    spans = []
    t = first + rng.uniform(0, 3 * 86_400)
    while t < last - HOUR:
        spans.append((t, t + rng.uniform(60, 1800)))
        t += rng.uniform(1.5, 4.5) * 86_400
    return spans


def _overlap(spans: list[tuple[float, float]], start: float, end: float) -> int:
    return int(sum(max(0.0, min(e, end) - max(s, start)) for s, e in spans))


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for first in range(0, len(rows), _BATCH):
        yield rows[first : first + _BATCH]
