"""`healthmon demo`: see healthmon work in a few seconds, with nothing to set up."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from healthmon.cli.database import open_for_reading
from healthmon.cli.history import ascii_only, read_history
from healthmon.cli.logsetup import add_logging_arguments, setup_logging
from healthmon.cli.timearg import parse_duration
from healthmon.demo import DemoRun, run_demo
from healthmon.render import render_report

__all__ = ["register"]

DEFAULT_DATABASE = Path("healthmon-demo.db")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo",
        help="monitor local demo targets for a few seconds, then report on them",
        description="Start four local HTTP targets on 127.0.0.1 (healthy; ever slower, "
        "crossing its degraded threshold; flapping; down for a while, then recovering), "
        "monitor them at 20 Hz into a SQLite file while a live table shows their status, "
        "then print the history report and how to query the database. Ctrl-C ends it early.",
    )
    parser.add_argument(
        "--seconds",
        type=_seconds,
        default=15.0,
        metavar="N",
        help="how long to monitor, in seconds (or a duration like 1m); default: 15",
    )
    parser.add_argument(
        "--database",
        type=Path,
        default=DEFAULT_DATABASE,
        metavar="PATH",
        help=f"SQLite file to write (created or upgraded; default: ./{DEFAULT_DATABASE})",
    )
    parser.add_argument(
        "--http",
        type=_listen,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="serve the status page there while the demo runs (default: 127.0.0.1 and a "
        "free port, printed); --no-http to serve none",
    )
    parser.add_argument("--no-http", dest="http", action="store_const", const=None)
    add_logging_arguments(parser)
    parser.set_defaults(handler=command)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = parse_duration(text)
    if not 1 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 1 and 3600 seconds, got {text}")
    return seconds


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


def command(args: argparse.Namespace) -> int:
    setup_logging(args)
    run = asyncio.run(run_demo(args.seconds, args.database, sys.stdout, http=args.http))
    print(asyncio.run(_report(run)))
    return 0


async def _report(run: DemoRun) -> str:
    """The history report of each demo service over the run, and where to look next."""
    database = run.database
    lines = ["", "History over the run (healthmon history SERVICE):", ""]
    async with open_for_reading(str(database)) as store:
        for name in run.services:
            history = await read_history(store, name, run.started, run.ended)
            lines.append(
                render_report(
                    history.report, history.buckets, bucket=history.bucket, ascii=ascii_only()
                )
            )
            lines.append("")
    query = (
        "SELECT service, status, count(*) AS checks, round(avg(response_time_ms), 1) AS avg_ms "
        "FROM results_view GROUP BY service, status"
    )
    lines += [
        f"Everything is in {database.resolve()}. Look at it with:",
        f"  healthmon status --database {database}",
        f"  healthmon history search --database {database} --since 1h",
        f"  healthmon export checkout --database {database} --format jsonl | head",
        f'  sqlite3 {database} "{query}"',
    ]
    return "\n".join(lines)
