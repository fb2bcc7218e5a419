"""Health formats in response bodies: what a body says about the service.

- `application/health+json` (the IETF health-check draft): status pass/ok/up,
  warn, fail/error/down.
- Spring Boot Actuator: UP, DOWN, OUT_OF_SERVICE, UNKNOWN.
- A plain JSON `{"status": "ok" | "healthy" | "degraded" | "unhealthy" | ...}`.

Only a JSON object with a string `status` says anything; a body that cannot be
parsed, or says nothing we know, leaves the judgement to the status code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from healthmon.model import HealthStatus

__all__ = ["BodyReport", "read_body"]

_STATUS_WORDS: dict[str, HealthStatus] = {
    **dict.fromkeys(("pass", "ok", "up", "healthy"), HealthStatus.HEALTHY),
    **dict.fromkeys(("warn", "degraded"), HealthStatus.DEGRADED),
    **dict.fromkeys(
        ("fail", "error", "down", "unhealthy", "out_of_service"), HealthStatus.UNHEALTHY
    ),
    "unknown": HealthStatus.UNKNOWN,
}


@dataclass(frozen=True, slots=True)
class BodyReport:
    """What the body says: its JSON object (as details) and the status it reports."""

    details: dict[str, Any] | None
    status: HealthStatus | None = None
    said: str | None = None
    """How the error text quotes it, e.g. "health+json status fail"."""


def read_body(response: httpx.Response) -> BodyReport:
    """Parse a JSON body (application/json or any +json type) and find its status."""
    media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not (media_type == "application/json" or media_type.endswith("+json")):
        return BodyReport(details=None)
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):  # json.JSONDecodeError is a ValueError
        return BodyReport(details=None)
    if not isinstance(body, dict):
        return BodyReport(details=None)
    word = body.get("status")
    status = _STATUS_WORDS.get(word.strip().lower()) if isinstance(word, str) else None
    if status is None:
        return BodyReport(details=body)
    label = "health+json" if media_type == "application/health+json" else "body"
    return BodyReport(details=body, status=status, said=f"{label} status {word}")
