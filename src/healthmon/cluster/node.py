"""ClusterNode: this process's membership of a cluster, beside its monitor.

Every `lease/3` seconds one transaction heartbeats the node, renews its leases and
takes its fair share (cluster/leases.py); sooner when a lease held elsewhere is about
to expire or another node handed leases back. The monitor checks exactly the
services this node holds; it stops checking all of them once the renew deadline,
measured on this process's monotonic clock from the moment the last successful renew
was sent, has passed (a node cut off from the database, or paused, stops before its
leases can expire), and resumes the services still held once a renew succeeds.

A newly claimed service starts from what the database holds once the claim has
committed: its confirmed status (its newest transition) and its recent results, from
which the threshold streak is rebuilt, so a failover records no spurious transition.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from healthmon.cluster import leases
from healthmon.cluster.feed import FeedEntry, TransitionFeed, last_position
from healthmon.cluster.fence import ClusterFence
from healthmon.cluster.historian import HISTORY_LEASE, Historian
from healthmon.cluster.settings import ClusterSettings
from healthmon.model import HealthStatus
from healthmon.store.rollup import Rollup
from healthmon.store.schema import STATUS_BY_CODE

__all__ = ["ClusterNode", "Member", "Seed"]

log = structlog.get_logger("healthmon.cluster")

_STOP_TIMEOUT = 2.0
"""Seconds a clean stop waits to hand its leases back (else they expire by themselves)."""
_DEADLINE_SHARE = 0.9
"""Checks stop at 90 % of the lease after the last renew was sent. The database set the
expiry a lease after it *ran* the renew, which was after the send: the lease cannot
have expired there yet, whatever the delays on the way back (the 10 % covers clocks
running at slightly different rates). A result taken after the expiry would be fenced
anyway; this keeps two nodes from *checking* one service at once."""


@dataclass(frozen=True, slots=True)
class Seed:
    """A claimed service's state as committed: where its new owner carries on from."""

    confirmed: HealthStatus | None
    recent: tuple[HealthStatus, ...]
    """Its newest results' statuses, oldest first."""


class Member(Protocol):
    """The monitor's side of a cluster node."""

    def lease_names(self) -> Collection[str]:
        """The services to lease (those with checks)."""
        ...

    def start_owned(self, seeds: dict[str, Seed | None]) -> None:
        """Start checking these services (None: carry on from what is in memory)."""
        ...

    def stop_owned(self, names: Collection[str]) -> None:
        """Stop checking these services (their checks in flight are cancelled)."""
        ...


