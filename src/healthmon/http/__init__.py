"""The HTTP face: a read-only JSON API with blocking queries, a server-sent event
stream of committed transitions, Prometheus `/metrics`, liveness and readiness.

Needs the `http` extra (`pip install 'healthmon[http]'`: Starlette, uvicorn,
prometheus_client). See docs/http.md.
"""

from healthmon.http.app import HttpApi
from healthmon.http.server import HttpServer
from healthmon.http.settings import TOKEN_ENV, HttpSettings, parse_listen

__all__ = ["TOKEN_ENV", "HttpApi", "HttpServer", "HttpSettings", "parse_listen"]
