"""HealthMonitor: the registry, the schedules, the cache, transitions and subscribers.

The monitor ties the probe, the cache and the store together and owns no I/O of
its own. One check, end to end::

    schedule slot -> _check_http_health (probe) -> _record:
        cache <- result;  status changed? -> StatusTransition
        store:    writer.submit(result, transition) -> group commit -> notifier
        no store: notifier directly
    notifier -> subscribers, in commit order, each under a time limit
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self

import httpx
import structlog

from healthmon.agents import AGENT_PREFIX, AgentsAdapter, agent_health_status
from healthmon.cache import HealthCache
from healthmon.model import (
    HealthCheckResult,
    HealthStatus,
    ServiceDefinition,
    StatusTransition,
    redact_url,
    validate_interval,
)
from healthmon.notify import Notifier
from healthmon.probe import new_http_client, probe_http
from healthmon.schedule import FixedRateSchedule
from healthmon.store import HealthStore, ResultWriter, WriterStats

__all__ = ["HealthMonitor", "Subscriber"]

log = structlog.get_logger("healthmon")

Subscriber = Callable[[HealthCheckResult], Awaitable[None]]
"""An async callable told of each status change, with the result that caused it."""


class HealthMonitor:
    """Checks services on fixed-rate schedules and keeps their latest status.

    `check_interval` (0.05-1.0 s, i.e. 20-1 Hz) is each service's check period.
    With a `store`, every result and transition is written to it and subscribers
    hear of a change once it is committed; the monitor does not close the store.
    `http_client`, if given, is used for every check and not closed by the
    monitor (pass one for your own TLS, auth or transport settings).
    """

    def __init__(
        self,
        check_interval: float = 1.0,
        *,
        store: HealthStore | None = None,
        http_client: httpx.AsyncClient | None = None,
        check_timeout: float = 5.0,
        callback_timeout: float = 5.0,
        flush_interval: float = 0.1,
        max_pending: int = 100_000,
    ) -> None:
        self.check_interval = validate_interval(check_interval)
        if not check_timeout > 0:
            raise ValueError(f"check_timeout must be positive, got {check_timeout!r}")
        if not callback_timeout > 0:
            raise ValueError(f"callback_timeout must be positive, got {callback_timeout!r}")
        self.check_timeout = check_timeout
        self.callback_timeout = callback_timeout
        self.services: dict[str, ServiceDefinition] = {}
        self.subscribers: list[Subscriber] = []
        self._cache = HealthCache()
        self._store = store
        self._flush_interval = flush_interval
        self._max_pending = max_pending
        self._http_client = http_client
        self._owns_http_client = http_client is None
        # Each service's current status, from which transitions are derived. Loaded
        # from the store at start, so that a restart records no spurious transition.
        self._status: dict[str, HealthStatus] = {}
        self._checks: dict[str, asyncio.Task[None]] = {}
        self._schedules: dict[str, FixedRateSchedule] = {}
        self._writer: ResultWriter | None = None
        self._notifier: Notifier | None = None
        self._running = False
        self._lifecycle = asyncio.Lock()

    # -- the cache and cluster queries (memory only, never the database) -----------------

    @property
    def health_cache(self) -> HealthCache:
        """Latest result per service (and `agent:<name>`)."""
        return self._cache

    @health_cache.setter
    def health_cache(self, results: Mapping[str, HealthCheckResult]) -> None:
        self._cache = HealthCache(results)

    def get_cluster_health(self) -> dict[str, HealthCheckResult]:
        """A snapshot (a copy) of the latest result per service."""
        return self._cache.copy()

    def get_cluster_status(self) -> HealthStatus:
        """The worst status: UNHEALTHY > DEGRADED > UNKNOWN > HEALTHY; UNKNOWN when empty."""
        return self._cache.worst_status()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def store_stats(self) -> WriterStats | None:
        """The store writer's counters while monitoring with a store (None otherwise):
        `healthy`, `last_error`, pending and dropped counts."""
        return None if self._writer is None else self._writer.stats

    @property
    def missed_checks(self) -> dict[str, int]:
        """Slots skipped per service because its previous check overran them."""
        return {name: schedule.missed for name, schedule in self._schedules.items()}

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
        self.services[service.name] = service
        if self._writer is not None:
            self._register_with_writer(self._writer, service)
        if self._running:
            self._start_checks(service)

    def remove_service(self, service_name: str) -> None:
        """Forget a service: its checks stop (an in-flight one is cancelled and not
        recorded) and it leaves the cache. Its stored history stays."""
        self.services.pop(service_name, None)
        self._cache.pop(service_name, None)
        self._schedules.pop(service_name, None)
        task = self._checks.pop(service_name, None)
        if task is not None:
            task.cancel()

    # -- subscribers --------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> None:
        """Call `callback(result)` on each status change (async callables only)."""
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
        if old_result is None or old_result.status != result.status:
            await self._deliver(result)

    async def _deliver(self, result: HealthCheckResult) -> None:
        # A copy: a callback may unsubscribe itself or another while we iterate.
        for callback in list(self.subscribers):
            try:
                async with asyncio.timeout(self.callback_timeout):
                    await callback(result)
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
        health_check_url, gives an UNKNOWN result that is not recorded.
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
        result = await self._check_http_health(service_name, service.health_check_url)
        if self.services.get(service_name) is service:  # not removed while we checked
            async with self._session():
                self._record(result)
        return result

    async def _check_http_health(
        self, service_name: str, url: str, timeout: float | None = None
    ) -> HealthCheckResult:
        """One HTTP check through `httpx.AsyncClient.get` (the loop calls this)."""
        if self._http_client is None:
            self._http_client = new_http_client()
        return await probe_http(
            self._http_client,
            service_name,
            url,
            self.check_timeout if timeout is None else timeout,
        )

    async def check_agents_health(self, agents_adapter: AgentsAdapter) -> None:
        """Fold the agents' reported states into the cache as `agent:<name>`."""
        try:
            statuses = agents_adapter.get_agent_statuses()
            if inspect.isawaitable(statuses):
                statuses = await statuses
            reports = dict(statuses.items())
        except Exception as exc:
            log.error("agents_health_check_failed", error=repr(exc))
            return
        now = time.time()
        results = [_agent_result(name, report, now) for name, report in reports.items()]
        async with self._session():
            for result in results:
                if self._writer is not None:
                    self._writer.register_service(result.service_name, "agent", None)
                self._record(result)

    def _record(self, result: HealthCheckResult) -> None:
        """Take a result in: cache, transition, store or notifier. Never waits, so a
        check cancelled by remove_service() cannot be half-recorded."""
        name = result.service_name
        self._cache[name] = result
        previous = self._status.get(name)
        transition = None
        if previous != result.status:
            self._status[name] = result.status
            transition = StatusTransition(
                service_name=name,
                from_status=previous,
                to_status=result.status,
                timestamp=result.timestamp,
                cause=result.error,
            )
            log.info(
                "status_changed",
                service=name,
                from_status=None if previous is None else previous.value,
                to_status=result.status.value,
                cause=result.error,
            )
        if self._writer is not None:
            self._writer.submit(result, transition)
        elif transition is not None and self._notifier is not None:
            self._notifier.put((result,))

    def _start_checks(self, service: ServiceDefinition) -> None:
        if service.health_check_url is None:
            return
        self._checks[service.name] = asyncio.create_task(
            self._check_loop(service, service.health_check_url),
            name=f"healthmon-check:{service.name}",
        )

    async def _check_loop(self, service: ServiceDefinition, url: str) -> None:
        """Check one service on its own fixed-rate schedule, one check at a time."""
        schedule = FixedRateSchedule(self.check_interval)
        self._schedules[service.name] = schedule
        while True:
            await schedule.wait()
            try:
                result = await self._check_http_health(service.name, url)
            except Exception as exc:  # an overridden check that raises must not end the loop
                log.exception("check_raised", service=service.name)
                result = HealthCheckResult(
                    service_name=service.name,
                    status=HealthStatus.UNHEALTHY,
                    response_time_ms=0.0,
                    timestamp=time.time(),
                    error=f"check raised {type(exc).__name__}",
                )
            self._record(result)

    # -- lifecycle ----------------------------------------------------------------------

    async def start_monitoring(self) -> None:
        """Start every service's schedule (and the writer and notifier). Idempotent."""
        async with self._lifecycle:
            if self._running:
                return
            await self._open_session()
            self._running = True
            for service in self.services.values():
                self._start_checks(service)

    async def stop_monitoring(self) -> None:
        """Cancel in-flight checks, flush every pending result and transition, deliver
        the committed changes, close the HTTP client we made. Idempotent."""
        async with self._lifecycle:
            checks = list(self._checks.values())
            self._checks.clear()
            self._schedules.clear()
            for task in checks:
                task.cancel()
            await asyncio.gather(*checks, return_exceptions=True)
            self._running = False
            await self._close_session()
            if self._owns_http_client and self._http_client is not None:
                client, self._http_client = self._http_client, None
                await client.aclose()

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
        """Around a one-off check: while monitoring, nothing to do; otherwise open the
        writer and notifier for it and close them after (flush, then deliver)."""
        if self._running:
            yield
            return
        async with self._lifecycle:
            await self._open_session()
            try:
                yield
            finally:
                await self._close_session()

    async def _open_session(self) -> None:
        notifier = Notifier(self._deliver)
        await notifier.start()
        self._notifier = notifier
        if self._store is None:
            return
        try:
            stored = await self._store.current_statuses()
            writer = self._store.writer(
                on_commit=lambda committed: notifier.put(result for result, _ in committed),
                flush_interval=self._flush_interval,
                max_pending=self._max_pending,
            )
        except BaseException:
            await self._close_session()
            raise
        for name, status in stored.items():
            self._status.setdefault(name, status)  # what this process saw itself wins
        for service in self.services.values():
            self._register_with_writer(writer, service)
        await writer.start()
        self._writer = writer

    async def _close_session(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.stop()  # the last commit hands its transitions to the notifier
        notifier, self._notifier = self._notifier, None
        if notifier is not None:
            await notifier.stop()

    @staticmethod
    def _register_with_writer(writer: ResultWriter, service: ServiceDefinition) -> None:
        url = None if service.health_check_url is None else redact_url(service.health_check_url)
        writer.register_service(service.name, "http" if url else "other", url)


def _agent_result(name: str, report: Any, now: float) -> HealthCheckResult:
    if not isinstance(report, Mapping):
        return HealthCheckResult(
            service_name=f"{AGENT_PREFIX}{name}",
            status=HealthStatus.UNHEALTHY,
            response_time_ms=0.0,
            timestamp=now,
            error=f"agent report is not a mapping: {type(report).__name__}",
        )
    return HealthCheckResult(
        service_name=f"{AGENT_PREFIX}{name}",
        status=agent_health_status(report),
        response_time_ms=0.0,
        timestamp=now,
        details=dict(report),
    )


def _is_async_callable(callback: object) -> bool:
    return inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def _name_of(callback: object) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)
