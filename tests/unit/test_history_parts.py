"""The history's pure parts: histograms, window plans, settings."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthmon import HealthCheckResult, HealthStatus, HealthStore, Retention
from healthmon.store import sketch
from healthmon.store.plan import RAW, Coverage, plan
from healthmon.store.rollup import Rollup, is_answered

QUICK = settings(max_examples=300, deadline=None, database=None)
latencies = st.floats(min_value=0.001, max_value=1e7, allow_nan=False, allow_infinity=False)


@QUICK
@given(latency=latencies)
def test_a_bin_estimates_its_values_within_one_percent(latency: float) -> None:
    estimate = sketch.estimate(sketch.bin_of(latency))
    assert abs(estimate - latency) <= sketch.RELATIVE_ERROR * latency * (1 + 1e-12)
    assert sketch.RELATIVE_ERROR < 0.01


def test_latencies_under_a_microsecond_count_as_zero() -> None:
    assert sketch.bin_of(0.0) == sketch.bin_of(0.0009) == sketch.ZERO_BIN
    assert sketch.estimate(sketch.ZERO_BIN) == 0.0


@QUICK
@given(
    first=st.dictionaries(st.integers(-400, 900), st.integers(1, 10**6), max_size=40),
    second=st.dictionaries(st.integers(-400, 900), st.integers(1, 10**6), max_size=40),
)
def test_blobs_add_bin_by_bin(first: dict[int, int], second: dict[int, int]) -> None:
    merged = sketch.merge_blobs(sketch.encode(first), sketch.encode(second))
    low, counts = sketch.decode(merged)
    got = {low + i: count for i, count in enumerate(counts) if count}
    expected = {k: first.get(k, 0) + second.get(k, 0) for k in first.keys() | second.keys()}
    assert got == expected


@QUICK
@given(values=st.lists(latencies, min_size=1, max_size=300), p=st.sampled_from([50, 90, 99]))
def test_histogram_percentiles_are_within_one_percent_of_the_nearest_rank(
    values: list[float], p: int
) -> None:
    half = len(values) // 2
    stored: dict[int, int] = {}  # one half as an aggregate's blob, the rest as raw values
    for value in values[:half]:
        stored[sketch.bin_of(value)] = stored.get(sketch.bin_of(value), 0) + 1
    histogram = sketch.Histogram()
    histogram.add_blob(sketch.encode(stored))
    other = sketch.Histogram()
    other.add_latencies(values[half:])
    histogram.extend(other)
    rank = math.ceil(p * len(values) / 100)
    (estimate,) = histogram.percentiles([rank])
    expected = sorted(values)[rank - 1]
    assert abs(estimate - expected) <= sketch.RELATIVE_ERROR * expected * (1 + 1e-12)


times = st.floats(min_value=1.8e9, max_value=1.8e9 + 3 * 86400)
marks = st.one_of(st.just(-math.inf), times)


@QUICK
@given(a=times, b=times, raw=marks, minute=marks, hour=marks, day=marks)
def test_plans_tile_the_window_with_answerable_pieces(
    a: float, b: float, *, raw: float, minute: float, hour: float, day: float
) -> None:
    since, until = min(a, b), max(a, b)
    coverage = Coverage(
        raw=max(raw, minute, hour, day),
        minute=max(minute, hour, day),
        hour=max(hour, day),
        day=day,
    )
    p = plan(since, until, coverage)
    assert since <= p.since <= p.until <= until
    if since >= coverage.raw:
        assert (p.since, p.until) == (since, until)
    t = p.since
    for piece in p.pieces:
        assert piece.start == t < piece.end
        t = piece.end
        if piece.tier == RAW:
            assert piece.start >= coverage.raw
        else:
            width = piece.tier
            assert piece.start % width == 0
            assert piece.end % width == 0
            tier = {60: "minute", 3600: "hour", 86400: "day"}[width]
            assert piece.start >= getattr(coverage, tier)
    assert t == p.until
    # Nothing that could be answered is left out at the start.
    assert p.since - since < 3600 or since < coverage.hour or p.since == until


def test_plans_read_hours_in_the_middle_and_raw_results_at_the_edges() -> None:
    p = plan(1_800_000_010.5, 1_800_007_290.0, Coverage())
    assert [(piece.tier, piece.start, piece.end) for piece in p.pieces] == [
        (RAW, 1_800_000_010.5, 1_800_000_060),
        (60, 1_800_000_060, 1_800_003_600),
        (3600, 1_800_003_600, 1_800_007_200),
        (60, 1_800_007_200, 1_800_007_260),
        (RAW, 1_800_007_260, 1_800_007_290.0),
    ]


@QUICK
@given(a=times, b=times, minute_until=times, hour_until=times, day_until=times)
def test_plans_use_aggregates_only_before_the_writers_open_buckets(
    a: float, b: float, *, minute_until: float, hour_until: float, day_until: float
) -> None:
    since, until = min(a, b), max(a, b)
    hour_until = min(hour_until, minute_until)
    coverage = Coverage(
        minute_until=minute_until, hour_until=hour_until, day_until=min(day_until, hour_until)
    )
    p = plan(since, until, coverage)
    assert (p.since, p.until) == (since, until)
    t = since
    for piece in p.pieces:
        assert piece.start == t < piece.end
        t = piece.end
        if piece.tier == 60:
            assert piece.end <= coverage.minute_until
        elif piece.tier == 3600:
            assert piece.end <= coverage.hour_until
        elif piece.tier == 86400:
            assert piece.end <= coverage.day_until
    assert t == until


def test_plans_read_days_in_the_middle_of_long_windows() -> None:
    """90 days from a time in the day: the whole days from result_days (89 rows a
    service, not 2,136 hour rows), hours and minutes around them."""
    day = 1_800_000_000 // 86_400 * 86_400
    since = day + 7290.5
    p = plan(since, since + 90 * 86_400, Coverage())
    assert [(piece.tier, piece.start, piece.end) for piece in p.pieces] == [
        (RAW, since, day + 7320),
        (60, day + 7320, day + 10_800),
        (3600, day + 10_800, day + 86_400),
        (86400, day + 86_400, day + 90 * 86_400),
        (3600, day + 90 * 86_400, day + 90 * 86_400 + 7200),
        (60, day + 90 * 86_400 + 7200, day + 90 * 86_400 + 7260),
        (RAW, day + 90 * 86_400 + 7260, since + 90 * 86_400),
    ]


def test_a_long_window_without_aggregates_is_planned_in_one_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new database (no minute or hour closed yet): 90 days of raw results are one
    piece, planned at once, not a minute at a time (130,000 turns, 0.6 s of the loop)."""
    from healthmon.store import plan as planning  # noqa: PLC0415

    turns = 0
    real = planning._next

    def counted(t: float, width: int) -> float:
        nonlocal turns
        turns += 1
        return real(t, width)

    monkeypatch.setattr(planning, "_next", counted)
    coverage = Coverage(
        raw=0.0, minute=0.0, hour=0.0, minute_until=0.0, hour_until=0.0, day=0.0, day_until=0.0
    )
    p = plan(1_800_000_000.5, 1_800_000_000.5 + 90 * 86400, coverage)
    assert [(piece.tier, piece.start, piece.end) for piece in p.pieces] == [
        (RAW, 1_800_000_000.5, 1_800_000_000.5 + 90 * 86400)
    ]
    assert turns <= 2


