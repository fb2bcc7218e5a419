"""Microseconds: the resolution of every time and duration healthmon stores.

The database keeps check times as integer epoch microseconds and response times as
integer microseconds (8 bytes and typically 2-3, where REAL seconds and milliseconds
took 8 each). Results and transitions are made on that grid (model.py), so a result read
back equals the one the monitor cached and its subscribers heard.

A time on the grid is the float nearest to k / 1e6 for an integer k; `to_us` gives
k back exactly (a float near 2e9 s is precise to ~0.24 us, well under half a step).
"""

from __future__ import annotations

import math

__all__ = [
    "MAX_US",
    "ms_on_grid",
    "ms_to_us",
    "seconds_on_grid",
    "storable",
    "to_seconds",
    "to_us",
    "us_at_or_after",
    "us_to_ms",
]

MAX_US = 2**62
"""Beyond any real time or duration (146,000 years); SQLite integers end at 2**63."""


def to_us(seconds: float) -> int:
    """Epoch seconds as the nearest whole microsecond (what is stored)."""
    return round(seconds * 1_000_000)


def to_seconds(us: int) -> float:
    """Stored microseconds as epoch seconds (the nearest float)."""
    return us / 1_000_000


def ms_to_us(ms: float) -> int:
    """Milliseconds as the nearest whole microsecond."""
    return round(ms * 1000)


def us_to_ms(us: int) -> float:
    return us / 1000


def seconds_on_grid(seconds: float) -> float:
    """The time as it will be stored and read back. What is not a finite number is
    left alone: the writer refuses to store it, and says so."""
    # to_seconds(to_us(seconds)), inlined: every result's time goes through here.
    return round(seconds * 1_000_000) / 1_000_000 if _finite(seconds) else seconds


def ms_on_grid(ms: float) -> float:
    """The duration as it will be stored and read back (see `seconds_on_grid`)."""
    return round(ms * 1000) / 1000 if _finite(ms) else ms  # us_to_ms(ms_to_us(ms))


def storable(value: float) -> bool:
    """A time or duration the database can hold (finite, within `MAX_US`)."""
    return _finite(value) and abs(value) * 1_000_000 < MAX_US


_NUMBERS = (float, int)  # a tuple: `float | int` would make a union object at each call


def _finite(value: object) -> bool:
    return isinstance(value, _NUMBERS) and math.isfinite(value)


def us_at_or_after(seconds: float) -> int:
    """The first stored time at or after `seconds`: the least k with k / 1e6 >= seconds.

    So `ts_us >= us_at_or_after(since)` holds exactly when the time read back is
    >= since, and `ts_us < us_at_or_after(until)` when it is < until: windows in SQL
    and in Python agree to the last bit.
    """
    scaled = seconds * 1_000_000
    if scaled >= MAX_US:
        return MAX_US
    if scaled <= -MAX_US:
        return -MAX_US
    k = math.ceil(scaled)  # off by one at most: the product is rounded
    while k / 1_000_000 < seconds:
        k += 1
    while (k - 1) / 1_000_000 >= seconds:
        k -= 1
    return k
