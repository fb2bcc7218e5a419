"""Cluster mode as the HTTP face shows it: the nodes and who checks what.

From the same source as `healthmon status` (cluster/view.py's `read_cluster`: the
node and lease rows, by the database's clock), read at most once per `max_age`
seconds however many clients ask (so outside the clients' read budget). The
services this node holds are known here at once (its own leases, in memory); only
the other nodes' come from that read.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from sqlalchemy.exc import SQLAlchemyError

from healthmon.cluster.view import ClusterView, read_cluster
from healthmon.errors import StorageError
from healthmon.monitor import HealthMonitor
from healthmon.store import HealthStore

__all__ = ["ClusterWatch"]

log = structlog.get_logger("healthmon.http")

_READ_TIMEOUT = 2.0
"""Seconds a read of the node and lease rows may take before it counts as failed."""


class ClusterWatch:
    """The cluster's nodes and service owners, read from the database on demand."""

    def __init__(
        self,
        monitor: HealthMonitor,
        store: HealthStore,
        *,
        max_age: float = 1.0,
    ) -> None:
        self._monitor = monitor
        self._store = store
        self._max_age = max_age
        self._view: ClusterView | None = None
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()

    @property
    def clustered(self) -> bool:
        """Whether the monitor runs as a cluster node (`[cluster]`, `--node`)."""
        return self._monitor.cluster_settings is not None

    @property
    def node_name(self) -> str | None:
        """This node's name (None outside cluster mode)."""
        node = self._monitor.cluster
        if node is not None:
            return node.name
        settings = self._monitor.cluster_settings
        return None if settings is None else settings.node_name

    @property
    def node_id(self) -> int | None:
        """This node's id in the database (None outside cluster mode or before joining)."""
        node = self._monitor.cluster
        return None if node is None else node.node_id

    async def view(self) -> ClusterView | None:
        """The cluster in the database, at most `max_age` old; None outside cluster
        mode (or before any node ran there). Raises StorageError if it cannot be read."""
        if not self.clustered:
            return None
        if time.monotonic() - self._read_at < self._max_age:
            return self._view
        async with self._lock:  # one read for everyone asking meanwhile
            if time.monotonic() - self._read_at >= self._max_age:
                try:
                    # (At most once per max_age, so outside the clients' read budget.)
                    # Bounded: a database that stopped answering must not hold
                    # /api/v1/cluster for the driver's own timeouts (10-60 s).
                    async with (
                        asyncio.timeout(_READ_TIMEOUT),
                        self._store.engine.connect() as conn,
                    ):
                        self._view = await read_cluster(conn)
                except (SQLAlchemyError, OSError, TimeoutError) as exc:
                    self._read_at = time.monotonic()  # not again at once, for everyone
                    raise StorageError(
                        f"cannot read the cluster's nodes: {exc or type(exc).__name__}"
                    ) from exc
                self._read_at = time.monotonic()
        return self._view

    async def owners(self) -> dict[str, str]:
        """Service name -> the node checking it (empty outside cluster mode). A failed
        read is logged and the last one used: the cluster's own status is memory's, and
        must not fail with the database."""
        if not self.clustered:
            return {}
        try:
            view = await self.view()
        except StorageError as exc:
            log.warning("http_cluster_read_failed", error=str(exc).splitlines()[0])
            view = self._view
        return self.owners_in(view)

    def owners_in(self, view: ClusterView | None) -> dict[str, str]:
        """Service name -> the node holding its lease: this node's own leases as held
        now, the others' as last read."""
        owners = {} if view is None else dict(view.owners)
        node = self._monitor.cluster
        if node is not None:
            mine = node.name
            for name, owner in list(owners.items()):
                if owner == mine and name not in node.held:
                    del owners[name]  # handed back or lost since the read
            owners.update(dict.fromkeys(node.held, mine))
        return owners
