"""healthmon: an asyncio health monitor that keeps every result.

HTTP checks at 1-20 Hz and agent-reported states feed an in-memory latest-status
cache for instant cluster queries; with a `HealthStore`, every result and every
status transition is written to SQLite, and subscribers hear of a change once it
is committed.
"""

from healthmon.agents import AgentsAdapter
from healthmon.errors import (
    ConfigError,
    DatabaseInUseError,
    HealthmonError,
    SchemaVersionError,
    StorageError,
)
from healthmon.model import HealthCheckResult, HealthStatus, ServiceDefinition, StatusTransition
from healthmon.monitor import HealthMonitor, Subscriber
from healthmon.policy import CheckPolicy
from healthmon.store import (
    Gap,
    HealthStore,
    Incident,
    LatencyStats,
    Retention,
    ServiceReport,
    StatusCounts,
    WindowStats,
    WriterStats,
)

__all__ = [
    "AgentsAdapter",
    "CheckPolicy",
    "ConfigError",
    "DatabaseInUseError",
    "Gap",
    "HealthCheckResult",
    "HealthMonitor",
    "HealthStatus",
    "HealthStore",
    "HealthmonError",
    "Incident",
    "LatencyStats",
    "Retention",
    "SchemaVersionError",
    "ServiceDefinition",
    "ServiceReport",
    "StatusCounts",
    "StatusTransition",
    "StorageError",
    "Subscriber",
    "WindowStats",
    "WriterStats",
]
