"""`/metrics`: Prometheus' text format, from what the monitor, its store and (in
cluster mode) the cluster hold at scrape time (no metric object is updated per check).

Names follow Prometheus' practices: a `healthmon_` prefix, base units (seconds),
`_total` on counters, and labels bounded by the services configured (`service`),
the four statuses (`status`) and, in cluster mode, the cluster's nodes (`node`).
Every service has each of its series from its first result on, so a counter never
appears out of nothing mid-life.

The page is two parts: the per-service families (nearly all of it), whose lines are
kept between scrapes and formatted again only for the services that changed
(http/samples.py), and the few dozen samples of the monitor, the store and the node,
from a custom collector rendered by prometheus_client with its process collector.
Both are made on the loop, half a millisecond at a time (healthmon/pace.py): no
thread holds the GIL meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from healthmon.cluster.view import ClusterView
from healthmon.errors import StorageError
from healthmon.http.feed import TransitionFeed
from healthmon.http.nodes import ClusterWatch
from healthmon.http.samples import ServiceSamples
from healthmon.model import HealthStatus
from healthmon.monitor import HealthMonitor
from healthmon.pace import Pace
from healthmon.store import WriterStats

__all__ = ["CONTENT_TYPE", "HttpGauges", "MetricsPage"]

log = structlog.get_logger("healthmon.http")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class HttpGauges:
    """The HTTP face's own figures, read at scrape time."""

    streams: Callable[[], int]
    waiting: Callable[[], int]


@dataclass(frozen=True, slots=True)
class _NodeFigures:
    """Cluster mode: this node's part, and the cluster as last read."""

    name: str
    owned: int
    checking: int
    renewed_at: float | None
    view: ClusterView | None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The small families' values, copied on the loop in one go."""

    status_counts: dict[HealthStatus, int]
    worst: HealthStatus
    running: bool
    index: int
    streams: int
    waiting: int
    stats: WriterStats | None
    node: _NodeFigures | None
    workers: tuple[int, int] | None  # check workers: alive, restarts (None: not used)

    @classmethod
    def take(
        cls,
        monitor: HealthMonitor,
        feed: TransitionFeed,
        http: HttpGauges,
        node: _NodeFigures | None,
    ) -> _Snapshot:
        return cls(
            status_counts=monitor.health_cache.counts(),
            worst=monitor.get_cluster_status(),  # the monitor's: UNKNOWN while one is unchecked
            running=monitor.running,
            index=feed.index,
            streams=http.streams(),
            waiting=http.waiting(),
            stats=monitor.store_stats,
            node=node,
            workers=(
                (monitor.check_workers_running, monitor.check_worker_restarts)
                if monitor.check_workers
                else None
            ),
        )


