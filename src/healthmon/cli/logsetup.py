"""`--log-level` and `--log-format`, shared by every command."""

from __future__ import annotations

import argparse

from healthmon.config import LOG_FORMATS, LOG_LEVELS
from healthmon.log import LogFormat, configure_logging

__all__ = ["add_logging_arguments", "setup_logging"]


def add_logging_arguments(
    parser: argparse.ArgumentParser, *, default_level: str = "warning", config: bool = False
) -> None:
    """`--log-level` and `--log-format`; `config`: the command reads them from a config
    file too (the command line wins)."""
    fallback = "the config's {}, else " if config else ""
    group = parser.add_argument_group("logging (to stderr)")
    group.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help=f"the least severe events to log (default: {fallback.format('level')}{default_level})",
    )
    group.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="console (readable) or json (one object a line); default: "
        f"{fallback.format('format')}console on a terminal, json otherwise",
    )


def setup_logging(
    args: argparse.Namespace,
    level: str | None = None,
    fmt: LogFormat | None = None,
    *,
    default_level: str = "warning",
) -> None:
    """Configure structlog: the command line wins over the config file's values."""
    configure_logging(args.log_level or level or default_level, args.log_format or fmt)
