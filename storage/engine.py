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


NO_EVENTS: tuple[int, ...] = ()
"""What a write that touches no event's stock passes as its events (the outbox, a brand-new event)."""


class Connection(Protocol):
    """What the store's SQL runs on: a sqlite3 connection as it is, or a thin wrapper around a psycopg one."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


Events = Sequence[int] | Callable[[Connection], Iterable[int]]
"""The events a write touches: their ids, or a read that finds them (a reservation's event, from its code) run
inside the write's transaction before the lock. A row's event never changes, so the read needs no lock; the
write re-reads the row itself once the event is locked."""


class Engine(Protocol):
    """What the store needs from a database: reads, durable writes, migrations and a nudge when the ledger grows."""

    backend: str
    serial_writes: bool
    """True when writers take turns (SQLite), so a read inside a write sees everything committed before it."""

    def reader(self) -> AbstractContextManager[Connection]: ...

    def submit(self, op: Callable[[Connection], T], events: Events) -> T:
        """Run `op` in a write transaction and return once it is committed. `events` are the ids of the events
        `op` will touch (or a read that finds them): an engine whose writers run side by side locks their rows
        first, in ascending order, so every write of one event runs alone; a serial engine ignores them."""
        ...

    def health(self) -> str | None:
        """None while the engine can take writes; otherwise one line saying why not (a file gone, replaced...)."""
        ...

    def migrate(self, migrations: Sequence[str], seed: Callable[[Connection], None]) -> None: ...

    def wait_for_ledger(self, timeout: float) -> None: ...

    def close(self) -> None: ...

