"""alembic environment for healthmon (async engine, SQLite batch mode, PostgreSQL).

Run from the application, alembic gets an open connection in
`config.attributes["connection"]` (see healthmon.store.migrate). Run as the
`alembic` command, it opens the database named by HEALTHMON_DATABASE_URL, or by
`sqlalchemy.url` in alembic.ini, or `healthmon.db` in the current folder.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import Connection

from healthmon.store.engine import create_engine, database_url
from healthmon.store.partitions import PARTITION_NAME
from healthmon.store.schema import metadata

config = context.config
DEFAULT_URL = "sqlite+aiosqlite:///healthmon.db"


def _url() -> str:
    return (
        os.environ.get("HEALTHMON_DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
        or DEFAULT_URL
    )


def _include_name(name: str | None, type_: str, _parents: Any) -> bool:
    """Raw results' partitions on PostgreSQL (check_results_pYYYYMMDD) are the store's,
    made as time goes by: not schema the migrations compare."""
    return not (type_ == "table" and name is not None and PARTITION_NAME.fullmatch(name))


def _include_object(
    obj: Any, name: str | None, type_: str, _reflected: bool, _compare_to: Any
) -> bool:
    """check_results.details_id has no foreign key on PostgreSQL (migration 0003)."""
    return not (
        type_ == "foreign_key_constraint"
        and name == "fk_check_results_details_id_result_details"
        and context.get_context().dialect.name == "postgresql"
    )


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        include_name=_include_name,
        include_object=_include_object,
        render_as_batch=True,  # SQLite alters tables by copying them; alembic does that
        # healthmon's engine emits BEGIN itself (see store/engine.py), which makes SQLite
        # DDL transactional: a failed migration leaves the database as it was.
        transactional_ddl=True,
        compare_type=True,
        **kwargs,
    )


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_engine() -> None:
    engine = create_engine(database_url(_url()))
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    _configure(url=str(database_url(_url())), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (shared := config.attributes.get("connection")) is not None:
    _run(shared)
else:
    asyncio.run(_run_with_engine())
