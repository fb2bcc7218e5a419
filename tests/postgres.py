"""A real PostgreSQL server for the tests, from the binaries the `pgserver` package ships
(a dev dependency): initdb into a temporary folder, listening on a free port of
127.0.0.1 only, and stopped and deleted at the end.

PostgreSQL refuses to run as root; run as root (CI containers), the server runs as
the user `nobody`, which then owns the data folder (and, should `nobody` not reach the
binaries where pip put them, e.g. under /root, runs a copy of them in that folder).

With HEALTHMON_TEST_POSTGRES_URL set (a superuser's URL of a server the tests may
create databases on), the tests use that server instead, except the fault tests that
stop and start a server: they always start their own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

__all__ = ["ENV", "LocalPostgres", "create_database", "drop_database", "server_url"]

ENV = "HEALTHMON_TEST_POSTGRES_URL"


def _binaries() -> Path:
    # Found, not imported: importing pgserver sets up its own server machinery (and
    # warns about XDG_RUNTIME_DIR), none of which is used here.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the PostgreSQL tests need pgserver: pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


BIN = _binaries()
# Durability is not under test here (the fault tests stop the server cleanly or
# kill connections, never the machine): fsync off makes a database ~10x faster to make.
SETTINGS = ("fsync=off", "full_page_writes=off", "synchronous_commit=off")


class LocalPostgres:
    """A PostgreSQL server of its own, in a temporary folder."""

    def __init__(self, *, settings: tuple[str, ...] = SETTINGS) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="healthmon-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = _free_port()
        self.settings = settings
        self._user = _run_as()
        self.bin = BIN
        if self._user is not None:
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
            if not self._can_run(BIN / "pg_ctl"):
                # The same layout: the binaries find their libraries relative to
                # themselves ($ORIGIN/../../../pgserver.libs).
                site, copy = BIN.parents[2], self.folder / "site"
                for part in ("pgserver/pginstall/bin", "pgserver/pginstall/lib",
                             "pgserver/pginstall/share", "pgserver.libs"):  # fmt: skip
                    if (site / part).exists():
                        shutil.copytree(site / part, copy / part, symlinks=True)
                self.bin = copy / "pgserver/pginstall/bin"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = [f"-c listen_addresses=127.0.0.1 -p {self.port}", "-c unix_socket_directories="]
        options += [f"-c {setting}" for setting in self.settings]
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
                  "-o", " ".join(options), "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", mode, "stop")

    def delete(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def _can_run(self, program: Path) -> bool:
        try:
            self._run_checked([str(program), "--version"])
        except (OSError, subprocess.CalledProcessError):
            return False
        return True

    def _run_checked(self, command: list[str]) -> None:
        kwargs: dict[str, Any] = {}
        if self._user is not None:
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, cwd=self.folder)
        subprocess.run(command, check=True, capture_output=True, timeout=60, **kwargs)

    def _run(self, program: str, *args: str) -> None:
        kwargs: dict[str, Any] = {}
        if self._user is not None:
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, cwd=self.folder)
        try:
            subprocess.run(
                [str(self.bin / program), *args],
                check=True,
                capture_output=True,
                timeout=60,
                **kwargs,
            )
        except subprocess.CalledProcessError as exc:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{program} failed ({exc.returncode}): {exc.stderr.decode()}\n{log[-2000:]}"
            ) from exc


@contextlib.contextmanager
def server_url() -> Iterator[str]:
    """A superuser's URL on the tests' server: the one of HEALTHMON_TEST_POSTGRES_URL,
    else a local one, started here and deleted afterwards."""
    given = os.environ.get(ENV)
    if given:
        yield given
        return
    server = LocalPostgres()
    try:
        server.start()
        yield server.url
    finally:
        server.delete()


def create_database(admin_url: str, template: str | None = None) -> str:
    """A new database on the server, empty or a copy of the `template` database's URL
    (which nothing may be connected to); its URL."""
    name = f"hm_{uuid.uuid4().hex[:12]}"
    source = "template0" if template is None else make_url(template).database
    _admin(admin_url, f"CREATE DATABASE {name} TEMPLATE {source}")
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(database="postgres").render_as_string(hide_password=False)
    _admin(admin, f"DROP DATABASE IF EXISTS {parsed.database} WITH (FORCE)")


def _admin(url: str, statement: str) -> None:
    parsed = make_url(url)
    env = {**os.environ, "PGPASSWORD": parsed.password or ""} if parsed.password else None
    subprocess.run(
        [str(BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
         "-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432),
         "-U", parsed.username or "postgres", "-d", parsed.database or "postgres",
         "-c", statement],
        check=True, capture_output=True, timeout=60, env=env,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_as() -> pwd.struct_passwd | None:
    """PostgreSQL will not run as root: then as `nobody`."""
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else None
