"""The historian's task says a bug when it happens (not only when the node stops)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
import structlog

from healthmon.cluster.historian import Historian


@pytest.mark.asyncio
async def test_a_bug_in_a_step_is_logged_at_once_and_raised_at_stop() -> None:
    historian = Historian(cast(Any, None), 7, cast(Any, None), lease=5.0)

    async def broken() -> bool:
        raise RuntimeError("a bug")

    historian._hold = broken  # type: ignore[method-assign]  # the step's first call
    with structlog.testing.capture_logs() as events:
        await historian.start()
        task = historian._task
        assert task is not None
        with pytest.raises(RuntimeError, match="a bug"):
            await asyncio.wait_for(asyncio.shield(task), 5)
    crashed = [e for e in events if e["event"] == "cluster_history_crashed"]
    assert len(crashed) == 1
    assert crashed[0]["log_level"] == "critical"
    assert crashed[0]["error"] == "RuntimeError: a bug"
    assert crashed[0]["node_id"] == 7
