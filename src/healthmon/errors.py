"""healthmon's exceptions: one tree, one base.

    HealthmonError
    ├── StorageError            the database could not be opened, read or written
    │   ├── SchemaVersionError  the database is not at the schema this version expects
    │   └── DatabaseInUseError  another kind of healthmon writer holds the database
    ├── ConfigError             a configuration file or value is wrong (names where)
    ├── ServeError              the HTTP face cannot listen (address in use, no permission)
    └── ApiError                a request to the HTTP API is refused (a 4xx/5xx answer)

Misuse of the API (a bad argument) raises ValueError or TypeError, as the seed does.
A failed health check is not an exception: it is an UNHEALTHY `HealthCheckResult`.
Third-party errors are mapped where they happen and chained (`raise ... from exc`).
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "ConfigError",
    "DatabaseInUseError",
    "HealthmonError",
    "SchemaVersionError",
    "ServeError",
    "StorageError",
]


class HealthmonError(Exception):
    """Base of every error healthmon raises on purpose."""


class StorageError(HealthmonError):
    """The database could not be opened, migrated, read or written."""


class SchemaVersionError(StorageError):
    """The database's schema revision is not the one this version of healthmon expects."""

    def __init__(self, found: str | None, expected: str) -> None:
        self.found = found
        self.expected = expected
        found_text = found if found is not None else "none (empty or unmanaged database)"
        super().__init__(
            f"database schema is at revision {found_text}, expected {expected}; "
            "open it with migrate=True or run `alembic upgrade head` to upgrade it"
        )


class DatabaseInUseError(StorageError):
    """A monitor cannot start: another healthmon node of the other kind (single or
    cluster) writes to this PostgreSQL database. The message names the holders."""


class ConfigError(HealthmonError):
    """A configuration value is wrong; the message names the file, service and field."""


class ServeError(HealthmonError):
    """The HTTP face could not start serving; the message names the address and why."""


class ApiError(HealthmonError):
    """A request the HTTP API answers with an error: `status` is the HTTP status,
    `code` a short machine-readable word, the message says what is wrong."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
