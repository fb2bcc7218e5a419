"""The SQLite file behind a store, watched for deletion or replacement.

SQLite keeps writing through its open file descriptors after the file is deleted
(or replaced by another): every later commit would go into an unlinked inode and
vanish at close, without an error. So the writer asks before each flush whether
the file is still the one it opened.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from sqlalchemy.engine import URL

from healthmon.store.engine import database_path

__all__ = ["DatabaseFile", "FileState"]


class FileState(Enum):
    SAME = "same"
    DELETED = "deleted"
    REPLACED = "replaced"


class DatabaseFile:
    """The identity (device, inode) of a store's database file."""

    def __init__(self, url: URL) -> None:
        self.path = database_path(url)  # absolute: database_url() resolved it
        self._identity: tuple[int, int] | None = None

    def remember(self) -> None:
        """Take the file as it is now as the one to watch."""
        self._identity = self._stat()

    def state(self) -> FileState:
        """Whether the watched file is still there, gone, or another file now."""
        if self._identity is None:  # in memory, or not opened yet
            return FileState.SAME
        now = self._stat()
        if now is None:
            return FileState.DELETED
        return FileState.SAME if now == self._identity else FileState.REPLACED

    def remove_leftovers(self) -> None:
        """Remove the -wal and -shm files of a deleted database: a new database at
        the same path would otherwise replay the old one's WAL into itself."""
        if self.path is None or self.path.exists():
            return
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def _stat(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_dev, stat.st_ino)
