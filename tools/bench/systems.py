"""The product under test and its audit: N ticket servers on one fresh database with one huge event, and
after they stopped, the database held against every code a terminal was sold (nothing sold twice, nothing lost,
no request id applied twice, the store's invariants).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from database import Store
from tools.bench import (
    CAPACITY,
    PRODUCT_READY,
    SEATED_ROOM,
    SEATED_SECTOR,
    SECTOR,
    SERVER_STOP_SECONDS,
    START_TIMEOUT_SECONDS,
)
from tools.bench.load import (
    LoadPlan,
    call,
    connect,
    connect_when_listening,
)
from tools.harness import Child, free_port, start_child


@dataclass
class Product:
    """N ticket servers on one fresh database with one huge on-sale event, and the codes sold through them."""

    name: str
    db: str
    """A SQLite file, or a PostgreSQL URL."""
    servers: list[Child]
    addresses: tuple[str, ...]
    token: str
    event_id: int = 0
    codes: list[str] = field(default_factory=list)

    def plan(self, method: str, run_id: str) -> LoadPlan:
        return LoadPlan(method, self.addresses, self.event_id, run_id)

    def sector_counts(self) -> tuple[int, int]:
        """(capacity, available) of the bench sector, as a client sees it through get_event."""
        connection = connect(self.addresses[0])
        try:
            event = dict(call(connection, "get_event", self.event_id))
        finally:
            connection.close()
        sector = next(dict(pairs) for pairs in event["sectors"] if dict(pairs)["name"] == SECTOR)
        return sector["capacity"], sector["available"]


@contextlib.contextmanager
def product(name: str, replicas: int, workdir: Path, log_level: str | None, database: str = "") -> Iterator[Product]:
    """Start `replicas` servers on one new database (a SQLite file, or the PostgreSQL URL given) and create the
    bench event; stop them all on the way out."""
    directory = workdir / name
    directory.mkdir()
    db = database or str(directory / "tickets.db")
    token = secrets.token_urlsafe(16)
    nowhere = f"127.0.0.1:{free_port()}"
    servers: list[Child] = []
    try:
        addresses = []
        for index in range(replicas):
            args = ["server.py", "--port", "0", "--db", db, "--no-demo", f"--admin-token={token}", "--name-server", nowhere]
            if log_level:
                args += ["--log-level", log_level]
            server = start_child(f"{name}-server{index}", args, PRODUCT_READY, log=directory / f"{name}-server{index}.log",
                                 timeout=START_TIMEOUT_SECONDS)
            servers.append(server)
            addresses.append(server.address)
            connect_when_listening(server.address).close()
        system = Product(name, db, servers, tuple(addresses), token)
        connection = connect(addresses[0])
        try:
            event = dict(call(connection, "admin_create_event", token, "Bench Night", "Bench Hall",
                              "2030-01-01T20:00:00-03:00", ((SECTOR, 10000, CAPACITY), (SEATED_SECTOR, 5000, *SEATED_ROOM))))
        finally:
            connection.close()
        system.event_id = event["id"]
        yield system
    finally:
        for server in servers:
            server.stop(SERVER_STOP_SECONDS)


@dataclass(frozen=True)
class Audit:
    """What one database says after its servers stopped, against what the terminals were told."""

    database: str
    capacity: int
    available: int
    sold: int
    reservations: int
    distinct_request_ids: int
    codes_returned: int
    codes_distinct: int
    codes_missing: int
    violations: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.violations


def audit(system: Product, capacity: int, available: int) -> Audit:
    """Run after the servers stopped: count in the database itself, then ask the store for its invariants."""
    store = Store(system.db, seed_demo=False)
    try:
        with store.engine.reader() as connection:
            rows, distinct = connection.execute("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM reservations").fetchone()
            sold = connection.execute(
                "SELECT COALESCE(SUM(quantity), 0) FROM reservations WHERE status = 'confirmed' AND event_id = ? AND sector = ?",
                (system.event_id, SECTOR),
            ).fetchone()[0]
            stored = {code for (code,) in connection.execute("SELECT code FROM reservations").fetchall()}
        invariants = store.check_invariants()
    finally:
        store.close()
    returned = set(system.codes)
    missing = len(returned - stored)
    violations = [*invariants]
    if sold != capacity - available:
        violations.append(f"{sold} tickets sold but capacity {capacity} - available {available} = {capacity - available}")
    if rows != distinct:
        violations.append(f"{rows - distinct} request ids appear twice ({rows} reservations, {distinct} distinct request ids)")
    if missing:
        violations.append(f"{missing} codes a terminal was sold are not in the database")
    if len(returned) != len(system.codes):
        violations.append(f"{len(system.codes) - len(returned)} codes were handed to two terminals")
    if sold < len(system.codes):
        violations.append(f"terminals were sold {len(system.codes)} tickets but the database counts {sold}")
    return Audit(system.name, capacity, available, sold, rows, distinct, len(system.codes), len(returned), missing, tuple(violations))
