"""The status page's small parts: day bars as SVG paths and words, percentages, the
running histogram that the overview adds hours to and subtracts them from."""

from __future__ import annotations

import random

import pytest

from healthmon.http.pages.fleet import DAY, DayBar, _Bins, day_level
from healthmon.http.pages.views import _days_text, _paths, _pct
from healthmon.store import StatusCounts, sketch


def _bar(k: int, healthy: int, unhealthy: int = 0) -> DayBar:
    return DayBar(k * DAY, StatusCounts(healthy=healthy, unhealthy=unhealthy))


def test_day_levels() -> None:
    assert day_level(None) == "none"
    assert day_level(1.0) == "ok"
    assert day_level(0.999) == "ok"
    assert day_level(0.998) == "minor"
    assert day_level(0.95) == "major"
    assert day_level(0.5) == "down"


def test_neighbouring_days_of_one_colour_are_one_rectangle() -> None:
    bars = [_bar(0, 0), _bar(1, 0), _bar(2, 100), _bar(3, 100), _bar(4, 90, 10), _bar(5, 100)]
    paths = dict(_paths(bars))
    assert paths == {
        "none": "M0 0h2v10h-2z",
        "ok": "M2 0h2v10h-2zM5 0h1v10h-1z",
        "down": "M4 0h1v10h-1z",
    }
    assert _days_text(bars) == (
        "last 6 days: 4 observed, 1 below 99.9 % up; worst 1970-01-05: 90.000 %"
    )
    assert _days_text([_bar(0, 0)]) == "last 1 days: not observed"


def test_percentages_are_never_rounded_up_to_100() -> None:
    assert _pct(None) == "-"
    assert _pct(1.0) == "100 %"
    assert _pct(0.999999) == "99.999 %"
    assert _pct(0.5) == "50.000 %"


def test_the_running_histogram_adds_and_subtracts_exactly() -> None:
    rng = random.Random(7)
    blobs = []
    for _ in range(30):
        counts: dict[int, int] = {}
        for _ in range(200):
            index = sketch.bin_of(rng.lognormvariate(rng.uniform(0.5, 3), 0.6))
            counts[index] = counts.get(index, 0) + 1
        blobs.append(sketch.encode(counts))
    running = _Bins()
    for blob in blobs:
        running.add(blob)
    for blob in blobs[:12]:  # they leave the window
        running.add(blob, -1)
    expected = sketch.Histogram()
    for blob in blobs[12:]:
        expected.add_blob(blob)
    total = 200 * 18
    for p in (50, 95, 99):
        rank = -(-p * total // 100)
        assert running.percentile(p, _Bins()) == pytest.approx(expected.percentiles([rank])[0])
    # With a second set of counts (the current hour's minutes) taken together:
    minutes = _Bins()
    minutes.add(blobs[0])
    expected.add_blob(blobs[0])
    rank = -(-95 * (total + 200) // 100)
    assert running.percentile(95, minutes) == pytest.approx(expected.percentiles([rank])[0])
    assert _Bins().percentile(95, _Bins()) is None
