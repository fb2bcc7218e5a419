"""Agents report their own state; this module turns a report into a health status."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Protocol, runtime_checkable

from healthmon.model import HealthStatus

__all__ = ["AGENT_PREFIX", "AgentStatuses", "AgentsAdapter", "agent_health_status"]

AGENT_PREFIX = "agent:"
"""Agents appear in the cluster health as `agent:<name>`."""

AgentStatuses = Mapping[str, Mapping[str, Any]]
"""Agent name -> its report, e.g. `{"status": "running", "health": "healthy"}`."""


@runtime_checkable
class AgentsAdapter(Protocol):
    """Whatever knows the agents: `get_agent_statuses()` may be sync or async."""

    def get_agent_statuses(self) -> AgentStatuses | Awaitable[AgentStatuses]: ...


def agent_health_status(report: Mapping[str, Any]) -> HealthStatus:
    """The seed's mapping: health "healthy" -> HEALTHY, "degraded" -> DEGRADED,
    running without such a health -> UNKNOWN, anything else -> UNHEALTHY."""
    health = report.get("health")
    if health == "healthy":
        return HealthStatus.HEALTHY
    if health == "degraded":
        return HealthStatus.DEGRADED
    if report.get("status") == "running":
        return HealthStatus.UNKNOWN
    return HealthStatus.UNHEALTHY
