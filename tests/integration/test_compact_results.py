"""The compact results table on real databases (SQLite files and PostgreSQL databases
alike, but for SQLite's own foreign-key pragma and view): (service, microsecond) keys
and their collisions, details bodies stored once, their retention, and the view."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.pool import StaticPool

from healthmon import HealthCheckResult, HealthStatus, HealthStore, Retention
from healthmon.micros import to_seconds, to_us
from healthmon.store.engine import begin_unchecked, create_engine, database_url
from healthmon.store.retention import prune_step
from tests.conftest import wait_for

H, U = HealthStatus.HEALTHY, HealthStatus.UNHEALTHY
T0 = 1_800_000_000.0  # a whole minute (and hour)
OK = {"status": "ok"}


def ok(
    name: str, ts: float, details: dict[str, Any] | None = OK, ms: float = 2.0
) -> HealthCheckResult:
    return HealthCheckResult(name, H, ms, ts, details)


async def store_all(store: HealthStore, results: list[HealthCheckResult]) -> None:
    """One group commit with all of them, through the real writer."""
    writer = store.writer()
    for result in results:
        writer.submit(result)
    assert await writer.flush()
    await writer.stop()
    assert writer.stats.failed_flushes == 0


async def query(db: str | Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of a statement (`?` placeholders) run outside the store, as another client
    would: on a SQLite file, or a PostgreSQL database's URL."""
    named = sql
    for index in range(len(params)):
        named = named.replace("?", f":p{index}", 1)
    engine = create_engine(database_url(db))
    try:
        async with engine.begin() as conn:
            result = await conn.execute(
                text(named), {f"p{index}": value for index, value in enumerate(params)}
            )
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


async def dangling(db: str | Path) -> int:
    """Results whose details row is gone (must never happen)."""
    (count,) = (
        await query(
            db,
            "SELECT count(*) FROM check_results r LEFT JOIN result_details d "
            "ON d.id = r.details_id WHERE r.details_id IS NOT NULL AND d.id IS NULL",
        )
    )[0]
    return int(count)


