"""Cluster mode's history closer (issue 13): what closing a minute costs, and how long
the nodes' writers wait for it. `python -m bench.closing [--fleets 100x1,150x20]`.

For each fleet (services x Hz), a PostgreSQL database of its own (the server started
from pgserver's binaries with its default, durable settings) holds two minutes of raw
results, the coverage marks at the first minute's start. Then, in the same run:

- *baseline*: the bare read of the first minute's raw rows (the rows the closer sums);
- *close*: `close_step` closing that minute (its sums, the minute rows, the marks);
- *writers' wait*: meanwhile a second connection takes the marks `FOR KEY SHARE` in a
  loop, as every writer's flush does once: the longest of those takes is the longest a
  flush was held up by the closer (it holds the marks `FOR UPDATE` only for its count
  and its writes; the sums are made before).

Each figure is the median of `--repeat` runs on a fresh copy of the marks.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.postgres import LocalPostgres, create_database, drop_database

from bench.run import table
from healthmon.store import HealthStore
from healthmon.store.closing import close_step
from healthmon.store.engine import create_engine, database_url
from healthmon.store.partitions import DAY_US, create

T0 = 1_800_000_000  # a whole hour


async def _fill(url: str, services: int, hz: int) -> None:
    async with HealthStore(url):  # migrated
        pass
    engine = create_engine(database_url(url))
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO services (name, kind, url, created_at) "
                    "SELECT 's' || i, 'http', NULL, 0 FROM generate_series(1, :n) i"
                ),
                {"n": services},
            )
            await create(conn, T0 * 1_000_000 // DAY_US)
            await conn.execute(
                text(
                    "INSERT INTO check_results (service_id, ts_us, status, response_time_us, "
                    "answered) SELECT s, CAST(:t0 AS bigint) * 1000000 + i * (1000000 / :hz) "
                    "+ s, CASE WHEN random() < 0.05 THEN 3 ELSE 0 END, "
                    "1000 + CAST(random() * 20000 AS int), true "
                    "FROM generate_series(1, :n) s, generate_series(0, 120 * :hz - 1) i"
                ),
                {"t0": T0, "hz": hz, "n": services},
            )
        async with engine.connect() as plain:
            conn = await plain.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()


async def _reset(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE result_minutes, result_hours"))
        await conn.execute(
            text(
                "UPDATE history_coverage SET complete_until = :t0 WHERE tier IN ('minute', 'hour')"
            ),
            {"t0": T0},
        )


async def _baseline(engine: AsyncEngine) -> float:
    started = time.perf_counter()
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT service_id, ts_us, status, answered, response_time_us "
                "FROM check_results WHERE service_id IN (SELECT id FROM services) "
                "AND ts_us >= :a AND ts_us < :b"
            ),
            {"a": T0 * 1_000_000, "b": (T0 + 60) * 1_000_000},
        )
        rows.all()
    return time.perf_counter() - started


async def _close(engine: AsyncEngine) -> tuple[float, float, int]:
    """The close's seconds, the longest KEY SHARE take meanwhile, how many takes."""
    done = asyncio.Event()
    waits: list[float] = []

    async def writer() -> None:
        async with engine.connect() as conn:
            while not done.is_set():
                started = time.perf_counter()
                await conn.execute(
                    text(
                        "SELECT tier FROM history_coverage WHERE tier IN ('hour', 'minute') "
                        "ORDER BY tier FOR KEY SHARE"
                    )
                )
                await conn.commit()
                waits.append(time.perf_counter() - started)
                await asyncio.sleep(0.01)

    task = asyncio.create_task(writer())
    await asyncio.sleep(0.1)
    started = time.perf_counter()
    closed = await close_step(engine, now=T0 + 60 + 5.5)
    took = time.perf_counter() - started
    await asyncio.sleep(0.05)
    done.set()
    await task
    assert closed.marks["minute"] == T0 + 60, closed
    return took, max(waits), len(waits)


async def _measure(url: str, repeat: int) -> dict[str, float]:
    engine = create_engine(database_url(url))
    try:
        base, close, wait = [], [], []
        for _ in range(repeat):
            base.append(await _baseline(engine))
            await _reset(engine)
            took, longest, _ = await _close(engine)
            close.append(took)
            wait.append(longest)
        return {
            "baseline_s": statistics.median(base),
            "close_s": statistics.median(close),
            "writer_wait_max_s": statistics.median(wait),
        }
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.closing", description=__doc__)
    parser.add_argument("--fleets", default="100x1,100x20,150x20", help="services x Hz, ...")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    server = LocalPostgres(settings=())
    server.start()
    rows = []
    try:
        for fleet in args.fleets.split(","):
            services, hz = map(int, fleet.split("x"))
            url = create_database(server.url)
            try:
                asyncio.run(_fill(url, services, hz))
                got = asyncio.run(_measure(url, args.repeat))
            finally:
                drop_database(url)
            rows.append(
                [
                    f"{services} x {hz} Hz",
                    f"{services * hz * 60:,}",
                    f"{got['baseline_s'] * 1000:.0f}",
                    f"{got['close_s'] * 1000:.0f}",
                    f"{got['writer_wait_max_s'] * 1000:.1f}",
                ]
            )
    finally:
        server.delete()
    table(
        "Closing one minute (cluster mode's historian), medians",
        [
            "fleet",
            "results in the minute",
            "read them (ms)",
            "close_step (ms)",
            "writer waited max (ms)",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
