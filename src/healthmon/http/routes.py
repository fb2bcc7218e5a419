"""The API's routes: each reads the monitor (memory) or the store (history), never
changes either, and answers JSON; errors are ApiError (app.py turns them into JSON).

Blocking queries: `?index=N&wait=30s` on the cluster, a service and the transitions
returns as soon as something that response shows changed by a transition committed
after id N, or when the wait ends; `X-Healthmon-Index` always carries the newest
committed transition id, the index to pass next. An index ahead of the server's
(the database was recreated) returns at once, as Consul does when its index goes
backwards.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import json
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from healthmon.cli.export import RESULT_FIELDS
from healthmon.errors import ApiError
from healthmon.http import openapi
from healthmon.http.metrics import CONTENT_TYPE
from healthmon.http.params import Query, bad_request
from healthmon.http.shapes import (
    dumps,
    error_response,
    nodes_shape,
    report_shape,
    result_shape,
    service_shape,
    store_shape,
    transition_shape,
    window_shape,
)
from healthmon.http.streams import stream
from healthmon.model import HealthCheckResult, ServiceDefinition
from healthmon.pace import Pace
from healthmon.render import iso
from healthmon.store import LatencyStats, ServiceReport, StatusCounts, TransitionRecord

if TYPE_CHECKING:
    from healthmon.http.app import HttpApi

__all__ = ["INDEX_HEADER", "MAX_PAGE", "table"]

INDEX_HEADER = "X-Healthmon-Index"
MAX_PAGE = 1000
MAX_EXACT_WINDOW = 3600.0
"""Exact percentiles read and sort every raw result of the window on the monitor's
loop (~0.1 s for an hour at 20 Hz): at most an hour of them."""
MAX_RAW_WINDOW = 3600.0
"""Series buckets under a minute are counted from raw results: at most an hour."""
_EARLIEST, _LATEST = 0.0, 253402300799.0  # 1970 .. 9999-12-31T23:59:59Z
_EXPORT_PAGE = 500
_SSE_PAGE = 200
_BLOCKING = ("index", "wait")


def table(api: HttpApi) -> list[tuple[str, Any]]:
    """(path, endpoint) of every route."""
    r = _Routes(api)
    return [
        ("/livez", r.livez),
        ("/readyz", r.readyz),
        ("/metrics", r.metrics),
        ("/api/v1/openapi.json", r.openapi),
        ("/api/v1/cluster", r.cluster),
        ("/api/v1/cluster/status", r.cluster_status),
        ("/api/v1/cluster/nodes", r.nodes),
        ("/api/v1/services/{name}", r.service),
        ("/api/v1/services/{name}/report", r.report),
        ("/api/v1/services/{name}/series", r.series),
        ("/api/v1/reports", r.reports),
        ("/api/v1/series", r.fleet_series),
        ("/api/v1/transitions", r.transitions),
        ("/api/v1/results", _Asgi(r.results)),
        ("/api/v1/events", _Asgi(r.events)),
        ("/api/v1/store", r.store_stats),
        ("/api/v1/missed-checks", r.missed_checks),
    ]


class _Asgi:
    """A raw ASGI endpoint (Starlette wraps plain functions as request -> response)."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Any]) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handler(scope, receive, send)


