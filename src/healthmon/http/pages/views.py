"""The status pages' routes: server-rendered HTML (Jinja2, autoescaped), their static
files, and the day figures the overview's tooltips fetch.

Every figure is in the HTML, so the pages read without JavaScript; the script adds
the latency chart, the day tooltips and the live status (the API's event stream).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from healthmon.errors import ApiError
from healthmon.http.pages.figures import SEVERITY, WINDOWS, FleetRow, read_service
from healthmon.http.pages.fleet import DAYS, EMPTY, DayBar, FleetHistory, Summary
from healthmon.http.params import Query, bad_request
from healthmon.http.shapes import dumps
from healthmon.model import redact_url
from healthmon.render import duration

if TYPE_CHECKING:
    from healthmon.http.app import HttpApi

__all__ = ["PAGE_SIZE", "StatusPages"]

PAGE_SIZE = 100
"""Services per overview page, worst first: at 1,000 services the first page holds
every one in trouble, and each page stays small (under 200 KB)."""

_HERE = Path(__file__).resolve().parent


class StatusPages:
    """The overview at `/`, a page per service at `/services/{name}`, static files
    at `/static/`."""

    def __init__(self, api: HttpApi, *, history_max_age: float = 10.0) -> None:
        self.api = api
        self.history = FleetHistory(api.store, clock=api.now, max_age=history_max_age)

        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True,  # every value is escaped unless marked safe (none is)
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            utc=_utc,
            iso=_iso,
            ago=_ago,
            pct=_pct,
            ms=_ms,
            dur=_dur,
            quote=_quote,
            paths=_paths,
            days_text=_days_text,
        )

    async def start(self) -> None:
        """Begin reading the fleet's settled days (in the background)."""
        await self.history.start()

    async def stop(self) -> None:
        await self.history.stop()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.overview),
            Route("/services/{name:path}", self.service),
            Route("/days", self.days),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
        ]

    # -- the overview -------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        query = Query(request.query_params, ("q", "page"))
        text = (query.text("q") or "").strip()
        page = query.integer("page", minimum=1) or 1
        started = time.perf_counter()
        # (The fleet's history is one reading in the background however many views ask:
        # outside the clients' read budget, which would charge each view its wait.)
        read_at, summaries = await self.history.summaries()
        rows = [self._row(name, summaries.get(name, EMPTY)) for name in self._names()]
        rows.sort(key=_worst_first)
        counts = {status: 0 for status in SEVERITY}
        for row in rows:
            counts[row.status] += 1
        shown = [row for row in rows if text.casefold() in row.name.casefold()] if text else rows
        pages = max(1, math.ceil(len(shown) / PAGE_SIZE))
        if page > pages:
            raise bad_request(f"page {page} is past the last page ({pages})")
        first = (page - 1) * PAGE_SIZE
        context = {
            "title": "Status",
            "cluster": self.api.monitor.get_cluster_status().value,
            "counts": counts,
            "total": len(rows),
            "rows": shown[first : first + PAGE_SIZE],
            "matching": len(shown),
            "first": first,
            "q": text,
            "page": page,
            "pages": pages,
            "page_link": lambda n: "?" + urlencode({"q": text, "page": n} if text else {"page": n}),
            "days": DAYS,
            "read_at": read_at,  # None: nothing read yet, every figure is "reading"
            "loading": not self.history.ready,  # the days (30 d, 90 d, bars) not read yet
        }
        return await self._render(request, "overview.html", context, started)

    def _names(self) -> list[str]:
        monitor = self.api.monitor
        names = [*monitor.services]
        names += [name for name in monitor.health_cache if name not in monitor.services]
        return names

    def _row(self, name: str, history: Summary) -> FleetRow:
        result = self.api.monitor.health_cache.get(name)
        since = self.api.feed.latest(name)
        return FleetRow(
            name=name,
            status="unknown" if result is None else result.effective_status.value,
            since=None if since is None else since.transition.timestamp,
            error=None if result is None else result.error,
            last_check=None if result is None else result.timestamp,
            history=history,
        )

    async def days(self, request: Request) -> Response:
        """The overview's day figures of one service, for its bars' tooltips."""
        query = Query(request.query_params, ("service",))
        name = query.text("service")
        if name is None:
            raise bad_request("service is required: whose days?")
        _, summaries = await self.history.summaries()
        if not self.history.ready:  # the tooltips are of the bars: wait for them
            _, summaries = await self.history.read()
        summary = summaries.get(name)
        if summary is None:  # monitored, nothing read of it yet: no days to show
            if name not in self._names():
                raise ApiError(404, "unknown_service", f"unknown service {name!r}")
            summary = EMPTY
        body = [
            {
                "day": _day(bar.day),
                "checks": bar.counts.total,
                "failed": bar.failed,
                "uptime": bar.uptime,
                "level": bar.level,
            }
            for bar in summary.days
        ]
        headers = {"Cache-Control": "no-store"}
        return Response(dumps(body), 200, headers, media_type="application/json")

    # -- one service --------------------------------------------------------------------

    async def service(self, request: Request) -> Response:
        name = request.path_params["name"]
        query = Query(request.query_params, ("window",))
        window = query.choice("window", tuple(WINDOWS), "24h")
        monitor = self.api.monitor
        started = time.perf_counter()
        known = await self.api.feed.knows(name)  # in the database: it has a history
        if name not in monitor.services and not known:
            raise ApiError(404, "unknown_service", f"unknown service {name!r}")
        history = None
        if known:
            async with self.api.reads.turn():
                history = await read_service(self.api.store, name, window, self.api.now())
        definition = monitor.services.get(name)
        url = None
        if definition is not None and definition.health_check_url is not None:
            url = redact_url(definition.health_check_url)
        context = {
            "title": name,
            "row": self._row(name, EMPTY),
            "url": url,
            "history": history,
            "window": window,
            "windows": list(WINDOWS),
            "chart": None if history is None else _chart(history.buckets),
            "causes": [] if history is None else history.causes,
        }
        return await self._render(request, "service.html", context, started)

    # -- rendering ----------------------------------------------------------------------

    async def _render(
        self, request: Request, template: str, context: dict[str, Any], started: float
    ) -> Response:
        root = request.scope.get("root_path", "")
        context |= {
            "root": root,
            "index": self.api.feed.index,
            "now": self.api.now(),
            "token": self.api.settings.token is not None,
        }
        # Rendering a page of 100 rows takes a few milliseconds of CPU; in a thread,
        # the monitor's loop keeps running its checks meanwhile.
        html = await asyncio.to_thread(self.env.get_template(template).render, context)
        elapsed = (time.perf_counter() - started) * 1000
        headers = {
            "Cache-Control": "no-store",
            "Server-Timing": f"render;dur={elapsed:.1f}",
            "Content-Security-Policy": _CSP,
            "X-Content-Type-Options": "nosniff",
        }
        return HTMLResponse(html, headers=headers)


