"""The OpenAPI 3.1 document of the API, served at `/api/v1/openapi.json`.

Written out rather than derived (the routes take plain query strings): the test
suite fuzzes the server from it with schemathesis, so a response that does not
match what is written here fails the build.
"""

from __future__ import annotations

from typing import Any

from healthmon import __name__ as _package

__all__ = ["document"]

_NUM = {"type": "number"}
_OPT_NUM = {"type": ["number", "null"]}
_OPT_STR = {"type": ["string", "null"]}
_STATUS = {"type": "string", "enum": ["healthy", "unhealthy", "degraded", "unknown"]}
_OPT_STATUS = {
    "type": ["string", "null"],
    "enum": ["healthy", "unhealthy", "degraded", "unknown", None],
}
_COUNT = {"type": "integer", "minimum": 0}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], *, extra: bool = False) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": extra,
    }


def _counts() -> dict[str, Any]:
    return _object(dict.fromkeys(("healthy", "unknown", "degraded", "unhealthy", "total"), _COUNT))


def _latency() -> dict[str, Any]:
    props: dict[str, Any] = {"count": {"type": "integer", "minimum": 0}}
    props.update({key: _OPT_NUM for key in ("min", "mean", "max", "p50", "p90", "p95", "p99")})
    props["exact"] = {"type": "boolean"}
    return _object(props)


_CLUSTER: dict[str, Any] = {
    "status": _STATUS,
    "index": _COUNT,
    "running": {"type": "boolean"},
    "service_count": _COUNT,
    "counts": _object(dict.fromkeys(("healthy", "unhealthy", "degraded", "unknown"), _COUNT)),
}

_SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {
            "error": {"type": "string", "description": "a short code, e.g. bad_request"},
            "message": {"type": "string", "description": "what is wrong, in words"},
        }
    ),
    "Result": _object(
        {
            "ts": _NUM,
            "time": {"type": "string"},
            "status": _STATUS,
            "response_time_ms": _NUM,
            "error": _OPT_STR,
            "details": {"type": ["object", "null"]},
        }
    ),
    "Service": _object(
        {
            "name": {"type": "string"},
            "status": _STATUS,
            "since": _OPT_NUM,
            "since_time": _OPT_STR,
            "transition_id": {"type": ["integer", "null"]},
            "kind": {"type": "string", "enum": ["http", "agent", "other"]},
            "url": _OPT_STR,
            "interval": _OPT_NUM,
            "last_check": {"oneOf": [_ref("Result"), {"type": "null"}]},
            "node": {
                **_OPT_STR,
                "description": "cluster mode: the node holding its lease (checking it) now; "
                "null if none does, and outside cluster mode",
            },
        }
    ),
    "Node": _object(
        {
            "name": {"type": "string"},
            "id": {"type": "integer"},
            "alive": {
                "type": "boolean",
                "description": "its heartbeat is younger than the leases, and it has not stopped",
            },
            "services": {**_COUNT, "description": "leases it holds now"},
            "heartbeat_at": _NUM,
            "heartbeat_time": {"type": "string"},
            "heartbeat_age": {**_NUM, "description": "seconds, by the database's clock"},
            "started_at": _NUM,
            "started_time": {"type": "string"},
            "stopped_at": _OPT_NUM,
            "stopped_time": _OPT_STR,
            "this": {"type": "boolean", "description": "the node answering"},
        }
    ),
    "Nodes": _object(
        {
            "clustered": {"type": "boolean", "description": "this monitor is a cluster node"},
            "node": {**_OPT_STR, "description": "the answering node's name"},
            "nodes": {"type": "array", "items": _ref("Node")},
        }
    ),
    "ClusterStatus": _object(_CLUSTER),
    "Cluster": _object(
        {
            **_CLUSTER,
            "services": {"type": "array", "items": {"$ref": "#/components/schemas/Service"}},
        }
    ),
    "Transition": _object(
        {
            "id": {"type": "integer", "minimum": 1},
            "service": {"type": "string"},
            "ts": _NUM,
            "time": {"type": "string"},
            "from_status": _OPT_STATUS,
            "to_status": _STATUS,
            "cause": _OPT_STR,
        }
    ),
    "Counts": _counts(),
    "Latency": _latency(),
    "Window": _object(
        {
            "since": _NUM,
            "until": _NUM,
            "counts": _ref("Counts"),
            "uptime": _OPT_NUM,
            "latency_ms": _ref("Latency"),
        }
    ),
    "Report": _object(
        {
            "service": {"type": "string"},
            "since": _NUM,
            "until": _NUM,
            "since_time": {"type": "string"},
            "until_time": {"type": "string"},
            "counts": _ref("Counts"),
            "uptime": _OPT_NUM,
            "healthy_share": _OPT_NUM,
            "latency_ms": _ref("Latency"),
            "incidents": {
                "type": "array",
                "items": _object(
                    {
                        "start": _NUM,
                        "end": _OPT_NUM,
                        "worst_status": _STATUS,
                        "duration": _NUM,
                        "checks": {"type": "integer"},
                        "began_before": {"type": "boolean"},
                    }
                ),
            },
            "gaps": {
                "type": "array",
                "items": _object({"start": _NUM, "end": _OPT_NUM, "duration": _NUM}),
            },
            "mttr": _OPT_NUM,
            "mtbf": _OPT_NUM,
        }
    ),
    "Store": {
        "type": "object",
        "properties": {
            "writing": {"type": "boolean"},
            "healthy": {"type": ["boolean", "null"]},
            "committed_results": {"type": "integer"},
            "committed_transitions": {"type": "integer"},
            "dropped_results": {"type": "integer"},
            "dropped_transitions": {"type": "integer"},
            "flushes": {"type": "integer"},
            "failed_flushes": {"type": "integer"},
            "last_commit_at": _OPT_NUM,
            "last_error": _OPT_STR,
            "pending_results": {"type": "integer"},
            "pending_transitions": {"type": "integer"},
            "fenced_results": {"type": "integer"},
            "fenced_transitions": {"type": "integer"},
        },
        "required": ["writing", "healthy"],
        "additionalProperties": False,
    },
}

