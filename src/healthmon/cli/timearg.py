"""Times on the command line: `--since 24h`, `--until 2026-11-29T18:00`, `30s`."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime

__all__ = ["Moment", "parse_duration", "parse_moment"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `90s`, `15m`, `24h`, `7d` or `1h30m`."""
    spec = text.strip().lower()
    parts = _DURATION.findall(spec)
    if not spec or "".join(number + unit for number, unit in parts) != spec:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; use a number and a unit (ms, s, m, h, d, w), "
            "e.g. 30s, 15m, 24h, 7d or 1h30m"
        )
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


class Moment:
    """A point in time given relative to now (a duration ago) or absolutely."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._absolute: float | None = None
        self._ago: float | None = None
        if text.strip().lower() == "now":
            self._ago = 0.0
            return
        try:
            self._ago = parse_duration(text)
            return
        except argparse.ArgumentTypeError:
            pass
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither a duration ago (e.g. 24h, 30m, 7d) nor a date and time "
                "(e.g. 2026-11-29T18:00, 2026-11-29T18:00+01:00; UTC unless an offset is given)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        self._absolute = moment.timestamp()

    def at(self, now: float) -> float:
        """The moment as epoch seconds, a relative one taken back from `now`."""
        if self._absolute is not None:
            return self._absolute
        assert self._ago is not None
        return now - self._ago

    def __repr__(self) -> str:
        return f"Moment({self.text!r})"


def parse_moment(text: str) -> Moment:
    """argparse type for `--since`/`--until`."""
    return Moment(text)
