"""A throwaway PostgreSQL server from the machine's own binaries: initdb into a temporary directory, start on a
free port, hand out databases, stop and delete everything.

The tests and `cli.py demo --postgres` both start theirs through this one module. PostgreSQL refuses to run
as root, so when we are root the server runs as an unprivileged system user (created once if missing) and
the temporary directory is handed to it. Readiness is `pg_ctl -w` (which waits for the postmaster to
accept connections), never a fixed sleep.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Self

SERVICE_USER = "bilheteria-pg"
SUPERUSER = "postgres"
START_SECONDS = 30


class PostgresUnavailable(RuntimeError):
    """No usable PostgreSQL here (binaries missing, initdb or start-up failed); the message says which."""


def find_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl: first on PATH, then the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path and (Path(on_path).resolve().parent / "pg_ctl").exists():
        return Path(on_path).resolve().parent  # the real directory: pg_ctl finds `postgres` beside itself
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name), reverse=True)
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _service_user() -> pwd.struct_passwd:
    """The unprivileged account PostgreSQL runs as when we are root, created on first use."""
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
                       check=True, capture_output=True)
        return pwd.getpwnam(SERVICE_USER)


class PgCluster:
    """One PostgreSQL server in its own temporary directory. `start()` it, use `url()`, `stop()` or `destroy()` it.

    `host` is the address it listens on and `prefix` a command every server process is started through:
    the multi-host test passes `("ip", "netns", "exec", NAME)` to put the database on a host of its own.
    `durable=False` turns fsync off, for tests that never pull the power on the database.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        prefix: Sequence[str] = (),
        durable: bool = True,
        max_connections: int = 200,
        allow_from: str = "127.0.0.1/32",
        binaries: Path | None = None,
    ) -> None:
        found = binaries or find_binaries()
        if found is None:
            raise PostgresUnavailable("no PostgreSQL binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin")
        self.bin = found
        self.host = host
        self.port = port or free_port(host if not prefix else "127.0.0.1")
        self.prefix = tuple(prefix)
        self.durable = durable
        self.max_connections = max_connections
        self.allow_from = allow_from
        self.directory = Path(tempfile.mkdtemp(prefix="bilheteria-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self._user = _service_user() if os.geteuid() == 0 else None
        if self._user is not None:
            os.chown(self.directory, self._user.pw_uid, self._user.pw_gid)
        self._initialised = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user.pw_name, "--", *command]
        result = subprocess.run([*self.prefix, *command], check=False, capture_output=True, text=True, cwd=self.directory)
        if check and result.returncode != 0:
            raise PostgresUnavailable(f"{args[0]} failed ({result.returncode}): {(result.stderr or result.stdout).strip()}"
                                      + self._log_tail())
        return result

    def _log_tail(self) -> str:
        try:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
        except OSError:
            return ""
        return "\n" + "\n".join(tail) if tail else ""

    def _initialise(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.allow_from} trust\n")
        settings = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.directory}'",
            "max_connections": str(self.max_connections),
            "fsync": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            "log_line_prefix": "'%m [%p] '",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        self._initialised = True

    def start(self) -> Self:
        """initdb on first start, then start the server and wait until it accepts connections."""
        if not self._initialised:
            self._initialise()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(START_SECONDS), "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` (roll back sessions, shut down cleanly) or `immediate` (like a crash)."""
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(START_SECONDS), "stop", check=False)

    def running(self) -> bool:
        return self._initialised and self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def destroy(self) -> None:
        """Stop it and delete its directory; safe to call twice and after a failed start."""
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str = SUPERUSER) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database (from template0, so nothing of another test's leaks in); answers its URL."""
        import psycopg  # only callers that use PostgreSQL need the driver

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def create_schema(self, name: str) -> str:
        """A new empty schema in the main database, answering a URL whose sessions work inside it. Much quicker
        than a database (no copy of a template), which matters for tests that open hundreds of fresh stores."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.url()}?options=-c%20search_path%3D{name}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()
