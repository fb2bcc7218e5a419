"""What `healthmon status` shows of a cluster: its nodes and who checks what."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from healthmon.cluster.historian import HISTORY_LEASE

__all__ = ["ClusterView", "NodeView", "read_cluster"]


@dataclass(frozen=True, slots=True)
class NodeView:
    node_id: int
    name: str
    alive: bool
    """Heartbeat younger than the longest lease seen, and not stopped."""
    services: int
    """Leases held now (unexpired)."""
    heartbeat_age: float
    """Seconds since its last heartbeat, by the database's clock."""
    heartbeat_at: float
    """Its last heartbeat, epoch seconds (the database's clock)."""
    started_at: float
    stopped_at: float | None


@dataclass(frozen=True, slots=True)
class ClusterView:
    nodes: tuple[NodeView, ...]
    owners: dict[str, str]
    """Service name -> the name of the node holding its lease now."""


async def read_cluster(conn: AsyncConnection, recent: float = 3600.0) -> ClusterView | None:
    """The cluster in the database (PostgreSQL), None if no node ever ran there. Nodes
    that stopped or died more than `recent` seconds ago are left out."""
    if conn.dialect.name != "postgresql":
        return None
    rows = (
        await conn.execute(
            text(
                "WITH now AS (SELECT extract(epoch from clock_timestamp()) AS t) "
                "SELECT n.id, n.name, n.started_at, n.stopped_at, now.t - n.heartbeat_at, "
                "       (SELECT count(*) FROM service_leases l "
                "        WHERE l.node_id = n.id AND l.expires_at > now.t "
                "          AND l.service <> :history), "
                "       (SELECT coalesce(max(expires_at), now.t) - now.t FROM service_leases), "
                "       n.heartbeat_at "
                "FROM cluster_nodes n, now "
                "WHERE n.heartbeat_at > now.t - :recent ORDER BY n.id"
            ),
            {"recent": recent, "history": HISTORY_LEASE},
        )
    ).all()
    if not rows:
        return None
    leases: dict[str, str] = dict(
        (
            await conn.execute(
                text(
                    "SELECT l.service, n.name FROM service_leases l "
                    "JOIN cluster_nodes n ON n.id = l.node_id "
                    "WHERE l.expires_at > extract(epoch from clock_timestamp()) "
                    "AND l.service <> :history"
                ),
                {"history": HISTORY_LEASE},
            )
        ).all()
    )
    # A node is alive while its heartbeat is younger than its lease; the longest lease
    # left to run (plus a second) bounds that without knowing each node's settings.
    lease_left = float(rows[0][6])
    alive_within = max(lease_left, 1.0) + 1.0
    nodes = tuple(
        NodeView(
            node_id=node_id,
            name=name,
            alive=stopped is None and age < alive_within,
            services=held,
            heartbeat_age=float(age),
            heartbeat_at=float(beat),
            started_at=started,
            stopped_at=stopped,
        )
        for node_id, name, started, stopped, age, held, _, beat in rows
    )
    return ClusterView(nodes, leases)
