"""The `healthmon` command: run a monitor from a config file, read its database
(status, history, export), manage the schema, and a demo.

One module per command; each registers its parser and handler. Exit codes shared by
every command: 0 success, 1 an error at run time (the database cannot be read or
written), 2 bad usage (arguments or config file); `status` adds its own (see there).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from healthmon.cli import db, demo, export, history, run, status
from healthmon.errors import ConfigError, HealthmonError

__all__ = ["EXIT_ERROR", "EXIT_USAGE", "main"]

EXIT_ERROR = 1
EXIT_USAGE = 2  # argparse's own code for bad arguments; a bad config file is the same


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="healthmon",
        description="An asyncio health monitor that keeps every result in SQLite.",
        epilog="Exit codes: 0 success, 1 error (e.g. the database cannot be read), "
        "2 bad usage or config; `healthmon status` also 3-6 for the cluster status. "
        "`healthmon COMMAND --help` tells more.",
    )
    commands = top.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in (run, status, history, export, db, demo):
        module.register(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"healthmon: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HealthmonError as exc:
        print(f"healthmon: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`healthmon export | head`): not an error. Point stdout
        # at devnull so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code