class _SnapshotCollector(Collector):
    """The page's small families (the cluster, the store, the node) from the snapshot
    it is handed before each render; the per-service ones are `ServiceSamples`'."""

    def __init__(self) -> None:
        self.snapshot: _Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        if self.snapshot is None:
            return
        yield from self._cluster(self.snapshot)
        yield from self._store(self.snapshot)
        yield from self._node(self.snapshot)

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
        if snap.workers is not None:
            workers = GaugeMetricFamily(
                "healthmon_check_workers", "Check worker processes alive (0 while not monitoring)."
            )
            workers.add_metric([], snap.workers[0])
            restarts = CounterMetricFamily(
                "healthmon_check_worker_restarts",
                "Check workers started again after one died.",
            )
            restarts.add_metric([], snap.workers[1])
            yield from (workers, restarts)

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
        if snap.node is not None:
            for name, help_text, value in (
                (
                    "fenced_results",
                    "Results not written: this node no longer held their service's lease.",
                    stats.fenced_results,
                ),
                (
                    "fenced_transitions",
                    "Transitions not written: this node no longer held their service's lease.",
                    stats.fenced_transitions,
                ),
            ):
                counter = CounterMetricFamily(f"healthmon_store_{name}", help_text)
                counter.add_metric([], value)
                yield counter

    def _node(self, snap: _Snapshot) -> Iterator[Metric]:
        node = snap.node
        if node is None:
            return
        info = GaugeMetricFamily(
            "healthmon_node_info", "Cluster mode: this node's name, as a label.", labels=["node"]
        )
        info.add_metric([node.name], 1.0)
        owned = GaugeMetricFamily(
            "healthmon_node_owned_services",
            "Cluster mode: services whose lease this node holds.",
        )
        owned.add_metric([], node.owned)
        checking = GaugeMetricFamily(
            "healthmon_node_checked_services",
            "Cluster mode: services this node is checking now (0 while its leases are "
            "suspended: no renew succeeded within the lease).",
        )
        checking.add_metric([], node.checking)
        yield from (info, owned, checking)
        if node.renewed_at is not None:
            renewed = GaugeMetricFamily(
                "healthmon_node_last_renew_timestamp_seconds",
                "Cluster mode: when this node last renewed its leases, epoch seconds.",
            )
            renewed.add_metric([], node.renewed_at)
            yield renewed
        if node.view is None:
            return
        # The newest member of each name (a restarted node is a new member, under the
        # same name: one series per name).
        members = {n.name: n for n in sorted(node.view.nodes, key=lambda n: n.node_id)}
        nodes = GaugeMetricFamily(
            "healthmon_cluster_nodes",
            "Cluster mode: nodes seen in the last hour, alive or down.",
            labels=["state"],
        )
        alive = sum(1 for n in members.values() if n.alive)
        nodes.add_metric(["alive"], alive)
        nodes.add_metric(["down"], len(members) - alive)
        up = GaugeMetricFamily(
            "healthmon_cluster_node_up",
            "Cluster mode: 1 while the node heartbeats within the lease and has not stopped.",
            labels=["node"],
        )
        leased = GaugeMetricFamily(
            "healthmon_cluster_node_owned_services",
            "Cluster mode: services whose lease the node holds.",
            labels=["node"],
        )
        age = GaugeMetricFamily(
            "healthmon_cluster_node_heartbeat_age_seconds",
            "Cluster mode: seconds since the node's last heartbeat (the database's clock).",
            labels=["node"],
        )
        for name, member in members.items():
            up.add_metric([name], 1.0 if member.alive else 0.0)
            leased.add_metric([name], member.services)
            age.add_metric([name], member.heartbeat_age)
        yield from (nodes, up, leased, age)


class MetricsPage:
    """The exposition, rendered at most once per `max_age` seconds however many
    clients ask at once, on the loop a slice at a time (see the module's doc)."""

    def __init__(
        self,
        monitor: HealthMonitor,
        feed: TransitionFeed,
        http: HttpGauges,
        max_age: float,
        cluster: ClusterWatch,
    ) -> None:
        self._monitor = monitor
        self._feed = feed
        self._http = http
        self._cluster = cluster
        self._collector = _SnapshotCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self._collector)
        ProcessCollector(registry=self.registry)
        self.services = ServiceSamples()
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
                self._page = await self._render()
                self._rendered_at = time.monotonic()
            assert self._page is not None
            return self._page

    async def _render(self) -> bytes:
        monitor, feed = self._monitor, self._feed
        node = await self._node()
        pace = Pace()
        results = monitor.health_cache.copy()
        since = {}
        for name in results:
            record = feed.latest(name)
            if record is not None:
                since[name] = record.transition.timestamp
        services = await self.services.text(
            results, since, monitor.check_counts, monitor.missed_checks, pace
        )
        await pace.rest()
        # One render at a time (the lock), so the collector's snapshot is ours.
        self._collector.snapshot = _Snapshot.take(monitor, feed, self._http, node)
        try:
            rest = generate_latest(self.registry)  # a few dozen samples: ~1 ms
        finally:
            self._collector.snapshot = None
        await pace.rest()
        return b"".join((services.encode(), rest))

    async def _node(self) -> _NodeFigures | None:
        node = self._monitor.cluster
        if node is None:
            return None
        try:
            view = await self._cluster.view()
        except StorageError as exc:  # this node's own figures are still worth a scrape
            log.warning("http_cluster_read_failed", error=str(exc).splitlines()[0])
            view = None
        return _NodeFigures(node.name, len(node.held), node.checking, node.renewed_at, view)

    def _fresh(self) -> bool:
        return (
            self._page is not None
            and self._max_age > 0
            and time.monotonic() - self._rendered_at < self._max_age
        )
