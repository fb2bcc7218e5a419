"""`/metrics`: Prometheus' text format, from custom collectors that read the monitor's
cache and counters at scrape time (no metric object is updated per check).

Names follow Prometheus' practices: a `healthmon_` prefix, base units (seconds),
`_total` on counters, and labels bounded by the services configured (`service`)
and the four statuses (`status`). Every service has each of its series from its
first result on, so a counter never appears out of nothing mid-life.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from healthmon.http.feed import TransitionFeed
from healthmon.model import HealthCheckResult, HealthStatus
from healthmon.monitor import HealthMonitor
from healthmon.store import WriterStats

__all__ = ["CONTENT_TYPE", "HttpGauges", "MetricsPage"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STATUSES = [status.value for status in HealthStatus]
_SUCCEEDED = {HealthStatus.HEALTHY, HealthStatus.DEGRADED}


@dataclass(frozen=True, slots=True)
class HttpGauges:
    """The HTTP face's own figures, read at scrape time."""

    streams: Callable[[], int]
    waiting: Callable[[], int]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What a scrape reports, copied on the loop in one go (cheap: references and
    small dicts), so that the formatting can run in a thread without racing it."""

    results: list[tuple[str, HealthCheckResult]]
    since: dict[str, float]
    counts: dict[str, dict[HealthStatus, int]]
    missed: dict[str, int]
    status_counts: dict[HealthStatus, int]
    worst: HealthStatus
    running: bool
    index: int
    streams: int
    waiting: int
    stats: WriterStats | None

    @classmethod
    def take(cls, monitor: HealthMonitor, feed: TransitionFeed, http: HttpGauges) -> _Snapshot:
        cache = monitor.health_cache
        results = list(cache.items())
        since = {}
        for name, _ in results:
            record = feed.latest(name)
            if record is not None:
                since[name] = record.transition.timestamp
        return cls(
            results=results,
            since=since,
            counts=monitor.check_counts,
            missed=monitor.missed_checks,
            status_counts=cache.counts(),
            worst=monitor.get_cluster_status(),  # the monitor's: UNKNOWN while one is unchecked
            running=monitor.running,
            index=feed.index,
            streams=http.streams(),
            waiting=http.waiting(),
            stats=monitor.store_stats,
        )


class _SnapshotCollector(Collector):
    """Metric families from the snapshot it is handed before each render."""

    def __init__(self) -> None:
        self.snapshot: _Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        if self.snapshot is None:
            return
        yield from self._services(self.snapshot)
        yield from self._cluster(self.snapshot)
        yield from self._store(self.snapshot)

    def _services(self, snap: _Snapshot) -> Iterator[Metric]:
        status = GaugeMetricFamily(
            "healthmon_service_status",
            "Confirmed status of the service: 1 for the status it has, 0 for the others.",
            labels=["service", "status"],
        )
        since = GaugeMetricFamily(
            "healthmon_service_status_since_timestamp_seconds",
            "When the service's confirmed status last changed (committed transition), "
            "epoch seconds.",
            labels=["service"],
        )
        success = GaugeMetricFamily(
            "healthmon_service_check_success",
            "Whether the service's last check succeeded (healthy or degraded): 1 or 0.",
            labels=["service"],
        )
        latency = GaugeMetricFamily(
            "healthmon_service_check_duration_seconds",
            "Response time of the service's last check.",
            labels=["service"],
        )
        last = GaugeMetricFamily(
            "healthmon_service_last_check_timestamp_seconds",
            "When the service's last check completed, epoch seconds.",
            labels=["service"],
        )
        checks = CounterMetricFamily(
            "healthmon_service_checks",
            "Check results recorded since the monitor started, by observed status.",
            labels=["service", "status"],
        )
        missed = CounterMetricFamily(
            "healthmon_service_missed_checks",
            "Scheduled checks skipped because the previous check overran their slot.",
            labels=["service"],
        )
        for name, result in snap.results:
            current = result.effective_status
            for value in HealthStatus:
                status.add_metric([name, value.value], 1.0 if value is current else 0.0)
            if name in snap.since:
                since.add_metric([name], snap.since[name])
            success.add_metric([name], 1.0 if result.status in _SUCCEEDED else 0.0)
            latency.add_metric([name], result.response_time_ms / 1000)
            last.add_metric([name], result.timestamp)
            # Statuses a service never had are left out (a quarter of the page each).
            for value, count in snap.counts.get(name, {}).items():
                if count:
                    checks.add_metric([name, value.value], count)
        for name, count in snap.missed.items():
            missed.add_metric([name], count)
        yield from (status, since, success, latency, last, checks, missed)

    def _cluster(self, snap: _Snapshot) -> Iterator[Metric]:
        cluster = GaugeMetricFamily(
            "healthmon_cluster_status",
            "The cluster's status (its worst service's): 1 for the status it has.",
            labels=["status"],
        )
        for value in HealthStatus:
            cluster.add_metric([value.value], 1.0 if value is snap.worst else 0.0)
        services = GaugeMetricFamily(
            "healthmon_services", "Services by confirmed status.", labels=["status"]
        )
        for value, count in snap.status_counts.items():
            services.add_metric([value.value], count)
        running = GaugeMetricFamily(
            "healthmon_monitor_running", "1 while the monitor is checking its services."
        )
        running.add_metric([], 1.0 if snap.running else 0.0)
        index = GaugeMetricFamily(
            "healthmon_last_transition_id",
            "Id of the newest committed status transition (the API's index).",
        )
        index.add_metric([], snap.index)
        streams = GaugeMetricFamily(
            "healthmon_http_event_streams", "Clients following the event stream."
        )
        streams.add_metric([], snap.streams)
        waiting = GaugeMetricFamily(
            "healthmon_http_blocking_queries", "Blocking queries waiting for a change."
        )
        waiting.add_metric([], snap.waiting)
        yield from (cluster, services, running, index, streams, waiting)

    def _store(self, snap: _Snapshot) -> Iterator[Metric]:
        stats = snap.stats
        writing = GaugeMetricFamily(
            "healthmon_store_writing", "1 while the store's writer runs (monitor started)."
        )
        writing.add_metric([], 0.0 if stats is None else 1.0)
        yield writing
        if stats is None:
            return
        healthy = GaugeMetricFamily(
            "healthmon_store_healthy", "1 unless the store's last write failed."
        )
        healthy.add_metric([], 1.0 if stats.healthy else 0.0)
        yield healthy
        for name, help_text, value in (
            ("pending_results", "Results waiting for the next commit.", stats.pending_results),
            (
                "pending_transitions",
                "Transitions waiting for the next commit.",
                stats.pending_transitions,
            ),
        ):
            gauge = GaugeMetricFamily(f"healthmon_store_{name}", help_text)
            gauge.add_metric([], value)
            yield gauge
        for name, help_text, value in (
            ("committed_results", "Results committed.", stats.committed_results),
            ("committed_transitions", "Transitions committed.", stats.committed_transitions),
            (
                "dropped_results",
                "Results dropped (buffer full or stopped): never stored.",
                stats.dropped_results,
            ),
            (
                "dropped_transitions",
                "Transitions dropped: never stored.",
                stats.dropped_transitions,
            ),
            ("flushes", "Group commits.", stats.flushes),
            ("failed_flushes", "Group commits the database refused.", stats.failed_flushes),
        ):
            counter = CounterMetricFamily(f"healthmon_store_{name}", help_text)
            counter.add_metric([], value)
            yield counter
        if stats.last_commit_at is not None:
            commit = GaugeMetricFamily(
                "healthmon_store_last_commit_timestamp_seconds",
                "When the store last committed, epoch seconds.",
            )
            commit.add_metric([], stats.last_commit_at)
            yield commit


class MetricsPage:
    """The exposition, rendered at most once per `max_age` seconds however many
    clients ask at once. Rendering formats every service's samples (~10 each: tens of
    milliseconds at 1,000 services), so only the snapshot is taken on the monitor's
    loop; the text is made in a thread, which holds the GIL for at most the switch
    interval (5 ms) at a time instead of blocking the loop's checks for all of it."""

    def __init__(
        self, monitor: HealthMonitor, feed: TransitionFeed, http: HttpGauges, max_age: float
    ) -> None:
        self._monitor = monitor
        self._feed = feed
        self._http = http
        self._collector = _SnapshotCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self._collector)
        ProcessCollector(registry=self.registry)
        self._max_age = max_age
        self._page: bytes | None = None
        self._rendered_at = 0.0
        self._lock = asyncio.Lock()

    async def render(self) -> bytes:
        if self._fresh():
            assert self._page is not None
            return self._page
        async with self._lock:  # others asking meanwhile get this render
            if not self._fresh():
                # One render at a time (the lock), so the collector's snapshot is ours.
                self._collector.snapshot = _Snapshot.take(self._monitor, self._feed, self._http)
                try:
                    self._page = await asyncio.to_thread(generate_latest, self.registry)
                finally:
                    self._collector.snapshot = None
                self._rendered_at = time.monotonic()
            assert self._page is not None
            return self._page

    def _fresh(self) -> bool:
        return (
            self._page is not None
            and self._max_age > 0
            and time.monotonic() - self._rendered_at < self._max_age
        )
