"""The writer's side of a cluster: fencing, the node's name on rows, the feed's order.

The writer calls `admit` in its flush transaction before writing anything: it locks
the lease rows of the batch's services `FOR KEY SHARE` and keeps only the results
taken under a lease this node still holds at the same epoch. A claim by another node
(`FOR UPDATE SKIP LOCKED`) cannot take a row while such a flush holds it, so once a
claim commits, the old holder's writes for that service are all committed or all
refused: the new holder reads the service's state after them, and results of two
nodes never interleave. KEY SHARE, the weakest row lock, is the one a claim's FOR
UPDATE still conflicts with while the holder's own renewals (UPDATEs of non-key
columns) do not: a slow flush never holds up this node's renewals.

A node frozen in the middle of a flush (SIGSTOP, a paused VM) would hold its rows
locked for as long as it is frozen and so block their takeover: each flush therefore
sets `idle_in_transaction_session_timeout` to the lease, after which PostgreSQL ends
that session (its flush then fails and is retried, fenced, after it wakes).

`number` gives the flush's transitions their feed positions, from the one
`cluster_feed` row, last in the transaction: its lock is held until the commit, so
transactions take positions in the order they commit and a reader that has seen
position n has seen every position before it (no transaction commits out of order
behind its cursor). The `pg_notify` in the same transaction is delivered at commit.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.cluster.leases import FEED_CHANNEL
from healthmon.model import HealthCheckResult
from healthmon.store.closing import hold_marks

__all__ = ["ClusterFence"]


class ClusterFence:
    """What the writer asks of the cluster in each flush (store/writer.py's `Fence`)."""

    def __init__(self, node_id: int, lease: float) -> None:
        self.node_id = node_id
        self._idle_limit = str(max(round(lease * 1000), 1))  # ms
        self.numbered: dict[int, HealthCheckResult] = {}
        """Committed feed positions with the result that caused each transition, until
        the monitor takes them (`popitem`: the writer may add more meanwhile, from the
        store's thread)."""
        self._numbering: dict[int, HealthCheckResult] = {}  # this flush's, until it commits

    async def admit(
        self, conn: AsyncConnection, wanted: Collection[tuple[str, int]]
    ) -> set[tuple[str, int]]:
        """Of the (service, epoch) pairs, those whose lease this node holds now. (First
        in every flush: what an earlier, rolled-back flush numbered is forgotten.)"""
        self._numbering = {}
        # First of all: the history's marks, as every writer and the closer take them
        # first (store/closing.py): one lock order for all.
        await hold_marks(conn)
        if not wanted:
            return set()
        await conn.execute(
            text("SELECT set_config('idle_in_transaction_session_timeout', :ms, true)"),
            {"ms": self._idle_limit},
        )
        rows = await conn.execute(
            text(
                "SELECT service, epoch FROM service_leases "
                "WHERE node_id = :me AND service = ANY(CAST(:names AS text[])) "
                "ORDER BY service FOR KEY SHARE"
            ),
            {"me": self.node_id, "names": sorted({name for name, _ in wanted})},
        )
        held = {(service, epoch) for service, epoch in rows}
        return held.intersection(wanted)

    async def number(
        self, conn: AsyncConnection, transitions: Sequence[tuple[HealthCheckResult, object]]
    ) -> int:
        """Feed positions for the transitions (with their results); the first of them."""
        count = len(transitions)
        last = (
            await conn.execute(
                text(
                    "UPDATE cluster_feed SET last_seq = last_seq + :count "
                    "WHERE id = 1 RETURNING last_seq"
                ),
                {"count": count},
            )
        ).scalar_one()
        await conn.execute(
            text("SELECT pg_notify(:channel, :last)"),
            {"channel": FEED_CHANNEL, "last": str(last)},
        )
        first = int(last) - count + 1
        self._numbering = {first + i: result for i, (result, _) in enumerate(transitions)}
        return first

    def committed(self) -> None:
        """The flush committed: its positions are the monitor's to take."""
        numbering, self._numbering = self._numbering, {}
        self.numbered.update(numbering)