class ClusterNode:
    """One node's leases, heartbeat and transition feed."""

    def __init__(
        self,
        settings: ClusterSettings,
        engine: AsyncEngine,
        member: Member,
        *,
        flush: Callable[[], Awaitable[object]],
        seed_window: int = 8,
        pruner: Rollup | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.node_name
        self._engine = engine
        self._member = member
        self._flush = flush  # the writer's: before handing leases back
        self._seed_window = seed_window
        self.node_id: int | None = None
        self.fence: ClusterFence | None = None
        self.feed: TransitionFeed | None = None
        self.held: dict[str, int] = {}  # service -> epoch
        self.renewed_at: float | None = None
        """When a renew last succeeded, epoch seconds (this process's clock)."""
        self._running: set[str] = set()  # held services being checked
        self._deadline = 0.0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._rows_for: frozenset[str] = frozenset()
        self._handing_back: set[str] = set()  # held, no longer checked, being released
        self._hand_back_task: asyncio.Task[None] | None = None
        self._pruner = pruner  # the store's history settings, for the historian's pruning
        self.historian: Historian | None = None

    def epoch_of(self, service: str) -> int | None:
        return self.held.get(service)

    @property
    def checking(self) -> int:
        """How many of the services held are being checked now (none while suspended:
        no renew succeeded within the lease)."""
        return len(self._running)

    async def join(self, deliver: Callable[[Sequence[FeedEntry]], None]) -> int:
        """Register this node and open the feed; the feed's start position."""
        async with self._engine.begin() as conn:
            self.node_id = await leases.register_node(conn, self.name)
        self.fence = ClusterFence(self.node_id, self.settings.row_lease)
        cursor = await last_position(self._engine)
        self.feed = TransitionFeed(
            self._engine,
            cursor=cursor,
            poll=self.settings.feed_poll,
            deliver=deliver,
            on_leases_released=self._wake.set,
        )
        await self.feed.start()
        log.info("cluster_joined", node=self.name, node_id=self.node_id)
        return cursor

    async def start(self) -> None:
        """Take a first share now, then keep leasing."""
        try:
            await self._step()
        except (SQLAlchemyError, OSError, LookupError) as exc:
            log.warning("cluster_renew_failed", node=self.name, error=str(exc).splitlines()[0])
        self._task = asyncio.create_task(self._run(), name="healthmon-cluster-leases")
        if self._pruner is not None and self.node_id is not None:
            self.historian = Historian(
                self._engine, self.node_id, self._pruner, lease=self.settings.row_lease
            )
            await self.historian.start()

    async def stop(self) -> None:
        """Leave cleanly: the monitor has stopped its checks and flushed; hand every lease
        back at once (the others claim them on the notification) and close the feed."""
        if self.historian is not None:
            await self.historian.stop()
        for task in (self._task, self._hand_back_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._hand_back_task = None
        self._handing_back.clear()
        held, self.held = self.held, {}
        self._running.clear()
        try:
            if self.node_id is not None:
                await self._leave(self.node_id, held)
        finally:
            if self.feed is not None:
                await self.feed.stop()  # bounded: a last read of 1 s at most, then close

    async def _leave(self, node_id: int, held: Collection[str]) -> None:
        try:
            async with asyncio.timeout(_STOP_TIMEOUT), self._engine.begin() as conn:
                await leases.release(conn, node_id, [*held, HISTORY_LEASE])
                await leases.stop_node(conn, node_id)
            log.info("cluster_left", node=self.name, handed_back=len(held))
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            log.warning(
                "cluster_leave_failed",
                node=self.name,
                error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                consequence="its leases expire by themselves",
            )

    # -- the lease loop -----------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_step = loop.time() + self.settings.renew_every
        while True:
            until = min(next_step, self._deadline) if self._running else next_step
            woken = False  # leases were handed back somewhere: claim them now
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(until - loop.time(), 0.0)):
                    await self._wake.wait()
                    woken = True
            self._wake.clear()
            if self._running and loop.time() >= self._deadline:
                self._suspend()
            if not woken and loop.time() < next_step:
                continue
            started, soonest = loop.time(), None
            try:
                soonest = await self._step_within_deadline()
            except (SQLAlchemyError, OSError, LookupError) as exc:
                log.warning("cluster_renew_failed", node=self.name, error=str(exc).splitlines()[0])
            step = self.settings.renew_every
            # The next step a renew period after this one began, or when the first lease
            # held elsewhere expires (`soonest` is from this step's first statement).
            # (At least a tenth of a period apart: a lease expired that this node may not
            # take yet must not make it step without a pause.)
            soon = step if soonest is None else max(min(step, soonest), step / 10)
            next_step = started + soon

    async def _step_within_deadline(self) -> float | None:
        """`_step`, watched: a renewal that hangs (neither succeeds nor fails: a network
        cut without a reset, a lock) suspends the checks once a whole `lease` has passed
        since the last successful renewal was sent, while it goes on waiting for its
        answer. (Not at the renew deadline, 90 % of a lease row's time, which applies
        between steps: a renewal merely slow, on a loaded machine, would suspend every
        check for a moment. A whole lease: by then the row has expired and others may
        check, so a hung renewal checks beside them for a quarter lease at most, where
        it went on for as long as the hang lasted.)"""
        loop = asyncio.get_running_loop()
        settings = self.settings
        slack = settings.lease - settings.row_lease * _DEADLINE_SHARE
        step = asyncio.ensure_future(self._step())
        try:
            while not step.done():
                limit = self._deadline + slack
                wait = max(limit - loop.time(), 0.0) if self._running else None
                await asyncio.wait({step}, timeout=wait)
                if not step.done() and self._running and loop.time() >= limit:
                    self._suspend()
            return step.result()
        finally:
            if not step.done():  # this task cancelled (stop): the step with it
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)

    def _suspend(self) -> None:
        log.error(
            "cluster_leases_suspended",
            node=self.name,
            services=len(self._running),
            reason="no renew succeeded within the lease: checks stop until one does",
        )
        self._member.stop_owned(set(self._running))
        self._running.clear()

    async def _step(self) -> float | None:
        """One heartbeat, renew and rebalance; seconds from the step's start until a
        lease held elsewhere expires (to claim it then), if one is held elsewhere."""
        assert self.node_id is not None
        settings, me = self.settings, self.node_id
        names = frozenset(self._member.lease_names())
        sent = asyncio.get_running_loop().time()
        # Each statement its own transaction (autocommit): a lease row is locked only
        # while one statement runs, never across round trips, so writers fencing against
        # it (FOR SHARE) and claims are not held up by a busy node's event loop.
        async with self._engine.connect() as plain:
            conn = await plain.execution_options(isolation_level="AUTOCOMMIT")
            if names != self._rows_for:
                await leases.ensure_rows(conn, names)
            beat = await leases.beat(conn, me, settings.row_lease, names)
            self._deadline = sent + settings.row_lease * _DEADLINE_SHARE
            renewed = asyncio.get_running_loop().time()
            self.renewed_at = time.time()
            still, soonest = beat.held, beat.soonest
            share = leases.fair_share(len(names), beat.alive, me)
            kept = {name: epoch for name, epoch in still.items() if name in names}
            claimed = await leases.claim(
                conn, me, names - still.keys(), share - len(kept), settings.row_lease
            )
            # Beyond its share, whatever nobody has claimed for a whole lease (a node that
            # joined and died at once, shares seen differently for a while): no service
            # stays unchecked for want of a taker; shares even out afterwards. (Not
            # sooner: a lease handed back to a slow joiner would bounce back and forth.)
            if beat.orphans:
                claimed |= await leases.claim(
                    conn,
                    me,
                    names - still.keys() - claimed.keys(),
                    len(names),
                    settings.row_lease,
                    free_for=settings.row_lease,
                )
        self._rows_for = names
        # Held in the database but unknown here (a step that failed after its claim
        # committed): taken up as claimed.
        claimed.update((name, epoch) for name, epoch in kept.items() if name not in self.held)
        lost = {name for name, epoch in self.held.items() if still.get(name) != epoch}
        if lost:
            log.warning("cluster_leases_lost", node=self.name, services=sorted(lost))
            self._member.stop_owned(lost & self._running)
            self._running -= lost
            for name in lost:
                del self.held[name]
        resumed = {
            name: None
            for name in kept
            if name in self.held and name not in self._running | self._handing_back
        }
        if claimed:
            seeds = await self._seeds(claimed)
            self.held.update(claimed)
            log.info("cluster_leases_claimed", node=self.name, services=sorted(claimed))
        else:
            seeds = {}
        started: dict[str, Seed | None] = {**resumed, **seeds}
        if started:
            self._running.update(started)
            self._member.start_owned(started)
        unwanted = self._rebalance(names, share)
        took = asyncio.get_running_loop().time() - sent
        if took > settings.renew_every / 2:
            log.warning(
                "cluster_step_slow",
                node=self.name,
                seconds=round(took, 3),
                renew_seconds=round(renewed - sent, 3),
                claimed=len(claimed),
                handed_back=len(unwanted),
            )
        if soonest is None:
            return None
        return (renewed - sent) + max(soonest, 0.0) + 0.05

    def _rebalance(self, names: frozenset[str], share: int) -> list[str]:
        """Hand back what is over this node's share (a node joined) or no longer to be
        checked; the services handed back."""
        keeping = set(self.held) - self._handing_back
        unwanted = sorted(name for name in keeping if name not in names)
        excess = len(keeping) - len(unwanted) - share
        if excess > 0:  # the last ones by name go
            unwanted += sorted(keeping.difference(unwanted))[-excess:]
        if not unwanted or self._hand_back_task is not None:
            return []
        # Beside the lease loop, which goes on renewing meanwhile (a slow flush must not
        # make this node miss its own renewals).
        self._member.stop_owned(set(unwanted) & self._running)
        self._running.difference_update(unwanted)
        self._handing_back.update(unwanted)
        self._hand_back_task = asyncio.create_task(
            self._hand_back(unwanted), name="healthmon-cluster-hand-back"
        )
        return unwanted

    async def _hand_back(self, names: Sequence[str]) -> None:
        """Write what is pending (their checks have stopped), then release: the next
        owner starts after the last result of ours. Whatever the flush did not write
        within a renew period is fenced rather than waited for."""
        assert self.node_id is not None
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.renew_every):
                    await self._flush()
            async with self._engine.connect() as plain:
                conn = await plain.execution_options(isolation_level="AUTOCOMMIT")
                await leases.release(conn, self.node_id, names)
            for name in names:
                self.held.pop(name, None)
            log.info("cluster_leases_handed_back", node=self.name, services=sorted(names))
        except (SQLAlchemyError, OSError) as exc:
            # Still held (and renewed): handed back at the next step that finds them.
            log.warning("cluster_hand_back_failed", node=self.name, error=str(exc).splitlines()[0])
        finally:
            self._handing_back.difference_update(names)
            self._hand_back_task = None

    async def _seeds(self, claimed: Collection[str]) -> dict[str, Seed | None]:
        """Claimed services' confirmed statuses and recent results, as committed."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT s.name, "
                    "  (SELECT t.to_status FROM status_transitions t WHERE t.service_id = s.id "
                    "   ORDER BY t.seq DESC NULLS LAST, t.ts DESC, t.id DESC LIMIT 1), "
                    "  ARRAY(SELECT r.status FROM check_results r WHERE r.service_id = s.id "
                    "        ORDER BY r.ts_us DESC LIMIT :window) "
                    "FROM services s WHERE s.name = ANY(CAST(:names AS text[]))"
                ),
                {"names": sorted(claimed), "window": self._seed_window},
            )
            found = {
                name: Seed(
                    None if status is None else STATUS_BY_CODE[status],
                    tuple(STATUS_BY_CODE[code] for code in reversed(recent)),
                )
                for name, status, recent in rows
            }
        return {name: found.get(name, Seed(None, ())) for name in claimed}
