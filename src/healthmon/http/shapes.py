"""What the API's JSON bodies hold: the monitor's and the store's values as plain data.

Times are epoch seconds (UTC) in `ts`-like fields with an ISO 8601 twin; durations
are milliseconds for latencies (`_ms`) and seconds elsewhere. URLs are redacted as
everywhere else; header values are never shown.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from starlette.responses import Response

from healthmon.cluster.view import ClusterView
from healthmon.errors import ApiError
from healthmon.model import HealthCheckResult, ServiceDefinition, redact_url
from healthmon.render import iso
from healthmon.store import (
    Gap,
    Incident,
    LatencyStats,
    ServiceReport,
    StatusCounts,
    TransitionRecord,
    WindowStats,
    WriterStats,
)

__all__ = [
    "dumps",
    "error_response",
    "nodes_shape",
    "report_shape",
    "result_shape",
    "service_shape",
    "store_shape",
    "transition_shape",
    "window_shape",
]


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> Response:
    """The JSON body of every error: a short code and a message saying what is wrong."""
    body = {"error": error.code, "message": error.message}
    return Response(dumps(body), error.status, headers, media_type="application/json")


def dumps(body: Any) -> bytes:
    """Compact JSON as UTF-8."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def result_shape(result: HealthCheckResult) -> dict[str, Any]:
    return {
        "ts": result.timestamp,
        "time": iso(result.timestamp),
        "status": result.status.value,
        "response_time_ms": result.response_time_ms,
        "error": result.error,
        "details": result.details,
    }


def service_shape(
    name: str,
    result: HealthCheckResult | None,
    service: ServiceDefinition | None,
    since: TransitionRecord | None,
    interval: float | None,
    *,
    node: str | None = None,
) -> dict[str, Any]:
    """One service as the cluster sees it: its confirmed status since when, and its
    latest result; in cluster mode, the node checking it. A service registered but
    not checked yet is `unknown`."""
    status = "unknown" if result is None else result.effective_status.value
    url = None
    if service is not None and service.health_check_url is not None:
        url = redact_url(service.health_check_url)
    return {
        "name": name,
        "status": status,
        "since": None if since is None else since.transition.timestamp,
        "since_time": None if since is None else iso(since.transition.timestamp),
        "transition_id": None if since is None else since.id,
        "kind": "agent" if name.startswith("agent:") else "http" if url else "other",
        "url": url,
        "interval": interval,
        "last_check": None if result is None else result_shape(result),
        "node": node,
    }


def nodes_shape(
    clustered: bool, me: str | None, my_id: int | None, view: ClusterView | None
) -> dict[str, Any]:
    """The cluster's nodes as `healthmon status` lists them (cli/status.py); `me`,
    `my_id`: the answering node's name and id (a restarted node is a new id)."""
    nodes = [
        {
            "name": n.name,
            "id": n.node_id,
            "alive": n.alive,
            "services": n.services,
            "heartbeat_at": n.heartbeat_at,
            "heartbeat_time": iso(n.heartbeat_at),
            "heartbeat_age": round(n.heartbeat_age, 3),
            "started_at": n.started_at,
            "started_time": iso(n.started_at),
            "stopped_at": n.stopped_at,
            "stopped_time": iso(n.stopped_at),
            "this": n.node_id == my_id,
        }
        for n in (view.nodes if view is not None else ())
    ]
    return {"clustered": clustered, "node": me, "nodes": nodes}


def transition_shape(record: TransitionRecord) -> dict[str, Any]:
    t = record.transition
    return {
        "id": record.id,
        "service": t.service_name,
        "ts": t.timestamp,
        "time": iso(t.timestamp),
        "from_status": None if t.from_status is None else t.from_status.value,
        "to_status": t.to_status.value,
        "cause": t.cause,
    }


def counts_shape(counts: StatusCounts) -> dict[str, Any]:
    return {
        "healthy": counts.healthy,
        "unknown": counts.unknown,
        "degraded": counts.degraded,
        "unhealthy": counts.unhealthy,
        "total": counts.total,
    }


def latency_shape(latency: LatencyStats) -> dict[str, Any]:
    return dataclasses.asdict(latency)


def window_shape(window: WindowStats) -> dict[str, Any]:
    return {
        "since": window.since,
        "until": window.until,
        "counts": counts_shape(window.counts),
        "uptime": window.uptime,
        "latency_ms": latency_shape(window.latency),
    }


def _incident(incident: Incident) -> dict[str, Any]:
    return {
        "start": incident.start,
        "end": incident.end,
        "worst_status": incident.worst_status.value,
        "duration": incident.duration,
        "checks": incident.checks,
        "began_before": incident.began_before,
    }


def _gap(gap: Gap) -> dict[str, Any]:
    return {"start": gap.start, "end": gap.end, "duration": gap.duration}


def report_shape(report: ServiceReport) -> dict[str, Any]:
    return {
        "service": report.service_name,
        "since": report.since,
        "until": report.until,
        "since_time": iso(report.since),
        "until_time": iso(report.until),
        "counts": counts_shape(report.counts),
        "uptime": report.uptime,
        "healthy_share": report.healthy_share,
        "latency_ms": latency_shape(report.latency),
        "incidents": [_incident(incident) for incident in report.incidents],
        "gaps": [_gap(gap) for gap in report.gaps],
        "mttr": report.mttr,
        "mtbf": report.mtbf,
    }


def store_shape(stats: WriterStats | None) -> dict[str, Any]:
    """The writer's condition; `writing` is false when the monitor is not running."""
    if stats is None:
        return {"writing": False, "healthy": None}
    return {"writing": True, "healthy": stats.healthy, **dataclasses.asdict(stats)}
