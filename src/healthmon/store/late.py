"""Aggregate rows changed by late results, in commit order, for readers that read each
row once and keep sums of them (the status page's FleetHistory).

The writer's Rollup adds a late result (one older than the minute mark: retried after
a database outage, say) to the minute, hour and day rows it was already written to;
after the commit it reports those rows here. A reader keeps the `version` it has seen
and asks for what changed after it: it reads those rows again. Only so many changes
are kept: a reader too far behind is told to read everything again.

In-process only: a reader hears of the late results of its own process's writer.
The writer adds from the store's thread (store/thread.py), readers read from theirs:
a lock keeps the log whole.
"""

from __future__ import annotations

import threading
from collections import deque

from healthmon.store.tiers import Changed

__all__ = ["LateChanges"]


class LateChanges:
    """A bounded log of (width, service id, start) of rows late results changed."""

    def __init__(self, keep: int = 100_000) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep!r}")
        self.keep = keep
        self._log: deque[tuple[int, Changed]] = deque()  # (version, rows), oldest first
        self._kept = 0  # rows in the log
        self._version = 0
        self._forgotten = 0  # the newest version dropped from the log
        self._lock = threading.Lock()

    @property
    def version(self) -> int:
        """How many commits have changed rows so far."""
        return self._version

    def add(self, changed: Changed) -> None:
        """Rows a commit changed (the Rollup's `on_late`)."""
        if not changed:
            return
        rows = list(changed)
        with self._lock:
            self._version += 1
            self._log.append((self._version, rows))
            self._kept += len(rows)
            while self._kept > self.keep and len(self._log) > 1:
                version, dropped = self._log.popleft()
                self._kept -= len(dropped)
                self._forgotten = version

    def after(self, version: int) -> Changed | None:
        """The rows changed by the commits after `version`, or None when some of them
        were forgotten (more than `keep` rows since): read everything again."""
        with self._lock:
            if version < self._forgotten:
                return None
            return [row for v, rows in self._log if v > version for row in rows]
