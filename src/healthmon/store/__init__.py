"""Persistence: SQLite through SQLAlchemy (async, aiosqlite), schema by alembic.

The store knows SQL and nothing of HTTP.
"""

from healthmon.store.health_store import HealthStore
from healthmon.store.writer import ResultWriter, WriterStats

__all__ = ["HealthStore", "ResultWriter", "WriterStats"]
