"""A check worker's program: `python -m healthmon.workers.child`, started by `CheckWorkers`.

It runs the schedules the monitor hands it, each check the same `probe_http` through
the same client a monitor makes for a service, and sends the results back in
batches (wire.py). It holds no state worth keeping: the monitor records, confirms,
stores and notifies. It ends when told to stop or when its input closes (the
monitor is gone), cancelling in-flight checks and sending what is done first.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
from typing import Any

import structlog

from healthmon.log import keep_out_of_logs
from healthmon.probe import new_http_client, probe_http
from healthmon.schedule import FixedRateSchedule
from healthmon.workers.wire import MAX_FRAME, CheckOrder, ResultRow, frame, read_frame

__all__ = ["main"]

BATCH_WINDOW = 0.005
"""Seconds a result may wait for others to share its message: 200 messages a second
at most, whatever the check rate, for ~5 ms more on a result's way to the cache."""

HEARTBEAT = 1.0
"""Seconds between two "alive" messages: the monitor replaces a worker it has not
heard from in a while (stopped, or its loop blocked), see pool.py."""

MAX_UNSENT = 16 * 1024 * 1024
"""Bytes of results waiting for the monitor to read them, beyond which batches are
dropped (counted, and logged once the monitor reads again): a monitor that stalls
cannot make its worker grow without bound."""


class _Channel(asyncio.Protocol):
    """The pipe to the monitor: written by the transport, its end awaited."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Worker:
    def __init__(self, out: asyncio.WriteTransport) -> None:
        self._out = out
        self._checks: dict[int, asyncio.Task[None]] = {}
        self._rows: list[ResultRow] = []
        self._flush_at: asyncio.TimerHandle | None = None
        self._dropped = 0
        self._loop = asyncio.get_running_loop()

    def add(self, token: int, order: CheckOrder) -> None:
        if order.headers:
            keep_out_of_logs(order.headers.values())  # as the monitor does for its own
        self.remove(token)
        self._checks[token] = asyncio.create_task(
            self._check_loop(token, order), name=f"healthmon-check:{order.name}"
        )

    def remove(self, token: int) -> None:
        task = self._checks.pop(token, None)
        if task is not None:
            task.cancel()

    async def _check_loop(self, token: int, order: CheckOrder) -> None:
        name, url, interval, start = order.name, order.url, order.interval, order.start
        policy, headers = order.policy, order.headers
        now = self._loop.time()
        skipped = 0
        if start < now:  # sent before this process was up: its next slot, same phase
            skipped = math.ceil((now - start) / interval)
            start += skipped * interval
        schedule = FixedRateSchedule(interval, start=start)
        if order.resumed:  # the slots since its last result, while no worker ran it
            schedule.missed = skipped
        client = new_http_client(policy, url)
        try:
            while True:
                slot = await schedule.wait()
                result = await probe_http(client, name, url, policy, headers)
                self._rows.append(
                    (
                        token,
                        result.status.value,
                        result.response_time_ms,
                        result.timestamp,
                        result.details,
                        result.error,
                        result.answered,
                        slot,
                        schedule.missed,
                    )
                )
                if self._flush_at is None:
                    self._flush_at = self._loop.call_later(BATCH_WINDOW, self.flush)
        finally:
            await client.aclose()

    def flush(self) -> None:
        self._flush_at = None
        rows, self._rows = self._rows, []
        if not rows or self._out.is_closing():
            return
        if self._out.get_write_buffer_size() > MAX_UNSENT:
            self._dropped += len(rows)
            return
        self._report_dropped()
        for data in _frames(rows):
            self._out.write(data)

    def _report_dropped(self) -> None:
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            self.log("error", "check_worker_results_dropped", {"results": dropped})

    def alive(self) -> None:
        if not self._out.is_closing():
            self._out.write(frame(("alive",)))

    def log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if not self._out.is_closing():
            self._out.write(frame(("log", level, event, fields)))

    async def stop(self) -> None:
        """Cancel every check; what finished before goes out."""
        checks = list(self._checks.values())
        self._checks.clear()
        for task in checks:
            task.cancel()
        await asyncio.gather(*checks, return_exceptions=True)
        if self._flush_at is not None:
            self._flush_at.cancel()
        self.flush()
        self._report_dropped()  # (even with the monitor behind: the last word goes out)


def _frames(rows: list[ResultRow]) -> list[bytes]:
    """The rows as one message, or as several if that would be over MAX_FRAME (large
    bodies' details); a row too large alone goes without its details, saying so."""
    data = frame(("results", rows))
    if len(data) <= MAX_FRAME:
        return [data]
    if len(rows) > 1:
        half = len(rows) // 2
        return _frames(rows[:half]) + _frames(rows[half:])
    token, status, took, at, _, error, answered, slot, missed = rows[0]
    error = error or "details too large to pass from the check worker"
    return [frame(("results", [(token, status, took, at, None, error, answered, slot, missed)]))]


def _forwarder(worker: _Worker) -> structlog.typing.Processor:
    """A structlog processor sending the worker's events to the monitor, whose own
    logging setup then applies, tagged with this process."""

    def forward(_: Any, level: str, event_dict: structlog.typing.EventDict) -> Any:
        event = str(event_dict.pop("event", ""))
        fields = {key: _plain(value) for key, value in event_dict.items()}
        worker.log(level, event, fields)
        raise structlog.DropEvent

    return forward


def _plain(value: object) -> object:
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


async def _serve(out_fd: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    out, channel = await loop.connect_write_pipe(_Channel, os.fdopen(out_fd, "wb", buffering=0))
    worker = _Worker(out)
    structlog.configure(
        processors=[_forwarder(worker)],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    heartbeat = asyncio.create_task(_beat(worker))
    try:
        while (message := await read_frame(reader)) is not None:
            kind = message[0]
            if kind == "add":
                worker.add(*message[1:])
            elif kind == "remove":
                worker.remove(message[1])
            elif kind == "stop":
                break
            else:
                raise ValueError(f"unknown message {kind!r} from the monitor")
    finally:
        heartbeat.cancel()
        await worker.stop()
        out.close()  # after what is buffered is written
        await channel.closed


async def _beat(worker: _Worker) -> None:
    while True:
        worker.alive()
        await asyncio.sleep(HEARTBEAT)


def main() -> None:
    # The monitor reads frames from fd 1: anything else printed goes to stderr instead.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    asyncio.run(_serve(out_fd))


if __name__ == "__main__":
    main()
