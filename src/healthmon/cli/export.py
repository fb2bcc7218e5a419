"""`healthmon export`: raw results (or transitions) to stdout as CSV or JSON lines,
streamed through a database cursor so memory stays flat however many rows there are."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import sys
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, TextIO

from healthmon.cli.database import add_database_argument, open_for_reading
from healthmon.cli.logsetup import add_logging_arguments, setup_logging
from healthmon.cli.timearg import Moment, parse_moment
from healthmon.model import HealthCheckResult, StatusTransition
from healthmon.render import iso
from healthmon.store import HealthStore

__all__ = ["RESULT_FIELDS", "TRANSITION_FIELDS", "register"]

RESULT_FIELDS = ("service", "ts", "time", "status", "response_time_ms", "error", "details")
TRANSITION_FIELDS = ("service", "ts", "time", "from_status", "to_status", "cause")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "export",
        help="stream raw check results (or transitions) to stdout as CSV or JSON lines",
        description="Write every stored check result of SERVICE (default: all services) in "
        "the window [--since, --until) to stdout, one row a line, streamed from the database "
        "(memory stays flat). Result fields: " + ", ".join(RESULT_FIELDS) + "; with "
        "--transitions, the status transitions instead: " + ", ".join(TRANSITION_FIELDS) + ". "
        "`ts` is epoch seconds (UTC), `time` the same in ISO 8601; `details` is JSON. "
        "One service's rows come oldest first; all services' come one service after another "
        "(in the order they were first seen), each oldest first. "
        "A summary goes to stderr.",
    )
    parser.add_argument("service", nargs="?", metavar="SERVICE", help="one service's rows only")
    parser.add_argument(
        "--since",
        type=parse_moment,
        metavar="WHEN",
        help="from this time on: a duration ago (24h, 30m, 7d) or an ISO 8601 time "
        "(UTC unless it has an offset); default: the beginning",
    )
    parser.add_argument(
        "--until",
        type=parse_moment,
        metavar="WHEN",
        help="before this time (excluded), same forms as --since; default: now",
    )
    parser.add_argument(
        "--format", choices=("csv", "jsonl"), default="csv", help="output format (default: csv)"
    )
    parser.add_argument(
        "--transitions",
        action="store_true",
        help="export the status transitions instead of the check results",
    )
    add_database_argument(parser)
    add_logging_arguments(parser)
    parser.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    setup_logging(args)
    count, services = asyncio.run(_export(args, sys.stdout))
    what = "transitions" if args.transitions else "results"
    scope = (
        f"service {args.service!r}"
        if args.service
        else f"{services} service" + ("" if services == 1 else "s")
    )
    print(f"exported {count} {what} of {scope} as {args.format}", file=sys.stderr)
    return 0


async def _export(args: argparse.Namespace, out: TextIO) -> tuple[int, int]:
    now = time.time()
    since = _at(args.since, now)
    until = now if args.until is None else args.until.at(now)  # not what arrives meanwhile
    async with open_for_reading(args.database) as store:
        rows = _rows(store, args.service, since, until, transitions=args.transitions)
        fields = TRANSITION_FIELDS if args.transitions else RESULT_FIELDS
        write = _writer(args.format, fields, out)
        count = 0
        services: set[str] = set()
        async with contextlib.aclosing(rows) as stream:
            async for row in stream:
                write(row)
                services.add(row["service"])
                count += 1
        out.flush()
    return count, len(services)


def _at(moment: Moment | None, now: float) -> float | None:
    return None if moment is None else moment.at(now)


async def _rows(
    store: HealthStore,
    service: str | None,
    since: float | None,
    until: float | None,
    *,
    transitions: bool,
) -> AsyncGenerator[dict[str, Any]]:
    # Each stream closed as soon as this one is (a reader that goes away early).
    if transitions:
        async with contextlib.aclosing(store.stream_transitions(service, since, until)) as found:
            async for transition in found:
                yield _transition_row(transition)
    else:
        async with contextlib.aclosing(store.stream_results(service, since, until)) as results:
            async for result in results:
                yield _result_row(result)


def _result_row(result: HealthCheckResult) -> dict[str, Any]:
    return {
        "service": result.service_name,
        "ts": result.timestamp,
        "time": iso(result.timestamp),
        "status": result.status.value,
        "response_time_ms": result.response_time_ms,
        "error": result.error,
        "details": result.details,
    }


def _transition_row(transition: StatusTransition) -> dict[str, Any]:
    before = transition.from_status
    return {
        "service": transition.service_name,
        "ts": transition.timestamp,
        "time": iso(transition.timestamp),
        "from_status": None if before is None else before.value,
        "to_status": transition.to_status.value,
        "cause": transition.cause,
    }


def _writer(fmt: str, fields: tuple[str, ...], out: TextIO) -> Callable[[dict[str, Any]], None]:
    if fmt == "jsonl":

        def write_json(row: dict[str, Any]) -> None:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")

        return write_json
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields)

    def write_csv(row: dict[str, Any]) -> None:
        # Empty for None; details as JSON text so that it parses back.
        writer.writerow(
            [
                "" if value is None else json.dumps(value) if key == "details" else value
                for key, value in row.items()
            ]
        )

    return write_csv
