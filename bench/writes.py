"""Bytes written to disk per result by the store alone: `python -m bench.writes`.

The HTTP side of a check costs CPU, the store's side costs disk writes; on a shared
machine the first moves with the load while the second depends only on what is
written when. So this measures the store without HTTP, at the scenarios' real rates:
a process (one per run) submits results of N services at R Hz through the real writer
(`HealthStore.writer()`, flushes every 0.1 s, checkpoints as the store does), each
service at its own phase in the interval as the monitor spreads them, after filling
the database with `--prefill` seconds of results (a flush's cost depends on how many
leaf pages the services' rows span: a deployment's table is never empty). Over the
window it reads `write_bytes` from /proc/self/io: what the process sent to the storage
layer, WAL and checkpoints included. Each scenario runs twice in the same run:

- `healthmon`: the store as it is (512-byte pages, checkpoints beside the writer);
- `sqlite defaults`: a database made with 4,096-byte pages and SQLite's checkpoint
  inside the commit past 1,000 WAL pages (what healthmon did before issue 16).

`--variants postgresql` measures PostgreSQL instead (a server of the `pgserver`
package's binaries with its default, durable settings, as `bench.postgres` starts it):
`write_bytes` of the server's processes (the postmaster and its children: backends,
WAL writer, checkpointer, background writer), over a window that starts and ends with a
`CHECKPOINT`, so that the data pages the window dirtied are written within it (and the
WAL's full-page images after a checkpoint are counted, as in steady state every
`checkpoint_timeout`); the WAL's share from `pg_stat_wal`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from healthmon import HealthCheckResult, HealthStatus, HealthStore
from healthmon.log import configure_logging

__all__ = ["main", "measure"]

SCENARIOS = [(100, 1.0), (400, 1.0), (100, 20.0), (1_000, 1.0), (2_000, 1.0)]
VARIANTS = ["healthmon", "sqlite defaults"]  # (and "postgresql", on request)
TARGETS = {(100, 20.0): 500.0, (2_000, 1.0): 1_000.0}
_STEP = 0.01  # seconds between submissions: services due in each step go together
_FLUSH = 0.1


def _write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no write_bytes")


def _result(index: int, ts: float) -> HealthCheckResult:
    ms = random.lognormvariate(1.2, 0.4)
    return HealthCheckResult(f"svc-{index:04d}", HealthStatus.HEALTHY, ms, ts, {"status": "ok"})


def _server_write_bytes(data: Path) -> int:
    """write_bytes of a PostgreSQL server's processes: the postmaster and its children."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if int(entry.name) != postmaster and ppid != postmaster:
                continue
            for line in (entry / "io").read_text().splitlines():
                if line.startswith("write_bytes:"):
                    total += int(line.split()[1])
        except OSError:  # gone meanwhile
            continue
    return total


