"""`healthmon history SERVICE`: the history report (uptime, latency percentiles,
incidents, gaps) with a small terminal chart, from the store's history API."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import sys
import time
from typing import Any

from healthmon.cli.database import add_database_argument, open_for_reading
from healthmon.cli.logsetup import add_logging_arguments, setup_logging
from healthmon.cli.timearg import parse_duration, parse_moment
from healthmon.errors import HealthmonError
from healthmon.model import HealthStatus
from healthmon.render import chart_bucket, iso, render_report
from healthmon.store import HealthStore, ServiceReport, WindowStats

__all__ = ["History", "ascii_only", "history_json", "read_history", "read_series", "register"]

DEFAULT_SINCE = "24h"


class UnknownServiceError(HealthmonError):
    """The database has no service of that name (a usage error)."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "history",
        help="a service's uptime, latency percentiles and incidents over a window, charted",
        description="Report on SERVICE over the window [--since, --until): status counts, "
        "uptime ((healthy + degraded) / all but unknown), latency of the answered checks "
        "(min, mean, max, p50/p90/p95/p99: exact from raw results, else within 1 % from "
        "the aggregates), incidents (spans not healthy, from transitions) with MTTR and "
        "MTBF, gaps (no results: the monitor was not checking), and a chart of p95 "
        "latency and how much of each time bucket was down.",
    )
    parser.add_argument("service", metavar="SERVICE", help="the service's name")
    parser.add_argument(
        "--since",
        type=parse_moment,
        default=parse_moment(DEFAULT_SINCE),
        metavar="WHEN",
        help="start of the window: a duration ago (24h, 30m, 7d) or an ISO 8601 time "
        f"(UTC unless it has an offset); default: {DEFAULT_SINCE}",
    )
    parser.add_argument(
        "--until",
        type=parse_moment,
        metavar="WHEN",
        help="end of the window (excluded), same forms as --since; default: now",
    )
    parser.add_argument(
        "--bucket",
        type=parse_duration,
        metavar="DURATION",
        help="the chart's bucket (e.g. 1m, 1h); default: the round size that gives about 60 "
        "(buckets start at whole multiples of their size)",
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="percentiles from raw results only (slower on long windows; the window then "
        "starts no earlier than the oldest raw result kept)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (with every bucket) instead"
    )
    add_database_argument(parser)
    add_logging_arguments(parser)
    parser.set_defaults(handler=command)


@dataclasses.dataclass(frozen=True, slots=True)
class History:
    report: ServiceReport
    bucket: float
    buckets: list[WindowStats]


def command(args: argparse.Namespace) -> int:
    setup_logging(args)
    now = time.time()
    since = args.since.at(now)
    until = now if args.until is None else args.until.at(now)
    if since >= until:
        print(
            f"healthmon: error: --since ({iso(since)}) is not before --until ({iso(until)})",
            file=sys.stderr,
        )
        return 2
    try:
        history = asyncio.run(_read(args, since, until))
    except UnknownServiceError as exc:
        print(f"healthmon: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(history_json(history), indent=2))
    else:
        print(
            render_report(
                history.report, history.buckets, bucket=history.bucket, ascii=ascii_only()
            )
        )
    return 0


async def _read(args: argparse.Namespace, since: float, until: float) -> History:
    async with open_for_reading(args.database) as store:
        return await read_history(
            store, args.service, since, until, bucket=args.bucket, exact=args.exact
        )


async def read_history(
    store: HealthStore,
    service: str,
    since: float,
    until: float,
    *,
    bucket: float | None = None,
    exact: bool = False,
) -> History:
    """The report over [since, until) and its chart's series."""
    try:
        report = await store.report(service, since, until, exact=exact)
    except ValueError as exc:
        raise UnknownServiceError(str(exc)) from exc
    bucket = bucket or chart_bucket(report.until - report.since)
    return History(report, bucket, await read_series(store, report, bucket))


async def read_series(
    store: HealthStore, report: ServiceReport, bucket: float
) -> list[WindowStats]:
    """The chart's buckets over the report's window, `bucket` seconds each."""
    # Buckets aligned to whole multiples of their size: whole minutes and hours are
    # answered from the aggregates alone.
    start = math.floor(report.since / bucket) * bucket
    return await store.series(report.service_name, start, report.until, bucket=bucket)


def history_json(history: History) -> dict[str, Any]:
    report = history.report
    return {
        **_plain(report),
        "since_iso": iso(report.since),
        "until_iso": iso(report.until),
        "uptime": report.uptime,
        "healthy_share": report.healthy_share,
        "series": {
            "bucket_s": history.bucket,
            "buckets": [{**_plain(b), "uptime": b.uptime} for b in history.buckets],
        },
    }


def _plain(value: Any) -> Any:
    """Dataclasses as dicts, statuses as their names, recursively (times stay epoch seconds)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, HealthStatus):
        return value.value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def ascii_only() -> bool:
    """Block characters for the chart unless stdout cannot encode them."""
    try:
        "▁█".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return True
    return False
