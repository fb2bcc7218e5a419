"""The transition feed's cursor, with a stand-in store: ids going back (a replaced
database) reset it and wake whoever waits; the memory ring and the store agree."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from healthmon import HealthMonitor, HealthStatus, StatusTransition
from healthmon.http.feed import TransitionFeed
from healthmon.store import TransitionRecord

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(10)]


def record(id_: int, name: str = "a") -> TransitionRecord:
    return TransitionRecord(
        id_, StatusTransition(name, None, HealthStatus.HEALTHY, 1_800_000_000.0 + id_)
    )


class FakeStore:
    def __init__(self, records: list[TransitionRecord]) -> None:
        self.records = records
        self.reads = 0

    async def last_transition_id(self) -> int:
        return self.records[-1].id if self.records else 0

    async def latest_transitions(self) -> dict[str, TransitionRecord]:
        return {r.transition.service_name: r for r in self.records}

    async def transitions_after(
        self, after: int = 0, *, limit: int = 1000, service_names: Any = None
    ) -> list[TransitionRecord]:
        self.reads += 1
        found = [r for r in self.records if r.id > after]
        if service_names is not None:
            found = [r for r in found if r.transition.service_name in service_names]
        return found[:limit]

    async def service_names(self) -> list[str]:
        return sorted({r.transition.service_name for r in self.records})


async def test_ids_going_back_reset_the_cursor_and_wake_waiters() -> None:
    store = FakeStore([record(i) for i in range(1, 6)])
    feed = TransitionFeed(HealthMonitor(), store, poll=0.05)  # type: ignore[arg-type]
    await feed.start()
    try:
        assert feed.index == 5
        with feed.listening() as listener:
            store.records = [record(1, "b"), record(2, "b")]  # a new database
            assert await listener.wait(5)
        assert feed.index == 2
        assert feed.latest("b") == record(2, "b")
    finally:
        await feed.stop()
    assert feed.closed


async def test_the_memory_ring_and_the_store_give_the_same_pages() -> None:
    store = FakeStore([])
    feed = TransitionFeed(HealthMonitor(), store, keep=3, poll=0.05)  # type: ignore[arg-type]
    await feed.start()
    try:
        store.records = [record(i, "ab"[i % 2]) for i in range(1, 11)]
        with feed.listening() as listener:
            assert await listener.wait(5)
        assert feed.index == 10
        assert feed.recent_after(8, 10) == [record(9, "b"), record(10, "a")]
        assert feed.recent_after(6, 10) is None  # 7 is no longer in memory
        reads = store.reads
        from_memory = await feed.after(8, 10)
        assert store.reads == reads
        from_store = await feed.after(6, 10)
        assert store.reads == reads + 1
        assert from_memory == ([record(9, "b"), record(10, "a")], 10)
        assert from_store == ([record(7, "b"), record(8, "a"), *from_memory[0]], 10)
        # Filtered, a page with nothing of the service still moves the cursor on.
        assert await feed.after(9, 10, ["b"]) == ([], 10)
    finally:
        await feed.stop()


async def test_waiting_clients_are_woken_a_few_per_turn_of_the_loop() -> None:
    """Forty clients woken in one turn held the loop ~5 ms: a request arriving then
    waited for all of them. Woken a few per turn, it waits for a few; and not the same
    ones last each time."""
    store = FakeStore([record(1)])
    feed = TransitionFeed(HealthMonitor(), store, poll=3600)  # type: ignore[arg-type]
    await feed.start()
    try:
        with contextlib.ExitStack() as stack:
            listeners = [stack.enter_context(feed.listening()) for _ in range(12)]
            firsts = []
            for id_ in (2, 3):
                for listener in listeners:
                    listener.event.clear()
                store.records.append(record(id_))
                await feed._committed(record(id_).transition)  # type: ignore[arg-type]
                woken_by_turn: list[set[int]] = []
                while len(woken_by_turn) < 20 and sum(map(len, woken_by_turn)) < 12:
                    await asyncio.sleep(0)
                    woken = {i for i, listener in enumerate(listeners) if listener.event.is_set()}
                    woken_by_turn.append(woken.difference(*woken_by_turn))
                assert set().union(*woken_by_turn) == set(range(12))  # every one of them
                assert max(map(len, woken_by_turn)) <= 4, woken_by_turn  # never all at once
                assert feed.index == id_
                firsts.append(next(turn for turn in woken_by_turn if turn))
            assert firsts[0] != firsts[1]  # the next commit begins with others
    finally:
        await feed.stop()
