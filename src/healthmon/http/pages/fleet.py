"""The fleet's recent history for the overview, kept as running sums.

For every service the overview shows the uptime over 24 hours, 30 and 90 days, the p95
latency over 24 hours and a bar per UTC day. Read afresh from hour rows, that is 2.2
million rows for 1,000 services (seconds of SQLite); so `FleetHistory` reads each row
once, in a background task, and keeps sums:
- the days before today (before the day mark: every hour of them closed), once, from
  the day aggregates (`result_days`, one row per service and day: 89,000 rows), then
  each day's rows as it ends;
- the 24 hour aggregates before the current hour, then each new hour's rows as the
  writer closes it; the 24-hour window's counts and latency histogram are kept
  summed, adding the hour that comes and subtracting the one that leaves;
- the current hour's minute aggregates, each new minute's rows as they come;
- the results since the last closed minute, counted in SQL on each reading;
- again, the rows that late results changed after they were read (the store's
  `late` log: the writer reports them after its commit).

So "24 h" is the 24 whole hours before the current hour plus the current hour so far
(24 to 25 hours), and its p95 covers up to the last closed minute. A reading reads
only what is new, at most once per `max_age` seconds, shared by every page. A page
waits for a reading at most `wait` seconds: until the first is complete, the figures
are shown as "reading" (never as figures of part of the rows), and until the days are
read, the 30- and 90-day figures and bars are.
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
from operator import add, sub

import structlog

from healthmon.errors import StorageError
from healthmon.store import Aggregate, DayCounts, HealthStore, StatusCounts, sketch
from healthmon.store.tiers import Changed

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
        # map over C functions: ~5x a comprehension's speed (24,000 histograms of ~200
        # bins are added on a first reading of 1,000 services).
        self.counts[offset:end] = map(add if sign > 0 else sub, self.counts[offset:end], values)

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

    hours: deque[Aggregate] = field(default_factory=deque)  # the 24 whole hours
    window: list[int] = field(default_factory=lambda: [0] * 4)  # their counts
    window_bins: _Bins = field(default_factory=_Bins)
    minute_rows: dict[int, Aggregate] = field(default_factory=dict)  # the current hour's
    minutes: list[int] = field(default_factory=lambda: [0] * 4)
    minute_bins: _Bins = field(default_factory=_Bins)
    minute_days: dict[int, list[int]] = field(default_factory=dict)
    p95: float | None = None
    p95_stale: bool = True  # the bins changed since p95 was computed
    base: _Base | None = None  # None when the hours changed

    def sum_hours(self) -> None:
        """The window's sums afresh from its hours (after a row was read again)."""
        self.window, self.window_bins = [0] * 4, _Bins()
        for hour in self.hours:
            _add(self.window, hour.counts)
            self.window_bins.add(hour.histogram)
        self.base, self.p95_stale = None, True

    def sum_minutes(self) -> None:
        """The current hour's sums afresh from its minute rows."""
        self.minutes, self.minute_bins, self.minute_days = [0] * 4, _Bins(), {}
        for row in self.minute_rows.values():
            self.add_minute(row)
        self.p95_stale = True

    def add_minute(self, row: Aggregate) -> None:
        _add(self.minutes, row.counts)
        self.minute_bins.add(row.histogram)
        _add(self.minute_days.setdefault(row.start // DAY * DAY, [0] * 4), row.counts)


@dataclass(frozen=True, slots=True)
class _Base:
    """A service's bars from its settled days and today's hours, kept until either
    changes; each reading adds the minutes and raw results of the current hour."""

    key: tuple[int, int]  # (first day, version of the settled days)
    bars: tuple[DayBar, ...]
    last_30: list[int]  # status sums of the last 30 bars
    last_90: list[int]


@dataclass(slots=True)
class _Reading:
    at: float
    summaries: dict[str, Summary]
    complete: bool  # the settled days too (30 d, 90 d, bars)


class FleetHistory:
    """Every service's overview figures, from running sums over the store's rows.

    Readings happen in a background task; a view waits for one at most `wait`
    seconds, and is otherwise served the last complete reading (or none yet)."""

    def __init__(
        self,
        store: HealthStore,
        *,
        clock: Callable[[], float] = time.time,
        max_age: float = 10.0,
        wait: float = 0.1,
    ) -> None:
        self.store = store
        self.clock = clock
        self.max_age = max_age
        self.wait = wait
        self._reading: _Reading | None = None
        self._task: asyncio.Task[None] | None = None  # a reading under way
        self._services: dict[str, _Service] = {}
        self._hour_mark: int | None = None  # whole hours before it are summed
        self._minute_mark = 0  # whole minutes of the current hour before it are summed
        self._day_mark = 0  # whole days before it are settled
        self._settled: dict[str, dict[int, StatusCounts]] | None = None  # before _day_mark
        self._settled_task: asyncio.Task[dict[str, list[DayCounts]]] | None = None
        self._settled_version = 0
        self._tail: dict[str, dict[int, StatusCounts]] = {}  # raw, per minute, not aggregated
        self._tail_until = 0.0
        self._late: int | None = None  # the store's late changes read up to this version
        self._lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        """Whether the last reading has every figure (the settled days included)."""
        return self._reading is not None and self._reading.complete

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Begin the first reading in the background."""
        if self._task is None and self._reading is None:
            self._task = asyncio.create_task(
                self._read(self.clock()), name="healthmon-status-page-history"
            )

    async def stop(self) -> None:
        for task in (self._task, self._settled_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StorageError):
                    await task
        self._task = self._settled_task = None

    # -- reading ------------------------------------------------------------------------

    async def summaries(self) -> tuple[float | None, dict[str, Summary]]:
        """(when read, each service's summary) of the last reading, or (None, {})
        before the first; a new reading begins when it is older than max_age, and is
        waited for at most `wait` seconds (`ready`: whether it has every figure)."""
        now = self.clock()
        self._collect()
        reading = self._reading
        if self._task is None and (reading is None or not 0 <= now - reading.at < self.max_age):
            self._task = asyncio.create_task(self._read(now), name="healthmon-status-page-history")
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=self.wait)
            self._collect()
        reading = self._reading
        return (None, {}) if reading is None else (reading.at, reading.summaries)

    def _collect(self) -> None:
        """Forget the reading task once it is done, raising its error if it failed
        (a StorageError: the route says so; the next view begins another)."""
        task = self._task
        if task is not None and task.done():
            self._task = None
            task.result()

    async def read(self) -> tuple[float, dict[str, Summary]]:
        """A complete reading as of now (the settled days included), waited for."""
        for _ in range(3):  # the days' read failed (logged): tried again, twice
            task, self._task = self._task, None
            if task is not None:
                await task
            await self._read(self.clock())
            if self._reading is not None and self._reading.complete:
                return self._reading.at, self._reading.summaries
        raise StorageError(
            f"cannot read the fleet's days for the status page from {self.store!r}: "
            "see the status_page_days_unread log events"
        )

    async def _read(self, now: float) -> None:
        """A reading; published once without the settled days if they are still
        being read, and again with them."""
        async with self._lock:  # one reading at a time
            await self._refresh(now)
            await self._read_tail(now)
            self._reading = _Reading(now, await self._summaries(now), self._settled is not None)
            if self._settled is None and self._settled_task is not None:
                await asyncio.wait({self._settled_task})
                self._take_settled()
                if self._settled is not None:
                    self._reading = _Reading(now, await self._summaries(now), complete=True)

    async def _refresh(self, now: float) -> None:
        coverage = await self.store.coverage()
        late = self.store.late.version  # before any row is read
        # No hour closed in the last day (a new database, a monitor stopped for days):
        # there are no hour rows to read there; minutes are read from a day ago on.
        hour_mark = int(min(coverage.hour_until, now) // HOUR * HOUR)
        hour_mark = max(hour_mark, int(now // HOUR * HOUR) - 24 * HOUR)
        minute_mark = max(hour_mark, int(min(coverage.minute_until, now) // MINUTE * MINUTE))
        day_mark = hour_mark // DAY * DAY  # every hour before it is closed: settled
        if self._hour_mark is not None and (
            hour_mark < self._hour_mark or day_mark < self._day_mark
        ):
            self._forget()  # the marks went back: a new database
        if self._late is not None:
            await self._read_late(self.store.late.after(self._late))
        self._late = late
        if self._hour_mark is None:
            self._day_mark = day_mark
        elif day_mark > self._day_mark:
            await self._settle(day_mark)
        if self._settled_task is None and self._settled is None:
            self._read_settled(now)
        if self._hour_mark != hour_mark:
            await self._add_hours(hour_mark)
        if minute_mark > self._minute_mark:
            self._add_minutes(await self.store.aggregates(MINUTE, self._minute_mark, minute_mark))
            self._minute_mark = minute_mark
        self._take_settled()

    def _forget(self) -> None:
        self._services.clear()
        self._tail.clear()
        self._tail_until = 0.0
        self._hour_mark = None
        self._minute_mark = 0
        self._day_mark = 0
        self._settled = None
        if self._settled_task is not None:
            self._settled_task.cancel()
            self._settled_task = None

    def _read_settled(self, now: float) -> None:
        """Read the days before the day mark (the day tier's rows) in the background."""
        first = int(now // DAY * DAY) - (DAYS - 1) * DAY
        self._settled_task = asyncio.create_task(
            self.store.days(first, max(first, self._day_mark)), name="healthmon-status-page-days"
        )

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
        self._settled_version += 1

    async def _settle(self, day_mark: int) -> None:
        """The days up to the new day mark are over (their hours all closed): read
        their counts (the day rows) into the settled days."""
        if self._settled is None:  # still being read: read again, up to the new day
            if self._settled_task is not None:
                self._settled_task.cancel()
                self._settled_task = None
            self._day_mark = day_mark
            return
        found = await self.store.days(self._day_mark, day_mark)
        for name, days in found.items():
            settled = self._settled.setdefault(name, {})
            for d in days:
                settled[d.day] = d.counts
        self._day_mark = day_mark
        self._settled_version += 1

    async def _add_hours(self, hour_mark: int) -> None:
        """Sum the hours closed since the last reading; move the window to end at
        `hour_mark`: the 24 whole hours before it."""
        start = hour_mark - 24 * HOUR
        since = start if self._hour_mark is None else max(self._hour_mark, start)
        found = await self.store.aggregates(HOUR, since, hour_mark) if since < hour_mark else {}
        for name in found:
            self._services.setdefault(name, _Service())
        for index, (name, service) in enumerate(list(self._services.items())):
            if index % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)  # let the monitor's checks run
            while service.hours and service.hours[0].start < start:  # leaving the window
                hour = service.hours.popleft()
                _add(service.window, hour.counts, -1)
                service.window_bins.add(hour.histogram, -1)
            for row in found.get(name, ()):
                service.hours.append(row)
                _add(service.window, row.counts)
                service.window_bins.add(row.histogram)
            service.base, service.p95_stale = None, True
            service.minute_rows = {}  # the current hour's minutes are read afresh
            service.sum_minutes()
        self._hour_mark, self._minute_mark = hour_mark, hour_mark

    def _add_minutes(self, found: dict[str, list[Aggregate]]) -> None:
        for name, rows in found.items():
            service = self._services.setdefault(name, _Service())
            service.p95_stale = True
            for row in rows:
                service.minute_rows[row.start] = row
                service.add_minute(row)

    async def _read_late(self, changed: Changed | None) -> None:
        """Read again the rows that late results changed since the last reading (rows
        read before: rows not read yet are read as they are when their turn comes).
        None: too many changed to know which: read everything again."""
        if changed is None:
            self._forget()
            return
        if not changed or self._hour_mark is None:
            return
        minutes = {s for w, _, s in changed if w == MINUTE}
        minutes = {s for s in minutes if self._hour_mark <= s < self._minute_mark}
        hours = {s for w, _, s in changed if w == HOUR}
        hours = {s for s in hours if self._hour_mark - 24 * HOUR <= s < self._hour_mark}
        days = {s // DAY * DAY for _, _, s in changed if s // DAY * DAY < self._day_mark}
        for start in sorted(minutes):
            for name, rows in (await self.store.aggregates(MINUTE, start, start + MINUTE)).items():
                service = self._services.setdefault(name, _Service())
                for row in rows:
                    service.minute_rows[row.start] = row
                service.sum_minutes()
        for start in sorted(hours):
            for name, rows in (await self.store.aggregates(HOUR, start, start + HOUR)).items():
                service = self._services.setdefault(name, _Service())
                kept = [h for h in service.hours if h.start not in {r.start for r in rows}]
                service.hours = deque(sorted(kept + rows, key=lambda h: h.start))
                service.sum_hours()
        if days:
            await self._read_days_again(days)

    async def _read_days_again(self, days: set[int]) -> None:
        if self._settled is None:  # still being read, maybe before the change:
            if self._settled_task is not None:  # read them all again
                self._settled_task.cancel()
                self._settled_task = None
            return
        for day in sorted(days):
            for name, counts in (await self.store.days(day, day + DAY)).items():
                settled = self._settled.setdefault(name, {})
                for d in counts:
                    settled[d.day] = d.counts
        self._settled_version += 1

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
        for hour in service.hours:  # the hours of the days not settled yet
            if hour.start >= self._day_mark:
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
