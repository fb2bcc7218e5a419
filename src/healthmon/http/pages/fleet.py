"""The fleet's recent history for the overview, kept as running sums.

For every service the overview shows the uptime over 24 hours, 30 and 90 days, the p95
latency over 24 hours and a bar per UTC day. Read afresh, that is 2.2 million hour rows
for 1,000 services (seconds of SQLite); so `FleetHistory` reads each row once:
- the days before yesterday, once (in the background, from `start()`): they no
  longer change;
- the hour aggregates since yesterday began, then each new hour's rows as the
  writer closes it; the 24-hour window's counts and latency histogram are kept
  summed, adding the hour that comes and subtracting the one that leaves;
- the current hour's minute aggregates, each new minute's rows as they come;
- the results since the last closed minute, counted in SQL on each refresh.

So "24 h" is the 24 whole hours before the current hour plus the current hour so far
(24 to 25 hours), and its p95 covers up to the last closed minute. A refresh reads
only what is new, at most once per `max_age` seconds, shared by every page.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate

import structlog

from healthmon.errors import StorageError
from healthmon.store import Aggregate, DayCounts, HealthStore, StatusCounts, sketch

__all__ = ["DAYS", "EMPTY", "DayBar", "FleetHistory", "Summary", "day_level"]

log = structlog.get_logger("healthmon.http")

DAY = 86_400
HOUR = 3600
MINUTE = 60
DAYS = 90
"""Days of bars on the overview (today and the 89 before)."""


def day_level(uptime: float | None) -> str:
    """The colour class of a day's bar (always shown with its figures in words too)."""
    if uptime is None:
        return "none"
    if uptime >= 0.999:
        return "ok"
    if uptime >= 0.99:
        return "minor"
    if uptime >= 0.95:
        return "major"
    return "down"


@dataclass(frozen=True, slots=True)
class DayBar:
    day: int  # epoch seconds of its UTC midnight
    counts: StatusCounts

    @property
    def uptime(self) -> float | None:
        """None: no result that day ("not observed")."""
        return self.counts.uptime

    @property
    def failed(self) -> int:
        return self.counts.degraded + self.counts.unhealthy

    @property
    def level(self) -> str:
        return day_level(self.counts.uptime)


@dataclass(frozen=True, slots=True)
class Summary:
    """A service's history as the overview shows it. Without `days` (an empty tuple)
    the days before yesterday are still being read: the 30- and 90-day figures too."""

    uptime_24h: float | None
    uptime_30d: float | None
    uptime_90d: float | None
    p95_24h: float | None
    days: tuple[DayBar, ...]


EMPTY = Summary(None, None, None, None, ())


