"""The inventory's door: `Store`, the box office's durable state, in SQLite or PostgreSQL.

Every guarantee of the box office that survives a crash lives in the database, not in server memory: the
conditional decrement (`available >= quantity`, storage/sales.py) and the `CHECK (available >= 0)` refuse an
oversell even when several server processes share one database; the unique `request_id` makes a retried
reservation return the original; each commit is on disk before the server answers.

`Store` is the facade and the transaction boundary: each public method cleans its arguments
(storage/validate.py), then submits one named transaction function of storage/ to the engine, or runs a
read. The parts: engine.py (what an engine is), sqlite.py and postgres.py (the engines), schema.py
(migrations, the demo), rows.py (rows by name), sales.py (the sale kernel), waitlist.py, admin.py,
outbox.py, ledger.py, audit.py. This module knows nothing of RPyC; it speaks in records (records.py) and
refusals (errors.py).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from errors import InvalidRequest, NotFound, Unavailable
from records import Event, LedgerEntry, OutboxMessage, Reservation, ReservationStatus, SeatMap, SectorReport, WaitlistEntry
from storage import admin, audit, ledger, outbox, sales, schema, waitlist
from storage.engine import NO_EVENTS, WRITE_TIMEOUT_SECONDS, Connection, Engine, Events, T
from storage.rows import iso
from storage.schema import MIGRATIONS
from storage.validate import (
    MAX_CAPACITY,
    MAX_PRICE_CENTS,
    MAX_SECTORS,
    SectorSpec,
    clean_email,
    clean_quantity,
    clean_sector,
    clean_sector_name,
    clean_starts_at,
    clean_text,
)

__all__ = [
    "DEFAULT_HOLD_SECONDS", "DEFAULT_MAX_PER_ORDER", "DEFAULT_OFFER_SECONDS", "MAX_CAPACITY", "MAX_PRICE_CENTS", "MIGRATIONS",
    "SALE_LANES", "SectorSpec", "Store", "iso",
]

log = logging.getLogger("bilheteria.storage.database")

DEFAULT_HOLD_SECONDS = 600.0
DEFAULT_MAX_PER_ORDER = 10
DEFAULT_OFFER_SECONDS = 900.0
"""How long a waitlist offer holds its tickets before they pass to the next in line."""
SALE_LANES = 64
"""Locks that line up one process's sales of the same event, on engines whose writers run side by side."""


def open_engine(location: str, busy_timeout_ms: int = 10_000) -> Engine:
    """A `postgresql://` URL selects PostgreSQL (psycopg is imported only then); anything else is a SQLite file."""
    if location.startswith(("postgresql://", "postgres://")):
        from storage.postgres import PostgresEngine

        return PostgresEngine(location)
    from storage.sqlite import SqliteEngine

    return SqliteEngine(location, busy_timeout_ms)


