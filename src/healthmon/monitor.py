"""HealthMonitor: the registry, the schedules, the cache, transitions and subscribers.

The monitor ties the probe, the cache and the store together and owns no I/O of
its own. One check, end to end::

    schedule slot -> _check_http_health (probe) -> _record:
        confirmation: observed status -> confirmed status (thresholds, start period)
        cache <- result;  confirmed status changed? -> StatusTransition
        store:    writer.submit(result, transition) -> group commit -> notifier
        no store: notifier directly
    notifier -> subscribers, in commit order, each under a time limit
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import inspect
import json
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, Self

import httpx
import structlog

from healthmon.agents import AGENT_PREFIX, AgentsAdapter, agent_health_status
from healthmon.cache import HealthCache
from healthmon.cluster import ClusterNode, ClusterSettings, FeedEntry, Seed
from healthmon.cluster.guard import WriterGuard
from healthmon.cluster.historian import HISTORY_LEASE
from healthmon.confirm import Confirmation
from healthmon.log import guard_http_logs, keep_out_of_logs
from healthmon.model import (
    HealthCheckResult,
    HealthStatus,
    ServiceDefinition,
    StatusTransition,
    redact_url,
)
from healthmon.notify import Notifier
from healthmon.pace import Pace
from healthmon.policy import CheckPolicy, validate_interval
from healthmon.probe import new_http_client, probe_http
from healthmon.schedule import FixedRateSchedule
from healthmon.store import HealthStore, ResultWriter, WriterStats
from healthmon.store.engine import is_postgres
from healthmon.workers import CheckOrder, CheckWorkers, validate_check_workers

__all__ = ["HealthMonitor", "Subscriber"]

log = structlog.get_logger("healthmon")

Subscriber = Callable[[HealthCheckResult], Awaitable[None]]
"""An async callable told of each status change, with the result that caused it."""

_GOLDEN = (5**0.5 - 1) / 2
"""Multiples of it, modulo 1, spread evenly over [0, 1) for any count: the phases of
the services' schedules, so that a hundred services at 20 Hz do not fire as one burst."""


_AGENTS_SLICE = 0.0005
"""Seconds of an agents' round folded between two yields to the loop (healthmon/pace.py):
a round of 1,000 agents in one step held the loop 17-36 ms, delaying checks and
requests."""

_PLAIN = frozenset((str, int, float, bool, type(None)))


