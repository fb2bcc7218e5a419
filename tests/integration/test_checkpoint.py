"""SQLite's pages and WAL checkpoints (issue 16), on real files: no checkpoint inside a
commit, the writer's checkpoints copy the WAL and start it again, small pages for new
databases while an existing database keeps its own."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from healthmon import HealthCheckResult, HealthStatus, HealthStore
from healthmon.store.checkpoint import Checkpoints
from healthmon.store.engine import PAGE_SIZE
from tests.conftest import wait_for

T0 = 1_800_000_000.0
WAL_FRAME_HEADER = 24


def results(services: int, first_slot: int, slots: int) -> list[HealthCheckResult]:
    return [
        HealthCheckResult(f"svc-{i:03d}", HealthStatus.HEALTHY, 2.0, T0 + k + i / 1000, None)
        for k in range(first_slot, first_slot + slots)
        for i in range(services)
    ]


def wal_size(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return wal.stat().st_size if wal.exists() else 0


def wal_restarts(db: Path) -> int:
    """The WAL header's checkpoint sequence number: +1 each time the WAL starts again."""
    return int.from_bytes(Path(f"{db}-wal").read_bytes()[12:16], "big")


def pragma(db: Path, name: str) -> int:
    with sqlite3.connect(db) as conn:
        (value,) = conn.execute(f"PRAGMA {name}").fetchone()
    conn.close()
    return int(value)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_commit_never_checkpoints_past_sqlites_default_of_1000_pages(
    tmp_path: Path,
) -> None:
    db = tmp_path / "h.db"
    async with HealthStore(db) as store:
        writer = store.writer()  # not started: its flushes only, no checkpoint step
        # 200 services' results, 5 s a flush: ~1,500 pages (staged: store/staging.py)
        for slot in range(0, 120, 5):
            for result in results(200, slot, 5):
                writer.submit(result)
            assert await writer.flush()
        frames = wal_size(db) // (PAGE_SIZE + WAL_FRAME_HEADER)
        # SQLite's default would have copied the WAL back and started it again at
        # 1,000 pages, inside the commit that passed them.
        assert frames > 1_000
        await writer.stop()


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_the_writers_checkpoint_copies_the_wal_and_the_next_commits_start_it_again(
    tmp_path: Path,
) -> None:
    db = tmp_path / "h.db"
    async with HealthStore(db) as store:
        writer = store.writer()
        checkpoints = Checkpoints(Path(f"{db}-wal"), every=1e-6)
        lock = asyncio.Lock()
        for result in results(200, 0, 10):
            writer.submit(result)
        assert await writer.flush()
        grown, restarts = wal_size(db), wal_restarts(db)
        await checkpoints.step(store.engine, lock)  # due: starts one beside the writer
        await wait_for(lambda: checkpoints._task is not None and checkpoints._task.done())
        await checkpoints.step(store.engine, lock)  # done: catches up, between flushes
        assert checkpoints._task is None
        # Everything is in the main file: a reader without the WAL sees every row.
        with sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True) as conn:
            assert conn.execute("SELECT count(*) FROM results_view").fetchone() == (2_000,)
        conn.close()
        # The next commit goes over the old frames instead of after them.
        for result in results(200, 10, 1):
            writer.submit(result)
        assert await writer.flush()
        assert wal_restarts(db) == restarts + 1
        assert wal_size(db) == grown  # (the file is not cut: overwritten in place)
        await writer.stop()


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_running_writer_checkpoints_by_itself(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    async with HealthStore(db) as store:
        writer = store.writer(flush_interval=0.01)
        assert writer._checkpoints is not None  # the store gives its writer checkpoints
        writer._checkpoints = Checkpoints(Path(f"{db}-wal"), every=0.05)
        await writer.start()
        slot = 0

        def copied() -> bool:
            nonlocal slot
            for result in results(50, slot, 1):
                writer.submit(result)
            slot += 1
            # The main file alone: what only a checkpoint puts there.
            conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
            try:
                (rows,) = conn.execute("SELECT count(*) FROM results_view").fetchone()
            except sqlite3.DatabaseError:  # not even the tables yet, or (immutable=1 lies
                rows = 0  # to SQLite) a checkpoint on the writer's thread mid-way: again
            finally:
                conn.close()
            return bool(rows)

        await wait_for(copied, timeout=20)
        await writer.stop()
        assert writer.stats.dropped_results == 0


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_new_databases_get_small_pages_and_old_ones_keep_theirs(tmp_path: Path) -> None:
    new, old = tmp_path / "new.db", tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    for db in (new, old):
        async with HealthStore(db) as store:
            writer = store.writer()
            for result in results(3, 0, 3):
                writer.submit(result)
            assert await writer.flush()
            await writer.stop()
    assert pragma(new, "page_size") == PAGE_SIZE == 512
    assert pragma(old, "page_size") == 4096
    for db in (new, old):
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("SELECT count(*) FROM check_results").fetchone() == (9,)
        conn.close()
