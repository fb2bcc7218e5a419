"""The event stream over real sockets: live, resumed, filtered; many clients; a client
that never reads."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for
from tests.integration.http_helpers import TOKEN, Served, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """Server-sent events as {"id", "event", "data"} (comments skipped)."""
    event: dict[str, Any] = {}
    async for line in lines:
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif line.startswith(":") or line.startswith("retry:"):
            continue
        else:
            key, _, value = line.partition(": ")
            event[key] = json.loads(value) if key == "data" else value


class Follower:
    """One event-stream client, collecting what it receives."""

    def __init__(self, served: Served, **headers: str) -> None:
        self.served = served
        self.headers = headers
        self.received: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None

    async def run(self, params: dict[str, Any] | None = None) -> None:
        async with self.served.client.stream(
            "GET", "/api/v1/events", params=params, headers=self.headers
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            async for event in _events(response.aiter_lines()):
                self.received.append(event)

    def start(self, params: dict[str, Any] | None = None) -> Follower:
        self.task = asyncio.create_task(self.run(params))
        return self

    async def close(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def ids(self) -> list[int]:
        return [int(event["id"]) for event in self.received]


async def test_committed_transitions_stream_live_and_resume_with_last_event_id(
    db_path: Path,
) -> None:
    async with serve(db_path) as served:
        before = await served.flip("a", "healthy")
        follower = Follower(served).start()
        await wait_for(lambda: served.api.streams.held == 1)
        live = [await served.flip("a", h) for h in ("unhealthy", "healthy", "degraded")]
        await wait_for(lambda: len(follower.received) == 3)
        await follower.close()
        # From now on: nothing before the stream was opened.
        assert follower.ids() == [record.id for record in live]
        assert before.id not in follower.ids()
        first = follower.received[0]
        assert first["event"] == "transition"
        assert first["data"]["service"] == "agent:a"
        assert (first["data"]["from_status"], first["data"]["to_status"]) == (
            "healthy",
            "unhealthy",
        )
        # Each event is a committed transition: the store has it under that id.
        stored = {r.id: r for r in await served.store.transitions_after(before.id)}
        for event in follower.received:
            record = stored[int(event["id"])]
            assert event["data"]["to_status"] == record.transition.to_status.value

        await wait_for(lambda: served.api.streams.held == 0)
        missed = [await served.flip("b", h) for h in ("healthy", "unhealthy")]
        again = Follower(served, **{"Last-Event-ID": str(live[-1].id)}).start()
        await wait_for(lambda: len(again.received) == 2)
        after = await served.flip("b", "healthy")
        await wait_for(lambda: len(again.received) == 3)
        await again.close()
        assert again.ids() == [missed[0].id, missed[1].id, after.id]


async def test_a_client_far_behind_reads_the_store_in_order(db_path: Path) -> None:
    async with serve(db_path) as served:
        served.api.feed._keep = 3  # the memory ring holds only the last three
        made = [await served.flip("a", h) for h in ["healthy", "unhealthy"] * 4]
        made += [await served.flip("b", "degraded")]
        everything = Follower(served).start({"after": 0})
        only_b = Follower(served).start({"after": 0, "service": "agent:b"})
        await wait_for(lambda: len(everything.received) == 9 and len(only_b.received) == 1)
        later = await served.flip("b", "healthy")
        await wait_for(lambda: len(everything.received) == 10 and len(only_b.received) == 2)
        await everything.close()
        await only_b.close()
        assert everything.ids() == [record.id for record in made] + [later.id]
        assert only_b.ids() == [made[-1].id, later.id]


async def test_a_hundred_streams_and_fifty_long_polls_hear_one_transition(
    db_path: Path,
) -> None:
    async with serve(db_path) as served:
        start = await served.flip("a", "healthy")
        limits = httpx.Limits(max_connections=200)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            base_url=served.base, headers=headers, limits=limits, timeout=30
        ) as client:
            served.client = client
            followers = [Follower(served).start() for _ in range(100)]
            polls = [
                asyncio.create_task(
                    client.get("/api/v1/cluster", params={"index": start.id, "wait": "30s"})
                )
                for _ in range(50)
            ]
            await wait_for(lambda: served.api.streams.held == 100 and served.api.waiting.held == 50)
            change = await served.flip("a", "unhealthy")
            answers = await asyncio.gather(*polls)
            assert {int(a.headers["X-Healthmon-Index"]) for a in answers} == {change.id}
            await wait_for(lambda: all(f.ids() == [change.id] for f in followers))
            for follower in followers:
                await follower.close()
            # Every stream's task and slot ends with its client.
            await wait_for(lambda: served.api.streams.held == 0 and served.api.feed.listeners == 0)
            assert served.api.waiting.held == 0


async def test_a_head_request_gets_the_head_and_no_stream(db_path: Path) -> None:
    async with serve(db_path) as served:
        for path in ("/api/v1/events", "/api/v1/results"):
            response = await served.client.head(path)
            assert response.status_code == 200
            assert response.content == b""
            # The response is over: no stream is left running for it.
            await wait_for(lambda: served.api.streams.held == 0 == served.api.exports.held)
        assert (await served.client.get("/api/v1/cluster/status")).status_code == 200


async def test_more_streams_than_allowed_are_refused_not_queued(db_path: Path) -> None:
    async with serve(db_path, max_streams=2) as served:
        followers = [Follower(served).start() for _ in range(2)]
        await wait_for(lambda: served.api.streams.held == 2)
        refused = await served.client.get("/api/v1/events")
        assert refused.status_code == 503
        assert "too many event streams at once (at most 2)" in refused.json()["message"]
        for follower in followers:
            await follower.close()


async def test_a_client_that_never_reads_is_let_go_after_send_timeout(db_path: Path) -> None:
    async with serve(db_path, send_timeout=0.5) as served:
        # 75,000 results, ~13 MB of export: more than the socket buffers on both sides
        # (the kernel's send buffer grows up to tcp_wmem's 4 MB).
        served.agents.health.update({f"agent-{i}": "healthy" for i in range(30)})
        for _ in range(2500):
            await served.monitor.check_agents_health(served.agents)
        await wait_for(
            lambda: (served.monitor.store_stats or _no_writer()).committed_results >= 75_000,
            timeout=30,
        )
        assert served.server.port is not None
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", served.server.port))
            sock.sendall(
                b"GET /api/v1/results?format=jsonl HTTP/1.1\r\nHost: t\r\n"
                b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
            )
            await wait_for(lambda: served.api.exports.held == 1)
            # It reads nothing: the server gives up on it, and its slot is free again.
            await wait_for(lambda: served.api.exports.held == 0, timeout=20)
            # Meanwhile the API answered others.
            assert (await served.client.get("/api/v1/cluster/status")).status_code == 200
            # The server closed the connection mid-body: no last chunk, rows missing.
            received = await asyncio.to_thread(_read_to_end, sock)
        assert received.startswith(b"HTTP/1.1 200 OK")
        assert not received.endswith(b"\r\n0\r\n\r\n")
        assert received.count(b'"service":') < 75_000


def _read_to_end(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def _no_writer() -> Any:
    raise AssertionError("the monitor has no writer")
