"""Cluster mode's benchmark: scale-out over nodes, and what the lease and feed
machinery costs (bench/scaleout/README section in bench/README.md)."""
