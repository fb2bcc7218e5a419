"""ClusterWatch (http/nodes.py) when the database cannot be read: the nodes endpoint's
read fails with a StorageError (a 503), bounded in time, while each service's owner
still comes from this node's own leases (the cluster's status must not fail with the
database). The happy path is tests/integration/test_http_cluster.py's, on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from healthmon.cluster import ClusterSettings
from healthmon.errors import StorageError
from healthmon.http import nodes
from healthmon.http.nodes import ClusterWatch

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(10)]


class _Engine:
    def __init__(self, failure: BaseException | None) -> None:
        self.failure = failure
        self.connects = 0

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Any]:
        self.connects += 1
        if self.failure is not None:
            raise self.failure
        await asyncio.Event().wait()  # a database that never answers
        yield None


def _watch(engine: _Engine) -> ClusterWatch:
    node = SimpleNamespace(name="a", node_id=1, held={"x": 3, "y": 4})
    monitor = SimpleNamespace(cluster_settings=ClusterSettings(node="a"), cluster=node)
    store = SimpleNamespace(engine=engine)
    return ClusterWatch(monitor, store)  # type: ignore[arg-type]  # fakes


async def test_a_failed_read_is_a_storage_error_and_owners_fall_back_to_our_leases() -> None:
    engine = _Engine(OSError("connection refused"))
    watch = _watch(engine)
    with pytest.raises(StorageError, match="cannot read the cluster's nodes: connection refused"):
        await watch.view()
    assert await watch.owners() == {"x": "a", "y": "a"}
    assert engine.connects == 1  # the failure is not retried at once for every request


async def test_a_database_that_never_answers_is_given_up_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nodes, "_READ_TIMEOUT", 0.2)
    watch = _watch(_Engine(None))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await watch.owners() == {"x": "a", "y": "a"}
    assert loop.time() - started < 2
