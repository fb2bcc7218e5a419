"""Measuring instruments shared by the scenarios: lateness, latencies, memory, storage.

Everything here observes; nothing changes what it measures beyond recording a loop
timestamp at a point the code passes anyway.
"""

from __future__ import annotations

import math
import os
import resource
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ON_TIME_S",
    "LatenessLog",
    "percentile",
    "rss_bytes",
    "storage_stats",
]

ON_TIME_S = 0.010
"""A check is on time when it starts at most this long after its slot (issue 4)."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100, nearest rank) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class LatenessLog:
    """When each schedule's slots were due and when their checks actually started.

    `record(key, slot, started)` is called once per started check (loop clock).
    Slots that never started (skipped because a check overran) are found by
    arithmetic: a schedule's slot k is due at first_slot + k * interval.
    """

    interval: float
    samples: list[tuple[int, float, float]] = field(default_factory=list)
    first_slot: dict[int, float] = field(default_factory=dict)

    def record(self, key: int, slot: float, started: float) -> None:
        self.first_slot.setdefault(key, slot)
        self.samples.append((key, slot, started - slot))

    def summary(self, t0: float, t1: float) -> dict[str, Any]:
        """Slots due in [t0, t1): how many, how many started on time, lateness spread."""
        scheduled = 0
        for first in self.first_slot.values():
            if first < t1:
                after_t0 = max(0, math.ceil((t0 - first) / self.interval))
                scheduled += math.ceil((t1 - first) / self.interval) - after_t0
        late = [lateness for _, slot, lateness in self.samples if t0 <= slot < t1]
        on_time = sum(1 for lateness in late if lateness <= ON_TIME_S)
        return {
            "scheduled": scheduled,
            "started": len(late),
            "on_time": on_time,
            "on_time_fraction": on_time / scheduled if scheduled else None,
            "lateness_p50_ms": _ms(percentile(late, 50)),
            "lateness_p99_ms": _ms(percentile(late, 99)),
            "lateness_max_ms": _ms(max(late, default=None)),
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc), else its peak so far."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        # ru_maxrss is in KiB on Linux; it is the peak, a poorer but portable stand-in.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def storage_stats(database: Path) -> dict[str, Any]:
    """Bytes on disk per stored result, after the WAL is folded into the main file.

    Two views: the whole file over the number of results (what a user pays), and
    SQLite's `dbstat` pages of `check_results` and its indexes over the same rows
    (what one row costs, without the other tables and free pages).
    """
    # Plain sqlite3 on purpose: the monitor and its store are closed by now, and this
    # is a reader's view of the file, as `sqlite3` on the command line would have.
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows, healthy = conn.execute(
            "SELECT count(*), coalesce(sum(status = 0), 0) FROM check_results"
        ).fetchone()
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        table_bytes: int | None
        try:
            names = [
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE tbl_name = 'check_results'"
                )
            ]
            marks = ",".join("?" * len(names))
            table_bytes = conn.execute(
                f"SELECT sum(pgsize) FROM dbstat WHERE name IN ({marks})",  # noqa: S608 - only '?'
                names,
            ).fetchone()[0]
        except sqlite3.OperationalError:  # SQLite built without the dbstat table
            table_bytes = None
    conn.close()
    file_bytes = database.stat().st_size
    wal = database.with_name(database.name + "-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    return {
        "rows": rows,
        "healthy_rows": healthy,
        "file_bytes": file_bytes,
        "wal_bytes": wal_bytes,
        "page_size": page_size,
        "bytes_per_row_file": file_bytes / rows if rows else None,
        "bytes_per_row_table": table_bytes / rows if rows and table_bytes else None,
    }
