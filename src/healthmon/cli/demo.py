"""`healthmon demo`: see healthmon work in a few seconds, with nothing to set up."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import sys
from pathlib import Path

from healthmon.cli.database import open_for_reading
from healthmon.cli.history import ascii_only, read_history, read_series
from healthmon.cli.logsetup import add_logging_arguments, setup_logging
from healthmon.cli.timearg import parse_duration
from healthmon.demo import DemoRun, run_demo
from healthmon.render import chart_bucket, duration, render_fleet, render_report

__all__ = ["invocation", "register", "shown_path"]

DEFAULT_DATABASE = Path("healthmon-demo.db")
# The report must fit a 50-line terminal: the summary's chart at most 32 buckets wide, and
# each service's last two incidents (the flapping one has dozens).
SUMMARY_WIDTH = 32
DETAIL_INCIDENTS = 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo",
        help="monitor local demo targets for a few seconds, then report on them",
        description="Start four local HTTP targets on 127.0.0.1 (healthy; ever slower, "
        "crossing its degraded threshold; flapping; down for a while, then recovering), "
        "monitor them at 20 Hz into a SQLite file while a live table shows their status, "
        "then print a line per service, each one's history report, and commands to explore "
        "the database that run as printed from here. Ctrl-C ends it early.",
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
    """A line per service, then each one's history report, then where to look next:
    at the default length the whole of it fits a 50-line terminal."""
    database = run.database
    async with open_for_reading(str(database)) as store:
        histories = [
            await read_history(store, name, run.started, run.ended) for name in run.services
        ]
        summary_bucket = chart_bucket(run.ended - run.started, SUMMARY_WIDTH)
        fleet = [
            (history.report, await read_series(store, history.report, summary_bucket))
            for history in histories
        ]
    lines = [
        "",
        f"Over the run ({duration(run.ended - run.started)}): a line per service, then "
        "each one's report (as `healthmon history SERVICE` prints it)",
        *render_fleet(fleet, bucket=summary_bucket),
    ]
    for history in histories:
        lines += [
            "",
            render_report(
                history.report,
                history.buckets,
                bucket=history.bucket,
                ascii=ascii_only(),
                max_incidents=DETAIL_INCIDENTS,
            ),
        ]
    here = Path.cwd()
    healthmon = invocation(sys.argv[0], cwd=here, python=sys.executable)
    db = shown_path(database, cwd=here)
    query = "SELECT service, status, count(*) FROM results_view GROUP BY 1, 2"
    lines += [
        "",
        f"Everything is in {database.resolve()}. Explore it from here:",
        f"  {healthmon} status --database {db}",
        f"  {healthmon} history checkout --database {db} --since 1h",
        f"  {healthmon} export checkout --database {db} --format jsonl | head",
        f'  sqlite3 {db} "{query}"'
        + ("" if shutil.which("sqlite3") else "  # needs the sqlite3 shell, not installed here"),
    ]
    return "\n".join(lines)


def invocation(argv0: str, *, cwd: Path, python: str) -> str:
    """The command that runs this healthmon, typed from `cwd`: `healthmon` when that is
    the one on PATH, else its script's path (or `PYTHON -m healthmon.cli`)."""
    # abspath, not resolve(): a venv's python is a link to one without healthmon.
    script = Path(os.path.abspath(argv0))  # noqa: PTH100
    if script.name == "__main__.py":  # python -m healthmon.cli
        return f"{shown_path(Path(python), cwd=cwd, program=True)} -m healthmon.cli"
    on_path = shutil.which(script.name)
    if on_path is not None and script.exists() and Path(on_path).samefile(script):
        return shlex.quote(script.name)
    return shown_path(script, cwd=cwd, program=True)


def shown_path(path: Path, *, cwd: Path, program: bool = False) -> str:
    """`path` as a user types it in `cwd`, quoted for the shell: relative below `cwd`,
    else absolute. A program in `cwd` itself gets `./`, which keeps PATH out of it."""
    absolute = Path(os.path.abspath(cwd / path))  # noqa: PTH100 (links kept, as above)
    if absolute.is_relative_to(cwd):
        text = str(absolute.relative_to(cwd))
        if program and os.sep not in text:
            text = f".{os.sep}{text}"
    else:
        text = str(absolute)
    return shlex.quote(text)
