"""Logging setup for healthmon's own programs (the CLI, examples).

The library only emits structlog events (one event name per kind, with the
service's name where there is one); an application embedding it configures
structlog as it likes. This function is for programs that have no setup of their own.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

__all__ = ["configure_logging"]

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