class _Routes:
    def __init__(self, api: HttpApi) -> None:
        self.api = api
        self.monitor = api.monitor
        self.store = api.store
        self.feed = api.feed
        self.settings = api.settings
        self._openapi = dumps(openapi.document())
        # /api/v1/cluster: each service's JSON and what it was made from.
        self._shaped: dict[str, tuple[tuple[object, ...], bytes]] = {}

    def json(self, body: Any, status: int = 200) -> Response:
        return Response(dumps(body), status, self._headers(), media_type="application/json")

    def _headers(self) -> dict[str, str]:
        return {INDEX_HEADER: str(self.feed.index), "Cache-Control": "no-store"}

    # -- health of healthmon itself ------------------------------------------------------

    async def livez(self, request: Request) -> Response:
        Query(request.query_params, ())
        return self.json({"status": "alive"})

    async def readyz(self, request: Request) -> Response:
        """Ready: monitoring, and the store writing (its last flush succeeded)."""
        Query(request.query_params, ())
        stats = self.monitor.store_stats
        reasons = []
        if not self.monitor.running:
            reasons.append("the monitor is not running")
        elif stats is None:
            reasons.append("the store has no writer")
        elif not stats.healthy:
            reasons.append("the store's last write failed (see /api/v1/store)")
        body = {"ready": not reasons, "reasons": reasons}
        return self.json(body, 503 if reasons else 200)

    async def metrics(self, request: Request) -> Response:
        Query(request.query_params, ())
        page = await self.api.metrics.render()
        return Response(page, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    async def openapi(self, request: Request) -> Response:
        Query(request.query_params, ())
        return Response(self._openapi, media_type="application/json")

    # -- the cluster now (memory) ------------------------------------------------------

    async def cluster_status(self, request: Request) -> Response:
        query = Query(request.query_params, _BLOCKING)
        await self._block(query, lambda index: self.feed.index > index)
        return self.json(self._summary())

    async def cluster(self, request: Request) -> Response:
        query = Query(request.query_params, _BLOCKING)
        await self._block(query, lambda index: self.feed.index > index)
        # One moment's copies, then each service's JSON half a millisecond at a
        # time with the loop let go in between (at 1,000 services the whole is
        # ~15 ms of shaping and encoding, which the checks and requests due meanwhile
        # would otherwise wait for); a service's JSON is kept until what it shows
        # changes, so a service not checked since the last request costs a lookup.
        owners = await self.api.cluster.owners()
        pace = Pace()
        summary = self._summary()
        results = self.monitor.health_cache.copy()
        services = dict(self.monitor.services)
        latest = self.feed.latest_copy()
        names = [*services, *(name for name in results if name not in services)]
        kept, fresh = self._shaped, {}
        for name in names:
            if pace.due():
                await pace.rest()
            key = (results.get(name), services.get(name), latest.get(name), owners.get(name))
            entry = kept.get(name)
            if entry is None or entry[0] != key:
                entry = (key, dumps(self._service(name, results, services, latest, owners)))
            fresh[name] = entry
        self._shaped = fresh
        body = b"".join(
            (dumps(summary)[:-1], b',"services":[', b",".join(e[1] for e in fresh.values()), b"]}")
        )
        return Response(body, 200, self._headers(), media_type="application/json")

    async def service(self, request: Request) -> Response:
        name = request.path_params["name"]
        query = Query(request.query_params, _BLOCKING)
        if name not in self.monitor.services and name not in self.monitor.health_cache:
            raise _unknown_service(name, "the monitor has no service of that name")

        def changed(index: int) -> bool:
            record = self.feed.latest(name)
            return record is not None and record.id > index

        await self._block(query, changed)
        owners = await self.api.cluster.owners()
        return self.json(self._service(name, owners=owners))

    async def nodes(self, request: Request) -> Response:
        """Cluster mode: the nodes as `healthmon status` shows them."""
        Query(request.query_params, ())
        watch = self.api.cluster
        view = await watch.view()
        return self.json(nodes_shape(watch.clustered, watch.node_name, watch.node_id, view))

    def _summary(self) -> dict[str, Any]:
        cache = self.monitor.health_cache
        counts = {status.value: count for status, count in cache.counts().items()}
        # (those with a result, and those registered without one yet: no set of all)
        unchecked = self.monitor.services.keys() - cache.keys()
        return {
            "status": self.monitor.get_cluster_status().value,
            "index": self.feed.index,
            "running": self.monitor.running,
            "service_count": len(cache) + len(unchecked),
            "counts": counts,
        }

    def _service(
        self,
        name: str,
        results: Mapping[str, HealthCheckResult] | None = None,
        services: Mapping[str, ServiceDefinition] | None = None,
        latest: Mapping[str, TransitionRecord] | None = None,
        owners: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One service's shape, from the given copies or else the live state."""
        service = (self.monitor.services if services is None else services).get(name)
        interval = None
        if service is not None and service.health_check_url is not None:
            interval = service.interval or self.monitor.check_interval
        result = (self.monitor.health_cache if results is None else results).get(name)
        record = self.feed.latest(name) if latest is None else latest.get(name)
        node = None if owners is None else owners.get(name)
        return service_shape(name, result, service, record, interval, node=node)

    async def _block(self, query: Query, changed: Callable[[int], bool]) -> None:
        """Wait, for a blocking query, until `changed(index)` or the wait ends."""
        index = query.integer("index")
        wait = query.seconds("wait", maximum=self.settings.max_wait)
        if index is None:
            if wait is not None:
                raise bad_request("wait needs index: wait for a change after which index?")
            return
        if index > self.feed.index or changed(index):
            return
        if self.api.waiting.full():
            raise _busy("blocking queries", self.settings.max_waiting)
        deadline = asyncio.get_running_loop().time() + (wait or self.settings.wait)
        with self.api.waiting.holding(), self.feed.listening() as listener:
            while not (changed(index) or self.feed.closed or index > self.feed.index):
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 or not await listener.wait(remaining):
                    return

    # -- history (the store) ------------------------------------------------------------

    async def _known(self, name: str) -> None:
        if name in self.monitor.services or name in self.monitor.health_cache:
            return
        async with self.api.reads.turn():
            known = await self.feed.knows(name)
        if not known:
            raise _unknown_service(name, "neither monitored nor in the database")

    async def _stored(self, name: str) -> bool:
        """Whether the database has the service (a monitored one may not have yet)."""
        if self.feed.known(name):
            return True
        async with self.api.reads.turn():
            return await self.feed.knows(name)

    def _window(self, query: Query, *, default_since: str | None = "24h") -> tuple[float, float]:
        now = self.api.now()
        since = query.moment("since", now)
        if since is None:
            if default_since is None:
                raise bad_request("since is required")
            since = now - 86400.0
        until = query.moment("until", now)
        until = now if until is None else until
        for name, value in (("since", since), ("until", until)):
            if not _EARLIEST <= value <= _LATEST:
                raise bad_request(f"{name} must be between 1970 and 9999, got {value!r}")
        if since > until:
            raise bad_request(f"since ({iso(since)}) is after until ({iso(until)})")
        return since, until

    async def report(self, request: Request) -> Response:
        name = request.path_params["name"]
        query = Query(request.query_params, ("since", "until", "exact"))
        since, until = self._window(query)
        exact = query.boolean("exact", False)
        if exact and until - since > MAX_EXACT_WINDOW:
            raise bad_request(
                f"exact=true reads every raw result: at most {MAX_EXACT_WINDOW:.0f} s "
                f"(1 h) of window, got {until - since:.0f} s; leave exact out for longer ones"
            )
        await self._known(name)
        if not await self._stored(name):
            # Monitored, and nothing of it committed yet (its first flush is still to
            # come): an empty report, as for a window without results.
            empty = ServiceReport(
                name, since, until, StatusCounts(), LatencyStats(exact=exact), (), (), None, None
            )
            return self.json(report_shape(empty))
        try:
            async with self.api.reads.turn():
                found = await self.store.report(name, since, until, exact=exact)
        except ValueError as exc:
            raise _from_store(exc) from None
        return self.json(report_shape(found))

    async def reports(self, request: Request) -> Response:
        """Every service's report, computed one service at a time: the store's
        reports() does them all in one call, whose Python part (a fleet's aggregates:
        ~0.2 s for 100 services' day) would hold the monitor's loop; one by one, the
        checks run between them."""
        query = Query(request.query_params, ("since", "until"))
        since, until = self._window(query)
        async with self.api.reads.turn():
            names = sorted(await self.store.service_names())
        found = []
        try:
            for name in names:
                async with self.api.reads.turn():
                    found.append(await self.store.report(name, since, until))
        except ValueError as exc:
            raise _from_store(exc) from None
        return self.json({"reports": [report_shape(report) for report in found]})

    async def series(self, request: Request) -> Response:
        name = request.path_params["name"]
        await self._known(name)
        return await self._series(request, name)

    async def fleet_series(self, request: Request) -> Response:
        return await self._series(request, None)

    async def _series(self, request: Request, name: str | None) -> Response:
        query = Query(request.query_params, ("since", "until", "bucket"))
        since, until = self._window(query)
        bucket = query.seconds("bucket")
        if bucket is None:
            raise bad_request("bucket is required: the width of each bucket, e.g. 60 or 5m")
        if bucket < 60 and until - since > MAX_RAW_WINDOW:
            # Buckets finer than the minute aggregates are counted from raw results,
            # on the monitor's loop: an hour of them at most.
            raise bad_request(
                f"bucket below 60 s reads raw results: at most {MAX_RAW_WINDOW:.0f} s (1 h) "
                f"of window, got {until - since:.0f} s; use a bucket of 60 s or more"
            )
        try:
            async with self.api.reads.turn():
                found = await self.store.series(name, since, until, bucket=bucket)
        except ValueError as exc:
            raise _from_store(exc) from None
        return self.json(
            {"service": name, "bucket": bucket, "buckets": [window_shape(w) for w in found]}
        )

    async def transitions(self, request: Request) -> Response:
        """Transitions after an id, paged (`next_after` is the next page's `after`);
        with `wait`, an empty page waits for the next commit (a long-poll feed)."""
        query = Query(request.query_params, ("after", "limit", "service", "wait"))
        after = query.integer("after") or 0
        limit = query.integer("limit", minimum=1, maximum=MAX_PAGE) or 100
        wait = query.seconds("wait", maximum=self.settings.max_wait)
        services = query.texts("service") or None
        for name in services or ():
            await self._known(name)
        if after > self.feed.index:
            # Ahead of every id: the database was replaced and ids started again.
            # Start the client over from the newest, as a blocking query does.
            return self.json({"transitions": [], "next_after": self.feed.index})
        # Listening from before the first read: a commit during it is not missed.
        with self.feed.listening() as listener:
            async with self.api.reads.turn():
                page, cursor = await self.feed.after(after, limit, services)
            if not page and wait is not None and not self.feed.closed:
                if self.api.waiting.full():
                    raise _busy("blocking queries", self.settings.max_waiting)
                deadline = asyncio.get_running_loop().time() + wait
                with self.api.waiting.holding():
                    while not page and not self.feed.closed:
                        remaining = deadline - asyncio.get_running_loop().time()
                        if remaining <= 0 or not await listener.wait(remaining):
                            break
                        async with self.api.reads.turn():
                            page, cursor = await self.feed.after(cursor, limit, services)
        return self.json({"transitions": [transition_shape(r) for r in page], "next_after": cursor})

    async def store_stats(self, request: Request) -> Response:
        Query(request.query_params, ())
        return self.json(store_shape(self.monitor.store_stats))

    async def missed_checks(self, request: Request) -> Response:
        Query(request.query_params, ())
        missed = self.monitor.missed_checks
        return self.json({"total": sum(missed.values()), "services": missed})

    # -- streams ------------------------------------------------------------------------

    async def results(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Raw results of [since, until) as CSV or JSON lines, the CLI export's rows.

        Read a page at a time, each page in a read transaction of its own, so that a
        slow reader never holds one open (which would keep SQLite's WAL growing)."""
        request = Request(scope, receive)
        try:
            query = Query(request.query_params, ("service", "since", "until", "format"))
            service = query.text("service")
            fmt = query.choice("format", ("csv", "jsonl"), "csv")
            since, until = self._window(query)
            if service is not None:
                await self._known(service)
            if self.api.exports.full():
                raise _busy("exports", self.api.exports.limit)
        except ApiError as error:
            await error_response(error)(scope, receive, send)
            return
        if service is not None:
            names = [service]
        else:
            async with self.api.reads.turn():
                names = await self.store.service_names()
        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"

        async def chunks() -> AsyncGenerator[bytes]:
            if fmt == "csv":
                yield _csv_lines([RESULT_FIELDS])
            for name in names:
                start = since
                while not self.feed.closed:
                    async with self.api.reads.turn():
                        page = await self.store.results(name, start, until, limit=_EXPORT_PAGE)
                    if page:
                        yield _encode(page, fmt)
                    if len(page) < _EXPORT_PAGE:
                        break
                    start = page[-1].timestamp + 1e-6  # keys are whole microseconds

        with self.api.exports.holding():
            await stream(
                send,
                receive,
                status=200,
                headers=[
                    (b"content-type", media.encode()),
                    (b"cache-control", b"no-store"),
                    (INDEX_HEADER.lower().encode(), str(self.feed.index).encode()),
                ],
                chunks=chunks,
                send_timeout=self.settings.send_timeout,
                what="results export",
                head=request.method == "HEAD",
            )

    async def events(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Server-sent events: each committed transition as an `event: transition`
        with its id, from after `Last-Event-ID` (or `?after=`), else from now."""
        request = Request(scope, receive)
        try:
            query = Query(request.query_params, ("after", "service"))
            after = query.integer("after")
            last_event = request.headers.get("last-event-id")
            if last_event is not None:
                text = last_event.strip()
                if not text.isdigit():
                    raise bad_request(
                        f"Last-Event-ID must be a transition id (an integer >= 0), "
                        f"got {last_event!r}"
                    )
                after = int(text)
            services = query.texts("service") or None
            for name in services or ():
                await self._known(name)
            if self.api.streams.full():
                raise _busy("event streams", self.settings.max_streams)
        except ApiError as error:
            await error_response(error)(scope, receive, send)
            return
        cursor = self.feed.index if after is None else after
        feed, keepalive = self.feed, self.settings.keepalive

        async def chunks() -> AsyncGenerator[bytes]:
            nonlocal cursor
            yield f"retry: 2000\n: index {feed.index}\n\n".encode()
            with feed.listening() as listener:
                while True:
                    cursor = min(cursor, feed.index)  # ids went back: the database is new
                    if feed.recent_after(cursor, 1) is not None:
                        page, cursor = await feed.after(cursor, _SSE_PAGE, services)
                    else:  # far behind: a store read, in turn with the others
                        async with self.api.reads.turn():
                            page, cursor = await feed.after(cursor, _SSE_PAGE, services)
                    if page:
                        yield "".join(_event(record) for record in page).encode()
                        continue
                    if feed.closed:
                        return
                    if not await listener.wait(keepalive):
                        yield b": keepalive\n\n"

        with self.api.streams.holding():
            await stream(
                send,
                receive,
                status=200,
                headers=[
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),
                    (INDEX_HEADER.lower().encode(), str(self.feed.index).encode()),
                ],
                chunks=chunks,
                send_timeout=self.settings.send_timeout,
                what="event stream",
                head=request.method == "HEAD",
            )


@functools.lru_cache(maxsize=2048)
def _event(record: TransitionRecord) -> str:
    """One transition as an event, made once however many streams send it (keyed by
    the whole record, so a database whose ids started again gets new ones)."""
    data = json.dumps(transition_shape(record), separators=(",", ":"), ensure_ascii=False)
    return f"id: {record.id}\nevent: transition\ndata: {data}\n\n"


def _csv_lines(rows: list[Any]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def _encode(page: list[HealthCheckResult], fmt: str) -> bytes:
    rows = [_row(result) for result in page]
    if fmt == "jsonl":
        return "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows).encode()
    return _csv_lines(
        [
            ["" if v is None else json.dumps(v) if k == "details" else v for k, v in row.items()]
            for row in rows
        ]
    )


def _row(result: HealthCheckResult) -> dict[str, Any]:
    """The CLI export's row (cli/export.py): the same fields, in the same order."""
    shape = result_shape(result)
    return {"service": result.service_name, **{k: shape[k] for k in RESULT_FIELDS[1:]}}


def _unknown_service(name: str, why: str) -> ApiError:
    return ApiError(404, "unknown_service", f"unknown service {name!r}: {why}")


def _busy(what: str, limit: int) -> ApiError:
    return ApiError(503, "busy", f"too many {what} at once (at most {limit}); retry later")


def _from_store(exc: ValueError) -> ApiError:
    """The store's validation message, as the store words it, in a 400."""
    return bad_request(str(exc))
