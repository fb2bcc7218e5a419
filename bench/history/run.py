"""The history benchmark: fill a database to volume, then time the history API against
naive scans of the raw rows, the writer with and without aggregates, pruning steps,
and disk use per service-day. Prints tables; asserts nothing."""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.history.fill import DAY, Stream, add_services, fill
from healthmon import HealthCheckResult, HealthStatus, HealthStore, Retention
from healthmon.micros import to_us
from healthmon.store import partitions
from healthmon.store.retention import prune_step
from healthmon.store.rollup import Rollup
from healthmon.store.writer import ResultWriter

__all__ = ["main"]

END = 1_800_000_000.0 + 1234.5  # the data's "now": not on a minute or hour boundary
HOT = "hot-20hz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__)
    parser.add_argument("--services", type=int, default=100, help="1 Hz services (100)")
    parser.add_argument("--days", type=int, default=30, help="history of the 20 Hz service")
    parser.add_argument("--repeat", type=int, default=15, help="timings per query (15)")
    parser.add_argument("--writes", type=int, default=200_000, help="results per writer run")
    parser.add_argument("--keep", type=Path, help="keep the filled database at this path")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="the fill, the reports and dropping a day on PostgreSQL instead (a server "
        "started from pgserver's binaries, default settings; tests/postgres.py)",
    )
    args = parser.parse_args(argv)
    asyncio.run(_run_postgres(args) if args.postgres else _run(args))
    return 0


async def _run_postgres(args: argparse.Namespace) -> None:
    from tests.postgres import LocalPostgres, create_database  # noqa: PLC0415 - dev only

    server = LocalPostgres(settings=())
    await asyncio.to_thread(server.start)
    try:
        url = await asyncio.to_thread(create_database, server.url)
        await _volume(url, args)
        await _reads(url, args.repeat)
        await _drop_a_day(url)
    finally:
        await asyncio.to_thread(server.delete)


async def _run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="healthmon-bench-") as folder:
        path = args.keep or Path(folder) / "history.db"
        await _volume(path, args)
        await _reads(path, args.repeat)
        await _writer(Path(folder), args.writes)
        await _disk(Path(folder))
        await _pruning(path)


# -- the database at volume --------------------------------------------------------------


