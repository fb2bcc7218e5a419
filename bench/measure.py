"""Measuring instruments shared by the scenarios: lateness, latencies, memory, storage.

Everything here observes; nothing changes what it measures beyond recording a loop
timestamp at a point the code passes anyway.

`python -m bench.measure [--seconds 60]` also measures storage alone, without HTTP:
synthetic results of 100 services at 20 Hz written through the real writer (group
commits of 0.1 s, as the monitor's), all healthy or a realistic mix (bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import resource
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthmon import HealthCheckResult, HealthStatus, HealthStore

__all__ = [
    "ON_TIME_S",
    "LatenessLog",
    "percentile",
    "postgres_storage",
    "rss_bytes",
    "storage_stats",
    "synthetic_results",
]

ON_TIME_S = 0.010
"""A check is on time when it starts at most this long after its slot (issue 4)."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100, nearest rank) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class LatenessLog:
    """When each schedule's slots were due and when their checks actually started.

    `record(key, slot, started)` is called once per started check (loop clock).
    Slots that never started (skipped because a check overran) are found by
    arithmetic: a schedule's slot k is due at first_slot + k * interval.
    """

    interval: float
    samples: list[tuple[int, float, float]] = field(default_factory=list)
    first_slot: dict[int, float] = field(default_factory=dict)

    def record(self, key: int, slot: float, started: float) -> None:
        self.first_slot.setdefault(key, slot)
        self.samples.append((key, slot, started - slot))

    def summary(self, t0: float, t1: float) -> dict[str, Any]:
        """Slots due in [t0, t1): how many, how many started on time, lateness spread."""
        scheduled = 0
        for first in self.first_slot.values():
            if first < t1:
                after_t0 = max(0, math.ceil((t0 - first) / self.interval))
                scheduled += math.ceil((t1 - first) / self.interval) - after_t0
        late = [lateness for _, slot, lateness in self.samples if t0 <= slot < t1]
        on_time = sum(1 for lateness in late if lateness <= ON_TIME_S)
        return {
            "scheduled": scheduled,
            "started": len(late),
            "on_time": on_time,
            "on_time_fraction": on_time / scheduled if scheduled else None,
            "lateness_p50_ms": _ms(percentile(late, 50)),
            "lateness_p99_ms": _ms(percentile(late, 99)),
            "lateness_max_ms": _ms(max(late, default=None)),
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc), else its peak so far."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        # ru_maxrss is in KiB on Linux; it is the peak, a poorer but portable stand-in.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def storage_stats(database: Path) -> dict[str, Any]:
    """Bytes on disk per stored result, after the WAL is folded into the main file.

    Two views: the whole file over the number of results (what a user pays), and
    SQLite's `dbstat` pages of the results' tables over the same rows (what one result
    costs, without the other tables and free pages): `check_results` and
    `result_details` (its details bodies), with any index of either.
    """
    # Plain sqlite3 on purpose: the monitor and its store are closed by now, and this
    # is a reader's view of the file, as `sqlite3` on the command line would have.
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows, healthy = conn.execute(
            "SELECT count(*), coalesce(sum(status = 0), 0) FROM check_results"
        ).fetchone()
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        free_pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
        per_table: dict[str, int] = {}
        try:
            for table in ("check_results", "result_details"):
                names = [
                    name
                    for (name,) in conn.execute(
                        "SELECT name FROM sqlite_master WHERE tbl_name = ?", (table,)
                    )
                ]
                marks = ",".join("?" * len(names))
                per_table[table] = conn.execute(
                    f"SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ({marks})",  # noqa: S608 - only '?'
                    names,
                ).fetchone()[0]
        except sqlite3.OperationalError:  # SQLite built without the dbstat table
            per_table = {}
    conn.close()
    table_bytes = sum(per_table.values()) if per_table else None
    file_bytes = database.stat().st_size
    wal = database.with_name(database.name + "-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    return {
        "rows": rows,
        "healthy_rows": healthy,
        "file_bytes": file_bytes,
        "wal_bytes": wal_bytes,
        "page_size": page_size,
        "free_bytes": free_pages * page_size,
        "bytes_per_row_file": file_bytes / rows if rows else None,
        "bytes_per_row_table": table_bytes / rows if rows and table_bytes else None,
        "bytes_per_row_by_table": {table: size / rows for table, size in per_table.items() if rows},
    }


# -- storage alone: synthetic results through the real writer ------------------------------

_T0 = 1_800_000_000.0
_CHANGING = "changing body"
_FAILING = "failing"


