"""Times on the command line: `--since 24h`, `--until 2026-11-29T18:00`, and how times
are shown (UTC, ISO 8601)."""

from __future__ import annotations

import argparse
import re
import time
from datetime import UTC, datetime

__all__ = ["Moment", "ago", "duration", "iso", "parse_duration", "parse_moment"]

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


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with millisecond precision, e.g. 2026-11-29T18:00:00.125Z."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def duration(seconds: float) -> str:
    """A short human duration: 0.3 s, 42 s, 5m12s, 3h04m, 2d03h."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def ago(ts: float, now: float | None = None) -> str:
    """`duration(now - ts) + " ago"`."""
    now = time.time() if now is None else now
    return f"{duration(max(0.0, now - ts))} ago"