class HealthMonitor:
    """Checks services on fixed-rate schedules and keeps their latest status.

    `check_interval` (0.05-1.0 s, i.e. 20-1 Hz) is the default check period and
    `policy` the default check settings (timeout, success codes, thresholds, ...);
    a `ServiceDefinition` overrides either per service. Agents get the monitor's
    thresholds and start period.

    With a `store`, every result and transition is written to it and subscribers
    hear of a change once it is committed; the monitor does not close the store.
    `http_client`, if given, is used for every check and not closed by the monitor
    (pass one for your own TLS, auth or transport settings; the body cap, TLS and
    proxy settings of the policy are then yours to configure on it). Otherwise each
    service gets its own client, configured from its policy.

    `freeze_gc`: the first start in a process moves every object alive then (the
    imports, SQLAlchemy, the application's own start-up state) out of the cyclic
    garbage collector's sight with `gc.freeze()`. Without it, each full collection
    walks all of them: 60-80 ms pauses every few seconds at 2,000 checks/s, which
    alone make 3-7 % of checks late (bench/README.md). Objects frozen are still freed
    by reference counting; only such an object that later becomes part of a garbage
    cycle is never collected. Pass False if the process manages its collector itself.

    `cluster`: take part in a cluster of monitors sharing the store's PostgreSQL
    database (docs/cluster.md): this monitor checks only the services whose lease it
    holds, its cache answers for the whole fleet, and its subscribers hear every
    transition of the fleet, once each, in commit order.

    `check_workers`: run the scheduled HTTP checks in this many processes of their own
    (docs/workers.md) instead of on this loop, so that what else the process does
    (the HTTP face's clients, reports, garbage collections) delays no check and the
    checks can use more than one core. Results are recorded here as usual; one-off
    checks (`check_health`) still run here. Not with an `http_client` (a worker makes
    each service's client from its policy), and `_check_http_health` is then not on
    the scheduled checks' path.
    """

    def __init__(
        self,
        check_interval: float = 1.0,
        *,
        policy: CheckPolicy | None = None,
        store: HealthStore | None = None,
        http_client: httpx.AsyncClient | None = None,
        callback_timeout: float = 5.0,
        flush_interval: float = 0.1,
        max_pending: int = 100_000,
        freeze_gc: bool = True,
        cluster: ClusterSettings | None = None,
        check_workers: int = 0,
    ) -> None:
        self.check_interval = validate_interval(check_interval)
        self.check_workers = validate_check_workers(check_workers)
        if check_workers and http_client is not None:
            raise ValueError(
                "check_workers runs checks in other processes, where an http_client of "
                "yours cannot go: pass one or the other"
            )
        if not callback_timeout > 0:
            raise ValueError(f"callback_timeout must be positive, got {callback_timeout!r}")
        self.policy = CheckPolicy() if policy is None else policy
        self.callback_timeout = callback_timeout
        self.services: dict[str, ServiceDefinition] = {}
        self.subscribers: list[Subscriber] = []
        self._cache = HealthCache()
        self._unchecked: set[str] = set()  # registered, checkable, no result yet
        self._store = store
        self._flush_interval = flush_interval
        self._max_pending = max_pending
        self._freeze_gc = freeze_gc
        self._user_client = http_client
        guard_http_logs()  # the loggers of the HTTP stack, as imported by now
        self._default_client: httpx.AsyncClient | None = None  # for checks of no service
        self._clients: dict[str, httpx.AsyncClient] = {}  # one per checked service
        self._policies: dict[str, CheckPolicy] = {}
        # Each service's confirmed status, seeded from the store at start so that a
        # restart records no spurious transition. Kept when a service is removed: a
        # service added again under its name carries on from its last status.
        self._confirmations: dict[str, Confirmation] = {}
        # Results recorded per service and observed status, since this monitor was made
        # (the HTTP face's counters); a removed service's go with it.
        self._check_counts: dict[str, dict[HealthStatus, int]] = {}
        self._reported_agents: set[str] = set()  # in the last report, to notice vanished ones
        self._agents_round = asyncio.Lock()
        self._checks: dict[str, asyncio.Task[None]] = {}
        self._workers: CheckWorkers | None = None  # with check_workers, while running
        self._restarts_before = 0  # of the check workers of earlier runs
        self._in_flight: dict[str, asyncio.Lock] = {}  # one check per service at a time
        self._retiring: set[asyncio.Task[None]] = set()  # removed services' checks, ending
        self._schedules: dict[str, FixedRateSchedule] = {}
        self._schedules_started = 0
        self._writer: ResultWriter | None = None
        self._notifier: Notifier | None = None
        self._untold: list[HealthCheckResult] = []  # changes of one-off checks, to deliver
        self._running = False
        self._lifecycle = asyncio.Lock()
        if cluster is not None and not isinstance(cluster, ClusterSettings):
            raise TypeError(f"cluster must be ClusterSettings, got {cluster!r}")
        self.cluster_settings = cluster
        self._cluster: ClusterNode | None = None
        self._guard: WriterGuard | None = None  # PostgreSQL: no writer of another kind beside
        self._owned: set[str] = set()  # cluster mode: the services whose lease we hold
        self._seeded: set[str] = set()  # owned, confirmation set from the database
        self._own_results: dict[int, HealthCheckResult] = {}  # feed position -> our result
        self._at_once: set[str] = set()  # taken over from another node: first check now

    # -- the cache and cluster queries (memory only, never the database) -----------------

    @property
    def health_cache(self) -> HealthCache:
        """Latest result per service (and `agent:<name>`); its `confirmed_status`
        (`effective_status`) is what the cluster status follows."""
        return self._cache

    @health_cache.setter
    def health_cache(self, results: Mapping[str, HealthCheckResult]) -> None:
        self._cache = HealthCache(results)
        self._unchecked = {
            name
            for name, service in self.services.items()
            if service.health_check_url is not None and name not in self._cache
        }

    def get_cluster_health(self) -> dict[str, HealthCheckResult]:
        """A snapshot (a copy) of the latest result per service."""
        return self._cache.copy()

    def get_cluster_status(self) -> HealthStatus:
        """The worst confirmed status: UNHEALTHY > DEGRADED > UNKNOWN > HEALTHY;
        UNKNOWN when there is nothing. A registered service with a health_check_url
        and no result yet counts as UNKNOWN: the cluster is not HEALTHY before every
        such service has been checked."""
        status = self._cache.worst_status()
        if self._unchecked and status.severity < HealthStatus.UNKNOWN.severity:
            # Kept up to date by _record; a result set in the cache directly is
            # noticed here (only while some service has none: at start).
            self._unchecked = {name for name in self._unchecked if name not in self._cache}
            if self._unchecked:
                return HealthStatus.UNKNOWN
        return status

    @property
    def running(self) -> bool:
        return self._running

    @property
    def store_stats(self) -> WriterStats | None:
        """The store writer's counters while monitoring with a store, or after a one-off
        check with one until stop_monitoring() (None otherwise): `healthy`,
        `last_error`, pending and dropped counts."""
        return None if self._writer is None else self._writer.stats

    @property
    def cluster(self) -> ClusterNode | None:
        """This monitor's cluster node while monitoring in cluster mode."""
        return self._cluster

    @property
    def missed_checks(self) -> dict[str, int]:
        """Slots skipped per service because its previous check overran them."""
        missed = {name: schedule.missed for name, schedule in self._schedules.items()}
        return missed if self._workers is None else missed | self._workers.missed

    @property
    def check_workers_running(self) -> int:
        """Check worker processes alive now (0 without check_workers, or stopped)."""
        return 0 if self._workers is None else self._workers.running

    @property
    def check_worker_restarts(self) -> int:
        """Check workers started again after one died, since this monitor was made."""
        now = 0 if self._workers is None else self._workers.restarts
        return self._restarts_before + now

    @property
    def check_counts(self) -> dict[str, dict[HealthStatus, int]]:
        """Results recorded per service (and agent) by observed status, since this
        monitor was made: monotonic counters (a copy)."""
        return {name: counts.copy() for name, counts in self._check_counts.items()}

    def policy_for(self, service_name: str) -> CheckPolicy:
        """The settings a service is checked with: the monitor's, with its overrides."""
        return self._policies.get(service_name, self.policy)

    # -- registry -----------------------------------------------------------------------

    def add_service(self, service: ServiceDefinition) -> None:
        """Register a service; while monitoring, its checks start at once."""
        if not isinstance(service, ServiceDefinition):
            raise TypeError(f"add_service expects a ServiceDefinition, got {service!r}")
        if service.name in self.services:
            raise ValueError(
                f"service {service.name!r} is already registered; remove_service() it first"
            )
        if service.name.startswith(AGENT_PREFIX):
            raise ValueError(
                f"service name {service.name!r}: the {AGENT_PREFIX!r} prefix is kept for agents"
            )
        keep_out_of_logs(service.headers.values())
        policy = self.policy.with_overrides(service)  # validated by ServiceDefinition already
        self.services[service.name] = service
        self._policies[service.name] = policy
        if service.health_check_url is not None and service.name not in self._cache:
            self._unchecked.add(service.name)
        if self._writer is not None:
            self._register_with_writer(self._writer, service)
        if self._running:
            self._start_checks(service)

    def remove_service(self, service_name: str) -> None:
        """Forget a service: its checks stop (an in-flight one is cancelled and not
        recorded) and it leaves the cache. Its stored history stays."""
        self.services.pop(service_name, None)
        self._policies.pop(service_name, None)
        self._unchecked.discard(service_name)
        self._cache.pop(service_name, None)
        self._check_counts.pop(service_name, None)
        self._schedules.pop(service_name, None)
        self._in_flight.pop(service_name, None)
        if self._workers is not None:
            self._workers.detach(service_name)
        task = self._checks.pop(service_name, None)
        if task is not None:
            task.cancel()  # the task closes its client as it ends; stop waits for it
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    # -- subscribers --------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> None:
        """Call `callback(result)` on each confirmed status change (async callables only)."""
        if not _is_async_callable(callback):
            raise TypeError(f"Callback must be an async function, got {callback!r}")
        self.subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        if callback in self.subscribers:
            self.subscribers.remove(callback)

    async def _notify_subscribers(
        self, result: HealthCheckResult, old_result: HealthCheckResult | None
    ) -> None:
        """Tell every subscriber of `result` if its status differs from `old_result`'s."""
        if old_result is None or old_result.effective_status != result.effective_status:
            await self._deliver(result)

    async def _deliver(self, result: HealthCheckResult) -> None:
        """Call every subscriber in turn (the seed's inline path; the notifier gives
        each subscriber a lane of its own instead)."""
        # A copy: a callback may unsubscribe itself or another while we iterate.
        for callback in list(self.subscribers):
            await self._call(callback, result)

    async def _call(self, callback: Subscriber, result: HealthCheckResult) -> None:
        """One call, isolated: under the time limit, its failure logged, never raised."""
        if callback not in self.subscribers:
            return  # unsubscribed since the change was queued
        try:
            async with asyncio.timeout(self.callback_timeout):
                await callback(result)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being stopped
            log.error(  # the callback's own cancellation: an error of the callback
                "health_callback_error",
                service=result.service_name,
                callback=_name_of(callback),
                error="CancelledError",
            )
        except TimeoutError:
            log.error(
                "health_callback_timeout",
                service=result.service_name,
                callback=_name_of(callback),
                timeout_s=self.callback_timeout,
            )
        except Exception as exc:
            log.error(
                "health_callback_error",
                service=result.service_name,
                callback=_name_of(callback),
                error=repr(exc),
            )

    # -- checks -------------------------------------------------------------------------

    async def check_health(self, service_name: str) -> HealthCheckResult:
        """Check one service now and record the result like a scheduled check.

        As in the seed, a name that is not registered, or a service without a
        health_check_url, gives an UNKNOWN result that is not recorded. In cluster mode
        a service another node checks is checked but not recorded here.

        On a monitor that is not running, no task is started: the result is written
        in one flush and a change is delivered to the subscribers before this
        returns. With a store, the first such check takes the store's writer, kept
        (without a task) for the next ones until stop_monitoring(), unless another
        monitor of the store takes it over while it is idle.
        """
        service = self.services.get(service_name)
        if service is None or service.health_check_url is None:
            return HealthCheckResult(
                service_name=service_name,
                status=HealthStatus.UNKNOWN,
                response_time_ms=0.0,
                timestamp=time.time(),
                error="Service not registered or no health_check_url",
            )
        # One check per service in flight: a scheduled one running is waited for.
        async with self._one_at_a_time(service_name):
            result = await self._check_http_health(service_name, service.health_check_url)
            if self.services.get(service_name) is not service:  # removed while we checked
                return result
            if self.cluster_settings is not None and service_name not in self._owned:
                return result  # another node checks it: that node records its results
            async with self._session():
                return self._record(result)

    def _one_at_a_time(self, service_name: str) -> asyncio.Lock:
        lock = self._in_flight.get(service_name)  # (not setdefault: a Lock made per check)
        if lock is None:
            lock = self._in_flight[service_name] = asyncio.Lock()
        return lock

    async def _check_http_health(
        self, service_name: str, url: str, timeout: float | None = None
    ) -> HealthCheckResult:
        """One HTTP check through `httpx.AsyncClient.get` (the loop calls this)."""
        policy = self.policy_for(service_name)
        if timeout is not None and timeout != policy.timeout:
            policy = dataclasses.replace(policy, timeout=timeout)
        service = self.services.get(service_name)
        headers = service.headers if service is not None and service.headers else None
        client = self._user_client or self._clients.get(service_name)
        if client is None and service is not None:
            # A one-off check of a service whose schedule is not running: its own
            # settings (TLS, proxy, body cap) still apply.
            async with new_http_client(policy, url) as one_off:
                return await probe_http(one_off, service_name, url, policy, headers)
        if client is None:
            if self._default_client is None:
                self._default_client = new_http_client(self.policy)
            client = self._default_client
        return await probe_http(client, service_name, url, policy, headers)

    async def check_agents_health(self, agents_adapter: AgentsAdapter) -> None:
        """Fold the agents' reported states into the cache as `agent:<name>`.

        An agent reported before and no longer reported becomes UNKNOWN at once, with
        a transition, rather than keeping its last status. (The monitor expects one
        adapter: it is the agents' one source of truth.)
        """
        try:
            statuses = agents_adapter.get_agent_statuses()
            if inspect.isawaitable(statuses):
                statuses = await statuses
            reports = dict(statuses.items())
        except Exception as exc:
            log.error("agents_health_check_failed", error=repr(exc))
            return
        # One round at a time, in the order called; what a round left unfinished
        # (cancelled, cut by a stop) the next one still compares with the last whole one.
        async with self._agents_round, self._session():
            now = time.time()
            reported = {f"{AGENT_PREFIX}{name}" for name in reports}
            vanished = self._reported_agents - reported
            items = list(reports.items())
            running, writer = self._running, self._writer
            pace = Pace(_AGENTS_SLICE)
            for folded, (name, report) in enumerate(items):
                if pace.due():
                    await pace.rest()  # checks and requests due meanwhile run now
                    if (self._running, self._writer) != (running, writer):
                        log.warning(
                            "agents_round_cut",
                            reason="the monitor stopped during the round",
                            folded=folded,
                            not_folded=len(items) - folded,
                        )
                        return
                result = _agent_result(name, report, now)
                if writer is not None:
                    writer.register_service(result.service_name, "agent", None)
                self._record(result)
            self._reported_agents = reported
            for name in sorted(vanished):
                gone = HealthCheckResult(
                    service_name=name,
                    status=HealthStatus.UNKNOWN,
                    response_time_ms=0.0,
                    timestamp=now,
                    error="agent no longer reported",
                    answered=False,
                )
                self._record(gone, force=True)

    def _record(self, result: HealthCheckResult, *, force: bool = False) -> HealthCheckResult:
        """Take a result in: confirmation, cache, transition, store or notifier.

        Never waits, so a check cancelled by remove_service() cannot be half-recorded.
        Returns the result as recorded (with its confirmed status).
        """
        name = result.service_name
        confirmation = self._confirmations.get(name) or self._confirmation_for(name)
        previous = confirmation.confirmed
        if force:
            changed = confirmation.force(result.status)
        else:
            changed = confirmation.observe(result.status, time.monotonic())
        result = _confirmed(result, confirmation.current)
        self._cache[name] = result
        self._unchecked.discard(name)
        counts = self._check_counts.get(name)
        if counts is None:
            counts = self._check_counts[name] = dict.fromkeys(HealthStatus, 0)
        counts[result.status] += 1
        transition = None
        if changed:
            transition = StatusTransition(
                service_name=name,
                from_status=previous,
                to_status=confirmation.current,
                timestamp=result.timestamp,
                cause=result.error,
            )
            log.info(
                "status_changed",
                service=name,
                from_status=None if previous is None else previous.value,
                to_status=transition.to_status.value,
                cause=result.error,
            )
        if self._writer is not None:
            epoch = None if self._cluster is None else self._cluster.epoch_of(name)
            self._writer.submit(result, transition, epoch)
        elif transition is not None:
            self._tell((result,))
        return result

    def _confirmation_for(self, name: str) -> Confirmation:
        """A new confirmation for `name` under its policy (a new start period), carrying
        over the confirmed status of the one it replaces."""
        policy = self.policy_for(name)
        starts = None
        if policy.start_period > 0:
            starts = time.monotonic() + policy.start_period
        earlier = self._confirmations.get(name)
        confirmation = Confirmation(
            policy.failure_threshold,
            policy.success_threshold,
            confirmed=None if earlier is None else earlier.confirmed,
            start_period_ends=starts,
        )
        self._confirmations[name] = confirmation
        return confirmation

    def _start_checks(self, service: ServiceDefinition) -> None:
        if service.health_check_url is None:
            return
        name = service.name
        if self.cluster_settings is not None:
            if name not in self._owned or name in self._checks or self._checked_by_worker(name):
                return  # another node checks it (or we do already)
            if name in self._seeded:  # carries on from the database's state
                self._seeded.discard(name)
                self._launch(service, service.health_check_url)
                return
        # The start period runs from here, when its checks start (not when it was
        # added); a confirmed status from an earlier run carries over.
        self._confirmation_for(name)
        self._launch(service, service.health_check_url)

    def _checked_by_worker(self, name: str) -> bool:
        return self._workers is not None and self._workers.attached(name)

    def _launch(self, service: ServiceDefinition, url: str) -> None:
        """Start a service's schedule: its first slot within one interval, at a phase
        of its own; on this loop, or on a check worker."""
        name = service.name
        interval = service.interval or self.check_interval
        phase = (self._schedules_started * _GOLDEN) % 1.0 * interval
        if name in self._at_once:  # taken over: it may have gone unchecked for a while
            self._at_once.discard(name)
            phase = 0.0
        self._schedules_started += 1
        if self._workers is not None:  # (time.monotonic(): the worker's loop clock)
            start, headers = time.monotonic() + phase, dict(service.headers) or None
            self._workers.attach(
                CheckOrder(name, url, interval, start, self.policy_for(name), headers)
            )
            return
        start = asyncio.get_running_loop().time() + phase
        self._checks[name] = asyncio.create_task(
            self._check_loop(service, url, FixedRateSchedule(interval, start=start)),
            name=f"healthmon-check:{name}",
        )

    def _recorded_elsewhere(self, results: Sequence[HealthCheckResult]) -> None:
        """Results of the check workers' schedules: of services still attached (one
        removed, or whose lease was lost, is detached at once: its results dropped)."""
        for result in results:
            self._record(result)

    async def _check_loop(
        self, service: ServiceDefinition, url: str, schedule: FixedRateSchedule
    ) -> None:
        """Check one service on its own fixed-rate schedule, one check at a time."""
        name = service.name
        self._schedules[name] = schedule
        client = None
        if self._user_client is None:
            client = self._clients[name] = new_http_client(self.policy_for(name), url)
        try:
            while True:
                await schedule.wait()
                async with self._one_at_a_time(name):
                    self._record(await self._scheduled_check(name, url))
        finally:
            # Removed and re-added under the same name, the new loop's client is not ours.
            if client is not None:
                if self._clients.get(name) is client:
                    del self._clients[name]
                await client.aclose()

    async def _scheduled_check(self, name: str, url: str) -> HealthCheckResult:
        try:
            return await self._check_http_health(name, url)
        except Exception as exc:  # an overridden check that raises must not end the loop
            # No traceback: exception texts of an HTTP stack may quote the URL.
            log.error("check_raised", service=name, error=type(exc).__name__)
            return HealthCheckResult(
                service_name=name,
                status=HealthStatus.UNHEALTHY,
                response_time_ms=0.0,
                timestamp=time.time(),
                error=f"check raised {type(exc).__name__}",
                answered=False,
            )

    # -- lifecycle ----------------------------------------------------------------------

    async def start_monitoring(self) -> None:
        """Start every service's schedule (and the writer and notifier). Idempotent."""
        async with self._lifecycle:
            if self._running:
                return
            guard_http_logs()  # and of any module of it imported since
            await self._open_session()
            if self.check_workers:
                workers = CheckWorkers(self.check_workers, self._recorded_elsewhere)
                try:
                    await workers.start()
                except BaseException:
                    await self._close_session()
                    raise
                self._workers = workers
            self._running = True
            for service in self.services.values():
                self._start_checks(service)
            if self._freeze_gc:
                _freeze_long_lived_objects()

    async def stop_monitoring(self) -> None:
        """Cancel in-flight checks, flush every pending result and transition, deliver
        the committed changes, close the HTTP clients we made. Idempotent."""
        async with self._lifecycle:
            # Not running from here on: a service added meanwhile does not start checks.
            self._running = False
            checks = [*self._checks.values(), *self._retiring]
            self._checks.clear()
            self._schedules.clear()
            for task in checks:
                task.cancel()
            try:
                try:
                    await asyncio.gather(*checks, return_exceptions=True)
                finally:
                    await self._stop_workers()  # (even when this stop is cancelled)
            finally:
                try:
                    await self._close_session()
                finally:
                    if self._default_client is not None:
                        client, self._default_client = self._default_client, None
                        await client.aclose()

    async def _stop_workers(self) -> None:
        """The check workers stopped, what they send until they exit recorded. They are
        kept until then: a service removed (or a lease lost) meanwhile is detached."""
        workers = self._workers
        if workers is not None:
            try:
                await workers.stop()
            finally:
                self._workers = None
                self._restarts_before += workers.restarts

    async def __aenter__(self) -> Self:
        await self.start_monitoring()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_monitoring()

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[None]:
        """Around a one-off check. While monitoring, nothing to do. Otherwise no task is
        started: the results go to the store in one flush of a writer kept (without its
        task) from one one-off check to the next, and the changes it committed are
        delivered inline, before the check returns."""
        if self._running:
            yield
            return
        async with self._lifecycle:
            if self._running:  # started while we waited for the lock
                yield
                return
            await self._open_writer()
            try:
                yield
            finally:
                writer = self._writer
                if writer is not None:
                    await writer.flush()  # refused: it stays pending, for the next flush
                told, self._untold = self._untold, []
                for result in told:
                    await self._deliver(result)

    async def _open_session(self) -> None:
        """Hold the database against writers of the other kind (PostgreSQL), then start
        the notifier and the writer's task (the writer opened if need be)."""
        if self._store is not None and is_postgres(self._store.url):
            settings = self.cluster_settings
            guard = WriterGuard(
                self._store.engine.url, cluster=None if settings is None else settings.node_name
            )
            await guard.take()  # DatabaseInUseError names the other writer
            try:
                await self._open_guarded_session()
            except BaseException:
                await guard.release()
                raise
            self._guard = guard
            return
        await self._open_guarded_session()

    async def _open_guarded_session(self) -> None:
        notifier = Notifier(lambda: list(self.subscribers), self._call)
        if self.cluster_settings is not None:
            if self._store is None:
                raise ValueError("cluster mode needs a store on PostgreSQL; none was given")
            self._notifier = notifier
            try:
                await self._open_cluster_session(self._store, self.cluster_settings)
            except BaseException:
                self._notifier = None
                await notifier.stop()
                raise
            return
        try:
            await self._open_writer()
            if self._writer is not None:
                await self._writer.start()
        except BaseException:
            await notifier.stop()
            raise
        self._notifier = notifier

    async def _open_writer(self) -> None:
        """The store's writer, without its task, once the stored statuses are seeded
        (kept until stop_monitoring(), the store closes it, or another takes it over)."""
        if self._store is None or (self._writer is not None and not self._writer.released):
            return
        self._writer = None
        stored = await self._store.current_statuses()
        writer = self._store.writer(
            on_commit=self._committed,
            flush_interval=self._flush_interval,
            max_pending=self._max_pending,
        )
        for name, status in stored.items():
            if name not in self._confirmations:  # what this process saw itself wins
                self._confirmation_for(name).confirmed = status
        for service in self.services.values():
            self._register_with_writer(writer, service)
        self._writer = writer

    def _committed(self, committed: Sequence[tuple[HealthCheckResult, StatusTransition]]) -> None:
        """The writer committed these transitions: to the notifier, or (one-off checks
        of a monitor not running) to be delivered inline."""
        self._tell(result for result, _ in committed)

    def _tell(self, results: Iterable[HealthCheckResult]) -> None:
        if self._notifier is not None:
            self._notifier.put(results)
        else:
            self._untold.extend(results)

    async def _close_session(self) -> None:
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                await writer.stop()  # the last commit hands its transitions to the notifier
        finally:
            cluster, self._cluster = self._cluster, None
            if cluster is not None:
                try:
                    await cluster.stop()  # hands our leases back; the feed's last read
                finally:
                    self._owned.clear()
                    self._seeded.clear()
                    self._at_once.clear()
                    self._own_results.clear()
            guard, self._guard = self._guard, None
            if guard is not None:
                await guard.release()  # after the last write
            notifier, self._notifier = self._notifier, None
            told, self._untold = self._untold, []  # committed by a writer kept idle
            if notifier is not None:
                notifier.put(told)
                # A call in progress may take its full time limit; what is still
                # queued after that is counted as dropped.
                await notifier.stop(timeout=self.callback_timeout)
            else:
                for result in told:
                    await self._deliver(result)

    # -- cluster mode (healthmon/cluster/) ------------------------------------------------

    async def _open_cluster_session(self, store: HealthStore, settings: ClusterSettings) -> None:
        """Join the cluster, start the fenced writer, and fill the cache with the fleet."""
        if not is_postgres(store.url):
            raise ValueError(
                f"cluster mode needs PostgreSQL; {store!r} is SQLite (one process per file)"
            )
        if self._writer is not None:  # kept idle by one-off checks (agents) before start
            idle, self._writer = self._writer, None
            await idle.stop()
        writer: ResultWriter | None = None

        async def flush() -> None:
            if writer is not None:
                await writer.flush()

        if HISTORY_LEASE in self.services:
            raise ValueError(f"{HISTORY_LEASE!r} is the cluster's own lease: rename that service")
        node = ClusterNode(settings, store.engine, self, flush=flush, pruner=store.rollup())
        self._cluster = node
        try:
            await node.join(self._heard)
            assert node.fence is not None
            writer = store.writer(
                on_commit=self._committed_in_cluster,
                flush_interval=self._flush_interval,
                max_pending=self._max_pending,
                fence=node.fence,
            )
            for service in self.services.values():
                self._register_with_writer(writer, service)
            await writer.start()
            self._writer = writer
            # Every service's latest stored result, so the cache answers for the fleet
            # at once (read after the feed's start position: nothing falls between).
            for name, result in (await store.latest()).items():
                if name not in self._cache:
                    self._cache[name] = result
            await node.start()
        except BaseException:
            self._cluster = None
            self._writer = None
            if writer is not None:
                await writer.stop()
            await node.stop()
            raise

    def lease_names(self) -> list[str]:
        """The services this node leases (a cluster node's Member)."""
        return [name for name, s in self.services.items() if s.health_check_url is not None]

    def start_owned(self, seeds: dict[str, Seed | None]) -> None:
        """Start checking services whose lease this node now holds (a Member's)."""
        if self._writer is not None and any(seed is not None for seed in seeds.values()):
            self._writer.written_elsewhere()  # their newest results may be another node's
        for name, seed in seeds.items():
            self._owned.add(name)
            if seed is not None:
                self._confirmations[name] = self._seeded_confirmation(name, seed)
                self._seeded.add(name)
                self._at_once.add(name)
            elif name in self._confirmations:
                self._seeded.add(name)  # resumed: what is in memory is current
            service = self.services.get(name)
            if self._running and service is not None:
                self._start_checks(service)

    def stop_owned(self, names: Collection[str]) -> None:
        """Stop checking services whose lease this node lost or hands back."""
        for name in names:
            self._owned.discard(name)
            self._seeded.discard(name)
            self._schedules.pop(name, None)
            if self._workers is not None:
                self._workers.detach(name)
            task = self._checks.pop(name, None)
            if task is not None:
                task.cancel()  # the task closes its client as it ends; stop waits for it
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)

    def _seeded_confirmation(self, name: str, seed: Seed) -> Confirmation:
        """A claimed service's confirmation as its last owner committed it: its confirmed
        status, and the streak its newest results make towards another (replayed)."""
        policy = self.policy_for(name)
        confirmation = Confirmation(
            policy.failure_threshold, policy.success_threshold, confirmed=seed.confirmed
        )
        if seed.confirmed is None and policy.start_period > 0:
            confirmation.start_period_ends = time.monotonic() + policy.start_period
        now = time.monotonic()
        for status in seed.recent:
            if confirmation.observe(status, now):
                # Results that confirmed a change no transition records (their writer
                # was fenced mid-way): the committed status stands; no streak is kept.
                confirmation = Confirmation(
                    policy.failure_threshold, policy.success_threshold, confirmed=seed.confirmed
                )
                break
        return confirmation

    def _committed_in_cluster(self, committed: Sequence[tuple[HealthCheckResult, Any]]) -> None:
        """Our transitions committed: remembered by feed position, so that the feed hands
        our subscribers the results themselves (not rebuilt from the rows)."""
        cluster = self._cluster
        if cluster is None or cluster.fence is None:
            return
        heard_up_to = cluster.feed.cursor if cluster.feed is not None else 0
        numbered = cluster.fence.numbered
        while numbered:  # (one by one: the store's thread may add a later flush's)
            seq, result = numbered.popitem()
            if seq > heard_up_to:  # (the feed may have read it already)
                self._own_results[seq] = result

    def _heard(self, entries: Sequence[FeedEntry]) -> None:
        """Committed transitions of the whole fleet, in commit order: the cache follows
        the services other nodes check, and subscribers hear every one, once."""
        for entry in entries:
            result = self._own_results.pop(entry.seq, None)
            if result is None:
                result = HealthCheckResult(
                    service_name=entry.service,
                    status=entry.to_status,
                    response_time_ms=0.0,
                    timestamp=entry.timestamp,
                    error=entry.cause,
                    confirmed_status=entry.to_status,
                )
            if entry.service not in self._owned:  # checked elsewhere: the feed is news
                self._cache[entry.service] = result
                confirmation = self._confirmations.get(entry.service)
                if confirmation is not None:
                    confirmation.confirmed = entry.to_status
            if self._notifier is not None:
                self._notifier.put((result,))

    @staticmethod
    def _register_with_writer(writer: ResultWriter, service: ServiceDefinition) -> None:
        url = None if service.health_check_url is None else redact_url(service.health_check_url)
        writer.register_service(service.name, "http" if url else "other", url)


