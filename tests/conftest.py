"""Shared fixtures: real HTTP targets on 127.0.0.1 and database files in tmp_path."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from healthmon import ServiceDefinition
from healthmon.targets import TargetServer


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
