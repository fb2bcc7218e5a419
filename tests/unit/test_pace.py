"""healthmon/pace.py: long work on the loop let go by time, not by count."""

from __future__ import annotations

import asyncio
import time

import pytest

from healthmon.pace import Pace
from tests.conftest import LoopTurns

pytestmark = pytest.mark.asyncio


async def test_a_slice_is_due_once_its_budget_is_spent() -> None:
    started = time.perf_counter()
    pace = Pace(0.02)
    while not pace.due():
        pass
    assert time.perf_counter() - started >= 0.02
    assert not Pace(3600).due()


async def test_rest_lets_ready_work_run_and_starts_a_new_slice() -> None:
    ran = asyncio.Event()
    pace = Pace(3600)

    async def other() -> None:
        ran.set()

    task = asyncio.create_task(other())
    await asyncio.sleep(0.01)  # (the task ran here: let another one be ready)
    assert task.done()
    ran.clear()
    task = asyncio.create_task(other())
    await pace.rest()
    assert ran.is_set()  # the loop turned: what was ready ran
    assert not pace.due()  # an hour's budget again
    await task


async def test_a_budget_of_nothing_lets_go_after_each_step() -> None:
    pace = Pace(0.0)
    async with LoopTurns() as turns:
        for _ in range(50):
            assert pace.due()
            await pace.rest()
    assert turns.count >= 49
