"""The confirmed status on exact sequences of observed statuses."""

from __future__ import annotations

import pytest

from healthmon import HealthStatus
from healthmon.confirm import Confirmation

H, U, D, K = (
    HealthStatus.HEALTHY,
    HealthStatus.UNHEALTHY,
    HealthStatus.DEGRADED,
    HealthStatus.UNKNOWN,
)


def confirmed_after_each(
    observed: list[HealthStatus], failures: int = 1, successes: int = 1
) -> list[HealthStatus]:
    confirmation = Confirmation(failures, successes)
    out = []
    for status in observed:
        confirmation.observe(status, now=0.0)
        out.append(confirmation.current)
    return out


@pytest.mark.parametrize(
    ("observed", "failures", "successes", "confirmed"),
    [
        # defaults (1/1) follow every result: the seed's behaviour
        ([H, U, H, D], 1, 1, [H, U, H, D]),
        # the example: one transition, at the third consecutive U
        ([H, H, U, U, H, U, U, U], 3, 1, [H, H, H, H, H, H, H, U]),
        # a worse streak of mixed statuses confirms the mildest of them
        ([H, U, D, U], 3, 1, [H, H, H, D]),
        # recovery needs its own streak; a failure in between restarts it
        ([U, H, U, H, H], 1, 2, [U, U, U, U, H]),
        # partial recovery: D, H after U with success threshold 2 -> the worse of the two
        ([U, D, H], 1, 2, [U, U, D]),
        # nothing confirmed yet: UNKNOWN until a status meets its threshold
        ([U, U, U], 3, 1, [K, K, U]),
        ([H, H], 1, 2, [K, H]),
    ],
)
def test_sequences(
    observed: list[HealthStatus],
    failures: int,
    successes: int,
    confirmed: list[HealthStatus],
) -> None:
    assert confirmed_after_each(observed, failures, successes) == confirmed


def test_start_period_ignores_failures_until_healthy_or_its_end() -> None:
    confirmation = Confirmation(1, 1, start_period_ends=10.0)
    assert not confirmation.observe(U, now=1.0)
    assert confirmation.current is K
    assert confirmation.observe(H, now=2.0)  # a healthy result ends the period
    assert confirmation.observe(U, now=3.0)  # ...after which failures count
    assert confirmation.current is U

    ended = Confirmation(1, 1, start_period_ends=10.0)
    assert not ended.observe(U, now=9.9)
    assert ended.observe(U, now=10.0)
    assert ended.current is U


def test_a_confirmed_status_from_before_carries_over() -> None:
    confirmation = Confirmation(3, 1, confirmed=U)
    assert not confirmation.observe(U, now=0.0)  # no change, no transition
    assert confirmation.observe(H, now=0.0)
    assert confirmation.current is H


def test_force() -> None:
    confirmation = Confirmation(5, 5, confirmed=H)
    assert confirmation.force(K)
    assert not confirmation.force(K)
    assert confirmation.current is K
