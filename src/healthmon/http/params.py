"""Query parameters, checked: anything wrong is an ApiError (400) naming the parameter,
what was given and what is accepted. Unknown parameters are refused too, so that a
typo (`sinse=24h`) is not silently ignored."""

from __future__ import annotations

import argparse
import math
from collections.abc import Collection

from starlette.datastructures import QueryParams

from healthmon.cli.timearg import Moment, parse_duration
from healthmon.errors import ApiError

__all__ = ["Query", "bad_request"]

_MAX_INT = 2**63 - 1


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


class Query:
    """A request's query parameters, read one by one with their checks."""

    def __init__(self, params: QueryParams, allowed: Collection[str]) -> None:
        self._params = params
        unknown = sorted(set(params.keys()) - set(allowed))
        if unknown:
            known = ", ".join(sorted(allowed)) or "none"
            raise bad_request(f"unknown query parameter {unknown[0]!r}; this path takes: {known}")

    def text(self, name: str) -> str | None:
        values = self._params.getlist(name)
        if len(values) > 1:
            raise bad_request(f"{name} is given {len(values)} times; give it once")
        return values[0] if values else None

    def texts(self, name: str) -> list[str]:
        return self._params.getlist(name)

    def integer(self, name: str, *, minimum: int = 0, maximum: int = _MAX_INT) -> int | None:
        text = self.text(name)
        if text is None:
            return None
        stripped = text.strip()
        if not stripped.isdigit() and not (stripped.startswith("-") and stripped[1:].isdigit()):
            raise bad_request(f"{name} must be an integer, got {text!r}")
        value = int(stripped)
        if not minimum <= value <= maximum:
            raise bad_request(f"{name} must be between {minimum} and {maximum}, got {value}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        text = self.text(name)
        if text is None:
            return default
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise bad_request(f"{name} must be true or false, got {text!r}")

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        text = self.text(name)
        if text is None:
            return default
        if text not in choices:
            raise bad_request(f"{name} must be one of {', '.join(choices)}, got {text!r}")
        return text

    def seconds(self, name: str, *, maximum: float | None = None) -> float | None:
        """A duration: `30s`, `5m`, `1h30m`, or a plain number of seconds."""
        text = self.text(name)
        if text is None:
            return None
        try:
            value = float(text)
        except ValueError:
            try:
                value = parse_duration(text)
            except argparse.ArgumentTypeError as exc:
                raise bad_request(f"{name}: {exc}") from None
        if not (math.isfinite(value) and value > 0):
            raise bad_request(f"{name} must be a positive duration, got {text!r}")
        if maximum is not None and value > maximum:
            raise bad_request(f"{name} must be at most {maximum:g} s, got {text!r}")
        return value

    def moment(self, name: str, now: float) -> float | None:
        """A time: epoch seconds, an ISO 8601 time (UTC unless it has an offset), a
        duration ago (`24h`, `30m`, `7d`) or `now`, as the CLI's --since/--until."""
        text = self.text(name)
        if text is None:
            return None
        try:
            value = float(text)
        except ValueError:
            try:
                value = Moment(text).at(now)
            except (argparse.ArgumentTypeError, ValueError, OverflowError, OSError) as exc:
                raise bad_request(f"{name}: {exc}") from None
        if not math.isfinite(value):
            raise bad_request(f"{name} must be a finite time, got {text!r}")
        return value
