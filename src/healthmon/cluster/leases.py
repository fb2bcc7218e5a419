"""Lease rows: who checks which service, timed by the database's clock.

Every statement here runs on PostgreSQL and compares times with its clock only
(`clock_timestamp()`), so nodes' own clocks may be skewed. A lease's `epoch` is bumped
by every claim: it is the fencing token the writer checks (cluster/fence.py).

- `claim`: free or expired rows, `FOR UPDATE SKIP LOCKED` (two nodes claiming at once
  take different rows; a row a writer is fencing against is skipped, not waited for).
- `beat`: the heartbeat and one UPDATE of every row this node holds, RETURNING what it
  still holds, in one statement.
  It does not require the lease to be unexpired: a row still naming this node was
  claimed by nobody since (a claim sets the claimer's id), so its epoch, the fence,
  has not moved, and this node may go on (after a database restart, say).
- `release`: hand rows back (a clean stop, or rebalancing).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "FEED_CHANNEL",
    "LEASES_CHANNEL",
    "Beat",
    "beat",
    "claim",
    "ensure_rows",
    "fair_share",
    "register_node",
    "release",
    "stop_node",
]

FEED_CHANNEL = "healthmon_feed"
"""pg_notify channel: transitions were committed (payload: the last feed position)."""
LEASES_CHANNEL = "healthmon_leases"
"""pg_notify channel: leases were handed back (a clean stop): claim them now."""

# Times are the database's: extract(epoch from clock_timestamp()), written out in each
# statement (epoch seconds, as the tables keep them).


@dataclass(frozen=True, slots=True)
class Beat:
    """One heartbeat and renewal: the live nodes' ids (oldest first), the leases this
    node still holds (service -> epoch), and the seconds until the first lease held
    by another node expires (None if none is held)."""

    alive: tuple[int, ...]
    held: dict[str, int]
    soonest: float | None
    orphans: int
    """Leases of the services free or expired for a whole lease: nobody took them."""


async def register_node(conn: AsyncConnection, name: str) -> int:
    """A new cluster_nodes row for this process; its id. Not alive (no heartbeat) until
    its first `beat`: the other nodes make room for it only once it can take it."""
    row = await conn.execute(
        text(
            "INSERT INTO cluster_nodes (name, started_at, heartbeat_at) "
            "VALUES (:name, extract(epoch from clock_timestamp()), 0) RETURNING id"
        ),
        {"name": name},
    )
    node_id: int = row.scalar_one()
    return node_id


async def stop_node(conn: AsyncConnection, node_id: int) -> None:
    await conn.execute(
        text(
            "UPDATE cluster_nodes "
            "SET stopped_at = extract(epoch from clock_timestamp()) WHERE id = :me"
        ),
        {"me": node_id},
    )


async def beat(
    conn: AsyncConnection, node_id: int, lease: float, services: Collection[str]
) -> Beat:
    """Heartbeat and renew every lease this node holds, in one statement (one round
    trip: a busy node's event loop makes each one slow). A node is alive while its
    heartbeat is younger than a lease."""
    row = (
        await conn.execute(
            text(
                "WITH now AS (SELECT extract(epoch from clock_timestamp()) AS t), "
                "beat AS (UPDATE cluster_nodes SET heartbeat_at = (SELECT t FROM now) "
                "         WHERE id = :me RETURNING id), "
                "renewed AS (UPDATE service_leases SET expires_at = (SELECT t FROM now) + :lease "
                "            WHERE node_id = :me RETURNING service, epoch) "
                "SELECT ARRAY(SELECT id FROM cluster_nodes WHERE stopped_at IS NULL "
                "             AND (heartbeat_at > now.t - :lease OR id = :me) ORDER BY id), "
                "       ARRAY(SELECT service FROM renewed ORDER BY service), "
                "       ARRAY(SELECT epoch FROM renewed ORDER BY service), "
                "       (SELECT min(expires_at) - now.t FROM service_leases "
                "        WHERE node_id <> :me AND service = ANY(CAST(:names AS text[]))), "
                "       (SELECT count(*) FROM beat), "
                "       (SELECT count(*) FROM service_leases "
                "        WHERE service = ANY(CAST(:names AS text[])) "
                "          AND expires_at <= now.t - :lease) "
                "FROM now"
            ),
            {"me": node_id, "lease": lease, "names": sorted(services)},
        )
    ).one()
    alive, names, epochs, soonest, beaten, orphans = row
    if not beaten:
        raise LookupError(f"cluster node {node_id} has no cluster_nodes row (deleted?)")
    return Beat(
        tuple(alive),
        dict(zip(names, epochs, strict=True)),
        None if soonest is None else float(soonest),
        int(orphans),
    )


async def ensure_rows(conn: AsyncConnection, services: Collection[str]) -> None:
    """A lease row for each service (free until claimed)."""
    if services:
        await conn.execute(
            text(
                "INSERT INTO service_leases (service) SELECT unnest(CAST(:names AS text[])) "
                "ON CONFLICT (service) DO NOTHING"
            ),
            {"names": sorted(services)},
        )


async def claim(
    conn: AsyncConnection,
    node_id: int,
    services: Collection[str],
    count: int,
    lease: float,
    *,
    free_for: float = 0.0,
) -> dict[str, int]:
    """Claim up to `count` of `services` whose lease has been free or expired for
    `free_for` seconds or more; what was claimed, with the new epochs. (A lease handed
    back is marked expired at that moment.)"""
    if count <= 0 or not services:
        return {}
    rows = await conn.execute(
        text(
            "UPDATE service_leases AS l SET node_id = :me, epoch = l.epoch + 1, "
            "expires_at = extract(epoch from clock_timestamp()) + :lease "
            "FROM (SELECT service FROM service_leases "
            "      WHERE service = ANY(CAST(:names AS text[])) "
            "       AND expires_at <= extract(epoch from clock_timestamp()) - :free_for "
            "      ORDER BY service LIMIT :count FOR UPDATE SKIP LOCKED) AS free "
            "WHERE l.service = free.service RETURNING l.service, l.epoch"
        ),
        {
            "me": node_id,
            "names": sorted(services),
            "count": count,
            "lease": lease,
            "free_for": free_for,
        },
    )
    return {service: epoch for service, epoch in rows}


async def release(conn: AsyncConnection, node_id: int, services: Collection[str]) -> None:
    """Hand leases back (only those this node still holds) and tell the other nodes."""
    if not services:
        return
    await conn.execute(
        text(
            "UPDATE service_leases SET node_id = NULL, "
            "expires_at = extract(epoch from clock_timestamp()) "
            "WHERE node_id = :me AND service = ANY(CAST(:names AS text[]))"
        ),
        {"me": node_id, "names": sorted(services)},
    )
    await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": LEASES_CHANNEL})


def fair_share(total: int, alive: tuple[int, ...], node_id: int) -> int:
    """This node's share of `total` services among the live nodes: total // n, one more
    for the oldest total % n nodes, so that the shares add up to the total and differ
    by at most one."""
    nodes = alive if node_id in alive else tuple(sorted((*alive, node_id)))
    base, extra = divmod(total, len(nodes))
    return base + (1 if nodes.index(node_id) < extra else 0)
