"""SQLite's staging of new results (store/staging.py, store/raw.py): a flush appends to
staged_results, the writer compacts them into check_results. Nothing committed is lost
between the two, a compaction is one transaction, and every reader answers the same
whether a result is staged or compacted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from healthmon import HealthCheckResult, HealthStatus, HealthStore, Retention
from healthmon.store.keys import ResultKeys
from healthmon.store.retention import prune_step
from healthmon.store.staging import Staging, compact
from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
H, D, U = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNHEALTHY
T0 = 1_800_000_000.0  # a whole minute (and hour)


def result(
    name: str, ts: float, status: HealthStatus = H, ms: float = 2.0, body: str = "ok"
) -> HealthCheckResult:
    error = None if status is H else f"HTTP 503 at {ts}"
    return HealthCheckResult(name, status, ms, ts, {"status": body}, error)


def counts(db: Path) -> tuple[int, int]:
    """(rows in check_results, rows staged)"""
    with sqlite3.connect(db) as conn:
        kept = conn.execute("SELECT count(*) FROM check_results").fetchone()[0]
        staged = conn.execute("SELECT count(*) FROM staged_results").fetchone()[0]
    conn.close()
    return int(kept), int(staged)


def stream(services: int, seconds: int, start: float = T0) -> list[HealthCheckResult]:
    """Results of a few services every second, some unhealthy, one with a gap."""
    out = []
    for k in range(seconds):
        for i in range(services):
            if i == 1 and 20 <= k < 40:  # a 20 s gap
                continue
            status = U if (i == 2 and 10 <= k < 25) else D if (i + k) % 17 == 0 else H
            ms = 1.0 + (k * 7 + i) % 50
            out.append(result(f"svc-{i}", start + k + i / 100, status, ms, f"b{k // 30}"))
    return out


async def compact_now(store: HealthStore) -> int:
    async with store.engine.begin() as conn:
        moved, _ = await compact(conn, ResultKeys())
    return moved


async def everything(store: HealthStore, since: float, until: float) -> dict[str, Any]:
    """Every reader's answer over the window (and over the whole history)."""
    names = await store.service_names()
    answers: dict[str, Any] = {
        "latest": await store.latest(),
        "reports": await store.reports(since, until),
        "windows": await store.windows(since, until),
        "days": await store.days(since, until),
        "minute_counts": await store.minute_counts(since, until),
        "aggregates": await store.aggregates(60, since, until),
        "stream": [r async for r in store.stream_results(None, since, until)],
        "transitions": await store.transitions(),
    }
    for name in names:
        answers[f"results {name}"] = await store.results(name)
        answers[f"results {name} window"] = await store.results(name, since + 7.5, until - 3)
        answers[f"report {name}"] = await store.report(name, since, until)
        answers[f"exact {name}"] = await store.report(name, since, until, exact=True)
        answers[f"series {name}"] = await store.series(name, since, until, bucket=10)
        answers[f"report_series {name}"] = await store.report_series(name, since, until, bucket=30)
    return answers


def view_rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT service, at, status, response_time_ms, answered, error, details, ts_us "
            "FROM results_view ORDER BY service, ts_us"
        ).fetchall()
    conn.close()
    return rows


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_every_reader_answers_the_same_for_staged_and_compacted_results(
    tmp_path: Path,
) -> None:
    db = tmp_path / "h.db"
    results = stream(4, 150)
    async with HealthStore(db) as store:
        writer = store.writer()  # not started: flushes only, so nothing is compacted
        for first in range(0, len(results), 40):  # commits of 10 s
            for r in results[first : first + 40]:
                writer.submit(r)
            assert await writer.flush()
        kept, staged = counts(db)
        assert (kept, staged) == (0, len(results))  # all staged, none compacted
        windows = [(T0, T0 + 150), (T0 + 30, T0 + 100), (T0 - 3600, T0 + 3600)]
        before = [await everything(store, *w) for w in windows]
        rows_before = view_rows(db)
        assert await compact_now(store) == len(results)
        assert counts(db) == (len(results), 0)
        after = [await everything(store, *w) for w in windows]
        rows_after = view_rows(db)
        # and half and half: the older part compacted, the newer staged
        for r in stream(4, 30, T0 + 150):
            writer.submit(r)
        assert await writer.flush()
        mixed = await everything(store, T0, T0 + 180)
        await compact_now(store)
        assert await everything(store, T0, T0 + 180) == mixed
        await writer.stop()
    for b, a in zip(before, after, strict=True):
        for key in b:
            assert b[key] == a[key], key
    assert rows_before == rows_after
    assert len(rows_after) == len(results)
    assert len(before[0]["stream"]) == len(results)


