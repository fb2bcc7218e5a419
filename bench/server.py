"""The benchmark's targets: a minimal HTTP/1.1 server in its own process.

One listening port per service, because that is what a monitor meets in production
(every service is its own origin) and what an HTTP client's pool is keyed on: a
shared client holds one keep-alive connection per service, as it would for real.

The server is an `asyncio.Protocol` that answers every request from a canned byte
string, so that it costs the machine as little as possible (it shares the two cores
with the monitor being measured): ~15 µs of CPU per request, against ~1 ms for the
monitor. Routes (any other path is the first)::

    /healthy         200 application/json {"status":"ok"}
    /flip?period=S   200 JSON for S seconds, then 503 for S seconds, and so on

Run it as `python -m bench.server --ports N [--lifetime S]`: it prints one JSON line
`{"ports": [...], "pid": ...}` once it listens, and exits when its stdin closes (the
parent went away, however), when its lifetime ends, or on SIGTERM/SIGINT.
`TargetProcess` does all of that from the parent's side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self
from urllib.parse import parse_qs, urlsplit

__all__ = ["TargetProcess", "server_cpu_seconds"]

_BODY_OK = b'{"status":"ok"}'
_BODY_FAIL = b'{"status":"fail"}'


def _response(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"\r\n" + body
    )


_OK = _response(b"200 OK", _BODY_OK)
_FAIL = _response(b"503 Service Unavailable", _BODY_FAIL)
_MAX_HEADER = 64 * 1024  # a client that sends more without a blank line is not ours


class _HttpProtocol(asyncio.Protocol):
    """Keep-alive HTTP/1.1: one canned answer per request (GETs, no bodies)."""

    def __init__(self, started: float) -> None:
        self._started = started
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        buffer = self._buffer + data
        answers = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head, buffer = buffer[:end], buffer[end + 4 :]
            answers.append(self._answer(head))
        self._buffer = buffer
        if answers:
            self._transport.write(b"".join(answers))
        if len(self._buffer) > _MAX_HEADER:
            self._transport.close()

    def _answer(self, head: bytes) -> bytes:
        if b"/flip" not in head.split(b"\r\n", 1)[0]:
            return _OK
        target = head.split(b" ", 2)[1].decode("latin-1")
        query = parse_qs(urlsplit(target).query)
        period = float(query.get("period", ["1.0"])[-1])
        phase = int((time.monotonic() - self._started) / period) % 2
        return _OK if phase == 0 else _FAIL


async def _serve(ports: int, lifetime: float) -> None:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    servers = [
        await loop.create_server(
            lambda: _HttpProtocol(started), "127.0.0.1", 0, backlog=1024, reuse_address=True
        )
        for _ in range(ports)
    ]
    bound = [server.sockets[0].getsockname()[1] for server in servers]
    print(json.dumps({"ports": bound, "pid": os.getpid()}), flush=True)

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # stdin closes when the parent exits, even if it was killed: never outlive it.
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(0, 4096) else None)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(lifetime):
            await stop.wait()
    for server in servers:
        server.close()


def server_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` (Linux /proc); None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Fields 14 and 15 of stat(5) (utime, stime), counted from after the ")".
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TargetProcess:
    """Starts the server process and always stops it (context manager)."""

    def __init__(self, ports: int, lifetime: float) -> None:
        self._args = [
            sys.executable,
            "-m",
            "bench.server",
            "--ports",
            str(ports),
            "--lifetime",
            str(lifetime),
        ]
        self._process: subprocess.Popen[str] | None = None
        self.ports: list[int] = []

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def cpu_seconds(self) -> float | None:
        return server_cpu_seconds(self.pid)

    def start(self) -> Self:
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self._args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        try:
            stdout: IO[str] | None = self._process.stdout
            assert stdout is not None
            line = stdout.readline()  # the server prints its ports once it listens
            if not line:
                raise RuntimeError("the target server exited before listening (see stderr)")
            self.ports = json.loads(line)["ports"]
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the server's cue to exit on its own
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="The benchmark's target server.")
    parser.add_argument("--ports", type=int, default=1, help="how many ports to listen on")
    parser.add_argument(
        "--lifetime", type=float, default=900.0, help="exit after this many seconds at most"
    )
    args = parser.parse_args()
    asyncio.run(_serve(args.ports, args.lifetime))


if __name__ == "__main__":
    main()
