"""The latest-result cache that cluster queries read.

A mapping of service name -> latest result that keeps a count per status as it
changes, so the cluster status is a lookup in four counters rather than a scan of
every service (the orchestrator asks many times a second).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, KeysView, Mapping, MutableMapping

from healthmon.model import HealthCheckResult, HealthStatus

__all__ = ["HealthCache"]

# Worst first: the first status with a non-zero count is the cluster's.
_WORST_FIRST = sorted(HealthStatus, key=lambda status: status.severity, reverse=True)


class HealthCache(MutableMapping[str, HealthCheckResult]):
    """Latest result per service, with the worst status kept up to date.

    A result counts at its `effective_status`: confirmed when the monitor set one.
    """

    __slots__ = ("_counts", "_results")

    def __init__(
        self,
        results: Mapping[str, HealthCheckResult] | Iterable[tuple[str, HealthCheckResult]] = (),
    ) -> None:
        self._results: dict[str, HealthCheckResult] = {}
        self._counts: Counter[HealthStatus] = Counter()
        self.update(results)

    def __getitem__(self, name: str) -> HealthCheckResult:
        return self._results[name]

    def __setitem__(self, name: str, result: HealthCheckResult) -> None:
        if not isinstance(result, HealthCheckResult):
            raise TypeError(f"health_cache values must be HealthCheckResult, got {result!r}")
        previous = self._results.get(name)
        if previous is not None:
            self._counts[previous.effective_status] -= 1
        self._results[name] = result
        self._counts[result.effective_status] += 1

    def __delitem__(self, name: str) -> None:
        result = self._results.pop(name)
        self._counts[result.effective_status] -= 1

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    # The dict's own, not the mixins' (each a Python-level call per name): the HTTP
    # face asks these per request, of every service.
    def __contains__(self, name: object) -> bool:
        return name in self._results

    def keys(self) -> KeysView[str]:
        return self._results.keys()

    def __repr__(self) -> str:
        return f"HealthCache({self._results!r})"

    def copy(self) -> dict[str, HealthCheckResult]:
        """A plain dict snapshot; later checks do not change it."""
        return self._results.copy()

    def worst_status(self) -> HealthStatus:
        """UNHEALTHY > DEGRADED > UNKNOWN > HEALTHY; UNKNOWN when empty."""
        for status in _WORST_FIRST:
            if self._counts[status]:
                return status
        return HealthStatus.UNKNOWN

    def counts(self) -> dict[HealthStatus, int]:
        """How many services are at each (effective) status."""
        return {status: self._counts[status] for status in HealthStatus}
