"""The store's own thread (store/thread.py): its writer commits and its reads answer
while the caller's loop is busy, which on a monitor's loop saturated with checks they
could not (issue 16's writer starvation: no commit for 25 s at 2,000 services x 1 Hz;
issue 14: a 24 h report waiting ~15 turns of the loop). Real databases."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from healthmon import HealthCheckResult, HealthStatus, HealthStore, StatusTransition
from healthmon.store.writer import Committed

# Whole seconds (stored exactly), and recent: a started writer prunes raw results
# older than the retention.
T0 = float(int(time.time()) - 600)


def _results(count: int, service: str = "api") -> list[HealthCheckResult]:
    return [
        HealthCheckResult(service, HealthStatus.HEALTHY, 1.0 + i % 7, T0 + i * 0.05)
        for i in range(count)
    ]


def _block_until(condition: Callable[[], bool], seconds: float) -> bool:
    """Hold the caller's loop (no await) until `condition()` or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def _store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "healthmon-store"]


@pytest.mark.asyncio
async def test_the_writer_commits_while_the_callers_loop_is_blocked(db_url: str) -> None:
    async with HealthStore(db_url) as store:
        writer = store.writer(flush_interval=0.05)
        await writer.start()
        for result in _results(200):
            writer.submit(result)
        # Not one turn of this loop from here: the writer must not need any.
        committed = _block_until(lambda: writer.stats.committed_results == 200, 20.0)
        assert committed, f"nothing committed while the loop was held: {writer.stats}"
        await writer.stop()
        assert len(await store.results("api")) == 200


@pytest.mark.asyncio
async def test_a_report_costs_the_callers_loop_a_turn_or_two(db_url: str) -> None:
    async with HealthStore(db_url) as store:
        writer = store.writer()
        for result in _results(500):
            writer.submit(result)
        assert await writer.flush()
        await writer.stop()
        # Each turn of this loop takes 0.2 s (a loop busy with checks); a report made of
        # ~15 statements awaited on this loop took ~15 turns.
        read = asyncio.create_task(store.report("api", T0, T0 + 3600))
        turns = 0
        while not read.done():
            await asyncio.sleep(0)
            time.sleep(0.2)  # noqa: ASYNC251 - on purpose: a turn of a loop busy with checks
            turns += 1
        report = read.result()
        assert report.counts.total == 500
        assert turns <= 5, f"the report took {turns} turns of the caller's loop"


@pytest.mark.asyncio
async def test_subscribers_hear_on_the_callers_loop_in_commit_order_before_stop_returns(
    db_url: str,
) -> None:
    heard: list[tuple[float, threading.Thread]] = []

    def on_commit(committed: Sequence[Committed]) -> None:
        heard.extend((t.timestamp, threading.current_thread()) for _, t in committed)

    async with HealthStore(db_url) as store:
        writer = store.writer(on_commit=on_commit, flush_interval=0.01)
        await writer.start()
        status = [HealthStatus.HEALTHY, HealthStatus.UNHEALTHY]
        for i, result in enumerate(_results(60, "flappy")):
            to, before = status[i % 2], None if i == 0 else status[(i - 1) % 2]
            writer.submit(result, StatusTransition("flappy", before, to, result.timestamp))
            if i % 10 == 9:
                await asyncio.sleep(0.02)  # several commits
        await writer.stop()
        # Every transition heard by the time stop() returned, in commit order, here.
        assert [ts for ts, _ in heard] == [r.timestamp for r in _results(60, "flappy")]
        assert {thread for _, thread in heard} == {threading.current_thread()}
        assert writer.stats.flushes > 1


@pytest.mark.asyncio
async def test_errors_of_a_read_reach_the_caller_and_the_thread_ends_with_the_store(
    db_url: str,
) -> None:
    before = len(_store_threads())
    store = HealthStore(db_url)
    await store.open()
    try:
        assert len(_store_threads()) == before + 1
        with pytest.raises(ValueError, match="unknown service 'nope'"):
            await store.report("nope", T0, T0 + 60)
    finally:
        await store.close()
    assert len(_store_threads()) == before
    await store.close()  # idempotent


@pytest.mark.asyncio
async def test_a_cancelled_read_leaves_the_store_usable(db_url: str) -> None:
    async with HealthStore(db_url) as store:
        writer = store.writer()
        for result in _results(50):
            writer.submit(result)
        assert await writer.flush()
        read = asyncio.create_task(store.results("api"))
        await asyncio.sleep(0)
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        assert len(await store.results("api")) == 50
        await writer.stop()


@pytest.mark.asyncio
async def test_a_store_closing_while_its_writer_stops_waits_for_that_stop(db_url: str) -> None:
    # The monitor stopping its writer and the application closing the store at once:
    # the close waited for nothing, ended the thread, and the last flush was cancelled.
    store = HealthStore(db_url)
    await store.open()
    writer = store.writer(flush_interval=0.5)
    await writer.start()
    for result in _results(300):
        writer.submit(result)
    await asyncio.gather(writer.stop(), store.close(), writer.stop())
    assert writer.stats.committed_results == 300
    assert writer.stats.dropped_results == 0
    async with HealthStore(db_url) as reopened:
        assert len(await reopened.results("api")) == 300