# Only the page's own files: no inline script runs (the chart's data is a JSON block
# that the script reads, never executes), so injected markup could not run either.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def _worst_first(row: FleetRow) -> tuple[int, float, str]:
    uptime = row.history.uptime_24h
    return (SEVERITY.get(row.status, 2), 2.0 if uptime is None else uptime, row.name)


def _chart(buckets: Any) -> dict[str, list[Any]]:
    """The latency chart's columns (x in epoch seconds; None where nothing answered)."""
    return {
        "t": [b.since for b in buckets],
        "p50": [b.latency.p50 for b in buckets],
        "p95": [b.latency.p95 for b in buckets],
        "p99": [b.latency.p99 for b in buckets],
    }


# -- filters -------------------------------------------------------------------------------


def _utc(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return ""
    return "for " + _dur(max(0.0, now - ts))


def _pct(share: float | None) -> str:
    if share is None:
        return "-"
    if share == 1:
        return "100 %"
    return f"{math.floor(share * 100_000) / 1000:.3f} %"  # never rounded up to 100 %


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def _dur(seconds: float | None) -> str:
    return "-" if seconds is None else duration(seconds)


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _quote(name: str) -> str:
    return quote(name, safe="")


def _paths(bars: Sequence[DayBar]) -> list[tuple[str, str]]:
    """(colour class, SVG path) per colour: neighbouring days of one colour are one
    rectangle, each colour one path; a few hundred bytes for 90 days."""
    runs: dict[str, list[str]] = {}
    start = 0
    for index in range(1, len(bars) + 1):
        if index < len(bars) and bars[index].level == bars[start].level:
            continue
        width = index - start
        runs.setdefault(bars[start].level, []).append(f"M{start} 0h{width}v10h-{width}z")
        start = index
    return [(level, "".join(parts)) for level, parts in runs.items()]


def _days_text(bars: Sequence[DayBar]) -> str:
    """The bars in words, for a reader without the chart or its tooltips."""
    seen = [bar for bar in bars if bar.uptime is not None]
    if not seen:
        return f"last {len(bars)} days: not observed"
    low = [bar for bar in seen if bar.level != "ok"]
    text = f"last {len(bars)} days: {len(seen)} observed, {len(low)} below 99.9 % up"
    if low:
        worst = min(low, key=lambda bar: bar.uptime or 0.0)
        text += f"; worst {_day(worst.day)}: {_pct(worst.uptime)}"
    return text
