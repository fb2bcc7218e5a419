"""The HTTP face: a read-only JSON API with blocking queries, a server-sent event
stream of committed transitions, Prometheus `/metrics`, liveness and readiness.

Needs the `http` extra (`pip install 'healthmon[http]'`: Starlette, uvicorn,
prometheus_client); only the settings (`HttpSettings`, which the config file's
`[http]` table builds) import without it. See docs/http.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from healthmon.http.settings import TOKEN_ENV, HttpSettings, parse_listen

if TYPE_CHECKING:
    from healthmon.http.app import HttpApi
    from healthmon.http.server import HttpServer

__all__ = ["TOKEN_ENV", "HttpApi", "HttpServer", "HttpSettings", "parse_listen"]


def __getattr__(name: str) -> Any:
    # The app and the server import Starlette and uvicorn: only when asked for.
    if name == "HttpApi":
        from healthmon.http.app import HttpApi  # noqa: PLC0415 - the extra's import, lazily

        return HttpApi
    if name == "HttpServer":
        from healthmon.http.server import HttpServer  # noqa: PLC0415 - as above

        return HttpServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