class _Bins:
    """Counts per histogram bin (store/sketch.py's bins), added and subtracted."""

    __slots__ = ("counts", "low")

    def __init__(self) -> None:
        self.low = 0
        self.counts: list[int] = []

    def add(self, blob: bytes, sign: int = 1) -> None:
        low, values = sketch.decode(blob)
        if not values:
            return
        if not self.counts:
            self.low, self.counts = low, [0] * len(values)
        if low < self.low:
            self.counts[:0] = [0] * (self.low - low)
            self.low = low
        offset = low - self.low
        end = offset + len(values)
        if end > len(self.counts):
            self.counts.extend([0] * (end - len(self.counts)))
        part = self.counts[offset:end]
        self.counts[offset:end] = [a + sign * b for a, b in zip(part, values, strict=True)]

    def percentile(self, p: int, other: _Bins) -> float | None:
        """The p-th percentile (nearest rank) of these counts and `other`'s together."""
        if not other.counts:
            low, counts = self.low, self.counts
        elif not self.counts:
            low, counts = other.low, other.counts
        else:
            low = min(self.low, other.low)
            size = max(self.low + len(self.counts), other.low + len(other.counts)) - low
            counts = [0] * size
            for bins in (self, other):
                at = bins.low - low
                part = counts[at : at + len(bins.counts)]
                counts[at : at + len(bins.counts)] = map(sum, zip(part, bins.counts, strict=True))
        cumulative = list(accumulate(counts))
        if not cumulative or cumulative[-1] <= 0:
            return None
        rank = -(-p * cumulative[-1] // 100)
        return sketch.estimate(low + bisect_left(cumulative, rank))


def _add(into: list[int], counts: StatusCounts, sign: int = 1) -> None:
    into[0] += sign * counts.healthy
    into[1] += sign * counts.unknown
    into[2] += sign * counts.degraded
    into[3] += sign * counts.unhealthy


@dataclass(slots=True)
class _Service:
    """One service's running sums."""

    hours: deque[Aggregate] = field(default_factory=deque)  # since yesterday began
    window: list[int] = field(default_factory=lambda: [0] * 4)  # the 24 whole hours
    window_bins: _Bins = field(default_factory=_Bins)
    minutes: list[int] = field(default_factory=lambda: [0] * 4)  # the current hour's
    minute_bins: _Bins = field(default_factory=_Bins)
    minute_days: dict[int, list[int]] = field(default_factory=dict)
    p95: float | None = None
    p95_stale: bool = True  # the bins changed since p95 was computed
    base: _Base | None = None  # None when the hours changed


@dataclass(frozen=True, slots=True)
class _Base:
    """A service's bars from its hours and settled days, kept until either changes;
    each reading adds the minutes and raw results of the last day or two."""

    key: tuple[int, int]  # (first day, version of the settled days)
    bars: tuple[DayBar, ...]
    last_30: list[int]  # status sums of the last 30 bars
    last_90: list[int]


@dataclass(slots=True)
class _Reading:
    at: float
    summaries: dict[str, Summary]


class FleetHistory:
    """Every service's overview figures, from running sums over the store's rows."""

    def __init__(
        self, store: HealthStore, *, clock: Callable[[], float] = time.time, max_age: float = 10.0
    ) -> None:
        self.store = store
        self.clock = clock
        self.max_age = max_age
        self._lock = asyncio.Lock()
        self._reading: _Reading | None = None
        self._services: dict[str, _Service] = {}
        self._hour_mark: int | None = None  # whole hours before it are summed
        self._minute_mark = 0  # whole minutes of the current hour before it are summed
        self._today = 0
        self._settled: dict[str, dict[int, StatusCounts]] | None = None  # before yesterday
        self._settled_task: asyncio.Task[dict[str, list[DayCounts]]] | None = None
        self._tail: dict[str, dict[int, StatusCounts]] = {}  # raw, per minute, not aggregated
        self._tail_until = 0.0
        self._settled_version = 0

    @property
    def ready(self) -> bool:
        """Whether the days before yesterday have been read (the 30- and 90-day figures)."""
        return self._settled is not None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Begin reading the settled days in the background."""
        if self._settled_task is None and self._settled is None:
            self._read_settled(self.clock())

    async def stop(self) -> None:
        task, self._settled_task = self._settled_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StorageError):
                await task

    def _read_settled(self, now: float) -> None:
        today = int(now // DAY * DAY)
        first, until = today - (DAYS - 1) * DAY, today - DAY
        self._settled_task = asyncio.create_task(
            self.store.days(first, until), name="healthmon-status-page-days"
        )

    # -- reading ------------------------------------------------------------------------

    async def summaries(self) -> tuple[float, dict[str, Summary]]:
        """(when read, each service's summary); refreshed when older than max_age."""
        async with self._lock:  # one refresh at a time; pages meanwhile share it
            now = self.clock()
            reading = self._reading
            if reading is None or not 0 <= now - reading.at < self.max_age:
                await self._refresh(now)
                await self._read_tail(now)
                reading = self._reading = _Reading(now, await self._summaries(now))
            return reading.at, reading.summaries

    async def _refresh(self, now: float) -> None:
        coverage = await self.store.coverage()
        # No hour closed in the last day (a new database, a monitor stopped for days):
        # there are no hour rows to read there; minutes are read from a day ago on.
        hour_mark = int(min(coverage.hour_until, now) // HOUR * HOUR)
        hour_mark = max(hour_mark, int(now // HOUR * HOUR) - 24 * HOUR)
        minute_mark = max(hour_mark, int(min(coverage.minute_until, now) // MINUTE * MINUTE))
        today = int(now // DAY * DAY)
        if self._hour_mark is not None and (hour_mark < self._hour_mark or today < self._today):
            self._forget(now)  # the marks went back: a new database
        if self._settled_task is None and self._settled is None:
            self._read_settled(now)
        if self._hour_mark != hour_mark:
            await self._add_hours(hour_mark, today)
        if minute_mark > self._minute_mark:
            self._add_minutes(await self.store.aggregates(MINUTE, self._minute_mark, minute_mark))
            self._minute_mark = minute_mark
        self._take_settled()

    def _forget(self, now: float) -> None:
        self._services.clear()
        self._tail.clear()
        self._tail_until = 0.0
        self._hour_mark = None
        self._minute_mark = 0
        self._settled = None
        if self._settled_task is not None:
            self._settled_task.cancel()
            self._settled_task = None

    async def _add_hours(self, hour_mark: int, today: int) -> None:
        """Sum the hours closed since the last reading; move the window to end at
        `hour_mark`; settle the days that passed out of "yesterday and today"."""
        yesterday = today - DAY
        since = yesterday if self._hour_mark is None else max(self._hour_mark, yesterday)
        found = await self.store.aggregates(HOUR, since, hour_mark) if since < hour_mark else {}
        old_start = None if self._hour_mark is None else self._hour_mark - 24 * HOUR
        new_start = hour_mark - 24 * HOUR
        if today > self._today and self._hour_mark is not None:
            self._settle(yesterday)
        for name in found:
            self._services.setdefault(name, _Service())
        for index, (name, service) in enumerate(list(self._services.items())):
            if index % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)  # let the monitor's checks run
            if old_start is not None:
                for hour in service.hours:  # hours leaving the window
                    if hour.start >= new_start:
                        break
                    if hour.start >= old_start:
                        _add(service.window, hour.counts, -1)
                        service.window_bins.add(hour.histogram, -1)
            for row in found.get(name, ()):
                service.hours.append(row)
                if row.start >= new_start:
                    _add(service.window, row.counts)
                    service.window_bins.add(row.histogram)
            while service.hours and service.hours[0].start < yesterday:
                service.hours.popleft()
            service.base, service.p95_stale = None, True
            service.minutes = [0] * 4  # the current hour's minutes are read afresh
            service.minute_bins = _Bins()
            service.minute_days = {}
        self._hour_mark, self._minute_mark, self._today = hour_mark, hour_mark, today

    def _settle(self, yesterday: int) -> None:
        """Days before the new `yesterday` no longer change: keep their counts."""
        if self._settled is None:  # still being read: read again, up to the new day
            if self._settled_task is not None:
                self._settled_task.cancel()
                self._settled_task = None
            return
        for name, service in self._services.items():
            sums: dict[int, list[int]] = {}
            for hour in service.hours:
                if hour.start < yesterday:
                    _add(sums.setdefault(hour.start // DAY * DAY, [0] * 4), hour.counts)
            days = self._settled.setdefault(name, {})
            for day, counts in sums.items():
                days[day] = StatusCounts(*counts)
        self._settled_version += 1

    def _add_minutes(self, found: dict[str, list[Aggregate]]) -> None:
        for name, rows in found.items():
            service = self._services.setdefault(name, _Service())
            service.p95_stale = True
            for row in rows:
                _add(service.minutes, row.counts)
                service.minute_bins.add(row.histogram)
                _add(service.minute_days.setdefault(row.start // DAY * DAY, [0] * 4), row.counts)

    def _take_settled(self) -> None:
        task = self._settled_task
        if task is None or not task.done():
            return
        self._settled_task = None
        try:
            found = task.result()
        except (StorageError, asyncio.CancelledError) as exc:
            log.warning("status_page_days_unread", error=str(exc), consequence="retried")
            return
        self._settled = {name: {d.day: d.counts for d in days} for name, days in found.items()}

    async def _read_tail(self, now: float) -> None:
        """Count the raw results since the last reading, per minute; drop the minutes
        the writer has aggregated since (they are in the minute rows now). A result
        committed after its minute was read here is missed until its minute closes."""
        for minutes in self._tail.values():
            for minute in [m for m in minutes if m < self._minute_mark]:
                del minutes[minute]
        since = max(self._tail_until, self._minute_mark)
        if since >= now:
            return
        for name, found in (await self.store.minute_counts(since, now)).items():
            minutes = self._tail.setdefault(name, {})
            for minute, counts in found.items():
                before = minutes.get(minute)
                if before is None:
                    minutes[minute] = counts
                else:
                    total = [0] * 4
                    _add(total, before)
                    _add(total, counts)
                    minutes[minute] = StatusCounts(*total)
        self._tail_until = now

    # -- the figures --------------------------------------------------------------------

    async def _summaries(self, now: float) -> dict[str, Summary]:
        today = int(now // DAY * DAY)
        first_day = today - (DAYS - 1) * DAY
        result = {}
        names = self._services.keys() | self._tail.keys() | (self._settled or {}).keys()
        for turn, name in enumerate(names):
            if turn % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)  # let the monitor's checks run
            service = self._services.setdefault(name, _Service())
            # What came since the hours: the current hour's minutes, the raw tail.
            extra: dict[int, list[int]] = {
                day: list(sums) for day, sums in service.minute_days.items()
            }
            window = [a + b for a, b in zip(service.window, service.minutes, strict=True)]
            for minute, counts in self._tail.get(name, {}).items():
                _add(extra.setdefault(minute // DAY * DAY, [0] * 4), counts)
                _add(window, counts)
            if service.p95_stale:
                service.p95 = service.window_bins.percentile(95, service.minute_bins)
                service.p95_stale = False
            uptime_24h = StatusCounts(*window).uptime
            if self._settled is None:
                result[name] = Summary(uptime_24h, None, None, service.p95, ())
                continue
            base = self._base(name, service, first_day, today)
            bars = list(base.bars)
            last_30, last_90 = list(base.last_30), list(base.last_90)
            for day, sums in extra.items():
                index = (day - first_day) // DAY
                if 0 <= index < DAYS:
                    counts = StatusCounts(*sums)
                    bar = bars[index]
                    total = [0] * 4
                    _add(total, bar.counts)
                    _add(total, counts)
                    bars[index] = DayBar(day, StatusCounts(*total))
                    _add(last_90, counts)
                    if index >= DAYS - 30:
                        _add(last_30, counts)
            result[name] = Summary(
                uptime_24h=uptime_24h,
                uptime_30d=StatusCounts(*last_30).uptime,
                uptime_90d=StatusCounts(*last_90).uptime,
                p95_24h=service.p95,
                days=tuple(bars),
            )
        return result

    def _base(self, name: str, service: _Service, first_day: int, today: int) -> _Base:
        key = (first_day, self._settled_version)
        if service.base is not None and service.base.key == key:
            return service.base
        settled = (self._settled or {}).get(name, {})
        from_hours: dict[int, list[int]] = {}
        for hour in service.hours:
            _add(from_hours.setdefault(hour.start // DAY * DAY, [0] * 4), hour.counts)
        bars = tuple(
            DayBar(
                day,
                StatusCounts(*from_hours[day]) if day in from_hours else settled.get(day, _NONE),
            )
            for day in range(first_day, today + DAY, DAY)
        )
        last_30, last_90 = [0] * 4, [0] * 4
        for index, bar in enumerate(bars):
            _add(last_90, bar.counts)
            if index >= DAYS - 30:
                _add(last_30, bar.counts)
        service.base = _Base(key, bars, last_30, last_90)
        return service.base


_NONE = StatusCounts()
_YIELD_EVERY = 100
"""Services summed between two turns of the event loop (a few milliseconds)."""
