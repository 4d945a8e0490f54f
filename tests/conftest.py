"""Fixtures that start the real system: a name server and ticket servers as subprocesses on free ports."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from procs import Process, free_port, start

from tools.pgcluster import PgCluster, PostgresUnavailable

ADMIN_TOKEN = "test-admin-token"
REGISTRATION_KEY = "test-registration-key-0123456789abcdef"
"""Shared by the tests' name servers and ticket servers, so their registrations are signed as in production."""
KEYED = {"BILHETERIA_REGISTRATION_KEY": REGISTRATION_KEY}
BACKENDS = ("sqlite", "postgresql")
REQUIRE_POSTGRES = "BILHETERIA_REQUIRE_POSTGRES"
_database_numbers = itertools.count(1)


def postgres_missing(reason: str) -> None:
    """Skip with the reason, or fail when CI said PostgreSQL must be there (BILHETERIA_REQUIRE_POSTGRES=1)."""
    if os.environ.get(REQUIRE_POSTGRES) == "1":
        pytest.fail(f"PostgreSQL is required ({REQUIRE_POSTGRES}=1) but {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests need PostgreSQL: {reason}")


def started_postgres() -> PgCluster:
    """A throwaway PostgreSQL server, started (fsync off: the tests kill servers, not the power); skipped, or
    failed under BILHETERIA_REQUIRE_POSTGRES=1, with the reason when there is no driver or no server to start."""
    try:
        import psycopg  # noqa: F401 - only to find out whether the driver is installed
    except ImportError:
        postgres_missing("psycopg is not installed (pip install -r requirements.txt)")
    try:
        return PgCluster(durable=False).start()
    except PostgresUnavailable as exc:
        postgres_missing(str(exc))
        raise


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL server for the whole session."""
    server = started_postgres()
    yield server
    server.destroy()


@pytest.fixture(params=BACKENDS)
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Call it for the location of a fresh, empty database on this test's backend: a file, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return lambda: str(tmp_path / f"tickets{next(_database_numbers)}.db")
    server: PgCluster = request.getfixturevalue("postgres")
    return lambda: server.create_schema(f"tickets{next(_database_numbers)}")


@dataclass
class Cluster:
    """A name server and any number of ticket servers sharing one database: a SQLite file, or PostgreSQL."""

    directory: Path
    name_server_port: int = 0
    name_server: Process | None = None
    servers: dict[int, Process] = field(default_factory=dict)
    hold_seconds: float = 600.0
    database: str = ""
    """A PostgreSQL URL; empty for the SQLite file in `directory`."""

    @property
    def db(self) -> str:
        return self.database or str(self.directory / "tickets.db")

    @property
    def name_server_address(self) -> str:
        return f"127.0.0.1:{self.name_server_port}"

    def start_name_server(self, ttl: float = 6.0) -> Process:
        if not self.name_server_port:
            self.name_server_port = free_port()
        self.name_server = start(
            "name-server",
            ["name_server.py", "--port", str(self.name_server_port), "--ttl", str(ttl)],
            ready="Name server listening on", env=KEYED,
        )
        return self.name_server

    def start_server(self, port: int | None = None, *extra: str) -> Process:
        port = port or free_port()
        process = start(
            f"server-{port}",
            [
                "server.py", "--port", str(port), "--db", str(self.db), "--name-server", self.name_server_address,
                "--admin-token", ADMIN_TOKEN, "--hold-seconds", str(self.hold_seconds), *extra,
            ],
            ready="Ticket server listening on", env=KEYED,
        )
        self.servers[port] = process
        return process

    def server_addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port, process in self.servers.items() if process.alive()]

    def stop(self) -> None:
        for process in self.servers.values():
            process.stop()
        if self.name_server is not None:
            self.name_server.stop()


@pytest.fixture
def backend() -> str:
    """The database the test's clusters use; `@pytest.mark.parametrize("backend", BACKENDS)` runs a test on both."""
    return "sqlite"


@pytest.fixture
def cluster_factory(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Iterator:
    """Call it to get a started cluster: `cluster_factory(servers=2)`; everything is stopped after the test."""
    made: list[Cluster] = []

    def make(servers: int = 2, hold_seconds: float = 600.0, extra: tuple[str, ...] = ()) -> Cluster:
        database = ""
        if backend == "postgresql":
            database = request.getfixturevalue("postgres").create_schema(f"cluster{next(_database_numbers)}")
        cluster = Cluster(tmp_path / f"cluster{len(made)}", hold_seconds=hold_seconds, database=database)
        cluster.directory.mkdir()
        made.append(cluster)
        cluster.start_name_server()
        for _ in range(servers):
            cluster.start_server(None, *extra)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture
def cluster(cluster_factory) -> Cluster:
    """A name server and two ticket servers on one fresh database with the demo catalogue."""
    return cluster_factory(servers=2)
