"""Fixed-rate slots: no drift from the checks' duration, missed slots skipped."""

from __future__ import annotations

import asyncio

import pytest

from healthmon.schedule import FixedRateSchedule


@pytest.mark.asyncio
async def test_slots_do_not_drift_with_the_checks_duration() -> None:
    schedule = FixedRateSchedule(0.05)
    start = schedule.next_slot
    slots = []
    for _ in range(5):
        slots.append(await schedule.wait())
        await asyncio.sleep(0.02)  # the "check" takes 40 % of the interval
    assert slots == pytest.approx([start + k * 0.05 for k in range(5)], abs=1e-9)
    assert schedule.missed == 0


@pytest.mark.asyncio
async def test_overrun_skips_and_counts_missed_slots() -> None:
    loop = asyncio.get_running_loop()
    schedule = FixedRateSchedule(0.1, start=loop.time())
    first = await schedule.wait()
    # Pretend the check took 2.5 intervals: slots first+0.1 and first+0.2 have passed.
    schedule_late = FixedRateSchedule(0.1, start=first - 0.25)
    slot = await schedule_late.wait()
    assert schedule_late.missed == 2
    assert slot == pytest.approx(first - 0.05)  # the last passed slot, less than 1 late
    assert schedule_late.next_slot == pytest.approx(first + 0.05)


def test_interval_must_be_positive() -> None:
    async def make() -> None:
        FixedRateSchedule(0)

    with pytest.raises(ValueError, match="positive"):
        asyncio.run(make())
