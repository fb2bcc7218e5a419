"""Who writes a PostgreSQL database: one single node, or the nodes of one cluster.

Two single nodes on one database would each check every service and write every
result (twice the rows, interleaved), record each transition twice, and sum each
other's results into aggregates: so a node refuses to start beside a writer of the
other kind. A monitoring session on PostgreSQL holds a *session* advisory lock on a
dedicated connection (outside the store's pool) for as long as it runs: a single
node exclusively, a cluster node shared (cluster nodes share the database with each
other by design). The lock is the database's own record of the holder's session, so
nothing has to expire: a holder that exits or is killed closes its connection and the
lock goes with it at once; one cut off by the network or powered off is dropped by
the server's TCP keepalives (set on that connection: about 25 s). The refusal names
the holders, by the `application_name` each guard connection carries.

(Not used for ownership of services, which leases do, timed by the database's clock:
advisory locks do not survive a reconnect. Here a lost connection only means the
guard takes its lock again; the guard checks it every `CHECK_EVERY` seconds and says
so, loudly, if another writer took the database meanwhile.) Behind a pooler in
transaction mode (PgBouncer) session locks do not hold: connect the nodes directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

import structlog
from sqlalchemy.engine import URL

from healthmon.errors import DatabaseInUseError

__all__ = ["CHECK_EVERY", "WriterGuard"]

log = structlog.get_logger("healthmon.cluster")

_CLASS, _OBJECT = 0x686D6F6E, 1  # "hmon": the advisory lock's two keys
CHECK_EVERY = 5.0
"""Seconds between two checks that the guard's connection (and so its lock) is alive."""
_KEEPALIVE = {  # the server drops a silent peer's session after ~10 + 3 x 5 s
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}


class WriterGuard:
    """This session's hold on the database: exclusive (a single node) or shared (a
    cluster node). `take` it when monitoring starts, `release` it when it stops."""

    def __init__(self, url: URL, *, cluster: str | None) -> None:
        self._url = url
        self.cluster = cluster
        """The cluster node's name; None for a single node."""
        where = f"{socket.gethostname()}:{os.getpid()}"
        self.holder = (
            f"healthmon single node {where}"
            if cluster is None
            else f"healthmon cluster node {cluster} ({where})"
        )[:63]  # PostgreSQL's limit on application_name
        self._conn: Any = None  # an asyncpg connection
        self._task: asyncio.Task[None] | None = None

    async def take(self) -> None:
        """Take the lock, or raise DatabaseInUseError naming who holds it."""
        await self._lock()
        self._task = asyncio.create_task(self._watch(), name="healthmon-writer-guard")

    async def release(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()  # the session's end releases the lock

    async def _lock(self) -> None:
        import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415 - the PostgreSQL extra

        await self._close()
        conn = await asyncpg.connect(
            self._url.set(drivername="postgresql").render_as_string(hide_password=False),
            timeout=10,
            server_settings={"application_name": self.holder, **_KEEPALIVE},
        )
        try:
            function = (
                "pg_try_advisory_lock" if self.cluster is None else ("pg_try_advisory_lock_shared")
            )
            if not await conn.fetchval(f"SELECT {function}($1, $2)", _CLASS, _OBJECT):
                holders = await conn.fetch(
                    "SELECT a.application_name, host(a.client_addr), a.backend_start, l.mode "
                    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 "
                    "AND l.objid = $2 AND l.objsubid = 2 AND l.database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "ORDER BY a.backend_start",
                    _CLASS,
                    _OBJECT,
                )
                raise DatabaseInUseError(self._refusal(holders))
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    def _refusal(self, holders: list[Any]) -> str:
        named = (
            "; ".join(
                f"{name or 'an unnamed session'} (from {addr or 'a local socket'}, connected "
                f"{start:%Y-%m-%d %H:%M:%S %Z})"
                for name, addr, start, _ in holders
            )
            or "a session that has just ended (try again)"
        )
        me = "a single node" if self.cluster is None else f"cluster node {self.cluster!r}"
        if self.cluster is None:
            why = (
                "another healthmon node already writes to this database (two single nodes "
                "would both check every service and write every result and transition "
                "twice); run one, or run them all as a cluster (--node NAME)"
            )
        else:
            why = (
                "a single healthmon node (not in cluster mode) already writes to this "
                "database; stop it, or restart it as a cluster node (--node NAME)"
            )
        return f"{me} cannot start: {why}. Held by: {named}"

    async def _watch(self) -> None:
        """Take the lock again if its connection was lost (a database restart)."""
        import asyncpg  # noqa: PLC0415

        while True:
            await asyncio.sleep(CHECK_EVERY)
            try:
                if self._conn is not None:
                    await asyncio.wait_for(self._conn.fetchval("SELECT 1"), timeout=CHECK_EVERY)
                    continue
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
            try:
                await self._lock()
                log.info("writer_guard_retaken", holder=self.holder)
            except DatabaseInUseError as exc:
                log.critical("database_shared", error=str(exc))
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("writer_guard_lost", error=str(exc) or type(exc).__name__)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):  # closing a broken connection may fail anyhow
                await asyncio.wait_for(conn.close(), timeout=2)
            if not conn.is_closed():
                conn.terminate()