def query_now(db: str | Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """`query`, outside an event loop."""
    return asyncio.run(query(db, sql, *params))


async def rows_become(db: str | Path, sql: str, expected: list[tuple[Any, ...]]) -> None:
    """Wait until the statement returns `expected` (checking every 10 ms, for 10 s)."""
    deadline = time.monotonic() + 10
    while (found := await query(db, sql)) != expected:
        assert time.monotonic() < deadline, f"{sql}: {found}, not {expected}"
        await asyncio.sleep(0.01)


def count_result_inserts(store: HealthStore) -> list[int]:
    """A counter (in a list) of the INSERT statements into check_results from now on,
    an executemany counting once."""
    inserts = [0]

    @event.listens_for(store.thread_engine.sync_engine, "before_cursor_execute")
    def count(*args: Any) -> None:
        if args[2].startswith("INSERT INTO check_results"):  # (conn, cursor, statement, ...)
            inserts[0] += 1

    return inserts


async def unreferenced_details(db: str | Path) -> int:
    """Details rows no result references: nothing ever deletes them (must never be)."""
    (count,) = (
        await query(
            db,
            "SELECT count(*) FROM result_details d "
            "WHERE NOT EXISTS (SELECT 1 FROM check_results r WHERE r.details_id = d.id)",
        )
    )[0]
    return int(count)


async def details_across_minutes(db: str | Path) -> list[int]:
    """Details rows referenced outside one service's minute (retention would delete
    them while results still refer to them: must never be)."""
    rows = await query(
        db,
        "SELECT details_id FROM check_results WHERE details_id IS NOT NULL "
        "GROUP BY details_id "
        "HAVING count(DISTINCT service_id) > 1 OR count(DISTINCT ts_us / 60000000) > 1",
    )
    return [details_id for (details_id,) in rows]


# -- keys and collisions -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_results_on_the_same_microsecond_are_all_kept_a_microsecond_apart(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    t = T0 + 10.25
    async with HealthStore(db_url) as store:
        # Two in one batch, and a third colliding with what an earlier commit holds.
        await store_all(store, [ok("api", t, ms=1.0), ok("api", t, {"n": 2}, ms=2.0)])
        await store_all(store, [ok("api", t, ms=3.0), ok("db", t, ms=4.0)])
        api = await store.results("api")
        report = await store.report("api", T0, T0 + 60)
        assert [r.timestamp for r in await store.results("db")] == [t]
    assert [(r.timestamp, r.response_time_ms, r.details) for r in api] == [
        (t, 1.0, OK),
        (to_seconds(to_us(t) + 1), 2.0, {"n": 2}),
        (to_seconds(to_us(t) + 2), 3.0, OK),
    ]
    assert report.counts.healthy == 3
    assert capsys.readouterr().out.count("results_time_nudged") == 2  # once per flush
    assert await dangling(db_url) == 0


@pytest.mark.asyncio
async def test_one_writer_remembers_each_service_s_newest_time_across_flushes(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with HealthStore(db_url) as store:
        writer = store.writer()
        for ts in (T0, T0 + 1, T0 + 1):  # the clock stepped back between the flushes
            writer.submit(ok("api", ts))
            assert await writer.flush()
        await writer.stop()
        stored = [r.timestamp for r in await store.results("api")]
    assert stored == [T0, T0 + 1, to_seconds(to_us(T0 + 1) + 1)]
    assert writer.stats.failed_flushes == 0
    assert "results_time_nudged" in capsys.readouterr().out


@pytest.mark.asyncio
async def test_a_burst_on_one_microsecond_costs_a_statement_a_result(db_url: str) -> None:
    # Walking 1 us at a time cost the k-th result k INSERTs: 45,151 for 300 (5 s, so
    # that stop() dropped them all). Each goes just after the previous one instead.
    n = 300
    t = T0 + 10.25
    async with HealthStore(db_url) as store:
        inserts = count_result_inserts(store)
        writer = store.writer()
        for i in range(n):
            writer.submit(ok("api", t, ms=float(i)))
        writer.submit(ok("db", t))  # another service's rows go in with one executemany
        assert await writer.flush()
        in_batch, inserts[0] = inserts[0], 0
        writer.submit(ok("api", t, ms=float(n)))  # after the run stored: one read finds
        assert await writer.flush()  # its end
        one_more = inserts[0]
        await writer.stop()
        stored = await store.results("api")
        assert len(await store.results("db")) == 1
    assert [(to_us(r.timestamp) - to_us(t), r.response_time_ms) for r in stored] == [
        (i, float(i)) for i in range(n + 1)
    ]
    assert in_batch <= n + 2  # db's executemany, api's savepoint attempt, one each
    assert one_more <= 3  # the savepoint attempt, its own time, the first free one


@pytest.mark.asyncio
async def test_a_burst_on_one_microsecond_is_stored_within_stop_s_timeout(
    db_url: str,
) -> None:
    async with HealthStore(db_url) as store:
        writer = store.writer()
        for _ in range(300):
            writer.submit(ok("api", T0))
        await writer.stop()  # never started: stop() writes them, within its 2 s
        assert writer.stats.dropped_results == 0
        assert writer.stats.committed_results == 300
        assert len(await store.results("api")) == 300


@pytest.mark.asyncio
async def test_a_colliding_result_goes_after_its_service_s_previous_or_the_first_free_key(
    db_url: str,
) -> None:
    us = to_us(T0)
    async with HealthStore(db_url) as store:
        await store_all(store, [ok("api", to_seconds(us + d), ms=float(d)) for d in (1, 2, 4)])
        await store_all(
            store,
            [
                ok("api", to_seconds(us), ms=10.0),  # free: stays
                ok("api", to_seconds(us), ms=11.0),  # after it, +1 and +2 stored: +3
                ok("api", to_seconds(us + 4), ms=12.0),  # taken: the first free, +5
                ok("api", to_seconds(us + 4), ms=13.0),  # after the previous: +6
            ],
        )
        stored = await store.results("api")
    assert [(to_us(r.timestamp) - us, r.response_time_ms) for r in stored] == [
        (0, 10.0), (1, 1.0), (2, 2.0), (3, 11.0), (4, 4.0), (5, 12.0), (6, 13.0)
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_a_row_written_behind_the_writer_s_back_costs_no_result(
    db_url: str,
) -> None:
    async with HealthStore(db_url) as store:
        writer = store.writer()
        writer.submit(ok("api", T0))
        assert await writer.flush()  # the writer now takes T0 for api's newest
        await query(
            db_url,
            "INSERT INTO check_results (service_id, ts_us, status, response_time_us) "
            "VALUES (1, ?, 0, 1000)",
            to_us(T0 + 1),
        )
        writer.submit(ok("api", T0 + 1, ms=7.0))
        if db_url.startswith("postgresql"):
            assert not await writer.flush()  # the key is taken: rolled back, kept queued
            assert await writer.flush()  # read anew, guarded, moved 1 us
        else:  # staged (store/staging.py), where no key is taken; the compaction at
            assert await writer.flush()  # stop meets the taken key and moves it 1 us
        await writer.stop()
        stored = await store.results("api")
    assert [(r.timestamp, r.response_time_ms) for r in stored] == [
        (T0, 2.0),
        (T0 + 1, 1.0),
        (to_seconds(to_us(T0 + 1) + 1), 7.0),
    ]
    assert writer.stats.committed_results == 2
    assert writer.stats.dropped_results == 0


@pytest.mark.asyncio
async def test_a_result_moved_into_the_next_minute_gets_its_own_details_row(
    db_url: str,
) -> None:
    last_microsecond = to_seconds(1_800_000_059_999_999)
    async with HealthStore(db_url) as store:
        await store_all(store, [ok("api", last_microsecond), ok("api", last_microsecond)])
        stored = await store.results("api")
    assert [(r.timestamp, r.details) for r in stored] == [(last_microsecond, OK), (T0 + 60, OK)]
    # One details row per minute each result lies in: retention counts on it.
    rows = await query(
        db_url,
        "SELECT ts_us / 60000000, count(DISTINCT details_id) FROM check_results "
        "GROUP BY ts_us / 60000000",
    )
    assert [count for _, count in rows] == [1, 1]
    assert await query(db_url, "SELECT count(*) FROM result_details") == [(2,)]
    assert await unreferenced_details(db_url) == 0


@pytest.mark.asyncio
async def test_a_details_row_made_for_results_moved_into_the_next_minute_goes_with_them(
    db_url: str,
) -> None:
    # It was copied for the next minute and left referenced by nothing, forever:
    # retention deletes a details row only with the results it deletes.
    last = 1_800_000_059_999_999  # the last microsecond of T0's minute
    async with HealthStore(db_url) as store:
        writer = store.writer()
        writer.submit(ok("api", to_seconds(last), {"a": 1}))
        assert await writer.flush()
        # The same microsecond again, with another body: its details row is made for
        # T0's minute, and both results move into the next one, the row with them.
        writer.submit(ok("api", to_seconds(last), {"b": 2}))
        writer.submit(ok("api", to_seconds(last), {"b": 2}))
        assert await writer.flush()
        assert await unreferenced_details(db_url) == 0
        # The writer must not take that row for {"b": 2} in T0's minute any more.
        writer.submit(ok("api", T0 + 30, {"b": 2}))
        # One stays in T0's minute with its details row, two move: one copy for both.
        for _ in range(3):
            writer.submit(ok("api", to_seconds(last - 1), {"c": 3}))
        assert await writer.flush()
        writer.submit(ok("api", T0 + 3600, None))
        assert await writer.flush()
        await writer.stop()
        assert writer.stats.failed_flushes == 0
        assert [(to_us(r.timestamp), r.details) for r in await store.results("api")] == [
            (to_us(T0 + 30), {"b": 2}),
            (last - 1, {"c": 3}),
            (last, {"a": 1}),
            (last + 1, {"b": 2}),
            (last + 2, {"b": 2}),
            (last + 3, {"c": 3}),
            (last + 4, {"c": 3}),
            (to_us(T0 + 3600), None),
        ]
        assert await query(db_url, "SELECT count(*) FROM result_details") == [(5,)]
        assert await unreferenced_details(db_url) == 0
        assert await details_across_minutes(db_url) == []
        async with store.engine.begin() as conn:  # all but the newest result expire,
            # with their whole UTC day (PostgreSQL drops raw results a day at a time)
            now = (T0 // 86_400 + 1) * 86_400 + Retention().raw
            while (await prune_step(conn, Retention(), 1000, now=now)).more:
                pass
    assert await query(db_url, "SELECT count(*) FROM check_results") == [(1,)]
    assert await query(db_url, "SELECT count(*) FROM result_details") == [(0,)]


@pytest.mark.asyncio
async def test_times_and_latencies_come_back_to_the_microsecond(db_url: str) -> None:
    made = HealthCheckResult("api", U, 12.3456789, T0 + 0.1234567891, None, "HTTP 503")
    assert (made.timestamp, made.response_time_ms) == (to_seconds(1_800_000_000_123_457), 12.346)
    async with HealthStore(db_url) as store:
        await store_all(store, [made])
        assert await store.results("api") == [made]
        assert (await store.latest())["api"].timestamp == made.timestamp


@pytest.mark.asyncio
async def test_a_result_that_cannot_be_stored_is_dropped_and_counted(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with HealthStore(db_url) as store:
        writer = store.writer()
        writer.submit(ok("api", float("nan")))
        writer.submit(ok("api", T0, ms=float("inf")))
        writer.submit(ok("api", T0 + 1))
        assert await writer.flush()
        await writer.stop()
        assert writer.stats.dropped_results == 2
        assert writer.stats.committed_results == 1
    assert "not a finite number" in capsys.readouterr().out


# -- details stored once -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_unchanged_body_is_stored_once_per_service_and_minute(db_url: str) -> None:
    steady = [ok("api", T0 + i) for i in range(150)]  # 2.5 minutes at 1 Hz
    other = [ok("db", T0 + i + 0.5) for i in range(30)]  # the same body, another service
    async with HealthStore(db_url) as store:
        writer = store.writer()
        for result in steady[:100] + other:
            writer.submit(result)
        assert await writer.flush()
        for result in steady[100:]:  # the next flush goes on with the rows it remembers
            writer.submit(result)
        assert await writer.flush()
        await writer.stop()
        assert [r.details for r in await store.results("api")] == [OK] * 150
    assert await query(db_url, "SELECT count(*) FROM result_details") == [(4,)]  # api 3, db 1


@pytest.mark.asyncio
async def test_a_changing_body_costs_one_row_per_check_never_more(db_url: str) -> None:
    bodies = [{"n": i} for i in range(20)] + [OK, {"status": "fail"}, OK]
    results = [ok("api", T0 + i * 0.05, body) for i, body in enumerate(bodies)]
    async with HealthStore(db_url) as store:
        await store_all(store, results)
        assert [r.details for r in await store.results("api")] == bodies
    # A -> B -> A is three rows: only the last body is remembered.
    assert await query(db_url, "SELECT count(*) FROM result_details") == [(len(bodies),)]


@pytest.mark.asyncio
async def test_bodies_compare_as_json_text_and_none_stays_none(db_url: str) -> None:
    bodies: list[dict[str, Any] | None] = [{"a": 1}, {"a": 1.0}, {"a": True}, None, {"a": True}]
    async with HealthStore(db_url) as store:
        await store_all(store, [ok("api", T0 + i, body) for i, body in enumerate(bodies)])
        got = [r.details for r in await store.results("api")]
    assert [json.dumps(body) for body in got] == [json.dumps(body) for body in bodies]
    assert await query(db_url, "SELECT count(*) FROM result_details") == [(3,)]


@pytest.mark.asyncio
async def test_a_new_writer_inserts_the_body_again(db_url: str) -> None:
    async with HealthStore(db_url) as store:
        await store_all(store, [ok("api", T0)])
        await store_all(store, [ok("api", T0 + 1)])  # a restart: nothing remembered
    assert await query(db_url, "SELECT count(*) FROM result_details") == [(2,)]


@pytest.mark.asyncio
async def test_details_json_cannot_hold_are_kept_readable(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    when = datetime(2027, 1, 15, tzinfo=UTC)
    async with HealthStore(db_url) as store:
        await store_all(store, [ok("api", T0, {"since": when})])
        (stored,) = await store.results("api")
    assert stored.details == {"since": repr(when)}
    assert "details_not_json" in capsys.readouterr().out


# -- retention ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_pruning_deletes_the_details_rows_no_result_references(
    db_url: str, backend: str
) -> None:
    steady = [ok("api", T0 + i) for i in range(180)]  # 3 minutes, one body
    changing = [ok("db", T0 + i + 0.5, {"n": i}) for i in range(180)]
    quiet = [ok("old", T0 + 5, {"last": True})]  # only one result: the newest is kept
    now = T0 + 150 + Retention().raw  # results before T0 + 150 have expired
    async with HealthStore(db_url) as store:
        await store_all(store, steady + changing + quiet)
        async with store.engine.begin() as conn:  # with SQLite's own checks: it agrees
            while (await prune_step(conn, Retention(), batch_size=7, now=now)).more:
                pass
        assert [r.details for r in await store.results("old")] == [{"last": True}]
        assert [r.details for r in await store.results("db")] == [{"n": i} for i in range(150, 180)]
        assert {r.timestamp for r in await store.results("api")} == {
            T0 + i for i in range(150, 180)
        }
    bodies = {
        body for (body,) in await query(db_url, "SELECT CAST(body AS TEXT) FROM result_details")
    }
    kept = {
        json.dumps(OK),  # api's third minute, still referenced
        json.dumps({"last": True}),
        *(json.dumps({"n": i}) for i in range(150, 180)),
    }
    if backend == "sqlite":
        assert bodies == kept
    else:  # the partial day at the cut-off stays on disk until dropped whole
        assert bodies == kept | {json.dumps({"n": i}) for i in range(150)}
    assert await dangling(db_url) == 0


@pytest.mark.asyncio
async def test_pruning_without_foreign_key_checks_leaves_them_on_afterwards(
    db_path: Path,
) -> None:
    async with HealthStore(db_path) as store:
        await store_all(store, [ok("api", T0 + i) for i in range(120)])
    engine = create_engine(store.url, poolclass=StaticPool)  # one connection, reused
    try:
        async with begin_unchecked(engine) as conn:
            pruned = await prune_step(conn, Retention(), 1000, now=T0 + 100 + Retention().raw)
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 0
        assert len(pruned.details) == 1  # the first minute's row
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    finally:
        await engine.dispose()
    assert await dangling(db_path) == 0


@pytest.mark.asyncio
async def test_the_writer_never_reuses_a_details_row_that_pruning_deleted(
    db_path: Path,
) -> None:
    # A late result of an old minute is pruned (its service has newer ones) with its
    # details row; the next late result of that minute must not point at the row.
    retention = Retention(raw=3600)
    async with HealthStore(db_path, retention=retention, prune_interval=0.01) as store:
        writer = store.writer(flush_interval=0.01)
        await writer.start()
        wall = time.time()
        old_minute = (wall - 2 * 3600) // 60 * 60
        writer.submit(ok("api", wall))
        await wait_for(lambda: writer.stats.committed_results == 1)
        writer.submit(ok("api", old_minute + 1, {"late": 1}))
        await wait_for(lambda: writer.stats.committed_results == 2)
        await rows_become(db_path, "SELECT count(*) FROM check_results", [(1,)])
        await rows_become(db_path, "SELECT count(*) FROM result_details", [(1,)])
        writer.submit(ok("api", old_minute + 2, {"late": 1}))
        await wait_for(lambda: writer.stats.committed_results == 3)
        await writer.stop()
        assert writer.stats.failed_flushes == 0
    assert await dangling(db_path) == 0


# -- what SQL readers see ----------------------------------------------------------------


def test_results_view_reads_in_seconds_milliseconds_and_json(db_path: Path) -> None:
    async def fill() -> None:
        async with HealthStore(db_path) as store:
            await store_all(
                store,
                [
                    ok("api", T0 + 0.25, ms=1.5),
                    HealthCheckResult("api", U, 500.0, T0 + 1.5, None, "timeout after 500 ms"),
                ],
            )

    asyncio.run(fill())
    rows = query_now(
        db_path,
        "SELECT service, at, status, ts, ts_us, response_time_ms, answered, error, details "
        "FROM results_view ORDER BY ts",
    )
    assert rows == [
        ("api", "2027-01-15T08:00:00.250Z", "healthy", T0 + 0.25, 1_800_000_000_250_000, 1.5,
         1, None, '{"status": "ok"}'),
        ("api", "2027-01-15T08:00:01.500Z", "unhealthy", T0 + 1.5, 1_800_000_001_500_000, 500.0,
         0, "timeout after 500 ms", None),
    ]  # fmt: skip
    assert isinstance(rows[0][3], float)
    assert isinstance(rows[0][5], float)
