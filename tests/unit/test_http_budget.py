"""The clients' read budget (http/budget.py): a few reads at once, and a bounded
share of the time however fast they are asked for."""

from __future__ import annotations

import asyncio

import pytest

from healthmon.http.budget import ReadBudget


async def _read(budget: ReadBudget, seconds: float) -> None:
    async with budget.turn():
        await asyncio.sleep(seconds)


@pytest.mark.asyncio
async def test_reads_within_the_burst_start_at_once() -> None:
    budget = ReadBudget(at_once=4, share=0.1, burst=1.0)
    await asyncio.gather(*(_read(budget, 0.01) for _ in range(4)))
    assert budget.waited == 0


@pytest.mark.asyncio
async def test_reads_asked_for_back_to_back_keep_to_their_share() -> None:
    budget = ReadBudget(at_once=1, share=0.5, burst=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(6):
        await _read(budget, 0.05)
    elapsed = loop.time() - started
    # 0.3 s of reading, 0.05 s of it from the burst: the rest earned at 0.5 s per s.
    assert elapsed >= (6 * 0.05 - 0.05) / 0.5
    assert budget.waited > 0


@pytest.mark.asyncio
async def test_no_more_than_at_once_read_together() -> None:
    budget = ReadBudget(at_once=2, share=1.0, burst=10.0)
    inside = most = 0

    async def read() -> None:
        nonlocal inside, most
        async with budget.turn():
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    reads = [asyncio.create_task(read()) for _ in range(6)]
    await asyncio.sleep(0)
    assert budget.queued == 4  # waiting for a slot
    await asyncio.gather(*reads)
    assert most == 2
    assert budget.queued == 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="share must be in"):
        ReadBudget(share=0)
    with pytest.raises(ValueError, match="at_once must be at least 1"):
        ReadBudget(at_once=0)
    with pytest.raises(ValueError, match="burst must be a positive number"):
        ReadBudget(burst=0)