@pytest.mark.parametrize(
    ("error", "answered"),
    [
        (None, True),
        ("HTTP 503", True),
        ("timeout after 500 ms", False),
        ("connection refused", False),
        ("body status DOWN", True),
        ("health+json status fail", True),
        ("body over 65536 bytes", True),
        ("too many redirects", True),
        ("connection closed mid-body", True),
    ],
)
def test_answered_means_the_target_answered(error: str | None, answered: bool) -> None:
    # For a result that does not say (made outside the probe): by its error's form.
    status = HealthStatus.HEALTHY if error is None else HealthStatus.UNHEALTHY
    assert is_answered(HealthCheckResult("api", status, 1.0, 0.0, error=error)) is answered


def test_a_result_that_says_is_taken_at_its_word() -> None:
    said = HealthCheckResult("api", HealthStatus.UNHEALTHY, 1.0, 0.0, error="x", answered=True)
    assert is_answered(said)
    assert not is_answered(HealthCheckResult("api", HealthStatus.HEALTHY, 1, 0, answered=False))


def test_a_degraded_result_with_an_error_text_still_has_a_latency() -> None:
    result = HealthCheckResult("api", HealthStatus.DEGRADED, 80.0, 0.0, error="slow: 80 ms")
    assert is_answered(result)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"raw": 0}, "retention raw must be a positive"),
        ({"hour": -1.0}, "retention hour must be a positive"),
        ({"raw": 10 * 86400, "minute": 86400}, r"raw <= minute <= hour"),
        ({"minute": 500 * 86400}, r"raw <= minute <= hour"),
    ],
)
def test_retention_refuses_nonsense(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Retention(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gap_after": 0}, "gap_after must be a positive"),
        ({"prune_batch": 0}, "prune_batch must be at least 1"),
        ({"prune_interval": -5}, "prune_interval must be positive"),
    ],
)
def test_history_settings_are_checked_when_the_store_is_made(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        HealthStore("health.db", **kwargs)
    with pytest.raises(ValueError, match=message):
        Rollup(**kwargs)


def test_the_late_log_names_rows_per_commit_and_says_when_it_forgot() -> None:
    from healthmon.store.late import LateChanges  # noqa: PLC0415

    log = LateChanges(keep=4)
    assert (log.version, log.after(0)) == (0, [])
    log.add([(60, 1, 120), (3600, 1, 0)])
    log.add([])  # nothing changed: no version
    log.add([(86400, 2, 0)])
    assert log.version == 2
    assert log.after(0) == [(60, 1, 120), (3600, 1, 0), (86400, 2, 0)]
    assert log.after(1) == [(86400, 2, 0)]
    assert log.after(2) == []
    log.add([(60, 3, 60), (60, 3, 120)])  # 5 rows kept > 4: the first commit forgotten
    assert log.after(0) is None  # a reader at 0 must read everything again
    assert log.after(1) == [(86400, 2, 0), (60, 3, 60), (60, 3, 120)]
    with pytest.raises(ValueError, match="keep"):
        LateChanges(keep=0)
