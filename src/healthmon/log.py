"""Logging: the HTTP stack's records kept free of secrets, and the setup of
healthmon's own programs (the CLI, examples).

The library only emits structlog events (one event name per kind, with the
service's name where there is one); an application embedding it configures
structlog as it likes. `configure_logging` is for programs that have no setup of
their own.

The HTTP libraries under a check log through the standard `logging` module: httpx a
line per request at INFO with the URL (`HTTP Request: GET http://...?token=...`),
httpcore and aiohttp more at DEBUG. Whatever the application's logging setup (the
root logger at DEBUG included), `guard_http_logs` makes every record of those
loggers go out with the URLs in it redacted (`redact_url`): the library does not
depend on the application silencing them. (Header values and request bodies are in
none of their records.)
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Literal

import structlog

from healthmon.model import redact_urls_in

__all__ = ["HTTP_LOGGERS", "RedactingFilter", "configure_logging", "guard_http_logs"]

HTTP_LOGGERS = ("httpx", "httpcore", "httpx_aiohttp", "aiohttp", "h11", "h2", "hpack")
"""The top-level loggers of the HTTP stack; `guard_http_logs` covers every one under them."""


class RedactingFilter(logging.Filter):
    """Rewrites a record so that no URL in its message, traceback or stack goes out
    with credentials (`redact_url`). Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_urls_in(message)
        if redacted is not message:
            record.msg, record.args = redacted, None
        if record.exc_info is not None:
            # Formatted here, once, so that no handler formats the original.
            text = record.exc_text or "".join(traceback.format_exception(*record.exc_info))
            record.exc_info, record.exc_text = None, redact_urls_in(text.rstrip("\n"))
        elif record.exc_text:
            record.exc_text = redact_urls_in(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_urls_in(record.stack_info)
        return True


_FILTER = RedactingFilter()


def guard_http_logs() -> None:
    """Put the redacting filter on every logger of the HTTP stack (`HTTP_LOGGERS` and
    all below them). A filter acts only on the records of its own logger, not of its
    children, so each gets one; idempotent, and cheap to call again for loggers made
    since (by a module imported late)."""
    manager = logging.Logger.manager
    for top in HTTP_LOGGERS:
        _guard(logging.getLogger(top))
    for name, logger in list(manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.partition(".")[0] in HTTP_LOGGERS:
            _guard(logger)


def _guard(logger: logging.Logger) -> None:
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


LogFormat = Literal["console", "json"]


def configure_logging(level: str = "info", fmt: LogFormat | None = None) -> None:
    """Console output on a terminal, JSON lines otherwise (or as `fmt` says), to stderr."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # httpx logs every request at INFO: at 20 Hz that drowns everything else.
    logging.getLogger("httpx").setLevel(logging.WARNING)
