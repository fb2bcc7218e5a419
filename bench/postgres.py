"""Both backends in one run (issue 12): the monitor at 100 services x 20 Hz storing into
SQLite and into PostgreSQL on the same machine, and what the PostgreSQL server itself
spends: `python -m bench --only postgres`.

The PostgreSQL server is started here from the `pgserver` package's binaries (a dev
dependency; tests/postgres.py), with its default, durable settings (fsync and
synchronous_commit on), listening on 127.0.0.1. Its CPU is read from /proc: the
postmaster's own time, the time of its children still alive and of those it reaped
(`cutime`), over the whole worker run (warm-up included) and divided by the results it
committed; its WAL bytes come from pg_stat_wal the same way.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from tests.postgres import LocalPostgres, create_database, drop_database

from bench.run import HZ, Suite, fmt, pct, table

__all__ = ["bench_postgres"]

SERVICES = 100
FLIP = 5


def bench_postgres(suite: Suite) -> None:
    server = LocalPostgres(settings=())
    server.start()
    try:
        runs: dict[str, dict[str, Any]] = {}
        for backend in ("sqlite", "postgresql"):
            params: dict[str, Any] = {
                "services": SERVICES,
                "hz": HZ,
                "lateness": True,
                "latency": True,
                "flip": FLIP,
            }
            url = None
            if backend == "postgresql":
                url = create_database(server.url)
                params["database"] = url
                cpu0, wal0 = _server_cpu(server.data), asyncio.run(_wal_bytes(server.url))
            figures = suite.monitor(**params)
            if url is not None:
                cpu1, wal1 = _server_cpu(server.data), asyncio.run(_wal_bytes(server.url))
                committed = figures["committed_results"] or 1
                figures["server_cpu_per_result_us"] = (cpu1 - cpu0) / committed * 1e6
                figures["server_wal_bytes_per_result"] = (wal1 - wal0) / committed
                drop_database(url)
            runs[backend] = figures
    finally:
        server.delete()
    suite.figures["postgres"] = runs
    sqlite, pg = runs["sqlite"], runs["postgresql"]
    rows = []
    for name, f in runs.items():
        late = f["lateness"]
        rows.append(
            [
                name,
                fmt(f["checks_per_s"], 0),
                pct(late["on_time_fraction"], 2),
                "yes" if f.get("all_committed") else "NO",
                fmt(f["cpu_per_persisted_us"], 0),
                fmt(f["result_to_commit_p50_ms"], 1),
                fmt(f["result_to_commit_p99_ms"], 1),
                fmt(f["flush_p99_ms"], 1),
                fmt(f["storage"]["bytes_per_row_table"], 1),
                fmt(f.get("server_cpu_per_result_us"), 1),
                fmt(f.get("server_wal_bytes_per_result"), 0),
            ]
        )
    table(
        f"SQLite and PostgreSQL: {SERVICES} services x {HZ:g} Hz, {FLIP} flipping, "
        f"{suite.settings.duration:g} s measured",
        ["backend", "checks/s", "on time (10 ms)", "all committed", "CPU µs/persisted",
         "result->commit p50 ms", "p99 ms", "flush p99 ms", "B/result (table+idx)",
         "server CPU µs/result", "WAL B/result"],
        rows,
    )  # fmt: skip
    ratio = (
        pg["cpu_per_persisted_us"] / sqlite["cpu_per_persisted_us"]
        if pg["cpu_per_persisted_us"] and sqlite["cpu_per_persisted_us"]
        else None
    )
    print(f"\nCPU per persisted check, PostgreSQL / SQLite = {fmt(ratio, 2)}")
    on_time = pg["lateness"]["on_time_fraction"]
    p99 = pg["result_to_commit_p99_ms"]
    suite.verdict(
        "12a. PostgreSQL: checks within 10 ms of their slot",
        pct(on_time, 2),
        ">= 99 %",
        None if on_time is None else on_time >= 0.99,
    )
    suite.verdict(
        "12b. PostgreSQL: all committed", "yes" if pg.get("all_committed") else "no", "all",
        bool(pg.get("all_committed")),
    )  # fmt: skip
    suite.verdict(
        "12c. CPU per persisted check, PostgreSQL / SQLite",
        fmt(ratio, 2),
        "<= 1.15",
        None if ratio is None else ratio <= 1.15,
    )
    suite.verdict(
        "12d. PostgreSQL: result -> commit p99",
        fmt(p99, 1, " ms"),
        "< 150 ms",
        None if p99 is None else p99 < 150,
    )


def _server_cpu(data: Path) -> float:
    """CPU seconds of the server: the postmaster, its live children, its reaped ones."""
    ticks = os.sysconf("SC_CLK_TCK")
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        elif ppid == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


async def _wal_bytes(url: str) -> int:
    from sqlalchemy import text  # noqa: PLC0415

    from healthmon.store.engine import create_engine, database_url  # noqa: PLC0415

    engine = create_engine(database_url(url))
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(text("SELECT wal_bytes FROM pg_stat_wal")) or 0)
    finally:
        await engine.dispose()
