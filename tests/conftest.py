"""Shared fixtures: real HTTP targets on 127.0.0.1, database files in tmp_path, and
databases on a real PostgreSQL server (tests/postgres.py), one per test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

from healthmon import ServiceDefinition
from healthmon.targets import TargetServer
from tests import postgres

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def targets() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.fixture
def tls_targets() -> Iterator[TargetServer]:
    """Targets over HTTPS with a self-signed certificate (tests/data)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    data = Path(__file__).resolve().parent / "data"
    context.load_cert_chain(data / "selfsigned.crt", data / "selfsigned.key")
    with TargetServer(tls=context) as server:
        yield server


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "health.db"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The session's PostgreSQL server (a superuser's URL): started once, on first use."""
    with postgres.server_url() as url:
        yield url


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test; dropped afterwards."""
    url = postgres.create_database(postgres_server)
    try:
        yield url
    finally:
        postgres.drop_database(url)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The store's backend: the test runs once on each."""
    name: str = request.param
    return name


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database of the test's backend: a SQLite file's path, or a PostgreSQL
    database's URL."""
    if backend == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return str(tmp_path / "health.db")


@pytest.fixture
def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/health"


def http_service(name: str, url: str) -> ServiceDefinition:
    return ServiceDefinition(name, "http", f"tests.{name}", [], url)


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `condition()` holds, checking every 10 ms; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


class LoopTurns:
    """Counts the turns of the running loop while its `async with` block runs (a task
    that steps once a turn): work that lets the loop go shows as turns in `count`."""

    def __init__(self) -> None:
        self.count = 0
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._ticker = asyncio.create_task(self._tick())
        await asyncio.sleep(0)  # (the ticker's first step)
        self.count = 0
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.count += 1
