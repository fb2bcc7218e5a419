"""From observed statuses to a confirmed one: thresholds and the start period.

Kubernetes, Consul and load balancers do not act on one odd result: a service's
confirmed status moves to a worse status only after `failure_threshold`
consecutive results at that status or worse, and to a better one only after
`success_threshold` consecutive results at that status or better. Until the
first status is confirmed, the service is UNKNOWN. During a start period
(Docker's), failures do not count; the first healthy result ends it early.
"""

from __future__ import annotations

from healthmon.model import HealthStatus

__all__ = ["Confirmation"]


class Confirmation:
    """The confirmed status of one service, fed one observed status at a time."""

    __slots__ = (
        "_streak",
        "_streak_worse",
        "confirmed",
        "failure_threshold",
        "start_period_ends",
        "success_threshold",
    )

    def __init__(
        self,
        failure_threshold: int = 1,
        success_threshold: int = 1,
        *,
        confirmed: HealthStatus | None = None,
        start_period_ends: float | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.confirmed = confirmed
        """The last confirmed status; None before the first one."""
        self.start_period_ends = start_period_ends
        """Monotonic time at which the start period ends; None when there is none."""
        self._streak: list[HealthStatus] = []  # consecutive results on one side of confirmed
        self._streak_worse = False

    @property
    def current(self) -> HealthStatus:
        """The confirmed status, UNKNOWN until there is one."""
        return HealthStatus.UNKNOWN if self.confirmed is None else self.confirmed

    def observe(self, status: HealthStatus, now: float) -> bool:
        """Take one observed status at monotonic time `now`; True if `confirmed` changed."""
        if self.start_period_ends is not None:
            if status is not HealthStatus.HEALTHY and now < self.start_period_ends:
                return False  # a failure while starting does not count
            self.start_period_ends = None
        if status is self.confirmed:
            self._streak.clear()
            return False
        worse = (
            status is not HealthStatus.HEALTHY
            if self.confirmed is None
            else status.severity > self.confirmed.severity
        )
        if worse != self._streak_worse:
            self._streak.clear()
            self._streak_worse = worse
        self._streak.append(status)
        needed = self.failure_threshold if worse else self.success_threshold
        if len(self._streak) < needed:
            return False
        recent = self._streak[-needed:]
        # The status every one of them is at, or worse (better): the mildest (the worst).
        pick = min if worse else max
        self.confirmed = pick(recent, key=lambda s: s.severity)
        self._streak.clear()
        return True

    def force(self, status: HealthStatus) -> bool:
        """Set the confirmed status outright (e.g. an agent that vanished); True if it changed."""
        self._streak.clear()
        self.start_period_ends = None
        changed = status is not self.confirmed
        self.confirmed = status
        return changed