_INDEX_HEADER = {
    "X-Healthmon-Index": {
        "description": "Id of the newest committed transition: the next blocking query's index",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {
        "description": description,
        "headers": _INDEX_HEADER,
        "content": {"application/json": {"schema": schema}},
    }


def _errors(*statuses: int) -> dict[str, Any]:
    words = {
        400: "Bad input: the message names the parameter and what is accepted",
        401: "Missing or wrong bearer token",
        404: "Unknown service",
        503: "Busy (too many waiting clients), not started, or the database unreadable",
    }
    return {
        str(status): {
            "description": words[status],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for status in (*statuses, 401, 503)
    }


def _param(
    name: str, description: str, schema: dict[str, Any], *, where: str = "query"
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema,
    }


_TIME = {"type": "string", "minLength": 1}
_SINCE = _param(
    "since",
    "Start of the window: epoch seconds, ISO 8601 (UTC unless an offset is given), "
    "or a duration ago (24h, 30m, 7d). Default: 24h.",
    _TIME,
)
_UNTIL = _param("until", "End of the window (excluded), same forms; default: now.", _TIME)
_NAME = _param("name", "The service's name.", {"type": "string", "minLength": 1}, where="path")
_INDEX = _param(
    "index",
    "Blocking query: answer once a transition with a higher id is committed "
    "(or at once if the index is ahead of the server's).",
    {"type": "integer", "minimum": 0},
)
_WAIT = _param(
    "wait",
    "How long a blocking query waits at most: 30s, 5m or seconds (at most 10m; default 5m).",
    {"type": "string", "minLength": 1},
)
_SERVICE = _param(
    "service",
    "Only this service (repeat for several).",
    {"type": "array", "items": {"type": "string", "minLength": 1}},
)
_BUCKET = {
    **_param("bucket", "Bucket width: seconds or a duration (60, 5m, 1h).", _TIME),
    "required": True,
}


def _get(
    summary: str,
    ok: dict[str, Any],
    params: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (400,),
    *,
    open_path: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {"200": ok, **_errors(*errors)},
    }
    if open_path:
        operation["security"] = []
    return {"get": operation}


def document() -> dict[str, Any]:
    """The OpenAPI document (a new dict each call)."""
    paths = {
        "/livez": _get(
            "Liveness: the process answers",
            _json(_object({"status": {"type": "string", "enum": ["alive"]}})),
            open_path=True,
        ),
        "/readyz": {
            "get": {
                "summary": "Readiness: monitoring, and the store writing",
                "security": [],
                "parameters": [],
                "responses": {
                    "200": _json(_ref("Ready")),
                    "503": _json(_ref("Ready"), "Not ready: the reasons say why"),
                    "400": _errors(400)["400"],
                },
            }
        },
        "/metrics": _get(
            "Prometheus metrics (text exposition format 0.0.4)",
            {
                "description": "OK",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
        ),
        "/api/v1/openapi.json": _get(
            "This document",
            {"description": "OK", "content": {"application/json": {}}},
            open_path=True,
        ),
        "/api/v1/cluster/status": _get(
            "The cluster's status and counts (blocking query)",
            _json(_ref("ClusterStatus")),
            [_INDEX, _WAIT],
        ),
        "/api/v1/cluster": _get(
            "The cluster's status and every service's latest (blocking query)",
            _json(_ref("Cluster")),
            [_INDEX, _WAIT],
        ),
        "/api/v1/cluster/nodes": _get(
            "Cluster mode: every node that ran in the last hour, alive or not, and how many "
            "services each checks (as `healthmon status` shows them); outside cluster mode "
            "clustered is false and nodes empty",
            _json(_ref("Nodes")),
        ),
        "/api/v1/services/{name}": _get(
            "One service's confirmed status, since when, and latest result (blocking query: "
            "answers once this service has a transition after index)",
            _json(_ref("Service")),
            [_NAME, _INDEX, _WAIT],
            (400, 404),
        ),
        "/api/v1/services/{name}/report": _get(
            "One service's history report over [since, until): the store's report()",
            _json(_ref("Report")),
            [
                _NAME,
                _SINCE,
                _UNTIL,
                _param(
                    "exact",
                    "Percentiles from raw results (window at most 1 h).",
                    {"type": "boolean"},
                ),
            ],
            (400, 404),
        ),
        "/api/v1/services/{name}/series": _get(
            "One service's counts and latency in buckets: the store's series()",
            _json(_ref("Series")),
            [_NAME, _SINCE, _UNTIL, _BUCKET],
            (400, 404),
        ),
        "/api/v1/series": _get(
            "Every service's results together, in buckets",
            _json(_ref("Series")),
            [_SINCE, _UNTIL, _BUCKET],
        ),
        "/api/v1/reports": _get(
            "Every service's report over [since, until): the store's reports()",
            _json(_object({"reports": {"type": "array", "items": _ref("Report")}})),
            [_SINCE, _UNTIL],
        ),
        "/api/v1/transitions": _get(
            "Committed transitions after an id, in commit order, paged; with wait, an "
            "empty page waits for the next one",
            _json(
                _object(
                    {
                        "transitions": {"type": "array", "items": _ref("Transition")},
                        "next_after": {"type": "integer", "minimum": 0},
                    }
                )
            ),
            [
                _param("after", "Transitions with a higher id.", {"type": "integer", "minimum": 0}),
                _param(
                    "limit",
                    "Page size (default 100).",
                    {"type": "integer", "minimum": 1, "maximum": 1000},
                ),
                _SERVICE,
                _WAIT,
            ],
            (400, 404),
        ),
        "/api/v1/results": _get(
            "Raw results of a window, streamed as CSV or JSON lines (the CLI export's rows)",
            {
                "description": "OK",
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                },
            },
            [
                _param(
                    "service", "One service's results only.", {"type": "string", "minLength": 1}
                ),
                _SINCE,
                _UNTIL,
                _param(
                    "format",
                    "csv (default) or jsonl.",
                    {"type": "string", "enum": ["csv", "jsonl"]},
                ),
            ],
            (400, 404),
        ),
        "/api/v1/events": _get(
            "Server-sent events: each committed transition (`event: transition`, `id:` its "
            "id, `data:` a Transition). Resume with Last-Event-ID; without it, from now.",
            {"description": "OK", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            [
                _param(
                    "after", "Start after this transition id.", {"type": "integer", "minimum": 0}
                ),
                _SERVICE,
                _param(
                    "Last-Event-ID",
                    "The id of the last event received (EventSource sends it on reconnect).",
                    {"type": "string", "pattern": "^[0-9]+$"},
                    where="header",
                ),
            ],
            (400, 404),
        ),
        "/api/v1/store": _get("The store writer's condition and counters", _json(_ref("Store"))),
        "/api/v1/missed-checks": _get(
            "Slots skipped per service because a check overran its slot",
            _json(
                _object(
                    {
                        "total": {"type": "integer", "minimum": 0},
                        "services": {
                            "type": "object",
                            "additionalProperties": {"type": "integer", "minimum": 0},
                        },
                    }
                )
            ),
        ),
    }
    schemas = {
        **_SCHEMAS,
        "Ready": _object(
            {
                "ready": {"type": "boolean"},
                "reasons": {"type": "array", "items": {"type": "string"}},
            }
        ),
        "Series": _object(
            {
                "service": _OPT_STR,
                "bucket": _NUM,
                "buckets": {"type": "array", "items": _ref("Window")},
            }
        ),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{_package} HTTP API",
            "version": "1",
            "description": "Read-only: the cluster now (from the monitor's memory), history "
            "(from the store), committed transitions (paged, long-polled or streamed).",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
