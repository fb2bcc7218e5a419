"""Cluster mode: several healthmon processes share one PostgreSQL database.

Each service is checked by one live node at a time (lease rows timed by the
database's clock, cluster/leases.py); writes are fenced by the lease's epoch
(cluster/fence.py); every node hears every committed transition (cluster/feed.py);
one node at a time closes the history's aggregates and prunes (cluster/historian.py);
no single node writes beside a cluster, nor two single nodes together
(cluster/guard.py); cluster/node.py runs a node's part beside its monitor. See
docs/cluster.md.
"""

from healthmon.cluster.feed import FeedEntry
from healthmon.cluster.node import ClusterNode, Seed
from healthmon.cluster.settings import ClusterSettings

__all__ = ["ClusterNode", "ClusterSettings", "FeedEntry", "Seed"]
