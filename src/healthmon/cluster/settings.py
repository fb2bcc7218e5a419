"""ClusterSettings: how a node takes part in a cluster (config `[cluster]`, `--node`)."""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass

__all__ = ["ClusterSettings"]

MIN_LEASE = 1.0
MAX_LEASE = 300.0


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """A cluster node's settings. Every node of a cluster shares one PostgreSQL
    database and the same services; each service is checked by one node at a time.

    `node`: this node's name, shown by `healthmon status` (default: host:pid). Names
    are labels: a restarted node is a new member even under the same name.
    `lease`: the failover bound, in seconds (1-300, default 5): a dead node's services
    are checked by another within `lease` plus one check interval. A node holds each
    lease row for `row_lease` (75 % of it, at most 1 s less), so that the takeover (a
    claim, the first check) fits in the rest; renewed every lease/3. Timed by the
    database's clock.
    `feed_poll`: seconds between two reads of the transition feed when no
    notification came (notifications make it prompt; the poll catches up on any that
    were lost).
    """

    node: str | None = None
    lease: float = 5.0
    feed_poll: float = 1.0

    def __post_init__(self) -> None:
        if self.node is not None and not (isinstance(self.node, str) and self.node.strip()):
            raise ValueError(f"node must be a non-empty name, got {self.node!r}")
        for name, low, high in (("lease", MIN_LEASE, MAX_LEASE), ("feed_poll", 0.05, 60.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number of seconds, got {value!r}")
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(
                    f"{name} must be between {low:g} and {high:g} seconds, got {value!r}"
                )

    @property
    def node_name(self) -> str:
        """The node's name: as given, else host:pid."""
        return self.node if self.node is not None else f"{socket.gethostname()}:{os.getpid()}"

    @property
    def renew_every(self) -> float:
        return self.lease / 3

    @property
    def row_lease(self) -> float:
        """How long a lease row lasts without renewal: the lease less the takeover's
        margin (a quarter of it, at most 1 s)."""
        return self.lease - min(self.lease / 4, 1.0)
