"""The per-service part of `/metrics`: ~11 samples a service, the bulk of the page
(~11,000 lines, 0.7 MB at 1,000 services), formatted once per change.

prometheus_client's `generate_latest` formats every sample of every scrape anew
(label escaping, name validation, a float's text: ~7 µs a sample, 75-90 ms at 1,000
services, all of it holding the GIL, hence the monitor's loop). Here each service's
lines are kept between scrapes with what they were made from (its latest result, its
`since`, its counts, its missed slots: a new result is a new object, so a service
not checked since the last scrape is recognised by identity) and only the services
that changed are formatted again, in slices of half a millisecond with the loop let
go in between (healthmon/pace.py). The text is the same as prometheus_client's: its
float formatting (`floatToGoString`), its label escaping, labels sorted by name,
`_total` on counters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import utils

from healthmon.model import HealthCheckResult, HealthStatus
from healthmon.pace import Pace

__all__ = ["FAMILIES", "ServiceSamples"]


def _value(value: float) -> str:
    """A sample's value as prometheus_client writes it (Go's float formatting)."""
    text: str = utils.floatToGoString(value)  # type: ignore[no-untyped-call]  # untyped upstream
    return text


_SUCCEEDED = {HealthStatus.HEALTHY, HealthStatus.DEGRADED}


@dataclass(frozen=True, slots=True)
class _Family:
    name: str  # as exposed (counters with `_total`)
    kind: str
    help: str

    @property
    def header(self) -> str:
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n"


FAMILIES = (
    _Family(
        "healthmon_service_status",
        "gauge",
        "Confirmed status of the service: 1 for the status it has, 0 for the others.",
    ),
    _Family(
        "healthmon_service_status_since_timestamp_seconds",
        "gauge",
        "When the service's confirmed status last changed (committed transition), epoch seconds.",
    ),
    _Family(
        "healthmon_service_check_success",
        "gauge",
        "Whether the service's last check succeeded (healthy or degraded): 1 or 0.",
    ),
    _Family(
        "healthmon_service_check_duration_seconds",
        "gauge",
        "Response time of the service's last check.",
    ),
    _Family(
        "healthmon_service_last_check_timestamp_seconds",
        "gauge",
        "When the service's last check completed, epoch seconds.",
    ),
    _Family(
        "healthmon_service_checks_total",
        "counter",
        "Check results recorded since the monitor started, by observed status.",
    ),
    _Family(
        "healthmon_service_missed_checks_total",
        "counter",
        "Scheduled checks skipped because the previous check overran their slot.",
    ),
)
"""The per-service families, in the page's order."""

_Key = tuple[HealthCheckResult | None, float | None, tuple[int, ...], int | None]


class _Lines:
    __slots__ = ("key", "lines")

    def __init__(self, key: _Key, lines: tuple[str, ...]) -> None:
        self.key = key
        self.lines = lines  # one string per family (several lines, or none)


class ServiceSamples:
    """Every service's lines of the per-service families, kept between scrapes."""

    def __init__(self) -> None:
        self._kept: dict[str, _Lines] = {}
        self._labels: dict[str, str] = {}  # name -> its escaped `service="..."`
        self.formatted = 0
        """Services formatted by the last `text()` (the others' lines were reused)."""

    async def text(
        self,
        results: Mapping[str, HealthCheckResult],
        since: Mapping[str, float],
        counts: Mapping[str, Mapping[HealthStatus, int]],
        missed: Mapping[str, int],
        pace: Pace | None = None,
    ) -> str:
        """The families' text for these services (the monitor's cache, when each
        one's status last changed, results by status, missed slots), made a slice at
        a time as `pace` (the caller's, or one of its own) tells."""
        pace = Pace() if pace is None else pace
        names = [*results, *(name for name in missed if name not in results)]
        kept, fresh = self._kept, {}
        formatted = 0
        for name in names:
            if pace.due():
                await pace.rest()  # the checks due meanwhile run now
            result = results.get(name)
            count = counts.get(name)
            key = (
                result,
                since.get(name),
                () if count is None else tuple(count.values()),
                missed.get(name),
            )
            entry = kept.get(name)
            if entry is None or entry.key != key:
                entry = _Lines(key, self._format(name, key, count))
                formatted += 1
            fresh[name] = entry
        # Services gone since are forgotten with their lines.
        self._kept = fresh
        if len(self._labels) > 2 * len(fresh) + 100:
            self._labels = {name: self._labels[name] for name in fresh if name in self._labels}
        self.formatted = formatted
        entries = list(fresh.values())
        parts = []
        for i, family in enumerate(FAMILIES):  # ~0.1 ms a family at 1,000 services
            if pace.due():
                await pace.rest()
            parts.append(family.header + "".join(entry.lines[i] for entry in entries))
        return "".join(parts)

    def _label(self, name: str) -> str:
        label = self._labels.get(name)
        if label is None:
            escaped = name.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
            label = self._labels[name] = f'service="{escaped}"'
        return label

    def _format(
        self, name: str, key: _Key, count: Mapping[HealthStatus, int] | None
    ) -> tuple[str, ...]:
        result, since, _, missed = key
        label = self._label(name)
        status = since_line = success = latency = last = checks = missed_line = ""
        if result is not None:
            current = result.effective_status
            status = "".join(
                f'healthmon_service_status{{{label},status="{value.value}"}} '
                f"{'1.0' if value is current else '0.0'}\n"
                for value in HealthStatus
            )
            if since is not None:
                since_line = (
                    f"healthmon_service_status_since_timestamp_seconds{{{label}}} {_value(since)}\n"
                )
            success = (
                f"healthmon_service_check_success{{{label}}} "
                f"{'1.0' if result.status in _SUCCEEDED else '0.0'}\n"
            )
            latency = (
                f"healthmon_service_check_duration_seconds{{{label}}} "
                f"{_value(result.response_time_ms / 1000)}\n"
            )
            last = (
                f"healthmon_service_last_check_timestamp_seconds{{{label}}} "
                f"{_value(result.timestamp)}\n"
            )
            # Statuses a service never had are left out (a quarter of the page each).
            checks = "".join(
                f'healthmon_service_checks_total{{{label},status="{value.value}"}} {_value(n)}\n'
                for value, n in (count or {}).items()
                if n
            )
        if missed is not None:
            missed_line = f"healthmon_service_missed_checks_total{{{label}}} {_value(missed)}\n"
        return (status, since_line, success, latency, last, checks, missed_line)