class Store:
    """The box office's durable state, safe for many threads and many processes, on either engine."""

    def __init__(
        self,
        path: str | Path = "tickets.db",
        *,
        hold_seconds: float = DEFAULT_HOLD_SECONDS,
        max_per_order: int = DEFAULT_MAX_PER_ORDER,
        offer_seconds: float = DEFAULT_OFFER_SECONDS,
        seed_demo: bool = True,
        clock: Callable[[], float] = time.time,
        busy_timeout_ms: int = 10_000,
    ) -> None:
        """Open (and migrate) the database at `path`; one that cannot be opened raises `Unavailable`."""
        if hold_seconds <= 0 or offer_seconds <= 0:
            raise ValueError("hold_seconds and offer_seconds must be positive")
        self.path = str(path)
        self.hold_seconds = float(hold_seconds)
        self.max_per_order = max_per_order
        self.offer_seconds = float(offer_seconds)
        self.clock = clock
        self.engine = open_engine(self.path, busy_timeout_ms)
        self.backend = self.engine.backend
        self._reader = self.engine.reader
        self._sale_lanes = [threading.Lock() for _ in range(SALE_LANES)]
        try:
            self.engine.migrate(MIGRATIONS, (lambda connection: schema.seed(connection, self.clock())) if seed_demo else _no_seed)
            expired = self.expire_holds()
        except BaseException:
            self.engine.close()
            raise
        if expired:
            log.info("expired %d holds that lapsed while the server was down", expired)

    def close(self) -> None:
        self.engine.close()

    def health(self) -> str | None:
        """None while the store can take writes; otherwise one line saying why not, for the server to stop
        registering and say so (a SQLite file deleted or replaced under it, its WAL cut short)."""
        return self.engine.health()

    def _write(self, events: Events, op: Callable[[Connection], T]) -> T:
        """The one way a write reaches the engine: with the events it touches, whose rows a side-by-side
        engine locks first (storage/postgres.py), so every write of an event runs as if alone."""
        return self.engine.submit(op, events)

    def wait_for_ledger(self, timeout: float) -> None:
        """Until the ledger may have grown (a commit here or, sooner or later, in another process), or `timeout`."""
        self.engine.wait_for_ledger(timeout)

    # -- reads --------------------------------------------------------------------------------------

    def list_events(self) -> tuple[Event, ...]:
        with self._reader() as connection:
            return tuple(admin.events(connection))

    def get_event(self, event_id: int) -> Event:
        with self._reader() as connection:
            found = admin.events(connection, event_id)
        if not found:
            raise NotFound(f"No event with id {event_id}")
        return found[0]

    def get_reservation(self, code: str, email: str) -> Reservation:
        with self._reader() as connection:
            row = sales.by_code(connection, code)
        return sales.owned(row, code, email).record()

    def ledger(self, since: int = 0, limit: int = 1000) -> tuple[LedgerEntry, ...]:
        with self._reader() as connection:
            return ledger.entries(connection, since, limit)

    def ledger_end(self) -> int:
        """The last sequence number written: where a follower that wants no history starts."""
        with self._reader() as connection:
            return ledger.end(connection)

    def reservations(self, event_id: int | None = None) -> tuple[Reservation, ...]:
        """Every reservation (of one event), oldest first: for audits and tests, not for the hot path."""
        with self._reader() as connection:
            return admin.every_reservation(connection, event_id)

    def check_invariants(self) -> list[str]:
        """Violations of what must always hold (storage/audit.py); empty when healthy."""
        with self._reader() as connection:
            return audit.problems(connection)

    def seat_map(self, event_id: int, sector: str) -> SeatMap:
        sector = clean_text(sector, "sector", 100)
        with self._reader() as connection:
            return sales.seat_map(connection, event_id, sector)

    # -- sales --------------------------------------------------------------------------------------

    def reserve(
        self,
        event_id: int,
        quantity: int,
        customer: str,
        email: str,
        sector: str | None = None,
        category: str = "full",
        request_id: str | None = None,
        confirm: bool = False,
        seats: Sequence[str] | None = None,
    ) -> Reservation:
        """Hold (or, with confirm, sell) tickets; the same request_id always answers with the same reservation.

        In a seated sector, `seats` names exactly the seats wanted (all or none); without it the best block of
        adjacent seats is chosen. A seat is refused twice by the primary key of seat_holds, not by a check.
        """
        clean_quantity(quantity, self.max_per_order)
        customer = clean_text(customer, "customer name")
        email = clean_email(email)
        if category not in sales.CATEGORIES:
            raise InvalidRequest(f"category must be 'full' or 'half', not {category[:20]!r}")
        sector = clean_sector_name(sector)
        if seats is not None and len(seats) != quantity:
            raise InvalidRequest(f"{len(seats)} seats named for {quantity} tickets; name one seat per ticket")
        request_id = uuid.uuid4().hex if request_id is None else clean_text(request_id, "request_id", 100)
        sale = sales.Sale(event_id, sector, quantity, customer, email, category, request_id, confirm, seats)

        def op(connection: Connection) -> Reservation:
            return sales.reserve(connection, self.clock(), sale, self.hold_seconds)

        if self.engine.serial_writes:
            return self._write((event_id,), op)  # one writer at a time already; the group commit wants every sale queued at once
        return self._in_lane(event_id, op)

    def _in_lane(self, event_id: int, op: Callable[[Connection], T]) -> T:
        """Run a sale after this process's earlier sales of the same event (lock striping by event id).

        Sales of one event meet at its event's row lock. Queued there, each waiter holds a pooled connection and
        an open transaction, and PostgreSQL wakes them one by one through its lock manager; queued on a Python
        lock, they wait for nothing but the lock. The row lock still keeps sales apart, across processes too; the
        lane only orders this process's own, and other events' sales go by in other lanes.
        """
        lane = self._sale_lanes[event_id % SALE_LANES]
        if not lane.acquire(timeout=WRITE_TIMEOUT_SECONDS):
            raise Unavailable(f"the database did not finish this event's earlier sales within {WRITE_TIMEOUT_SECONDS:.0f} s")
        try:
            return self._write((event_id,), op)
        finally:
            lane.release()

    def confirm(self, code: str, email: str, payment_ref: str | None = None) -> Reservation:
        """Turn a hold into a sale; confirming twice answers with the same sale. `payment_ref` is what the
        (fictitious) payment step answered, kept with the sale for the clerk who has to trace it."""
        if payment_ref is not None:
            payment_ref = clean_text(payment_ref, "payment reference", 100)
        return self._write(
            lambda connection: sales.event_of(connection, code),
            lambda connection: sales.confirm(connection, self.clock(), code, email, payment_ref),
        )

    def cancel(self, code: str, email: str) -> Reservation:
        """Give the tickets back; cancelling twice (or a lapsed hold) changes nothing and says how it stands."""
        return self._write(
            lambda connection: sales.event_of(connection, code),
            lambda connection: sales.cancel(connection, self.clock(), code, email, self.offer_seconds),
        )

    def expire_holds(self, limit: int = 500) -> int:
        """Return the tickets of lapsed holds; safe to run from every replica at once (each expiry happens once).
        A read finds the events with lapsed holds first (none: no write, no fsync); the write locks those events
        and expires only their holds, so a hold of another event that lapses meanwhile waits for the next sweep."""
        now = self.clock()
        with self._reader() as connection:
            events = sales.lapsed_events(connection, now, limit)
        if not events:
            return 0
        return self._write(events, lambda connection: sales.expire(connection, now, limit, self.offer_seconds, events))

    # -- the waitlist -------------------------------------------------------------------------------

    def join_waitlist(self, event_id: int, quantity: int, customer: str, email: str, sector: str | None = None) -> WaitlistEntry:
        """Queue for a sold-out sector. Joining again with the same email while still waiting answers with the same
        entry, so a retried call never queues a customer twice."""
        clean_quantity(quantity, self.max_per_order)
        customer = clean_text(customer, "customer name")
        email = clean_email(email)
        sector = clean_sector_name(sector)
        entry_id = self._write(
            (event_id,), lambda connection: waitlist.join(connection, self.clock(), event_id, quantity, customer, email, sector)
        )
        return self.waitlist_entry(entry_id)

    def leave_waitlist(self, entry_id: int, email: str) -> WaitlistEntry:
        """Leave the queue; an offer not yet confirmed is given up (its tickets pass to the next in line)."""
        self._write(
            lambda connection: waitlist.event_of(connection, entry_id),
            lambda connection: waitlist.leave(connection, self.clock(), entry_id, email, self.offer_seconds),
        )
        return self.waitlist_entry(entry_id)

    def get_waitlist_entry(self, entry_id: int, email: str) -> WaitlistEntry:
        with self._reader() as connection:
            waitlist.owned(connection, entry_id, email)
        return self.waitlist_entry(entry_id)

    def waitlist_entry(self, entry_id: int) -> WaitlistEntry:
        """The entry with its place in line, without the owner's email: what a server pushes to the owner's callback."""
        with self._reader() as connection:
            return waitlist.entry(connection, entry_id)

    # -- the outbox ---------------------------------------------------------------------------------

    def claim_messages(self, worker: str, limit: int = 20, lease_seconds: float = 60.0) -> tuple[OutboxMessage, ...]:
        """Lease due messages to `worker`. A lease keeps other replicas off them in the normal path; one that
        expires (its worker died) lets another replica take over, at the price of a possible second send."""
        with self._reader() as reader:
            if not outbox.any_due(reader, self.clock()):
                return ()  # the common case, answered by a read: no write transaction (and no fsync) per idle poll
        return self._write(NO_EVENTS, lambda connection: outbox.claim(connection, self.clock(), worker, limit, lease_seconds))

    def mark_sent(self, message_id: int, worker: str) -> None:
        """Whoever holds the lease now: the mail left, so it is sent (a second send is the documented risk)."""
        self._write(NO_EVENTS, lambda connection: outbox.mark_sent(connection, self.clock(), message_id))
        log.debug("outbox %d sent by %s", message_id, worker)

    def mark_logged(self, message_ids: Sequence[int], worker: str) -> None:
        """Many at once: writing a log line is instant, so a round's messages share one commit."""
        self._write(NO_EVENTS, lambda connection: outbox.mark_logged(connection, self.clock(), message_ids))
        log.debug("outbox %s logged by %s", ",".join(map(str, message_ids)), worker)

    def mark_failed(self, message_id: int, worker: str, error: str, retry_in: float) -> None:
        """Count a failed try and schedule the next, only while `worker` still holds the lease."""
        self._write(NO_EVENTS, lambda connection: outbox.mark_failed(connection, self.clock() + retry_in, message_id, worker, error))

    def outbox(self, status: str | None = None) -> tuple[OutboxMessage, ...]:
        """Every message (with one status): for audits and tests, not for the hot path."""
        with self._reader() as connection:
            return outbox.messages(connection, status)

    # -- administration -----------------------------------------------------------------------------

    def create_event(self, name: str, venue: str, starts_at: str, sectors: Sequence[SectorSpec]) -> Event:
        """A new event on sale with its sectors, all or nothing; a sector given with rows and seats per row is seated."""
        name = clean_text(name, "event name")
        venue = clean_text(venue, "venue")
        starts_at = clean_starts_at(starts_at)
        if not 1 <= len(sectors) <= MAX_SECTORS:
            raise InvalidRequest(f"an event needs between 1 and {MAX_SECTORS} sectors")
        cleaned = [clean_sector(sector) for sector in sectors]
        if len({sector[0] for sector in cleaned}) != len(cleaned):
            raise InvalidRequest("sector names must be unique within an event")
        event_id = self._write(NO_EVENTS, lambda connection: admin.insert_event(connection, self.clock(), name, venue, starts_at, cleaned))
        return self.get_event(event_id)

    def update_event(
        self,
        event_id: int,
        name: str | None = None,
        venue: str | None = None,
        starts_at: str | None = None,
        capacities: tuple[tuple[str, int], ...] = (),
        half_limits: tuple[tuple[str, int | None], ...] = (),
    ) -> Event:
        """Rename, move or reschedule an event; grow a sector, or shrink it down to what is already held or sold;
        set or lift (None) a sector's half-price limit, but never below what is already taken at half price."""
        changes = {
            "name": None if name is None else clean_text(name, "event name"),
            "venue": None if venue is None else clean_text(venue, "venue"),
            "starts_at": None if starts_at is None else clean_starts_at(starts_at),
        }
        for sector, capacity in capacities:
            if not 0 <= capacity <= MAX_CAPACITY:
                raise InvalidRequest(f"capacity of {sector} must be between 0 (closed) and {MAX_CAPACITY}")
        for sector, limit in half_limits:
            if limit is not None and not 0 <= limit <= MAX_CAPACITY:
                raise InvalidRequest(f"half-price limit of {sector} must be between 0 and {MAX_CAPACITY}, or None")
        self._write((event_id,), lambda connection: admin.update_event(
            connection, self.clock(), event_id, changes, capacities, half_limits, self.offer_seconds
        ))
        return self.get_event(event_id)

    def add_sector(self, event_id: int, name: str, price_cents: int, capacity: int, half_limit: int | None = None) -> Event:
        name = clean_text(name, "sector name", 100)
        if not 0 <= price_cents <= MAX_PRICE_CENTS:
            raise InvalidRequest(f"price_cents of {name} must be between 0 and {MAX_PRICE_CENTS}")
        if not 1 <= capacity <= MAX_CAPACITY:
            raise InvalidRequest(f"capacity of {name} must be between 1 and {MAX_CAPACITY}")
        if half_limit is not None and not 0 <= half_limit <= capacity:
            raise InvalidRequest(f"half-price limit of {name} must be between 0 and its capacity, or None")
        self._write((event_id,), lambda connection: admin.add_sector(
            connection, self.clock(), event_id, name, price_cents, capacity, half_limit
        ))
        return self.get_event(event_id)

    def set_event_status(self, event_id: int, status: str) -> Event:
        """Pause (no new reservations; holds may still be confirmed) or resume sales; a cancelled event stays so."""
        if status not in ("on_sale", "paused"):
            raise InvalidRequest("an event can be put on sale or paused here; cancel it with cancel_event")
        self._write((event_id,), lambda connection: admin.set_event_status(connection, self.clock(), event_id, status, self.offer_seconds))
        return self.get_event(event_id)

    def cancel_event(self, event_id: int) -> tuple[Event, int]:
        """Cancel the event and every active reservation in it, mailing each customer; answers how many were cancelled."""
        cancelled = self._write((event_id,), lambda connection: admin.cancel_event(connection, self.clock(), event_id, self.offer_seconds))
        return self.get_event(event_id), cancelled

    def delete_event(self, event_id: int) -> None:
        """Only an event that never took a reservation can vanish; one with history must be cancelled instead."""
        self._write((event_id,), lambda connection: admin.delete_event(connection, self.clock(), event_id))

    def list_reservations(
        self, event_id: int | None = None, email: str | None = None, status: str | None = None, limit: int = 1000
    ) -> tuple[Reservation, ...]:
        """The clerk's search: newest first, filtered by event, customer email and status."""
        if status is not None and status not in tuple(ReservationStatus):
            raise InvalidRequest("status must be held, confirmed, cancelled or expired")
        with self._reader() as connection:
            return admin.reservations(connection, event_id, email, status, limit)

    def report(self) -> tuple[SectorReport, ...]:
        """Per event and sector: where it stands, what it earned by category (confirmed only), and the last minute's sales."""
        since = self.clock() - 60
        with self._reader() as connection:
            return admin.report(connection, since)


def _no_seed(connection: Connection) -> None:
    """An empty database stays empty (the server's --no-demo)."""