SUBMITTER = textwrap.dedent(
    """
    import asyncio, os, sys
    from healthmon import HealthCheckResult, HealthStatus, HealthStore
    from sqlalchemy import event

    async def main(db, crash_in_compaction):
        async with HealthStore(db) as store:
            writer = store.writer()
            if crash_in_compaction:
                @event.listens_for(store.thread_engine.sync_engine, "before_cursor_execute")
                def die(conn, cursor, statement, *args):
                    if statement.startswith("DELETE FROM staged_results"):
                        # the rows are copied into check_results, not yet committed
                        print("compacting", flush=True)
                        os.kill(os.getpid(), 9)
            for i in range(300):
                writer.submit(HealthCheckResult(
                    f"svc-{i % 3}", HealthStatus.HEALTHY, 1.0, 1_800_000_000.0 + i / 3))
                if i % 50 == 49:
                    assert await writer.flush()
            print("committed", flush=True)
            if crash_in_compaction:
                await writer.stop()  # compacts: killed in it
            await asyncio.sleep(60)  # killed here

    asyncio.run(main(sys.argv[1], sys.argv[2] == "1"))
    """
)


def run_and_kill(db: Path, crash_in_compaction: bool) -> None:
    """SUBMITTER until its results are committed, then killed: by us (its rows staged),
    or by itself inside its compaction's transaction."""
    process = subprocess.Popen(
        [sys.executable, "-c", SUBMITTER, str(db), "1" if crash_in_compaction else "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        if not crash_in_compaction:  # killed once its results are committed
            for line in process.stdout:
                if line.strip() == "committed":
                    os.kill(process.pid, signal.SIGKILL)
                    break
        said = [line.strip() for line in process.stdout]  # (log lines too) until it died
        if crash_in_compaction:
            assert "committed" in said
            assert said[-1] == "compacting"
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.asyncio
@pytest.mark.timeout(90)
@pytest.mark.parametrize("crash_in_compaction", [False, True])
async def test_sigkill_before_or_during_compaction_loses_nothing_committed(
    tmp_path: Path, crash_in_compaction: bool
) -> None:
    db = tmp_path / "h.db"
    await asyncio.to_thread(run_and_kill, db, crash_in_compaction)
    assert counts(db) == (0, 300)  # committed, staged; the compaction (if any) undone
    async with HealthStore(db) as store:
        stored = {name: await store.results(name) for name in ("svc-0", "svc-1", "svc-2")}
        assert sum(len(v) for v in stored.values()) == 300
        writer = store.writer()
        await writer.start()
        writer.submit(result("svc-0", T0 + 200))  # the restarted writer's first flush
        await wait_for(lambda: counts(db)[1] == 0)  # compacts what the last process staged
        await writer.stop()
        again = {name: await store.results(name) for name in ("svc-0", "svc-1", "svc-2")}
    assert again["svc-0"][:-1] == stored["svc-0"]
    assert again["svc-1"] == stored["svc-1"]
    assert again["svc-2"] == stored["svc-2"]
    assert counts(db) == (301, 0)
    timestamps = [r.timestamp for r in again["svc-0"]]
    assert timestamps == sorted(set(timestamps))  # each once


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_late_results_and_results_on_a_taken_microsecond(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    async with HealthStore(db) as store:
        writer = store.writer()
        for k in range(130):
            writer.submit(result("api", T0 + k))
        assert await writer.flush()
        assert counts(db) == (0, 130)
        # Later than api's newest but before the minutes already aggregated: staged,
        # and added to their minute (a retried batch after an outage).
        writer.submit(result("db", T0 + 5))
        assert await writer.flush()
        assert counts(db) == (0, 131)
        # Older than api's newest (a clock stepped back): the staged rows are compacted
        # first, then it goes into check_results; the one on a taken microsecond 1 us on.
        writer.submit(result("api", T0 + 64.5, ms=9.0))
        writer.submit(result("api", T0 + 100, ms=8.0))
        assert await writer.flush()
        assert counts(db) == (133, 0)
        writer.submit(result("api", T0 + 130))  # later again: staged
        assert await writer.flush()
        assert counts(db) == (133, 1)
        api = await store.results("api")
        report = await store.report("api", T0, T0 + 180)
        exact = await store.report("api", T0, T0 + 180, exact=True)
        minutes = await store.aggregates(60, T0, T0 + 120)
        await writer.stop()
    assert [r.timestamp for r in api] == sorted(
        [T0 + k for k in range(131)] + [T0 + 64.5, T0 + 100 + 1e-6]
    )
    assert report.counts.total == exact.counts.total == 133
    assert report.latency == exact.latency or report.latency.count == exact.latency.count
    assert sum(a.counts.total for a in minutes["api"]) == 122  # two minutes closed, 2 late
    assert sum(a.counts.total for a in minutes["db"]) == 1


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_retention_hides_staged_results_it_would_have_pruned(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    now = time.time()
    retention = Retention(raw=60, minute=3600, hour=7200)
    results = [result("api", now - 300 + k + 0.5) for k in range(300)]  # (none on the mark)
    results += [result("old", now - 200)]  # its newest: kept however old
    async with HealthStore(db, retention=retention) as store:
        writer = store.writer()
        for r in results:
            writer.submit(r)
        assert await writer.flush()
        async with store.engine.begin() as conn:  # marks the raw tier from now - 60 on
            await prune_step(conn, retention, 1000, now)
        assert counts(db) == (0, 301)  # nothing pruned: all staged
        staged = (
            await store.results("api"),
            await store.results("old"),
            await store.latest(),
            [r async for r in store.stream_results(None, now - 400, now + 1)],
        )
        await compact_now(store)
        async with store.engine.begin() as conn:
            while (await prune_step(conn, retention, 1000, now)).more:
                pass
        assert counts(db)[0] < 301
        compacted = (
            await store.results("api"),
            await store.results("old"),
            await store.latest(),
            [r async for r in store.stream_results(None, now - 400, now + 1)],
        )
        await writer.stop()
    assert staged == compacted
    assert [r.timestamp for r in staged[0]] == [r.timestamp for r in results[240:300]]
    assert [r.timestamp for r in staged[1]] == [results[-1].timestamp]


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_the_running_writer_compacts_when_due_and_at_stop(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    async with HealthStore(db) as store:
        writer = store.writer(flush_interval=0.01)
        writer._staging = Staging(every=3600, max_rows=100)  # (its policy)
        await writer.start()
        for k in range(99):
            writer.submit(result("api", T0 + k))
        await wait_for(lambda: writer.stats.committed_results == 99)
        await asyncio.sleep(0)
        first = counts(db)  # its first step compacted nothing yet staged, or all 99
        for k in range(99, 250):
            writer.submit(result("api", T0 + k))
        await wait_for(lambda: writer.stats.committed_results == 250)
        await wait_for(lambda: counts(db)[1] < 100)  # past max_rows: compacted
        for k in range(250, 260):
            writer.submit(result("api", T0 + k))
        await wait_for(lambda: writer.stats.committed_results == 260)
        assert counts(db)[1] > 0
        await writer.stop()
    assert sum(first) == 99
    assert counts(db) == (260, 0)  # a stopped writer leaves nothing staged
