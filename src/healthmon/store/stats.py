"""What the history API returns: frozen dataclasses, times in UTC epoch seconds.

Every figure is about a half-open window [since, until). A report's `since`/`until`
are the window its figures cover: the one asked for, unless part of it lies before
what retention kept (see store/plan.py), in which case they say what was covered.
"""

from __future__ import annotations

from dataclasses import dataclass

from healthmon.model import HealthStatus

__all__ = ["Gap", "Incident", "LatencyStats", "ServiceReport", "StatusCounts", "WindowStats"]


@dataclass(frozen=True, slots=True)
class StatusCounts:
    """How many results had each status. Exact for any window."""

    healthy: int = 0
    unknown: int = 0
    degraded: int = 0
    unhealthy: int = 0

    @property
    def total(self) -> int:
        return self.healthy + self.unknown + self.degraded + self.unhealthy

    @property
    def uptime(self) -> float | None:
        """(HEALTHY + DEGRADED) / every result but UNKNOWN; None without such results."""
        known = self.healthy + self.degraded + self.unhealthy
        return (self.healthy + self.degraded) / known if known else None

    @property
    def healthy_share(self) -> float | None:
        """HEALTHY / every result but UNKNOWN; None without such results."""
        known = self.healthy + self.degraded + self.unhealthy
        return self.healthy / known if known else None


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Response times (ms) of the answered checks: every result but a failure without
    an HTTP answer (timeouts, refused or reset connections, TLS and DNS errors).

    count, min, mean and max are exact. Percentiles use the nearest rank (the p-th
    percentile of n values is the ceil(p * n / 100)-th smallest); they are exact when
    `exact` is true (computed from raw results), else within 1 % of it (0.99 %, from
    the aggregates' log-scale histograms). All but count are None when count is 0.
    """

    count: int = 0
    min: float | None = None
    mean: float | None = None
    max: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    exact: bool = True


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Status counts and latency over [since, until): a report's or a series' bucket's."""

    since: float
    until: float
    counts: StatusCounts
    latency: LatencyStats

    @property
    def uptime(self) -> float | None:
        return self.counts.uptime


@dataclass(frozen=True, slots=True)
class Incident:
    """A span in which a service's confirmed status (its transitions) was not HEALTHY,
    as observed: clipped to the report's window, and cut out of the time without
    results (before the service's first result, and gaps), which is neither up nor
    down.

    `end` is the time of the recovery, None if it was not seen to recover: by `until`,
    or before the results stopped (a gap follows). `began_before` says it was already
    open when its observation began: at `since` (then `start` is `since`) or when the
    results resumed after a gap (then `start` is the gap's end). `duration` is the
    time observed in it: to `end`, else to `until` or to the last result before the
    gap; `checks` counts the results in it, the last one before a gap included (where
    raw results are pruned: those of the whole minutes in it).
    """

    service_name: str
    start: float
    end: float | None
    worst_status: HealthStatus
    duration: float
    checks: int
    began_before: bool


@dataclass(frozen=True, slots=True)
class Gap:
    """A span without any result of a service (the monitor was not checking it),
    clipped to the window: the time between two consecutive results more than the
    store's `gap_after` apart, or from the last result to `until` when that is longer.
    `end` is None when no result came before `until`. Gaps count neither as up nor
    as down."""

    service_name: str
    start: float
    end: float | None
    duration: float


@dataclass(frozen=True, slots=True)
class ServiceReport:
    """One service's history over [since, until).

    `mttr`: mean duration of the incidents seen to begin and to end in the window
    (None without any). `mtbf`: the observed time in the window (from the service's
    first result on, outside gaps) outside incidents, divided by the number of
    incidents seen to begin in it (None without any).
    """

    service_name: str
    since: float
    until: float
    counts: StatusCounts
    latency: LatencyStats
    incidents: tuple[Incident, ...]
    gaps: tuple[Gap, ...]
    mttr: float | None
    mtbf: float | None

    @property
    def uptime(self) -> float | None:
        return self.counts.uptime

    @property
    def healthy_share(self) -> float | None:
        return self.counts.healthy_share
