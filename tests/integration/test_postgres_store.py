"""What only PostgreSQL has: raw results in day partitions, made ahead by the writer and
dropped whole by retention, and the URL's credentials kept out of sight."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from sqlalchemy import make_url, text

from healthmon import (
    HealthCheckResult,
    HealthStatus,
    HealthStore,
    Retention,
    StatusTransition,
    StorageError,
)
from healthmon.store.partitions import DAY_US, create, existing_days
from healthmon.store.retention import prune_step
from tests.integration.test_cli import H, assert_clean, healthmon, result, write_history

DAY = 86_400.0
D0 = 1_800_057_600.0  # 2027-01-16 00:00 UTC: a whole day
RAW = Retention(raw=DAY, minute=3 * DAY, hour=4 * DAY)


def ok(name: str, ts: float, details: dict[str, int] | None = None) -> HealthCheckResult:
    return HealthCheckResult(name, HealthStatus.HEALTHY, 1.0, ts, details)


async def partitions(store: HealthStore) -> list[int]:
    async with store.engine.connect() as conn:
        return sorted(day - int(D0 // DAY) for day in await existing_days(conn))


async def count(store: HealthStore, sql: str) -> int:
    async with store.engine.connect() as conn:
        return int(await conn.scalar(text(sql)) or 0)


@pytest.mark.asyncio
async def test_the_writer_makes_each_day_s_partition_and_the_next(pg_url: str) -> None:
    async with HealthStore(pg_url) as store:
        writer = store.writer()
        writer.submit(ok("api", D0 + 10))
        writer.submit(ok("api", D0 + 2 * DAY + 10))  # a day skipped: no partition for it
        assert await writer.flush()
        await writer.stop()
        assert await partitions(store) == [0, 2, 3]  # the days written, and the next one
        async with store.engine.connect() as conn:
            parted = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_partitioned_table "
                    "WHERE partrelid = 'check_results'::regclass"
                )
            )
        assert parted == 1


@pytest.mark.asyncio
async def test_retention_drops_whole_days_and_keeps_the_edge_exact(pg_url: str) -> None:
    """Day 0 expires whole: dropped, but for `old`'s only result, its newest. Day 1
    holds the cut-off: its expired results stay on disk, and nothing reads them."""
    results = [ok("api", D0 + i * 600, {"minute": i}) for i in range(144)]  # day 0
    results += [ok("api", D0 + DAY + i * 600, {"minute": i}) for i in range(144)]  # day 1
    results += [ok("old", D0 + 5, {"last": 1})]
    now = D0 + 2 * DAY + 3600  # the cut-off: day 1 at 01:00
    async with HealthStore(pg_url, retention=RAW) as store:
        writer = store.writer()
        for result in results:
            writer.submit(result)
        assert await writer.flush()
        await writer.stop()
        before = await count(store, "SELECT count(*) FROM result_details")
        async with store.engine.begin() as conn:
            while (await prune_step(conn, RAW, batch_size=1000, now=now)).more:
                pass
        # Day 0's partition was dropped and made again for `old`'s newest result alone.
        assert await count(store, "SELECT count(*) FROM check_results_p20270116") == 1
        assert [r.details for r in await store.results("old")] == [{"last": 1}]
        # Day 1's expired hour is on disk, out of sight: reads start at the cut-off.
        assert await count(store, "SELECT count(*) FROM check_results_p20270117") == 144
        assert [r.timestamp for r in await store.results("api")] == [
            r.timestamp for r in results[144:288] if r.timestamp >= now - DAY
        ]
        assert [r.timestamp async for r in store.stream_results("api", until=now - DAY)] == []
        report = await store.report("api", now - DAY, now)
        assert report.counts.total == sum(now - DAY <= r.timestamp < now for r in results)
        # Day 0's details rows went with it, but `old`'s.
        assert await count(store, "SELECT count(*) FROM result_details") == before - 144
        assert (
            await count(
                store,
                "SELECT count(*) FROM check_results r LEFT JOIN result_details d "
                "ON d.id = r.details_id WHERE r.details_id IS NOT NULL AND d.id IS NULL",
            )
            == 0
        )
        # Another step finds nothing left to drop (day 0 holds only a newest result).
        async with store.engine.begin() as conn:
            assert not (await prune_step(conn, RAW, batch_size=1000, now=now)).more
        assert await count(store, "SELECT count(*) FROM check_results_p20270116") == 1


@pytest.mark.asyncio
async def test_a_late_result_for_a_dropped_day_is_stored_all_the_same(pg_url: str) -> None:
    async with HealthStore(pg_url, retention=RAW) as store:
        writer = store.writer()
        writer.submit(ok("api", D0 + 10))
        writer.submit(ok("api", D0 + 3 * DAY))
        assert await writer.flush()
        async with store.engine.begin() as conn:
            await prune_step(conn, RAW, batch_size=1000, now=D0 + 3 * DAY + 60)
        assert 0 not in await partitions(store)
        writer.submit(ok("api", D0 + 20))  # late, into the dropped day: made again
        assert await writer.flush() or await writer.flush()
        await writer.stop()
        assert writer.stats.dropped_results == 0
        assert 0 in await partitions(store)
        assert await count(store, "SELECT count(*) FROM check_results") == 2


def test_day_partitions_are_utc_days() -> None:
    assert D0 * 1_000_000 % DAY_US == 0


# -- the command line, and credentials -----------------------------------------------------


def with_password(url: str, password: str) -> str:
    """The URL with a password (the tests' server trusts 127.0.0.1: any password works)."""
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def test_the_command_line_on_postgresql(pg_url: str) -> None:
    url = with_password(pg_url, "s3cret-pw")
    up = healthmon("db", "upgrade", "--database", url)
    assert up.returncode == 0, up.stderr
    now = time.time()
    results = [result("api", H, now - 30 + i) for i in range(20)]
    write_history(url, results, [StatusTransition("api", None, H, now - 30)])  # type: ignore[arg-type]  # a URL, not a file
    runs = [
        healthmon("db", "current", "--database", url),
        healthmon("status", "--database", url, "--json"),
        healthmon("export", "api", "--database", url, "--format", "jsonl"),
        healthmon("history", "api", "--database", url, "--since", "1h", "--json"),
    ]
    for done in runs:
        assert done.returncode == 0, done.stderr
        assert_clean(done.stderr)
        assert "s3cret-pw" not in done.stdout + done.stderr
    assert runs[0].stdout.strip().endswith("(head)")
    assert "***" in runs[0].stdout  # the URL shown, its password hidden
    assert json.loads(runs[1].stdout)["cluster_status"] == "healthy"
    assert len(runs[2].stdout.splitlines()) == 20
    assert json.loads(runs[3].stdout)["counts"]["healthy"] == 20


@pytest.mark.asyncio
async def test_a_password_never_shows_in_errors_repr_or_logs(
    refused_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = make_url(refused_url.replace("http://", "postgresql://")).port
    url = f"postgresql://monitor:s3cret-pw@127.0.0.1:{port}/health"
    store = HealthStore(url)
    assert "s3cret-pw" not in repr(store)
    with pytest.raises(StorageError) as caught:
        await store.open()
    assert "s3cret-pw" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
    failed = healthmon("status", "--database", url)
    assert failed.returncode != 0
    assert "s3cret-pw" not in failed.stdout + failed.stderr + capsys.readouterr().out


@pytest.mark.asyncio
async def test_two_writers_making_the_same_day_s_partition_at_once_both_succeed(
    pg_url: str,
) -> None:
    """Two cluster nodes' first flushes of a day (a writer crashed on it in CI)."""
    day = int(D0 // DAY)
    async with HealthStore(pg_url) as store:
        engine = store.engine
        async with engine.connect() as first, engine.connect() as second:
            await first.begin()
            await create(first, day)  # made, not committed yet
            await second.begin()
            waiting = asyncio.create_task(create(second, day))
            await asyncio.sleep(0.5)
            assert not waiting.done()  # it waits for the first transaction
            await first.commit()
            await asyncio.wait_for(waiting, 10)  # then finds the table: no error
            await second.commit()
        assert await partitions(store) == [0]
