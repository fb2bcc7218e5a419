"""The database fails under a running monitor: locked, read-only, full, deleted.

Checking and the cache go on; results wait in the writer's bounded buffer and are
written when the database recovers; beyond the bound, drops are counted and logged.
These inject real faults: another SQLite writer, the immutable flag (read-only even
for root), a small tmpfs filled by another file, and unlinking the files.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from healthmon import (
    HealthCheckResult,
    HealthMonitor,
    HealthStatus,
    HealthStore,
    ServiceDefinition,
    StorageError,
    WriterStats,
)
from healthmon.store.rollup import Rollup
from healthmon.targets import TargetServer
from tests.conftest import wait_for


def stats_of(monitor: HealthMonitor) -> WriterStats:
    stats = monitor.store_stats
    assert stats is not None
    return stats


def monitor_of(store: HealthStore, url: str, **settings: int) -> HealthMonitor:
    monitor = HealthMonitor(0.05, store=store, **settings)  # type: ignore[arg-type]
    monitor.add_service(ServiceDefinition("svc", "http", "m", [], url))
    return monitor


async def assert_checking_goes_on(monitor: HealthMonitor, targets: TargetServer) -> None:
    """The cache keeps moving while the database is down."""
    before = monitor.get_cluster_health()["svc"].timestamp
    hits = targets.hits("/healthy")
    await wait_for(lambda: targets.hits("/healthy") >= hits + 5)
    assert monitor.get_cluster_health()["svc"].timestamp > before


async def stored_count(db_path: Path) -> int:
    async with HealthStore(db_path, migrate=False) as reader:
        return len(await reader.results("svc"))


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_locked_by_another_writer_for_ten_seconds(
    targets: TargetServer, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with HealthStore(db_path) as store:
        monitor = monitor_of(store, targets.url("/healthy"))
        async with monitor:
            await wait_for(lambda: stats_of(monitor).committed_results >= 5)
            other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
            locked_at = time.monotonic()
            try:
                await wait_for(lambda: not stats_of(monitor).healthy, timeout=15)
                assert stats_of(monitor).last_error == "database is locked"
                await assert_checking_goes_on(monitor, targets)
                await asyncio.sleep(10 - (time.monotonic() - locked_at))
            finally:
                other.execute("ROLLBACK")
                other.close()
            await wait_for(lambda: stats_of(monitor).healthy, timeout=15)
            stats = stats_of(monitor)
        hits = targets.hits("/healthy")
    assert stats.dropped_results == 0
    assert hits - await stored_count(db_path) in (0, 1)  # all but the check cancelled at stop
    logged = capsys.readouterr().out
    assert "store_write_failed" in logged
    assert "store_write_recovered" in logged


def set_immutable(paths: list[Path], on: bool) -> None:
    flag = "+i" if on else "-i"
    existing = [str(p) for p in paths if p.exists()]
    subprocess.run(["chattr", flag, *existing], check=True, capture_output=True)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_database_made_read_only(targets: TargetServer, db_path: Path) -> None:
    # The database and its WAL; not the -shm index, which SQLite maps into memory (a
    # write to a mapping of an immutable file is a SIGBUS, not a database error).
    files = [db_path, db_path.with_name("health.db-wal")]
    async with HealthStore(db_path) as store:
        monitor = monitor_of(store, targets.url("/healthy"))
        async with monitor:
            await wait_for(lambda: stats_of(monitor).committed_results >= 5)
            set_immutable(files, on=True)
            try:
                await wait_for(lambda: not stats_of(monitor).healthy)
                # SQLite's words for it: read-only main file, or the WAL write refused
                assert stats_of(monitor).last_error in (
                    "attempt to write a readonly database",
                    "disk I/O error",
                )
                await assert_checking_goes_on(monitor, targets)
            finally:
                set_immutable(files, on=False)
            await wait_for(lambda: stats_of(monitor).healthy, timeout=15)
        hits = targets.hits("/healthy")
    assert hits - await stored_count(db_path) in (0, 1)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a disk that can really fill up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True, capture_output=True)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_disk_full(targets: TargetServer, small_disk: Path) -> None:
    db_path = small_disk / "health.db"
    filler = small_disk / "filler"
    async with HealthStore(db_path) as store:
        monitor = monitor_of(store, targets.url("/healthy"))
        async with monitor:
            await wait_for(lambda: stats_of(monitor).committed_results >= 5)
            with filler.open("wb", buffering=0) as out:  # another program fills the disk
                try:
                    while True:
                        out.write(b"\0" * 4096)
                except OSError:
                    pass
            try:
                await wait_for(lambda: not stats_of(monitor).healthy, timeout=20)
                assert "full" in (stats_of(monitor).last_error or "")
                await assert_checking_goes_on(monitor, targets)
            finally:
                filler.unlink()  # space again
            await wait_for(lambda: stats_of(monitor).healthy, timeout=15)
        hits = targets.hits("/healthy")
    assert hits - await stored_count(db_path) in (0, 1)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_database_file_deleted_under_the_monitor(
    targets: TargetServer, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with HealthStore(db_path) as store:
        monitor = monitor_of(store, targets.url("/healthy"))
        async with monitor:
            await wait_for(lambda: stats_of(monitor).committed_results >= 5)
            for suffix in ("", "-wal", "-shm"):
                db_path.with_name(f"health.db{suffix}").unlink(missing_ok=True)
            deleted_at = time.time()
            await wait_for(db_path.exists)
            committed = stats_of(monitor).committed_results
            await wait_for(lambda: stats_of(monitor).committed_results >= committed + 10)
        async with HealthStore(db_path, migrate=False) as reader:
            results = await reader.results("svc")
            services = await reader.latest()
    # A new database at the same path holds everything since the deletion.
    assert results
    assert results[0].timestamp >= deleted_at - 0.5
    assert "svc" in services
    logged = capsys.readouterr().out
    assert "database_file_lost" in logged
    assert "database_recreated" in logged


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_beyond_the_buffer_bound_drops_are_counted_and_logged(
    targets: TargetServer, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with HealthStore(db_path) as store:
        monitor = monitor_of(store, targets.url("/healthy"), max_pending=20)
        async with monitor:
            await wait_for(lambda: stats_of(monitor).committed_results >= 5)
            other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
            try:
                await wait_for(lambda: stats_of(monitor).dropped_results >= 10, timeout=20)
            finally:
                other.execute("ROLLBACK")
                other.close()
            await wait_for(lambda: stats_of(monitor).healthy, timeout=15)
            dropped = stats_of(monitor).dropped_results
        hits = targets.hits("/healthy")
    # Nothing lost beyond what was counted as dropped.
    assert hits - dropped - await stored_count(db_path) in (0, 1)
    assert "results_dropped" in capsys.readouterr().out


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_replaced_database_file_is_not_written_into(
    targets: TargetServer, db_path: Path, tmp_path: Path
) -> None:
    other = tmp_path / "restored.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE marker (x)")
    conn.close()
    async with HealthStore(db_path) as store:
        monitor = monitor_of(store, targets.url("/healthy"))
        async with monitor:
            await wait_for(lambda: stats_of(monitor).committed_results >= 5)
            # An operator restores a backup over it, as SQLite asks: the old database's
            # -wal and -shm go (or the restored file would replay them on opening).
            other.replace(db_path)
            for suffix in ("-wal", "-shm"):
                db_path.with_name(f"health.db{suffix}").unlink(missing_ok=True)
            await wait_for(lambda: not stats_of(monitor).healthy)
            assert "was replaced by another file" in (stats_of(monitor).last_error or "")
            await assert_checking_goes_on(monitor, targets)
    with sqlite3.connect(db_path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert tables == {"marker"}  # untouched: no schema, no rows written into it


@pytest.mark.asyncio
async def test_deleting_only_the_main_file_does_not_bring_back_old_rows(
    targets: TargetServer, db_path: Path
) -> None:
    async with HealthStore(db_path) as store:
        monitor = monitor_of(store, targets.url("/healthy"))
        async with monitor:
            await wait_for(lambda: stats_of(monitor).committed_results >= 5)
            db_path.unlink()  # noqa: ASYNC240 - `rm health.db`; its -wal and -shm stay
            deleted_at = time.time()
            await wait_for(db_path.exists)
            committed = stats_of(monitor).committed_results
            await wait_for(lambda: stats_of(monitor).committed_results >= committed + 5)
        async with HealthStore(db_path, migrate=False) as reader:
            results = await reader.results("svc")
    assert results
    assert min(r.timestamp for r in results) >= deleted_at - 0.5


@pytest.mark.asyncio
async def test_a_relative_path_survives_a_change_of_directory(
    targets: TargetServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    async with HealthStore("health.db") as store:
        monitor = monitor_of(store, targets.url("/healthy"))
        async with monitor:
            await wait_for(lambda: stats_of(monitor).committed_results >= 3)
            monkeypatch.chdir(tmp_path / "b")
            committed = stats_of(monitor).committed_results
            await wait_for(lambda: stats_of(monitor).committed_results >= committed + 5)
    assert "database_file_lost" not in capsys.readouterr().out
    assert not (tmp_path / "b" / "health.db").exists()
    assert await stored_count(tmp_path / "a" / "health.db") >= committed + 5


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_a_programming_error_in_a_flush_is_a_crash_not_an_endless_retry(
    db_path: Path,
) -> None:
    # Issue 11: the writer retried any exception, so a bug (here a result whose status
    # is not a HealthStatus: KeyError) became an endless loop of logged retries.
    # The bug: a status that is not a HealthStatus (what mypy would refuse).
    bad = HealthCheckResult("api", "healthy", 1.0, 1_800_000_000.0)  # type: ignore[arg-type]
    good = HealthCheckResult("api", HealthStatus.HEALTHY, 1.0, 1_800_000_001.0)
    async with HealthStore(db_path) as store:
        writer = store.writer(flush_interval=0.01)
        writer.submit(bad)
        with pytest.raises(KeyError):  # flush() raises it: it is not the database's
            await writer.flush()
        with pytest.raises(StorageError, match="crashed"):
            await writer.stop()
        writer = store.writer(flush_interval=0.01)
        writer.submit(bad)
        with structlog.testing.capture_logs() as events:
            await writer.start()  # the task crashes on it too, and says so
            await wait_for(lambda: writer.stats.last_error is not None)
            writer.submit(good)  # counted as dropped, never silently kept
            with pytest.raises(StorageError, match=r"crashed.*KeyError"):
                await writer.stop()
        stats = writer.stats
    assert stats.failed_flushes == 0  # not retried
    assert stats.last_error is not None
    assert "KeyError" in stats.last_error
    assert (stats.dropped_results, stats.committed_results) == (2, 0)
    crashed = [e for e in events if e["event"] == "store_writer_crashed"]
    assert len(crashed) == 1
    assert crashed[0]["log_level"] == "critical"


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_closing_a_store_whose_writer_crashed_still_closes_its_connections(
    db_path: Path,
) -> None:
    # Review of issue 11: HealthStore.close() let the crashed writer's StorageError out
    # before it disposed of the engine, so the store's connections outlived close().
    bad = HealthCheckResult("api", "healthy", 1.0, 1_800_000_000.0)  # type: ignore[arg-type]
    store = HealthStore(db_path)
    await store.open()
    writer = store.writer(flush_interval=0.01)
    writer.submit(bad)
    await writer.start()
    await wait_for(lambda: writer.stats.last_error is not None)
    with pytest.raises(StorageError, match="crashed"):
        await store.close()
    with pytest.raises(RuntimeError, match="is not open"):
        store.engine  # noqa: B018 - the property raises once the store is closed
    await store.close()  # closed already: nothing left to do, nothing raised


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_a_bug_outside_a_flush_is_a_crash_that_stop_reports(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review of issue 11: only a flush's exceptions were a crash. One raised elsewhere
    # in the writer's task (here by history pruning, between flushes) ended the task
    # without a word: results piled up unwritten, and stop() returned as if all was well.
    async def broken(*args: object, **kwargs: object) -> frozenset[int]:
        raise TypeError("a bug in pruning")

    monkeypatch.setattr(Rollup, "maintain", broken)
    async with HealthStore(db_path) as store:
        writer = store.writer(flush_interval=0.01)
        with structlog.testing.capture_logs() as events:
            await writer.start()
            writer.submit(HealthCheckResult("api", HealthStatus.HEALTHY, 1.0, 1_800_000_000.0))
            await wait_for(lambda: writer.stats.last_error is not None)
            writer.submit(HealthCheckResult("api", HealthStatus.HEALTHY, 1.0, 1_800_000_001.0))
            with pytest.raises(StorageError, match=r"crashed.*TypeError"):
                await writer.stop()
        stats = writer.stats
    assert (stats.committed_results, stats.dropped_results) == (1, 1)
    crashed = [e for e in events if e["event"] == "store_writer_crashed"]
    assert len(crashed) == 1