async def _volume(path: Path | str, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    names = [HOT] + [f"svc-{i:03d}" for i in range(args.services)]
    async with HealthStore(path) as store:
        ids = await add_services(store.engine, names)
        if isinstance(path, str):  # PostgreSQL: the raw days' partitions (store/partitions.py)
            async with store.engine.begin() as conn:
                for day in range(int((END - DAY) // DAY), int(END // DAY) + 1):
                    await partitions.create(conn, day)
        # The 20 Hz service: its last day raw at 20 Hz; the days before as aggregates only
        # (as if raw retention had pruned them), fed at 1 Hz to keep the fill short.
        streams = [
            Stream(ids[HOT], END - args.days * DAY, END - DAY, rate=1.0, raw=False),
            Stream(ids[HOT], END - DAY, END, rate=20.0),
            *[Stream(ids[name], END - DAY, END, rate=1.0) for name in names[1:]],
        ]
        rows = await fill(store.engine, Rollup(), streams)
        async with store.engine.begin() as conn:  # raw results are kept for one day
            await conn.execute(
                text("UPDATE history_coverage SET complete_since = :t WHERE tier = 'raw'"),
                {"t": END - DAY},
            )
        counts = {}
        async with store.engine.connect() as conn:
            tables = (
                "check_results",
                "result_details",
                "result_minutes",
                "result_hours",
                "result_gaps",
            )
            for table in tables:
                counts[table] = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar()  # noqa: S608 - table names from the literal tuple above
            if isinstance(path, str):
                size = await conn.scalar(text("SELECT pg_database_size(current_database())"))
            else:
                size = (await asyncio.to_thread(path.stat)).st_size
    _table(
        f"Database at volume ({time.perf_counter() - started:.0f} s to fill, "
        f"{size / 1e6:.0f} MB)",
        ["what", "rows"],
        [
            [f"results through the aggregates ({HOT}: {args.days} days, 1 day raw at 20 Hz; "
             f"{args.services} services at 1 Hz for a day)", f"{rows:,}"],
            *[[table, f"{count:,}"] for table, count in counts.items()],
        ],
    )  # fmt: skip


# -- reads -------------------------------------------------------------------------------


async def _reads(path: Path | str, repeat: int) -> None:
    rows = []
    async with HealthStore(path) as store:
        for label, seconds in (("1 h", 3600.0), ("24 h", DAY), ("30 d", 30 * DAY)):
            since = END - seconds
            report = await store.report(HOT, since, END)
            api = await _time(repeat, functools.partial(store.report, HOT, since, END))
            naive: str = "n/a (raw kept 1 day)"
            if seconds <= DAY:
                scan = await _time(
                    max(3, repeat // 5), functools.partial(_naive, store, HOT, since)
                )
                naive = _ms(scan)
            rows.append(
                [
                    f"{HOT}, last {label}",
                    f"{report.counts.total:,}",
                    _ms(api),
                    naive,
                    f"{report.latency.p99:.2f}",
                    str(len(report.incidents)),
                    str(len(report.gaps)),
                ]
            )
        exact = await _time(3, lambda: store.report(HOT, END - 3600, END, exact=True))
        rows.append([f"{HOT}, last 1 h, exact=True", "", _ms(exact), "", "", "", ""])
        fleet = await store.reports(END - DAY, END)
        overview = await _time(max(3, repeat // 3), lambda: store.reports(END - DAY, END))
        scan = await _time(3, lambda: _naive_fleet(store, END - DAY))
        rows.append(
            [
                f"fleet overview, {len(fleet)} services, last 24 h",
                f"{sum(r.counts.total for r in fleet.values()):,}",
                _ms(overview),
                _ms(scan) + " (counts only)",
                "",
                str(sum(len(r.incidents) for r in fleet.values())),
                str(sum(len(r.gaps) for r in fleet.values())),
            ]
        )
    _table(
        "Reports (median and max of repeated calls; targets: one service < 50 ms, "
        "fleet < 500 ms). Naive = the same window scanned in SQL from raw rows",
        ["report", "results", "API ms (median / max)", "naive scan ms", "p99 ms", "incid.", "gaps"],
        rows,
    )


async def _naive(store: HealthStore, name: str, since: float) -> None:
    """Counts and exact percentiles straight from the raw rows: what a store without
    aggregates would have to do."""
    async with store.engine.connect() as conn:
        query = (
            "SELECT status, count(*) FROM check_results JOIN services s ON s.id = service_id "
            "WHERE s.name = :name AND ts_us >= :since AND ts_us < :until GROUP BY status"
        )
        window = {"name": name, "since": to_us(since), "until": to_us(END)}
        await conn.execute(text(query), window)
        latencies = await conn.execute(
            text(
                "SELECT response_time_us / 1000.0 FROM check_results "
                "JOIN services s ON s.id = service_id "
                "WHERE s.name = :name AND ts_us >= :since AND ts_us < :until AND answered "
                "ORDER BY response_time_us"
            ),
            window,
        )
        latencies.scalars().all()


async def _naive_fleet(store: HealthStore, since: float) -> None:
    async with store.engine.connect() as conn:
        await conn.execute(
            text(
                "SELECT service_id, status, count(*) FROM services s "
                "JOIN check_results ON service_id = s.id AND ts_us >= :since AND ts_us < :until "
                "GROUP BY service_id, status"
            ),
            {"since": to_us(since), "until": to_us(END)},
        )


# -- the writer --------------------------------------------------------------------------


async def _writer(folder: Path, total: int) -> None:
    """Results per second through the writer with and without the aggregates, in the
    same run, alternating, each on a fresh database."""
    results = [
        HealthCheckResult(
            f"svc-{i % 100:03d}",
            HealthStatus.HEALTHY if i % 97 else HealthStatus.UNHEALTHY,
            1.0 + (i * 7919 % 1000) / 100,
            END + i / 2000,  # 100 services at 20 Hz
            None,
            None if i % 97 else "HTTP 503",
        )
        for i in range(total)
    ]
    rows = []
    for batch in (200, 2000):
        rates: dict[bool, list[float]] = {False: [], True: []}
        for attempt in range(5):
            for aggregates in (False, True) if attempt % 2 == 0 else (True, False):
                path = folder / f"writer-{batch}-{attempt}-{aggregates}.db"
                rates[aggregates].append(await _write_rate(path, results, batch, aggregates))
                path.unlink()
        bare, full = statistics.median(rates[False]), statistics.median(rates[True])
        rows.append(
            [
                f"{batch} results per flush",
                f"{bare:,.0f}",
                f"{full:,.0f}",
                f"{(full - bare) / bare * 100:+.1f} %",
            ]
        )
    _table(
        f"Writer throughput, results per CPU-second (median of 5 runs of {total:,} results, "
        "100 services; target: aggregates cost < 10 %)",
        ["group commit", "without aggregates", "with aggregates", "change"],
        rows,
    )


async def _write_rate(
    path: Path, results: list[HealthCheckResult], batch: int, aggregates: bool
) -> float:
    async with HealthStore(path) as store:
        writer = ResultWriter(store.engine, max_pending=len(results), rollup=None)
        if aggregates:
            writer = ResultWriter(store.engine, max_pending=len(results), rollup=Rollup())
        # Warm up, outside the timing: each service's row and first result, as a writer
        # running for a while has them.
        for result in results[:100]:
            writer.submit(result)
        await writer.flush()
        # CPU time of the whole process (aiosqlite's thread included): the cost, which
        # other load on the machine does not blur as it does wall-clock time.
        started = time.process_time()
        for first in range(100, len(results), batch):
            for result in results[first : first + batch]:
                writer.submit(result)
            assert await writer.flush()
        elapsed = time.process_time() - started
    return (len(results) - 100) / elapsed


# -- disk use ----------------------------------------------------------------------------


async def _disk(folder: Path) -> None:
    rows = []
    for rate in (1.0, 5.0, 20.0):
        path = folder / f"disk-{rate:.0f}.db"
        async with HealthStore(path) as store:
            ids = await add_services(store.engine, ["one"])
            await fill(store.engine, Rollup(), [Stream(ids["one"], END - DAY, END, rate)])
            async with store.engine.connect() as conn:
                pages = await conn.execute(
                    text("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")
                )
                sizes: dict[str, int] = {name: size for name, size in pages}
        raw = sizes["check_results"] + sizes.get("result_details", 0)
        rows.append(
            [
                f"{rate:.0f} Hz",
                f"{raw / 1e6:.2f} MB",
                f"{raw / (rate * DAY):.0f} B",
                f"{sizes['result_minutes'] / 1e3:.0f} kB",
                f"{sizes['result_hours'] / 1e3:.1f} kB",
                f"{(raw + sizes['result_minutes'] + sizes['result_hours']) / 1e6:.2f} MB",
            ]
        )
        path.unlink()
    _table(
        "Disk use per service-day (SQLite pages from dbstat: table + index; one service, "
        "one day, the stream above)",
        ["rate", "raw results", "per result", "minute aggr.", "hour aggr.", "all"],
        rows,
    )


# -- pruning -----------------------------------------------------------------------------


async def _pruning(path: Path) -> None:
    """Steps of the pruning the writer runs between flushes, on the full database:
    raw retention cut to 12 hours, so every step has a full batch to delete."""
    retention = Retention(raw=DAY / 2, minute=35 * DAY, hour=400 * DAY)
    durations = []
    async with HealthStore(path) as store:
        for _ in range(20):
            started = time.perf_counter()
            async with store.engine.begin() as conn:
                await prune_step(conn, retention, batch_size=1000, now=END)
            durations.append(time.perf_counter() - started)
    _table(
        "Pruning steps (1,000 rows per table per step, the default; one transaction each)",
        ["steps", "median ms", "max ms"],
        [["20", f"{statistics.median(durations) * 1e3:.1f}", f"{max(durations) * 1e3:.1f}"]],
    )


async def _drop_a_day(url: str) -> None:
    """PostgreSQL: the pruning step that drops the oldest raw day (a partition) whole,
    with the details rows only it referenced."""
    retention = Retention(raw=DAY / 4, minute=35 * DAY, hour=400 * DAY)
    async with HealthStore(url) as store:
        async with store.engine.connect() as conn:
            before = await conn.scalar(text("SELECT count(*) FROM check_results"))
        started = time.perf_counter()
        async with store.engine.begin() as conn:
            await prune_step(conn, retention, batch_size=1000, now=END)
        took = time.perf_counter() - started
        async with store.engine.connect() as conn:
            after = await conn.scalar(text("SELECT count(*) FROM check_results"))
    _table(
        "Dropping a day of raw results (PostgreSQL: one pruning step)",
        ["results before", "results after", "step ms"],
        [[f"{before:,}", f"{after:,}", f"{took * 1e3:.0f}"]],
    )


# -- helpers -----------------------------------------------------------------------------


async def _time(repeat: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    durations = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        durations.append(time.perf_counter() - started)
    return durations


def _ms(durations: list[float]) -> str:
    return f"{statistics.median(durations) * 1e3:.1f} / {max(durations) * 1e3:.1f}"


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}\n")
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
