"""What a service's page shows: its report, latency series and status strip over a
chosen window, read from the store; and the overview's row of a service.
"""

from __future__ import annotations

import asyncio
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from healthmon.http.pages.fleet import Summary
from healthmon.model import HealthStatus, StatusTransition
from healthmon.store import HealthStore, ServiceReport, WindowStats

__all__ = [
    "SEVERITY",
    "WINDOWS",
    "FleetRow",
    "Segment",
    "ServiceHistory",
    "read_service",
    "segments",
]

SEVERITY = {
    HealthStatus.UNHEALTHY.value: 0,
    HealthStatus.DEGRADED.value: 1,
    HealthStatus.UNKNOWN.value: 2,
    HealthStatus.HEALTHY.value: 3,
}
"""Sort order of the overview: worst first."""

WINDOWS: dict[str, tuple[float, float]] = {
    # window: (seconds, bucket seconds). Buckets of whole minutes, hours or UTC days,
    # aligned to them, are read from the aggregates alone (90 d: 90 day rows, not
    # 2,160 hour rows); each chart has 60 to 180 points.
    "1h": (3600, 60),
    "24h": (86_400, 600),
    "7d": (7 * 86_400, 3600),
    "30d": (30 * 86_400, 4 * 3600),
    "90d": (90 * 86_400, 86_400),
}


@dataclass(frozen=True, slots=True)
class FleetRow:
    """A service's row of the overview: its status now (the monitor's memory), since
    when (its newest committed transition), and its history."""

    name: str
    status: str
    since: float | None
    error: str | None
    last_check: float | None
    history: Summary


# -- one service ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of the status strip, as shares of the window (0..1)."""

    left: float
    width: float
    kind: str  # unhealthy, degraded, unknown, none (not observed)
    start: float
    end: float | None  # None: still going at the window's end


@dataclass(frozen=True, slots=True)
class ServiceHistory:
    window: str
    since: float
    until: float
    bucket: float
    report: ServiceReport
    buckets: tuple[WindowStats, ...]
    causes: tuple[str | None, ...]  # of each incident, from the transition that began it
    strip: tuple[Segment, ...]


async def read_service(store: HealthStore, name: str, window: str, now: float) -> ServiceHistory:
    """A service's report, latency series and status strip over the chosen window."""
    seconds, bucket = WINDOWS[window]
    until = now
    # Buckets aligned to whole minutes/hours (read from aggregates); the last one ends now.
    since = math.ceil(until / bucket) * bucket - seconds
    # The report and the series from one reading of the rows; the transitions (for
    # the causes) meanwhile, on a connection of their own.
    (report, buckets), transitions = await asyncio.gather(
        store.report_series(name, since, until, bucket=bucket),
        store.transitions(name, since, until),
    )
    return ServiceHistory(
        window=window,
        since=since,
        until=until,
        bucket=bucket,
        report=report,
        buckets=tuple(buckets),
        causes=tuple(_causes(report, transitions)),
        strip=tuple(segments(report, buckets, since, until)),
    )


def _causes(report: ServiceReport, transitions: Sequence[StatusTransition]) -> list[str | None]:
    """The cause of each incident: that of the newest transition to a status other
    than HEALTHY at its start (an incident that began before the window has none in
    it)."""
    failing = [t for t in transitions if t.to_status is not HealthStatus.HEALTHY]
    times = [t.timestamp for t in failing]
    causes: list[str | None] = []
    for incident in report.incidents:
        index = bisect_right(times, incident.start + 1e-6) - 1  # the stored microsecond
        began = None if incident.began_before or index < 0 else failing[index]
        causes.append(None if began is None else began.cause)
    return causes


def segments(
    report: ServiceReport, buckets: Sequence[WindowStats], since: float, until: float
) -> list[Segment]:
    """The strip's coloured stretches over a healthy ground: where nothing was observed
    (gaps, and buckets without any result), then the incidents, by their worst status."""
    span = until - since
    if span <= 0:
        return []
    found: list[Segment] = []

    def add(start: float, end: float | None, kind: str) -> None:
        stop = until if end is None else min(end, until)
        start = max(start, since)
        if stop > start:
            found.append(Segment((start - since) / span, (stop - start) / span, kind, start, end))

    unseen = [(b.since, b.until) for b in buckets if b.counts.total == 0]
    unseen += [(g.start, until if g.end is None else g.end) for g in report.gaps]
    merged: list[list[float]] = []
    for start, end in sorted(unseen):  # one stretch where empty buckets and gaps meet
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in merged:
        add(start, None if end >= until else end, "none")
    for incident in report.incidents:
        add(incident.start, incident.end, incident.worst_status.value)
    return found
