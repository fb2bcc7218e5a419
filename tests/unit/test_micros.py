"""Microseconds: times and latencies on the stored grid, and window bounds that agree
with the times read back to the last bit."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthmon import HealthCheckResult, HealthStatus, StatusTransition
from healthmon.micros import (
    MAX_US,
    ms_on_grid,
    ms_to_us,
    seconds_on_grid,
    storable,
    to_seconds,
    to_us,
    us_at_or_after,
)

QUICK = settings(max_examples=500, deadline=None, database=None)
epochs = st.floats(min_value=0, max_value=4e9)  # to 2096
stored = st.integers(min_value=0, max_value=4 * 10**15)


@QUICK
@given(t=epochs)
def test_a_time_on_the_grid_stays_there(t: float) -> None:
    on_grid = seconds_on_grid(t)
    assert abs(on_grid - t) <= 0.5e-6 + 2 * math.ulp(t)  # half a microsecond, and rounding
    assert seconds_on_grid(on_grid) == on_grid
    assert to_seconds(to_us(on_grid)) == on_grid


@QUICK
@given(us=stored)
def test_stored_microseconds_come_back_exactly(us: int) -> None:
    assert to_us(to_seconds(us)) == us


@QUICK
@given(ms=st.floats(min_value=0, max_value=1e8))
def test_a_latency_on_the_grid_stays_there(ms: float) -> None:
    assert ms_on_grid(ms_on_grid(ms)) == ms_on_grid(ms)
    assert ms_to_us(ms_on_grid(ms)) == ms_to_us(ms)


@QUICK
@given(bound=epochs, us=stored)
def test_bounds_in_microseconds_agree_with_the_times_read_back(bound: float, us: int) -> None:
    k = us_at_or_after(bound)
    assert to_seconds(k) >= bound > to_seconds(k - 1)
    assert (us >= k) == (to_seconds(us) >= bound)


def test_bounds_beyond_any_time_are_clamped() -> None:
    assert us_at_or_after(math.inf) == MAX_US
    assert us_at_or_after(-1e300) == -MAX_US


def test_what_the_database_cannot_hold_is_not_storable() -> None:
    assert storable(1.8e9)
    assert not storable(math.nan)
    assert not storable(math.inf)
    assert not storable(1e13)  # beyond 2**62 microseconds


def test_results_and_transitions_are_made_on_the_grid() -> None:
    result = HealthCheckResult("api", HealthStatus.HEALTHY, 1.23456789, 1.8e9 + 0.1234567891)
    assert result.response_time_ms == 1.235
    assert to_us(result.timestamp) == 1_800_000_000_123_457
    assert result.timestamp == to_seconds(1_800_000_000_123_457)
    change = StatusTransition("api", None, HealthStatus.HEALTHY, 1.8e9 + 0.1234567891)
    assert change.timestamp == result.timestamp
    assert HealthCheckResult("api", HealthStatus.HEALTHY, 25.5, 1000).timestamp == 1000.0


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_values_that_cannot_be_stored_are_left_for_the_writer_to_refuse(value: float) -> None:
    result = HealthCheckResult("api", HealthStatus.HEALTHY, value, value)
    assert math.isnan(result.timestamp) or math.isinf(result.timestamp)
