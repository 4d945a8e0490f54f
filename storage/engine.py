"""What the store asks of a database, said once so both engines (sqlite.py, postgres.py) answer the same questions.

The store's SQL is written once, in the subset both engines speak (`?` placeholders, `RETURNING`,
`ON CONFLICT ... DO NOTHING`); an engine owns connections, transactions and how writers take turns, and turns
its driver's errors into `Unavailable`, so nothing above storage/ needs to know which driver is underneath.
The door (database.open_engine) picks the engine from the location.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

WRITE_TIMEOUT_SECONDS = 30.0
"""The longest a write waits for its turn (behind a group commit, or behind a sale lane) before it gives up."""


class Connection(Protocol):
    """What the store's SQL runs on: a sqlite3 connection as it is, or a thin wrapper around a psycopg one."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


class Engine(Protocol):
    """What the store needs from a database: reads, durable writes, migrations and a nudge when the ledger grows."""

    backend: str
    serial_writes: bool
    """True when writers take turns (SQLite), so a read inside a write sees everything committed before it."""

    def reader(self) -> AbstractContextManager[Connection]: ...

    def submit(self, op: Callable[[Connection], T]) -> T: ...

    def migrate(self, migrations: Sequence[str], seed: Callable[[Connection], None]) -> None: ...

    def wait_for_ledger(self, timeout: float) -> None: ...

    def close(self) -> None: ...

