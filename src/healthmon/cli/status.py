"""`healthmon status`: each service's status and the cluster's, from the database.

Reads what a running monitor writes (WAL: never in its way) and never migrates.
The exit code says the cluster status, so scripts and orchestrators can act on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from healthmon.cli.database import add_database_argument, open_for_reading, shown
from healthmon.cli.logsetup import add_logging_arguments, setup_logging
from healthmon.cli.timearg import parse_duration
from healthmon.model import HealthCheckResult, HealthStatus, worst_status
from healthmon.render import duration, iso, render_table
from healthmon.store import HealthStore

__all__ = ["EXIT_CODES", "EXIT_STALE", "StatusReport", "read_status", "register"]

EXIT_CODES = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.UNKNOWN: 3,
    HealthStatus.DEGRADED: 4,
    HealthStatus.UNHEALTHY: 5,
}
"""Exit code per cluster status. 1 (the database cannot be read) and 2 (bad usage)
keep their usual meaning for every command, so a typo never reads as an outage."""
EXIT_STALE = 6
DEFAULT_STALE_AFTER = 30.0

# Windows (seconds back from a service's newest result) searched in turn for its
# newest transition: most services changed recently, and a long history is not read.
_SINCE_WINDOWS = (60.0, 3600.0, 86400.0, 30 * 86400.0, None)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "status",
        help="each service's status and the cluster status, read from the database",
        description="Show each service's current status, since when it has had it, when it "
        "was last checked, and the cluster status (the worst of them). The exit code is the "
        "cluster status: 0 healthy, 3 unknown (no confirmed status yet), 4 degraded, 5 unhealthy, "
        "6 stale (no service checked within --stale-after: is the monitor running?); "
        "1 if the database cannot be read, 2 for bad usage.",
    )
    add_database_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument(
        "--stale-after",
        type=parse_duration,
        default=DEFAULT_STALE_AFTER,
        metavar="DURATION",
        help="a service whose newest result is older than this is stale and left out of "
        "the cluster status; if every service is, the database is stale (default: 30s)",
    )
    add_logging_arguments(parser)
    parser.set_defaults(handler=command)


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: str
    status: HealthStatus
    """The confirmed status (as the newest transition left it); UNKNOWN before the first."""
    since: float | None
    """When the service entered `status` (its newest transition), if known."""
    last: HealthCheckResult | None
    stale: bool


@dataclass(frozen=True, slots=True)
class StatusReport:
    database: str
    now: float
    stale_after: float
    services: tuple[ServiceStatus, ...]

    @property
    def newest_result_at(self) -> float | None:
        return max((s.last.timestamp for s in self.services if s.last), default=None)

    @property
    def stale(self) -> bool:
        """Results exist, but no service has a fresh one: nobody is writing."""
        return bool(self.services) and all(s.stale for s in self.services)

    @property
    def cluster_status(self) -> HealthStatus:
        return worst_status(s.status for s in self.services if not s.stale)

    @property
    def exit_code(self) -> int:
        return EXIT_STALE if self.stale else EXIT_CODES[self.cluster_status]


def command(args: argparse.Namespace) -> int:
    setup_logging(args)
    report = asyncio.run(_read(args.database, args.stale_after))
    print(_json(report) if args.json else _text(report))
    return report.exit_code


async def _read(database: str, stale_after: float) -> StatusReport:
    async with open_for_reading(database) as store:
        return await read_status(store, shown(database), stale_after)


async def read_status(
    store: HealthStore, database: str, stale_after: float = DEFAULT_STALE_AFTER
) -> StatusReport:
    """Every service's status as stored, judged at the current time."""
    latest = await store.latest()
    confirmed = await store.current_statuses()
    now = time.time()
    services = []
    for name in sorted(latest.keys() | confirmed.keys()):
        last = latest.get(name)
        # Until a service's first status is confirmed (a start period, a failure
        # threshold not reached yet) it is UNKNOWN, whatever its newest result says.
        status = confirmed.get(name, HealthStatus.UNKNOWN)
        services.append(
            ServiceStatus(
                name=name,
                status=status,
                since=await _since(store, name, last),
                last=last,
                stale=last is None or now - last.timestamp > stale_after,
            )
        )
    return StatusReport(database, now, stale_after, tuple(services))


async def _since(store: HealthStore, name: str, last: HealthCheckResult | None) -> float | None:
    """When the service's newest transition happened: exact, reading little."""
    end = last.timestamp if last else time.time()
    for window in _SINCE_WINDOWS:
        found = await store.transitions(name, since=None if window is None else end - window)
        if found:
            return found[-1].timestamp
    return None


def _text(report: StatusReport) -> str:
    now = report.now
    cluster = report.cluster_status.value.upper()
    newest = report.newest_result_at
    lines = []
    if not report.services:
        lines.append(f"cluster: UNKNOWN - no results in {report.database} yet")
    elif report.stale:
        assert newest is not None
        lines.append(
            f"cluster: STALE - no service checked for {duration(now - newest)} "
            f"(newest result {iso(newest)}); is `healthmon run` running on {report.database}?"
        )
    else:
        lines.append(f"cluster: {cluster}   ({report.database})")
    rows = [("SERVICE", "STATUS", "FOR", "SINCE", "CHECKED", "LATENCY", "LAST RESULT")]
    for s in report.services:
        last = s.last
        result = ""
        if last is not None:
            result = last.status.value + (f": {last.error}" if last.error else "")
        rows.append(
            (
                s.name,
                s.status.value + (" (stale)" if s.stale else ""),
                duration(now - s.since) if s.since is not None else "-",
                iso(s.since) or "-",
                f"{duration(now - last.timestamp)} ago" if last else "never",
                f"{last.response_time_ms:.1f} ms" if last else "-",
                result,
            )
        )
    if report.services:
        lines += ["", *render_table(rows)]
    return "\n".join(lines)


def _json(report: StatusReport) -> str:
    services: list[dict[str, Any]] = []
    for s in report.services:
        last = s.last
        services.append(
            {
                "name": s.name,
                "status": s.status.value,
                "since": iso(s.since),
                "for_s": None if s.since is None else round(report.now - s.since, 3),
                "stale": s.stale,
                "last_checked": iso(last.timestamp) if last else None,
                "last_checked_ago_s": round(report.now - last.timestamp, 3) if last else None,
                "last_result": None
                if last is None
                else {
                    "status": last.status.value,
                    "response_time_ms": last.response_time_ms,
                    "error": last.error,
                },
            }
        )
    return json.dumps(
        {
            "cluster_status": "stale" if report.stale else report.cluster_status.value,
            "exit_code": report.exit_code,
            "stale": report.stale,
            "database": report.database,
            "checked_at": iso(report.now),
            "newest_result_at": iso(report.newest_result_at),
            "stale_after_s": report.stale_after,
            "services": services,
        },
        indent=2,
    )