async def measure(  # noqa: PLR0912, PLR0915 - one measured run, step by step
    database: Path | str,
    services: int,
    hz: float,
    variant: str,
    *,
    prefill: float,
    window: float,
    written_bytes: Any = None,
) -> dict[str, Any]:
    """`written_bytes`: a function giving the bytes written so far (this process's by
    default); an async `checkpoint(store)` attribute on it runs at both ends of the
    window (PostgreSQL)."""
    written_bytes = written_bytes or _write_bytes
    checkpoint = getattr(written_bytes, "checkpoint", None)
    interval = 1.0 / hz
    if variant == "sqlite defaults":
        with sqlite3.connect(database) as conn:  # before the store: the file's page size
            conn.execute("PRAGMA page_size=4096")
            conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
    async with HealthStore(database) as store:
        if variant == "sqlite defaults":

            @event.listens_for(store.engine.sync_engine, "connect")
            def _default_checkpoints(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.execute("PRAGMA wal_autocheckpoint=1000")

            await store.engine.dispose()  # connections made anew, with the listener
        writer = store.writer(max_pending=10**7)
        if variant == "sqlite defaults":
            writer._checkpoints = None
        # Prefill: `prefill` seconds of every service, a flush per slot.
        start = time.time() - prefill - 1.0
        for slot in range(int(prefill * hz)):
            for index in range(services):
                writer.submit(_result(index, start + slot * interval + index / services * interval))
            if not await writer.flush():
                raise RuntimeError(f"prefill: {writer.stats.last_error}")
        if checkpoint is None:
            async with store.engine.connect() as connection:
                await connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        # Paced: service i is due at phase i/services of each interval.
        steps = max(1, round(interval / _STEP))
        due: list[list[int]] = [[] for _ in range(steps)]
        for index in range(services):
            due[int(index / services * steps)].append(index)
        await writer.start()
        loop = asyncio.get_running_loop()
        began = loop.time()
        committed0 = written0 = 0
        measuring = False
        step = 0
        while True:
            now = loop.time()
            if not measuring and now - began >= 2.0:  # a short settle first
                if checkpoint is not None:
                    await checkpoint(store)
                measuring, committed0, written0, t0 = (
                    True,
                    writer.stats.committed_results,
                    written_bytes(),
                    loop.time(),
                )
                wal0 = await _pg_wal(store) if checkpoint is not None else 0
            if measuring and now - t0 >= window:
                break
            wall = time.time()
            for index in due[step % steps]:
                writer.submit(_result(index, wall))
            step += 1
            await asyncio.sleep(max(0.0, began + step * _STEP - loop.time()))
        committed, t1 = writer.stats.committed_results, loop.time()
        await writer.flush()
        if checkpoint is not None:
            wal1 = await _pg_wal(store)
            await checkpoint(store)
        written = written_bytes()
        await writer.stop()
    results = committed - committed0
    if checkpoint is not None:
        return {
            "services": services,
            "hz": hz,
            "variant": variant,
            "page_size": 8192,
            "results": results,
            "results_per_s": results / (t1 - t0),
            "written_per_result": (written - written0) / results if results else None,
            "written_mb_per_s": (written - written0) / (t1 - t0) / 1e6,
            "wal_per_result": (wal1 - wal0) / results if results else None,
            "db_bytes_per_row": None,
        }
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = conn.execute("SELECT count(*) FROM check_results").fetchone()[0]
        table = conn.execute(
            "SELECT sum(pgsize) FROM dbstat WHERE name = 'check_results'"
        ).fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    return {
        "services": services,
        "hz": hz,
        "variant": variant,
        "page_size": page_size,
        "results": results,
        "results_per_s": results / (t1 - t0),
        "written_per_result": (written - written0) / results if results else None,
        "written_mb_per_s": (written - written0) / (t1 - t0) / 1e6,
        "db_bytes_per_row": table / rows if rows else None,
    }


async def _pg_wal(store: HealthStore) -> int:
    async with store.engine.connect() as conn:
        return int(await conn.scalar(text("SELECT wal_bytes FROM pg_stat_wal")) or 0)


async def _pg_checkpoint(store: HealthStore) -> None:
    async with store.engine.connect() as conn:
        await conn.execute(text("CHECKPOINT"))
        await conn.commit()


def _one_postgres(services: int, hz: float, prefill: float, window: float) -> dict[str, Any]:
    from tests.postgres import LocalPostgres, create_database  # noqa: PLC0415 - dev only

    server = LocalPostgres(settings=())  # its defaults: fsync, synchronous_commit on
    server.start()
    try:
        url = create_database(server.url)

        def written() -> int:
            return _server_write_bytes(server.data)

        written.checkpoint = _pg_checkpoint  # type: ignore[attr-defined]  # (see measure)
        return asyncio.run(
            measure(
                url, services, hz, "postgresql", prefill=prefill, window=window,
                written_bytes=written,
            )
        )  # fmt: skip
    finally:
        server.delete()  # (stops it first)


def _one(args: list[str]) -> None:
    services, hz, variant, prefill, window, out = args
    configure_logging("warning", "json")  # as an application would; no debug lines
    if variant == "postgresql":
        figures = _one_postgres(int(services), float(hz), float(prefill), float(window))
        Path(out).write_text(json.dumps(figures))
        return
    with tempfile.TemporaryDirectory(prefix="healthmon-writes-") as folder:
        figures = asyncio.run(
            measure(
                Path(folder) / "h.db",
                int(services),
                float(hz),
                variant,
                prefill=float(prefill),
                window=float(window),
            )
        )
    Path(out).write_text(json.dumps(figures))


def _db(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.writes", description=__doc__)
    parser.add_argument("--window", type=float, default=60.0, help="measured seconds (60)")
    parser.add_argument("--prefill", type=float, default=120.0, help="seconds of results first")
    parser.add_argument("--only", default="", help="scenarios, e.g. 100x20,2000x1")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    wanted = {name for name in args.only.split(",") if name}
    rows = []
    print(
        "| scenario | store | page | results/s | written B/result | written MB/s | "
        "DB B/result | target |\n|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    for services, hz in SCENARIOS:
        if wanted and f"{services}x{hz:g}" not in wanted:
            continue
        for variant in args.variants.split(","):
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                subprocess.run(  # noqa: S603 - our own interpreter and module
                    [
                        sys.executable,
                        "-m",
                        "bench.writes",
                        "--one",
                        str(services),
                        str(hz),
                        variant,
                        str(args.prefill),
                        str(args.window),
                        out.name,
                    ],
                    check=True,
                    timeout=args.prefill * 3 + args.window + 120,
                )
                figures = json.loads(Path(out.name).read_text())
            rows.append(figures)
            target = TARGETS.get((services, hz))
            per = figures["written_per_result"]
            verdict = (
                "-"
                if target is None
                else f"<= {target:,.0f}: {'met' if per <= target else 'MISSED'}"
            )
            print(
                f"| {services:,} x {hz:g} Hz | {variant} | {figures['page_size']} | "
                f"{figures['results_per_s']:,.0f} | {per:,.0f} | "
                f"{figures['written_mb_per_s']:.2f} | "
                f"{_db(figures['db_bytes_per_row'])} | {verdict} |",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        _one(sys.argv[2:])
    else:
        main()
