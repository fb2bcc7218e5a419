"""`--log-level` and `--log-format`, shared by every command."""

from __future__ import annotations

import argparse

from healthmon.config import LOG_FORMATS, LOG_LEVELS
from healthmon.log import LogFormat, configure_logging

__all__ = ["add_logging_arguments", "setup_logging"]


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("logging (to stderr)")
    group.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="the least severe events to log (default: the config's log_level, else info)",
    )
    group.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="console (readable) or json (one object a line); default: the config's "
        "log_format, else console on a terminal and json otherwise",
    )


def setup_logging(
    args: argparse.Namespace,
    level: str | None = None,
    fmt: LogFormat | None = None,
    *,
    default_level: str = "info",
) -> None:
    """Configure structlog: the command line wins over the config file's values."""
    configure_logging(args.log_level or level or default_level, args.log_format or fmt)
