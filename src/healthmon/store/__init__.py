"""Persistence: SQLite through SQLAlchemy (async, aiosqlite), schema by alembic.

The store knows SQL and nothing of HTTP.
"""

from healthmon.store.fleet import Aggregate, DayCounts
from healthmon.store.health_store import HealthStore
from healthmon.store.history import TransitionRecord
from healthmon.store.plan import Coverage
from healthmon.store.retention import Retention
from healthmon.store.stats import (
    Gap,
    Incident,
    LatencyStats,
    ServiceReport,
    StatusCounts,
    WindowStats,
)
from healthmon.store.writer import ResultWriter, WriterStats

__all__ = [
    "Aggregate",
    "Coverage",
    "DayCounts",
    "Gap",
    "HealthStore",
    "Incident",
    "LatencyStats",
    "ResultWriter",
    "Retention",
    "ServiceReport",
    "StatusCounts",
    "TransitionRecord",
    "WindowStats",
    "WriterStats",
]
