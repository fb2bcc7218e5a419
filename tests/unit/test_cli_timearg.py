"""Times on the command line and how reports show them."""

from __future__ import annotations

import argparse

import pytest

from healthmon.cli.timearg import parse_duration, parse_moment
from healthmon.render import chart_bucket, duration, iso

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), ("1h30m", 5400), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_moment(text).at(NOW) == NOW - seconds


@pytest.mark.parametrize("text", ["", "10", "1x", "h", "1h 30m", "-5m", "yesterday"])
def test_not_a_duration(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        parse_duration(text)


def test_moments() -> None:
    assert parse_moment("now").at(NOW) == NOW
    assert parse_moment("2023-11-14T22:13:20").at(0) == NOW  # UTC unless an offset says
    assert parse_moment("2023-11-14T23:13:20+01:00").at(0) == NOW
    with pytest.raises(argparse.ArgumentTypeError, match="neither a duration ago"):
        parse_moment("yesterday")


def test_shown_times() -> None:
    assert iso(NOW + 0.125) == "2023-11-14T22:13:20.125Z"
    assert iso(None) is None
    assert [duration(s) for s in (0.25, 42, 312, 3 * 3600 + 240, 2 * 86400 + 3 * 3600)] == [
        "0.2 s",
        "42 s",
        "5m12s",
        "3h04m",
        "2d03h",
    ]
    assert [chart_bucket(s) for s in (5, 600, 3600, 86400, 30 * 86400)] == [
        0.1,
        10,
        60,
        1800,
        43200,
    ]