def synthetic_results(
    case: str, services: int = 100, rate: float = 20.0, seconds: float = 60.0
) -> Iterator[HealthCheckResult]:
    """Deterministic results in completion order. `healthy`: every service answers
    `{"status":"ok"}` in a few ms. `mixed`: 80 services so; 10 answer a body that
    changes on every check (an uptime and a counter in a Spring-style health body); 10
    fail, alternating an HTTP 503 with a body and an error text, and a timeout (no
    answer, no body)."""
    rng = random.Random(7)
    kinds = ["healthy"] * services
    if case == "mixed":
        for index in range(services):
            kinds[index] = (
                _CHANGING if index % 10 == 8 else _FAILING if index % 10 == 9 else "healthy"
            )
    for tick in range(int(seconds * rate)):
        for index, kind in enumerate(kinds):
            ts = _T0 + tick / rate + index / (services * rate) + rng.uniform(0, 0.004)
            ms = rng.lognormvariate(1.2, 0.4)
            name = f"svc-{index:03d}"
            if kind == "healthy":
                yield HealthCheckResult(name, HealthStatus.HEALTHY, ms, ts, {"status": "ok"})
            elif kind == _CHANGING:
                body = {
                    "status": "UP",
                    "components": {
                        "db": {"status": "UP", "details": {"database": "PostgreSQL"}},
                        "diskSpace": {"status": "UP", "details": {"free": 91_234_000 - tick}},
                    },
                    "uptime_ms": int((tick / rate) * 1000) + index,
                    "checks": tick,
                }
                yield HealthCheckResult(name, HealthStatus.HEALTHY, ms, ts, body)
            elif tick % 2:
                yield HealthCheckResult(
                    name, HealthStatus.UNHEALTHY, 2000.0, ts, None, "timeout after 2000 ms"
                )
            else:
                body = {"status": "down", "error": "connection to db refused"}
                yield HealthCheckResult(name, HealthStatus.UNHEALTHY, ms, ts, body, "HTTP 503")


async def _write_synthetic(database: Path | str, results: Iterator[HealthCheckResult]) -> None:
    async with HealthStore(database) as store:
        writer = store.writer(max_pending=10**6)
        await writer.start()
        group_end = _T0 + 0.1
        for result in results:
            if result.timestamp >= group_end:  # a group commit per 0.1 s, as the monitor's
                if not await writer.flush():
                    raise RuntimeError(f"the writer failed: {writer.stats.last_error}")
                group_end += 0.1
            writer.submit(result)
        await writer.stop()
        if writer.stats.dropped_results:
            raise RuntimeError(f"{writer.stats.dropped_results} results dropped")


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.measure", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="of results (default 60)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also on PostgreSQL (a server started from pgserver's binaries, tests/postgres.py)",
    )
    args = parser.parse_args()
    header = ("case", "rows", "file bytes", "B/row file", "B/row dbstat")
    print(
        f"{header[0]:<8} {header[1]:>9} {header[2]:>11} {header[3]:>10} {header[4]:>12}  by table"
    )
    with tempfile.TemporaryDirectory(prefix="healthmon-storage-") as folder:
        for case in ("healthy", "mixed"):
            database = Path(folder) / f"{case}.db"
            asyncio.run(_write_synthetic(database, synthetic_results(case, seconds=args.seconds)))
            stats = storage_stats(database)
            split = ", ".join(
                f"{table} {size:.1f}" for table, size in stats["bytes_per_row_by_table"].items()
            )
            print(
                f"{case:<8} {stats['rows']:>9,} {stats['file_bytes']:>11,} "
                f"{stats['bytes_per_row_file']:>10.1f} {stats['bytes_per_row_table'] or 0:>12.1f}"
                f"  {split}"
            )
    if args.postgres:
        _measure_postgres(args.seconds)


def _measure_postgres(seconds: float) -> None:
    from tests.postgres import LocalPostgres, create_database  # noqa: PLC0415 - dev only

    print("\nPostgreSQL: bytes per result, table + indexes (pg_total_relation_size)")
    server = LocalPostgres(settings=())
    server.start()
    try:
        for case in ("healthy", "mixed"):
            url = create_database(server.url)
            asyncio.run(_write_synthetic(url, synthetic_results(case, seconds=seconds)))
            stats = asyncio.run(postgres_storage(url))
            split = ", ".join(
                f"{table} {size:.1f}" for table, size in stats["bytes_per_row_by_table"].items()
            )
            print(f"{case:<8} {stats['rows']:>9,} {stats['bytes_per_row_table']:>10.1f}  {split}")
    finally:
        server.delete()


async def postgres_storage(url: str) -> dict[str, Any]:
    """Bytes per stored result on PostgreSQL: every partition of `check_results` and
    `result_details`, each with its indexes, TOAST and maps (pg_total_relation_size),
    over the number of results; rows just inserted (no dead tuples)."""
    # Imported here: the SQLite-only runs need neither the driver nor healthmon's engine.
    from sqlalchemy import text  # noqa: PLC0415

    from healthmon.store.engine import create_engine, database_url  # noqa: PLC0415

    engine = create_engine(database_url(url))
    try:
        async with engine.connect() as conn:
            rows, healthy = (
                await conn.execute(
                    text(
                        "SELECT count(*), coalesce(sum(CAST(status = 0 AS INTEGER)), 0) "
                        "FROM check_results"
                    )
                )
            ).one()
            results = await conn.scalar(
                text(
                    "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
                    "WHERE inhparent = 'check_results'::regclass"
                )
            )
            details = await conn.scalar(text("SELECT pg_total_relation_size('result_details')"))
    finally:
        await engine.dispose()
    per_table = {"check_results": int(results or 0), "result_details": int(details or 0)}
    return {
        "rows": rows,
        "healthy_rows": healthy,
        "bytes_per_row_table": sum(per_table.values()) / rows if rows else None,
        "bytes_per_row_by_table": {table: size / rows for table, size in per_table.items() if rows},
    }


if __name__ == "__main__":
    _main()
