"""What the monitor and its check workers say to each other, and how it is framed.

Each message is a pickled tuple behind a 4-byte big-endian length, over the child's
standard input (monitor -> worker) and a copy of its standard output (worker ->
monitor). Pickle is safe here: both ends are this package, in processes the monitor
started itself, talking over pipes nobody else holds.

Monitor -> worker:
    ("add", token, CheckOrder)   start a schedule; `token` names it from then on
    ("remove", token)     stop that schedule; an in-flight check is cancelled
    ("stop",)             cancel everything, send what is done, exit

Worker -> monitor:
    ("results", [(token, status, response_time_ms, timestamp, details, error,
                  answered, slot, missed), ...])
        `status` as HealthStatus' value, `slot` the check's due time (monotonic),
        `missed` its schedule's count of skipped slots so far
    ("log", level, event, fields)               a structlog event of the worker's
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from healthmon.policy import CheckPolicy

__all__ = ["CheckOrder", "ResultRow", "frame", "read_frame"]


@dataclass(frozen=True, slots=True)
class CheckOrder:
    """Check `url` every `interval` seconds from `start` (time.monotonic(): one clock
    for every process of the machine) under `policy`, sending `headers`.

    A start already past is moved to the next slot of the same phase; `resumed` (a
    schedule taken over from a worker that died) counts the slots so passed as missed.
    """

    name: str
    url: str
    interval: float
    start: float
    policy: CheckPolicy
    headers: Mapping[str, str] | None
    resumed: bool = False


ResultRow = tuple[
    int, str, float, float, dict[str, Any] | None, str | None, bool | None, float, int
]
"""One check's result as sent: token, status, response_time_ms, timestamp, details,
error, answered, its slot, missed slots of its schedule so far."""

_LENGTH = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
"""A frame longer than this is a broken stream, not a message (bodies are capped at
the policy's max_body_bytes, and a batch holds a few milliseconds of results)."""


def frame(message: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None at the end of the stream (the other end closed it).
    A stream cut mid-frame, or a length over MAX_FRAME, raises ValueError."""
    try:
        header = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ValueError("stream ended inside a frame's length") from exc
        return None
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes: over {MAX_FRAME}, the stream is broken")
    try:
        data = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise ValueError(f"stream ended inside a frame ({len(exc.partial)} of {length})") from exc
    try:
        message = pickle.loads(data)  # noqa: S301 - our own child, see above
    except Exception as exc:  # whatever unpickling raises, the stream is broken
        raise ValueError(f"undecodable frame: {exc!r}") from exc
    if not isinstance(message, tuple) or not message:
        raise ValueError(f"a frame holding {type(message).__name__}, not a message")
    return message
