"""`healthmon db`: the schema migrations that ship inside the package, for an
installed healthmon (the repository's `alembic` command runs the same scripts)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from alembic import command as alembic_command
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from healthmon.cli.database import add_database_argument, database_file
from healthmon.cli.database import shown as _shown
from healthmon.cli.logsetup import add_logging_arguments, setup_logging
from healthmon.errors import StorageError
from healthmon.store import migrate
from healthmon.store.engine import create_engine, database_url, display_url

__all__ = ["register"]

Action = Callable[[argparse.Namespace], Coroutine[Any, Any, str]]
"""Does one thing to the database; returns what it did, for the user."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "db",
        help="upgrade, downgrade or inspect the database schema (alembic migrations)",
        description="Manage the database schema with the alembic migrations shipped inside "
        "the package. `healthmon run` upgrades a database by itself; these are for "
        "deployments that manage the schema explicitly.",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    upgrade = actions.add_parser(
        "upgrade",
        help="upgrade to REVISION (default: head), creating the database file if needed",
        description="Upgrade the database to REVISION (default: head) in one transaction, "
        "creating the file if needed.",
    )
    upgrade.add_argument(
        "revision", nargs="?", default="head", metavar="REVISION", help="default: head"
    )
    downgrade = actions.add_parser(
        "downgrade",
        help="downgrade to REVISION: a revision id, -1 for one step, or base (drops every table)",
        description="Downgrade the database to REVISION in one transaction: a revision id, "
        "-1 for one step back, or base (drops every healthmon table and its data).",
    )
    downgrade.add_argument("revision", metavar="REVISION", help="a revision id, -1, or base")
    current = actions.add_parser(
        "current",
        help="print the revision the database is at",
        description="Print the revision the database is at and whether it is the head.",
    )
    history = actions.add_parser(
        "history",
        help="list the migrations this healthmon ships, marking the database's",
        description="List the migrations this healthmon ships, newest first, marking the "
        "head and the revision the database is at (if it exists).",
    )
    for action, handler in (
        (upgrade, _upgrade),
        (downgrade, _downgrade),
        (current, _current),
        (history, _history),
    ):
        add_database_argument(action)
        add_logging_arguments(action)
        action.set_defaults(handler=_command(handler))


def _command(action: Action) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        setup_logging(args)
        print(asyncio.run(action(args)))
        return 0

    return command


@contextlib.asynccontextmanager
async def _engine(database: str, *, create: bool = False) -> AsyncIterator[AsyncEngine]:
    file = database_file(database)
    if not create and file is not None and not file.exists():
        raise StorageError(f"no database at {file}")
    engine = create_engine(database_url(database))
    try:
        yield engine
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"{display_url(engine.url)}: {exc}") from exc
    finally:
        await engine.dispose()


def _name(revision: str | None) -> str:
    return revision or "base (no healthmon schema)"


async def _upgrade(args: argparse.Namespace) -> str:
    async with _engine(args.database, create=True) as engine:
        before = await migrate.current_revision(engine)
        await migrate.upgrade(engine, args.revision)
        after = await migrate.current_revision(engine)
        shown = _shown(args.database)
    if before == after:
        return f"{shown}: already at {_name(after)}; nothing to do"
    return f"{shown}: upgraded from {_name(before)} to {_name(after)}"


async def _downgrade(args: argparse.Namespace) -> str:
    async with _engine(args.database) as engine:
        before = await migrate.current_revision(engine)
        async with engine.begin() as conn:
            await conn.run_sync(_run_downgrade, args.revision)
        after = await migrate.current_revision(engine)
        shown = _shown(args.database)
    if before == after:
        return f"{shown}: already at {_name(after)}; nothing to do"
    return f"{shown}: downgraded from {_name(before)} to {_name(after)}"


def _run_downgrade(connection: Connection, revision: str) -> None:
    config = migrate.alembic_config()
    config.attributes["connection"] = connection  # env.py migrates on this connection
    try:
        alembic_command.downgrade(config, revision)
    except CommandError as exc:
        raise StorageError(f"cannot downgrade to {revision!r}: {exc}") from exc


async def _current(args: argparse.Namespace) -> str:
    async with _engine(args.database) as engine:
        found = await migrate.current_revision(engine)
        shown = _shown(args.database)
    head = migrate.head_revision()
    if found == head:
        return f"{shown}: {found} (head)"
    return f"{shown}: {_name(found)}; the head is {head}: run `healthmon db upgrade`"


async def _history(args: argparse.Namespace) -> str:
    found: str | None = None
    file = database_file(args.database)
    if file is None or file.exists():
        async with _engine(args.database) as engine:
            found = await migrate.current_revision(engine)
    lines = []
    for script in ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions():
        marks = ["head"] if script.is_head else []
        if script.revision == found:
            marks.append("current")
        mark = f" ({', '.join(marks)})" if marks else ""
        down = script.down_revision or "base"
        lines.append(f"{down} -> {script.revision}{mark}: {script.doc}")
    return "\n".join(lines)
