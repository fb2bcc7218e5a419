"""The transition feed: every node hears every committed transition of the fleet.

Transitions carry a feed position (`status_transitions.seq`) handed out in commit
order (cluster/fence.py), so reading past a cursor never skips one committed late.
Each node keeps one dedicated LISTEN connection (asyncpg, outside the store's pool:
a pooled connection would drop its LISTEN when returned) and reads past its cursor
on each notification, every `poll` seconds regardless (a notification sent while the
connection was down is lost; the read is not), and after reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from healthmon.cluster.leases import FEED_CHANNEL, LEASES_CHANNEL
from healthmon.model import HealthStatus
from healthmon.store.schema import STATUS_BY_CODE

__all__ = ["FeedEntry", "TransitionFeed", "last_position"]

log = structlog.get_logger("healthmon.cluster")

_PAGE = 1000
_RECONNECT_FIRST = 0.1
_RECONNECT_MAX = 2.0


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One committed transition, as every node hears it."""

    seq: int
    service: str
    timestamp: float
    from_status: HealthStatus | None
    to_status: HealthStatus
    cause: str | None
    node_id: int | None


async def last_position(engine: AsyncEngine) -> int:
    """The feed's last position committed: a node starting hears what comes after it."""
    async with engine.connect() as conn:
        found = await conn.execute(text("SELECT coalesce(max(seq), 0) FROM status_transitions"))
        return int(found.scalar_one())


class TransitionFeed:
    """Reads the feed past a cursor and hands each entry on, once, in order."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        cursor: int,
        poll: float,
        deliver: Callable[[Sequence[FeedEntry]], None],
        on_leases_released: Callable[[], None],
    ) -> None:
        self._engine = engine
        self.cursor = cursor
        self._poll = poll
        self._deliver = deliver
        self._on_leases_released = on_leases_released
        self._wake = asyncio.Event()
        self._read_lock = asyncio.Lock()
        self._listener: Any = None  # an asyncpg connection
        self._task: asyncio.Task[None] | None = None
        self.connects = 0

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="healthmon-cluster-feed")

    async def stop(self) -> None:
        """A last read (what this node's final flush committed), then close."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            with contextlib.suppress(SQLAlchemyError, OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.catch_up()
        finally:
            await self._close_listener()

    async def catch_up(self) -> int:
        """Read and deliver everything past the cursor; how many entries."""
        async with self._read_lock:
            total = 0
            while True:
                async with self._engine.connect() as conn:
                    rows = (
                        await conn.execute(
                            text(
                                "SELECT t.seq, s.name, t.ts, t.from_status, t.to_status, "
                                "t.cause, t.node_id FROM status_transitions t "
                                "JOIN services s ON s.id = t.service_id "
                                "WHERE t.seq > :cursor ORDER BY t.seq LIMIT :page"
                            ),
                            {"cursor": self.cursor, "page": _PAGE},
                        )
                    ).all()
                if not rows:
                    return total
                entries = [
                    FeedEntry(
                        seq=seq,
                        service=name,
                        timestamp=ts,
                        from_status=None if old is None else STATUS_BY_CODE[old],
                        to_status=STATUS_BY_CODE[new],
                        cause=cause,
                        node_id=node_id,
                    )
                    for seq, name, ts, old, new, cause, node_id in rows
                ]
                self.cursor = entries[-1].seq
                total += len(entries)
                self._deliver(entries)
                if len(rows) < _PAGE:
                    return total

    async def _run(self) -> None:
        delay = _RECONNECT_FIRST
        while True:
            if self._listener is None or self._listener.is_closed():
                if await self._connect():
                    delay = _RECONNECT_FIRST
                else:
                    delay = min(delay * 2, _RECONNECT_MAX)
            try:
                await self.catch_up()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("cluster_feed_read_failed", error=str(exc).splitlines()[0])
            wait = self._poll if self._listener is not None else delay
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()

    async def _connect(self) -> bool:
        # The optional extra, there whenever the store is on PostgreSQL (imported here
        # so that SQLite users need not have it); it ships no type hints.
        import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415

        await self._close_listener()
        try:
            conn = await asyncpg.connect(_dsn(self._engine.url), timeout=5)
            await conn.add_listener(FEED_CHANNEL, self._notified)
            await conn.add_listener(LEASES_CHANNEL, self._notified)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning(
                "cluster_listen_failed",
                error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return False
        if self.connects:
            log.info("cluster_listen_reconnected", connects=self.connects + 1)
        self._listener = conn
        self.connects += 1
        return True

    def _notified(self, _conn: object, _pid: int, channel: str, _payload: str) -> None:
        if channel == LEASES_CHANNEL:
            self._on_leases_released()
        else:
            self._wake.set()

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(Exception):  # closing a broken connection may fail anyhow
                await asyncio.wait_for(listener.close(), timeout=2)
            if not listener.is_closed():
                listener.terminate()


def _dsn(url: URL) -> str:
    """The store's URL for asyncpg itself (password included: it never leaves here)."""
    plain = url.set(drivername="postgresql")
    return plain.render_as_string(hide_password=False)
