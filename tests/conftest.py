"""Shared fixtures: real HTTP targets on 127.0.0.1 and database files in tmp_path."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthmon import ServiceDefinition
from healthmon.targets import TargetServer


@pytest.fixture
def targets() -> Iterator[TargetServer]:
    with TargetServer() as server:
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
