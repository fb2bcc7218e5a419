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
loggers go out with the URLs in it redacted (`redact_url`), and the values of the
headers services send (`keep_out_of_logs`: hpack, under HTTP/2, logs each header it
encodes): the library does not depend on the application silencing them.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterable
from typing import Literal

import structlog

from healthmon.model import redact_urls_in

__all__ = [
    "HTTP_LOGGERS",
    "RedactingFilter",
    "configure_logging",
    "guard_http_logs",
    "keep_out_of_logs",
]

HTTP_LOGGERS = ("httpx", "httpcore", "httpx_aiohttp", "aiohttp", "h11", "h2", "hpack")
"""The top-level loggers of the HTTP stack; `guard_http_logs` covers every one under them."""


_HEADER_VALUES: tuple[str, ...] = ()  # longest first: one inside another goes whole
_SHORTEST_SECRET = 6  # a shorter value ("1", "yes") is no secret, and would mask text


def keep_out_of_logs(header_values: Iterable[str]) -> None:
    """Header values (a service's token) the HTTP stack's records must not carry:
    each of `_SHORTEST_SECRET` characters or more is replaced by `***` there, as
    written and as a bytes repr escapes it."""
    global _HEADER_VALUES  # noqa: PLW0603 - one registry for the process's loggers
    new = {form for v in header_values if len(v) >= _SHORTEST_SECRET for form in _forms(v)}
    if not new.issubset(_HEADER_VALUES):
        _HEADER_VALUES = tuple(sorted(new.union(_HEADER_VALUES), key=len, reverse=True))


def _forms(value: str) -> tuple[str, str]:
    return value, value.replace("\\", "\\\\")


def _scrubbed(text: str) -> str:
    text = redact_urls_in(text)
    for value in _HEADER_VALUES:
        if value in text:
            text = text.replace(value, "***")
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record so that no URL in its message, traceback or stack goes out
    with credentials (`redact_url`), nor a header value services send
    (`keep_out_of_logs`). Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _scrubbed(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info is not None:
            # Formatted here, once, so that no handler formats the original.
            text = record.exc_text or "".join(traceback.format_exception(*record.exc_info))
            record.exc_info, record.exc_text = None, _scrubbed(text.rstrip("\n"))
        elif record.exc_text:
            record.exc_text = _scrubbed(record.exc_text)
        if record.stack_info:
            record.stack_info = _scrubbed(record.stack_info)
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
