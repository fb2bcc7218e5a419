"""healthmon: an asyncio health monitor that keeps every result.

HTTP checks at 1-20 Hz and agent-reported states feed an in-memory latest-status
cache for instant cluster queries; with a `HealthStore`, every result and every
status transition is written to SQLite, and subscribers hear of a change once it
is committed.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from healthmon.agents import AgentsAdapter
from healthmon.errors import (
    ConfigError,
    DatabaseInUseError,
    HealthmonError,
    SchemaVersionError,
    StorageError,
)
from healthmon.model import HealthCheckResult, HealthStatus, ServiceDefinition, StatusTransition
from healthmon.policy import CheckPolicy

if TYPE_CHECKING:
    from healthmon.monitor import HealthMonitor, Subscriber
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

# The monitor and the store (SQLAlchemy, alembic: ~0.6 s) are imported when first
# asked for, so that a program needing only the model and the probe (a check worker,
# healthmon/workers/child.py) starts in a fraction of that.
_LAZY = {
    "HealthMonitor": "healthmon.monitor",
    "Subscriber": "healthmon.monitor",
    **dict.fromkeys(
        (
            "Gap",
            "HealthStore",
            "Incident",
            "LatencyStats",
            "Retention",
            "ServiceReport",
            "StatusCounts",
            "WindowStats",
            "WriterStats",
        ),
        "healthmon.store",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        if importlib.util.find_spec(f"healthmon.{name}") is not None:  # `healthmon.store`
            return importlib.import_module(f"healthmon.{name}")  # (it sets the attribute)
        raise AttributeError(f"module 'healthmon' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
