"""The SQLite file behind a store, watched for deletion or replacement.

SQLite keeps writing through its open file descriptors after the file is deleted
(or replaced by another): every later commit would go into an unlinked inode and
vanish at close, without an error. So the writer asks before each flush whether
the file is still the one it opened, and the store recreates it if not.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL

__all__ = ["DatabaseFile"]


class DatabaseFile:
    """The identity (device, inode) of a database file; None-safe for in-memory URLs."""

    def __init__(self, url: URL) -> None:
        database = url.database or ""
        in_memory = database in ("", ":memory:") or "mode=memory" in str(url.query)
        self.path = None if in_memory or database.startswith("file:") else Path(database)
        self._identity: tuple[int, int] | None = None

    def remember(self) -> None:
        """Take the file as it is now as the one to watch."""
        self._identity = self._stat()

    def lost(self) -> bool:
        """True if the watched file was deleted or replaced since `remember()`."""
        return self._identity is not None and self._stat() != self._identity

    def _stat(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return (-1, -1)
        return (stat.st_dev, stat.st_ino)
