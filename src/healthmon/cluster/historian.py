"""The cluster's history bookkeeping: one node at a time closes aggregates and prunes.

Cluster nodes' writers add only their late rows and gaps to the history
(store/closing.py `SharedRollup`); closing the minutes and hours that are over, moving
the coverage marks and pruning are this task's, on one node at a time: the holder of
a lease row of its own, `HISTORY_LEASE` in `service_leases`, held like a service's.
It is claimed when free or expired (`FOR UPDATE SKIP LOCKED`, the database's clock),
renewed by its holder's heartbeat together with its services' leases (`leases.beat`
renews every row a node holds), handed back on a clean stop and taken over by another
node once it expires (its holder died).

Every `every` seconds the holder closes what is over (`close_step`: bounded steps,
each its own short transaction, again at once while behind) and takes one pruning
step when one is due (retention's, as the single writer takes it between flushes). It
runs in a task of its own, beside the checks and the writer: nothing here is on the
check path, and its errors are logged, never raised (the history can wait; the raw
rows it needs stay).

The lease only spares the other nodes the work; correctness does not rest on it. Two
closers at once (a holder paused beyond its lease, waking beside its successor)
serialize on the marks' lock and each closes from the marks it finds there; two
pruning steps at once delete what is expired, each what the other has not.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from healthmon.cluster import leases
from healthmon.store.closing import SETTLE, close_step
from healthmon.store.rollup import Rollup

__all__ = ["HISTORY_EVERY", "HISTORY_LEASE", "Historian"]

log = structlog.get_logger("healthmon.cluster")

HISTORY_LEASE = "(healthmon history)"
"""The history lease's row in `service_leases` (no service may take this name)."""
HISTORY_EVERY = 5.0
"""Seconds between two of the holder's steps (and between two tries to take the lease)."""


class Historian:
    """Takes the history lease when it is free, and while holding it, closes and prunes."""

    def __init__(
        self,
        engine: AsyncEngine,
        node_id: int,
        pruner: Rollup,
        *,
        lease: float,
        every: float | None = None,
        settle: float = SETTLE,
    ) -> None:
        self._engine = engine
        self.node_id = node_id
        self._pruner = pruner  # its `maintain` is the pruning step, with the store's settings
        self._lease = lease
        self.every = HISTORY_EVERY if every is None else every
        self.settle = settle
        self.holding = False
        self.steps = 0
        self.closed_results = 0
        self._task: asyncio.Task[None] | None = None
        self._row_made = False

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="healthmon-cluster-history")

    async def stop(self) -> None:
        """Stop stepping (a step in progress is rolled back); the lease is handed back
        with the node's others (ClusterNode's leave)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def step(self, now: float | None = None) -> None:
        """Close everything over (by the database's clock, or at `now`), then one pruning
        step if one is due."""
        while True:
            closed = await close_step(self._engine, now=now, settle=self.settle)
            self.closed_results += closed.results
            if not closed.more:
                break
            await asyncio.sleep(0)  # bounded steps: the event loop's turn between two
        await self._pruner.maintain(self._engine, now)
        self.steps += 1

    async def _run(self) -> None:
        while True:
            try:
                if await self._hold():
                    await self.step()
            except (SQLAlchemyError, OSError) as exc:
                log.warning(
                    "cluster_history_failed",
                    node_id=self.node_id,
                    error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    consequence="tried again at the next step; reports read raw results "
                    "past the marks meanwhile",
                )
            except Exception as exc:  # a bug: said when it happens, not only at stop
                log.critical(
                    "cluster_history_crashed",
                    node_id=self.node_id,
                    error=f"{type(exc).__name__}: {exc}",
                    consequence="this node closes and prunes no more history; another "
                    "node takes the lease only once this one stops",
                    exc_info=exc,
                )
                raise
            await asyncio.sleep(self.every)

    async def _hold(self) -> bool:
        """Whether this node holds the history lease now, claiming it if it is free."""
        async with self._engine.connect() as plain:
            conn = await plain.execution_options(isolation_level="AUTOCOMMIT")
            if not self._row_made:
                await leases.ensure_rows(conn, [HISTORY_LEASE])
                self._row_made = True
            claimed = await leases.claim(conn, self.node_id, [HISTORY_LEASE], 1, self._lease)
            held = bool(claimed) or bool(
                await conn.scalar(
                    text(
                        "SELECT node_id = :me AND expires_at > extract(epoch from "
                        "clock_timestamp()) FROM service_leases WHERE service = :name"
                    ),
                    {"me": self.node_id, "name": HISTORY_LEASE},
                )
            )
        if held != self.holding:
            (log.info if held else log.warning)(
                "cluster_history_lease_taken" if held else "cluster_history_lease_lost",
                node_id=self.node_id,
            )
            self.holding = held
        return held
