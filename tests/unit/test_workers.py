"""Check workers' parts that need no process: the wire format, the settings' checks,
the child's log forwarding."""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

import pytest
import structlog

from healthmon import HealthMonitor
from healthmon.policy import CheckPolicy
from healthmon.workers import CheckOrder, child
from healthmon.workers.child import _forwarder
from healthmon.workers.wire import MAX_FRAME, frame, read_frame


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


@pytest.mark.asyncio
async def test_frames_come_back_as_sent() -> None:
    order = CheckOrder("svc", "http://127.0.0.1:1/h", 0.05, 12.5, CheckPolicy(timeout=2.0), None)
    sent = [("add", 1, order), ("results", [(1, "healthy", 1.5, 2.0, None, None, True, 3.0, 0)])]
    reader = _reader(b"".join(frame(message) for message in sent))
    assert [await read_frame(reader), await read_frame(reader)] == sent
    assert await read_frame(reader) is None  # the end of the stream, between frames


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("data", "text"),
    [
        (frame(("stop",))[:2], "inside a frame's length"),
        (frame(("stop",))[:-1], "inside a frame"),
        (struct.pack(">I", MAX_FRAME + 1), "over"),
    ],
)
async def test_a_broken_stream_is_an_error_not_an_end(data: bytes, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        await read_frame(_reader(data))


@pytest.mark.parametrize(
    ("count", "error", "text"),
    [
        (-1, ValueError, "between 0"),
        (65, ValueError, "between 0"),
        (True, TypeError, "whole number"),
        ("2", TypeError, "whole number"),
        (1.5, TypeError, "whole number"),
    ],
)
def test_bad_worker_counts_are_refused(count: object, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        HealthMonitor(check_workers=count)  # type: ignore[arg-type]  # what is refused


class _Worker:
    def __init__(self) -> None:
        self.logged: list[tuple[str, str, dict[str, Any]]] = []

    def log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        self.logged.append((level, event, fields))


def test_the_childs_events_go_to_the_monitor_as_plain_values() -> None:
    worker = _Worker()
    forward = _forwarder(worker)  # type: ignore[arg-type]  # a stand-in with its log()
    with pytest.raises(structlog.DropEvent):
        forward(None, "error", {"event": "went_wrong", "count": 3, "why": ValueError("x")})
    assert worker.logged == [("error", "went_wrong", {"count": 3, "why": "ValueError('x')"})]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("payload", "text"),
    [(b"\x80\x05not a pickle", "undecodable frame"), (pickle.dumps([1]), "holding list")],
)
async def test_a_frame_that_is_no_message_is_an_error(payload: bytes, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        await read_frame(_reader(struct.pack(">I", len(payload)) + payload))


def test_results_over_a_frames_size_go_in_several_and_huge_details_are_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(child, "MAX_FRAME", 600)
    rows = [(i, "healthy", 1.0, 2.0, {"body": "x" * 100}, None, True, 3.0, 0) for i in range(8)]
    huge = (9, "healthy", 1.0, 2.0, {"body": "x" * 1000}, None, True, 3.0, 0)
    frames = child._frames([*rows, huge])
    assert len(frames) > 1
    assert all(len(data) <= 600 for data in frames)
    sent = [row for data in frames for row in pickle.loads(data[4:])[1]]  # noqa: S301 - ours
    assert sent[:8] == rows  # all of them, in order
    assert sent[8][4] is None
    assert sent[8][5] == "details too large to pass from the check worker"
