"""SQLite's WAL checkpoints, taken off the commit path (issue 16).

SQLite's default copies the WAL back into the database file from inside the commit
that takes the WAL past 1,000 pages: at 2,000 results/s that is every second or so,
inside a flush (before its subscribers hear of it), and each checkpoint rewrites every
page the last second touched: with a results key that puts each service's rows on its
own leaf page, a page per result, so half of the bytes written to disk. The store's
connections turn that off (`PRAGMA wal_autocheckpoint=0`, store/engine.py) and the
writer calls `Checkpoints.step` between flushes instead:

- every `every` seconds (or sooner once the WAL file is over `wal_limit` bytes) a
  PASSIVE checkpoint runs on a connection of its own, beside the writer: it copies
  what is committed, fsyncs, and never blocks a flush. A page changed many times since
  the last checkpoint is written to the file once;
- when it is done, the writer's next step checkpoints once more between two flushes
  (only what was committed meanwhile: short), so that the WAL is wholly copied and
  the next commit starts it again from its beginning rather than growing it.

Durability is unchanged: a commit is durable in the WAL (synchronous=NORMAL: an OS
crash or power cut can take back the last commits, a crash of the process cannot);
a checkpoint only moves committed pages into the main file. Databases that are not
files (in memory) have no WAL and no checkpoints.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["CHECKPOINT_EVERY", "WAL_LIMIT", "Checkpoints"]

log = structlog.get_logger("healthmon.store")

CHECKPOINT_EVERY = 30.0
"""Seconds between checkpoints: the longer, the more often a page changed in between is
written once instead of several times, and the larger the WAL file grows."""
WAL_LIMIT = 64 * 2**20
"""A WAL file larger than this is checkpointed at once (and truncated to this size
when it starts again, `PRAGMA journal_size_limit`, store/engine.py)."""


class Checkpoints:
    """When and how the writer's database is checkpointed; see the module docstring."""

    def __init__(
        self, wal: Path, *, every: float = CHECKPOINT_EVERY, wal_limit: int = WAL_LIMIT
    ) -> None:
        if not every > 0:
            raise ValueError(f"checkpoint every must be a positive number of seconds: {every!r}")
        self.wal = wal
        self.every = every
        self.wal_limit = wal_limit
        self._next = time.monotonic() + every
        self._task: asyncio.Task[bool] | None = None

    async def step(self, engine: AsyncEngine, lock: asyncio.Lock) -> None:
        """Called by the writer between flushes: start a checkpoint beside it when one is
        due; finish one that has completed, under `lock` (the writer's flush lock)."""
        task = self._task
        if task is not None:
            if not task.done():
                return
            self._task = None
            if task.result():
                async with lock:  # between two flushes: the frames committed meanwhile
                    await _checkpoint(engine)
            self._next = time.monotonic() + self.every
            return
        if time.monotonic() >= self._next or self._wal_bytes() > self.wal_limit:
            self._task = asyncio.create_task(_checkpoint(engine), name="healthmon-checkpoint")

    async def stop(self) -> None:
        """Wait for a checkpoint under way (closing the engine checkpoints the rest)."""
        task, self._task = self._task, None
        if task is not None:
            await task  # (never raises: failures are logged)

    def _wal_bytes(self) -> int:
        try:
            return self.wal.stat().st_size
        except OSError:
            return 0


async def _checkpoint(engine: AsyncEngine) -> bool:
    """One PASSIVE checkpoint: copies what it can without waiting for anyone. A failure
    is logged, never raised: the WAL keeps every commit, and the next one tries again."""
    started = time.perf_counter()
    try:
        async with engine.connect() as conn:
            busy, frames, copied = await conn.run_sync(_passive)
    except (SQLAlchemyError, OSError) as exc:  # the database's: e.g. a disk full
        log.warning("wal_checkpoint_failed", error=str(exc).splitlines()[0])
        return False
    except Exception as exc:  # a bug: said loudly, but the writer goes on (no data at stake)
        log.error("wal_checkpoint_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        return False
    log.debug(
        "wal_checkpoint",
        busy=bool(busy),
        frames=frames,
        copied=copied,
        ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return True


def _passive(connection: Connection) -> tuple[int, int, int]:
    # On the driver's connection, outside any transaction (SQLAlchemy would BEGIN one).
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
        row = cursor.fetchone()
        if row is None:  # (the pragma always answers one row)
            return 0, 0, 0
        busy, frames, copied = row
    finally:
        cursor.close()
    return int(busy), int(frames), int(copied)
