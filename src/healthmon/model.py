"""The values healthmon passes around: statuses, check results, transitions, services.

Pure data with validation; nothing here does I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "HealthCheckResult",
    "HealthStatus",
    "ServiceDefinition",
    "StatusTransition",
    "redact_url",
    "worst_status",
]


class HealthStatus(Enum):
    """A service's health. Values are the seed's lower-case names."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DEGRADED = "degraded"
    UNKNOWN = "unknown"

    @property
    def severity(self) -> int:
        """Rank for "worst wins": HEALTHY 0 < UNKNOWN 1 < DEGRADED 2 < UNHEALTHY 3."""
        return _SEVERITY[self]


_SEVERITY = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.UNKNOWN: 1,
    HealthStatus.DEGRADED: 2,
    HealthStatus.UNHEALTHY: 3,
}


def worst_status(statuses: Any) -> HealthStatus:
    """The most severe of `statuses` (an iterable); UNKNOWN when there are none."""
    return max(statuses, key=_SEVERITY.__getitem__, default=HealthStatus.UNKNOWN)


@dataclass(frozen=True, slots=True)
class HealthCheckResult:
    """One observation of a service's health.

    `timestamp` is wall-clock UTC epoch seconds taken when the check completed;
    `response_time_ms` is measured on the monotonic clock.
    """

    service_name: str
    status: HealthStatus
    response_time_ms: float
    timestamp: float
    details: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StatusTransition:
    """A change of a service's status; `from_status` is None for its first status.

    `cause` is the error of the result that caused the change (None when it
    recovered), so that "why did it go down" is answered by the transition alone.
    """

    service_name: str
    from_status: HealthStatus | None
    to_status: HealthStatus
    timestamp: float
    cause: str | None = None


@dataclass(slots=True)
class ServiceDefinition:
    """A service the monitor knows of.

    The first five fields are the seed's. A service without `health_check_url` is
    registered but not probed (its health may come from elsewhere, e.g. an agent).
    """

    name: str
    service_type: str
    module_path: str
    dependencies: list[str] = field(default_factory=list)
    health_check_url: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"service name must be a non-empty string, got {self.name!r}")
        if self.name != self.name.strip():
            raise ValueError(f"service name {self.name!r} has leading or trailing spaces")
        if self.health_check_url is not None:
            validate_http_url(self.health_check_url, where=f"service {self.name!r}")


def validate_http_url(url: str, *, where: str) -> None:
    """Raise ValueError unless `url` is an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check: "http://h:x/" raises here
    except ValueError as exc:
        raise ValueError(f"{where}: health_check_url is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError(
            f"{where}: health_check_url must use http or https, got {redact_url(url)!r}"
        )
    if not parts.hostname:
        raise ValueError(f"{where}: health_check_url has no host: {redact_url(url)!r}")


def redact_url(url: str) -> str:
    """`url` with any user:password replaced by '***', for logs, errors and storage."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"***@{host}" + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def validate_interval(check_interval: float, *, where: str = "check_interval") -> float:
    """Return `check_interval` if it lies within 1-20 Hz, else raise ValueError."""
    if isinstance(check_interval, bool) or not isinstance(check_interval, int | float):
        raise TypeError(f"{where} must be a number of seconds, got {check_interval!r}")
    if not math.isfinite(check_interval) or not 0.05 <= check_interval <= 1.0:
        raise ValueError(
            f"{where} must be between 0.05 (20Hz) and 1.0 (1Hz) seconds, got {check_interval!r}"
        )
    return float(check_interval)
