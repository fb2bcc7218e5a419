"""How a service is checked and judged: `CheckPolicy`, and its validation.

The monitor holds the defaults (`HealthMonitor(policy=...)`); a `ServiceDefinition`
overrides any of them per service. The defaults keep the seed's behaviour: 200 is
healthy, anything else unhealthy, every single flip is a transition.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "CheckPolicy",
    "parse_status_codes",
    "validate_interval",
]

DEFAULT_MAX_BODY_BYTES = 64 * 1024

_CODE_RANGE = re.compile(r"^(\d{3})\s*-\s*(\d{3})$")
_CODE_CLASS = re.compile(r"^([1-5])xx$", re.IGNORECASE)


def parse_status_codes(spec: str) -> frozenset[int]:
    """Codes from a spec like "200", "200-399" (Kubernetes' range), "2xx", "200,204,3xx"."""
    if not isinstance(spec, str):
        raise TypeError(f"success_codes must be a string like '200-399' or '2xx', got {spec!r}")
    codes: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        if part.isdigit() and len(part) == 3:
            low = high = int(part)
        elif match := _CODE_RANGE.match(part):
            low, high = int(match[1]), int(match[2])
        elif match := _CODE_CLASS.match(part):
            low = int(match[1]) * 100
            high = low + 99
        else:
            raise ValueError(
                f"success_codes: {part!r} is not a status code, range (200-399) or class (2xx)"
            )
        if not 100 <= low <= high <= 599:
            raise ValueError(f"success_codes: {part!r} is not within 100-599 in ascending order")
        codes.update(range(low, high + 1))
    return frozenset(codes)


def validate_interval(check_interval: float, *, where: str = "check_interval") -> float:
    """Return the interval as a float if it lies within 1-20 Hz, else raise ValueError."""
    if isinstance(check_interval, bool) or not isinstance(check_interval, int | float):
        raise TypeError(f"{where} must be a number of seconds, got {check_interval!r}")
    if not math.isfinite(check_interval) or not 0.05 <= check_interval <= 1.0:
        raise ValueError(
            f"{where} must be between 0.05 (20Hz) and 1.0 (1Hz) seconds, got {check_interval!r}"
        )
    return float(check_interval)


@dataclass(frozen=True, slots=True)
class CheckPolicy:
    """Check and judgement settings; every field is also a per-service override.

    - timeout: seconds for the whole check (connect, answer, body). At most one check
      per service is in flight, so a timeout longer than the interval makes the
      schedule skip the slots a hanging check overran (counted as missed).
    - success_codes: status codes that count as an answer ("200", "200-399", "2xx").
    - degraded_after_ms: a successful answer slower than this is DEGRADED.
    - failure_threshold / success_threshold: consecutive results needed to move the
      confirmed status to a worse status / back to a better one.
    - start_period: seconds after a service's checks start during which failures do
      not count; its status stays UNKNOWN until a healthy result or the period's end.
    - max_body_bytes: the most of a body that is read; a larger one is UNHEALTHY.
    - follow_redirects, trust_env (proxy settings from the environment), verify_tls.
    """

    timeout: float = 5.0
    success_codes: str = "200"
    degraded_after_ms: float | None = None
    failure_threshold: int = 1
    success_threshold: int = 1
    start_period: float = 0.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    follow_redirects: bool = False
    trust_env: bool = False
    verify_tls: bool = True
    codes: frozenset[int] = field(init=False, repr=False, compare=False)
    """`success_codes`, parsed."""

    def __post_init__(self) -> None:
        _positive_number("timeout", self.timeout)
        if self.degraded_after_ms is not None:
            _positive_number("degraded_after_ms", self.degraded_after_ms)
        _count("failure_threshold", self.failure_threshold)
        _count("success_threshold", self.success_threshold)
        _number("start_period", self.start_period, minimum=0.0)
        _count("max_body_bytes", self.max_body_bytes)
        for name in ("follow_redirects", "trust_env", "verify_tls"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be true or false, got {getattr(self, name)!r}")
        object.__setattr__(self, "codes", parse_status_codes(self.success_codes))

    def with_overrides(self, overrides: Any) -> CheckPolicy:
        """This policy with every field that `overrides` sets (not None) replaced."""
        changes = {
            f.name: value
            for f in fields(self)
            if f.init and (value := getattr(overrides, f.name, None)) is not None
        }
        return replace(self, **changes) if changes else self


def _number(name: str, value: object, *, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value!r}")


def _positive_number(name: str, value: object) -> None:
    _number(name, value, minimum=0.0)
    if value == 0:
        raise ValueError(f"{name} must be greater than 0, got {value!r}")


def _count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value!r}")