def _confirmed(result: HealthCheckResult, status: HealthStatus) -> HealthCheckResult:
    """The result with its confirmed status: made directly rather than through
    `dataclasses.replace` (half the CPU; every result goes through here)."""
    if type(result) is not HealthCheckResult:  # a subclass keeps its type and fields
        return dataclasses.replace(result, confirmed_status=status)
    return HealthCheckResult(
        result.service_name,
        result.status,
        result.response_time_ms,
        result.timestamp,
        result.details,
        result.error,
        status,
        result.answered,
    )


def _agent_result(name: str, report: Any, now: float) -> HealthCheckResult:
    """An agent's report as a result; a report that cannot be read or stored is
    UNHEALTHY, with the reason as its error."""
    status, details, error = HealthStatus.UNHEALTHY, None, None
    if not isinstance(report, Mapping):
        error = f"agent report is not a mapping: {type(report).__name__}"
    else:
        try:
            details = _json_safe(report)
        except (TypeError, ValueError) as exc:  # e.g. keys that are not strings or numbers
            error = f"agent report cannot be stored: {exc}"
        else:
            status = agent_health_status(report)
    return HealthCheckResult(
        service_name=f"{AGENT_PREFIX}{name}",
        status=status,
        response_time_ms=0.0,
        timestamp=now,
        details=details,
        error=error,
        answered=True,  # the agent's report came, whatever it says
    )


def _json_safe(report: Mapping[str, Any]) -> dict[str, Any]:
    """An agent's report as it can be stored: values JSON cannot hold become strings
    (a datetime, say), so that one odd report never blocks the writer."""
    if all(type(key) is str and type(value) in _PLAIN for key, value in report.items()):
        return dict(report)  # the usual report, flat: as JSON would give it back
    safe: dict[str, Any] = json.loads(json.dumps(dict(report), default=str))
    return safe


def _is_async_callable(callback: object) -> bool:
    return inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def _name_of(callback: object) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)


@functools.cache
def _freeze_long_lived_objects() -> None:
    """Once per process: what is alive when monitoring first starts lives as long as
    the process, so full collections need not walk it (see `HealthMonitor`)."""
    gc.collect()
    gc.freeze()
    log.debug("gc_frozen", objects=gc.get_freeze_count())
