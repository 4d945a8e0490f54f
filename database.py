"""The inventory: events, sectors, reservations and the ledger, kept in SQLite or PostgreSQL.

Every guarantee of the box office that survives a crash lives here, in the database, not in server
memory: the conditional decrement (`available >= quantity`) and the `CHECK (available >= 0)` refuse an
oversell even when several server processes share one database; the unique `request_id` makes a retried
reservation return the original; each commit is on disk before the server answers.

`Store` holds every rule and all the SQL, written once in the subset both databases speak; an engine
holds the connections and the transactions. The SQLite engine commits writes in groups: a caller queues
its write, and whichever caller holds the write lock (the leader) commits everything queued so far in one
transaction, each write inside its own savepoint so a refusal undoes only that write; one fsync covers
the whole group. The write lock is the in-process mutual exclusion; `BEGIN IMMEDIATE` (behind a `flock`)
is the one across processes. Reads use a small pool of connections and never wait for writes (WAL readers
see the last commit). The PostgreSQL engine (postgres.py) lets the database's row locks do that work.

This module knows nothing of RPyC; it speaks in records (records.py) and refusals (errors.py).
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import seating
from errors import EventClosed, HoldExpired, InvalidRequest, NotFound, ReservationError, SoldOut, Unavailable
from records import Event, LedgerEntry, OutboxMessage, Reservation, SeatMap, Sector, SectorReport, WaitlistEntry, format_money

log = logging.getLogger("bilheteria.database")

T = TypeVar("T")

DEFAULT_HOLD_SECONDS = 600.0
DEFAULT_MAX_PER_ORDER = 10
DEFAULT_OFFER_SECONDS = 900.0
"""How long a waitlist offer holds its tickets before they pass to the next in line."""
MAX_TEXT = 200
MAX_EMAIL = 254
MAX_CAPACITY = 10_000_000
MAX_PRICE_CENTS = 100_000_000
MAX_SECTORS = 50
WRITE_TIMEOUT_SECONDS = 30.0
SALE_LANES = 64
"""Locks that line up one process's sales of the same event, on engines whose writers run side by side."""
CATEGORIES = {"full": (1, 1), "half": (1, 2)}
"""Price category -> (numerator, denominator) of the sector price; half rounds up to the cent."""

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""No 0/O or 1/I: codes are read aloud at a counter."""
_CODE_TABLE = bytes(ord(CODE_ALPHABET[byte % 32]) for byte in range(256))

MIGRATIONS: tuple[str, ...] = (
    # 1: the core schema.
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        venue TEXT NOT NULL,
        starts_at TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('on_sale', 'paused', 'cancelled')),
        created_at REAL NOT NULL
    );
    CREATE TABLE sectors (
        event_id INTEGER NOT NULL REFERENCES events(id),
        name TEXT NOT NULL,
        position INTEGER NOT NULL,
        price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
        capacity INTEGER NOT NULL CHECK (capacity >= 0),
        available INTEGER NOT NULL CHECK (available >= 0 AND available <= capacity),
        PRIMARY KEY (event_id, name)
    );
    CREATE TABLE reservations (
        code TEXT PRIMARY KEY,
        request_id TEXT NOT NULL UNIQUE,
        event_id INTEGER NOT NULL,
        sector TEXT NOT NULL,
        quantity INTEGER NOT NULL CHECK (quantity > 0),
        customer TEXT NOT NULL,
        email TEXT NOT NULL,
        category TEXT NOT NULL CHECK (category IN ('full', 'half')),
        unit_price_cents INTEGER NOT NULL,
        total_cents INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('held', 'confirmed', 'cancelled', 'expired')),
        created_at REAL NOT NULL,
        expires_at REAL,
        FOREIGN KEY (event_id, sector) REFERENCES sectors(event_id, name)
    );
    CREATE INDEX reservations_by_sector ON reservations(event_id, sector, status);
    CREATE INDEX reservations_held ON reservations(expires_at) WHERE status = 'held';
    CREATE TABLE ledger (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        action TEXT NOT NULL,
        code TEXT,
        event_id INTEGER,
        sector TEXT,
        quantity INTEGER,
        detail TEXT
    );
    """,
    # 2: events carry their currency, so a catalogue can mix them later without guessing.
    """
    ALTER TABLE events ADD COLUMN currency TEXT NOT NULL DEFAULT 'BRL';
    """,
    # 3: an optional cap on half-price tickets per sector, kept as a counter so the database itself refuses
    # the ticket past the cap; and the outbox, written in the same transaction as the change it announces.
    """
    ALTER TABLE sectors ADD COLUMN half_limit INTEGER CHECK (half_limit IS NULL OR half_limit >= 0);
    ALTER TABLE sectors ADD COLUMN half_taken INTEGER NOT NULL DEFAULT 0 CHECK (half_taken >= 0);
    UPDATE sectors SET half_taken = (
        SELECT COALESCE(SUM(r.quantity), 0) FROM reservations r
        WHERE r.event_id = sectors.event_id AND r.sector = sectors.name AND r.category = 'half'
        AND r.status IN ('held', 'confirmed'));
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,
        kind TEXT NOT NULL,
        recipient TEXT NOT NULL,
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        code TEXT,
        status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'logged')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        claimed_by TEXT,
        claimed_until REAL,
        sent_at REAL,
        last_error TEXT
    );
    CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE status = 'pending';
    CREATE INDEX ledger_by_time ON ledger(at);
    """,
    # 4: seated sectors, where a seat is a row of seat_holds while an active reservation holds it (so the
    # primary key refuses a seat twice); the waitlist; and the payment reference a confirmation carries.
    """
    ALTER TABLE sectors ADD COLUMN seat_rows INTEGER NOT NULL DEFAULT 0 CHECK (seat_rows >= 0);
    ALTER TABLE sectors ADD COLUMN seats_per_row INTEGER NOT NULL DEFAULT 0 CHECK (seats_per_row >= 0);
    ALTER TABLE reservations ADD COLUMN seats TEXT NOT NULL DEFAULT '';
    ALTER TABLE reservations ADD COLUMN payment_ref TEXT;
    CREATE TABLE seat_holds (
        event_id INTEGER NOT NULL,
        sector TEXT NOT NULL,
        seat TEXT NOT NULL,
        code TEXT NOT NULL REFERENCES reservations(code),
        PRIMARY KEY (event_id, sector, seat)
    );
    CREATE INDEX seat_holds_by_code ON seat_holds(code);
    CREATE TABLE waitlist (
        id INTEGER PRIMARY KEY,
        event_id INTEGER NOT NULL,
        sector TEXT NOT NULL,
        quantity INTEGER NOT NULL CHECK (quantity > 0),
        customer TEXT NOT NULL,
        email TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('waiting', 'offered', 'accepted', 'lapsed', 'left')),
        created_at REAL NOT NULL,
        code TEXT,
        offer_expires_at REAL,
        FOREIGN KEY (event_id, sector) REFERENCES sectors(event_id, name)
    );
    CREATE INDEX waitlist_waiting ON waitlist(event_id, sector, id) WHERE status = 'waiting';
    CREATE INDEX waitlist_by_code ON waitlist(code);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

SectorSpec = tuple[str, int, int] | tuple[str, int, int, int]
"""(name, price_cents, capacity) for unnumbered tickets, (name, price_cents, rows, seats_per_row) for seats."""

DEMO_CATALOGUE: tuple[tuple[str, str, str, tuple[SectorSpec, ...]], ...] = (
    ("Noite de Abertura - Rock na Praia", "Arena Copacabana, Rio de Janeiro", "2027-03-13T20:00:00-03:00",
     (("Pista", 25000, 300), ("VIP", 68000, 50))),
    ("Bachianas Brasileiras", "Sala São Paulo, São Paulo", "2027-04-02T21:00:00-03:00",
     (("Plateia", 9000, 10, 12), ("Camarote", 18000, 30))),
    ("Stand-up: Noite de Estreia", "Teatro Rival, Rio de Janeiro", "2027-02-20T22:00:00-03:00",
     (("Geral", 6000, 80),)),
)

_OUTBOX_COLUMNS = "id, kind, recipient, subject, body, code, attempts, status"
_RESERVATION_COLUMNS = (
    "code, event_id, sector, quantity, customer, email, category, unit_price_cents, total_cents, "
    "status, created_at, expires_at, seats"
)


def iso(timestamp: float | None) -> str | None:
    """UTC ISO 8601 to the second: what records carry, so every client reads times the same way."""
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def new_code() -> str:
    """A short code a clerk can read aloud (`K7Q-2M9`): 30 bits from the OS's secure source, about a billion
    values. Unpredictable on purpose: with the customer's email, a code is enough to cancel."""
    chars = os.urandom(6).translate(_CODE_TABLE).decode("ascii")
    return f"{chars[:3]}-{chars[3:]}"


def _reservation(row: tuple) -> Reservation:
    return Reservation(*row[:10], iso(row[10]), iso(row[11]), tuple(row[12].split(",")) if row[12] else ())


def _clean_text(value: str, what: str, limit: int = MAX_TEXT) -> str:
    text = value.strip()
    if not text:
        raise InvalidRequest(f"{what} must not be empty")
    if len(text) > limit:
        raise InvalidRequest(f"{what} is too long ({len(text)} characters, at most {limit})")
    if CONTROL_CHARACTERS.search(text):
        raise InvalidRequest(f"{what} must not contain control characters")
    return text


def _clean_email(value: str) -> str:
    email = _clean_text(value, "email", MAX_EMAIL)
    if not EMAIL_SHAPE.fullmatch(email):
        raise InvalidRequest(f"{email!r} does not look like an email address (name@domain.tld)")
    return email


def _clean_sector(sector: Sequence[Any]) -> SectorSpec:
    if len(sector) not in (3, 4):
        raise InvalidRequest("each sector is (name, price_cents, capacity) or (name, price_cents, rows, seats_per_row)")
    name = _clean_text(sector[0], "sector name", 100)
    price = sector[1]
    if not 0 <= price <= MAX_PRICE_CENTS:
        raise InvalidRequest(f"price_cents of {name} must be between 0 and {MAX_PRICE_CENTS}")
    if len(sector) == 4:
        rows, seats_per_row = sector[2], sector[3]
        if not 1 <= rows <= seating.MAX_ROWS or not 1 <= seats_per_row <= seating.MAX_SEATS_PER_ROW:
            raise InvalidRequest(
                f"{name}: a seated sector has 1 to {seating.MAX_ROWS} rows of 1 to {seating.MAX_SEATS_PER_ROW} seats"
            )
        return name, price, rows, seats_per_row
    if not 1 <= sector[2] <= MAX_CAPACITY:
        raise InvalidRequest(f"capacity of {name} must be between 1 and {MAX_CAPACITY}")
    return name, price, sector[2]


def plural_seats(labels: Sequence[str]) -> str:
    return f"Seat {labels[0]} is" if len(labels) == 1 else f"Seats {', '.join(labels)} are"


def _clean_starts_at(value: str) -> str:
    text = _clean_text(value, "starts_at", 40)
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"starts_at {text!r} is not an ISO 8601 date and time (e.g. 2027-03-13T20:00:00-03:00)") from None
    return text


class _Job:
    """One queued write. Its owner sleeps on `wake` until a leader has committed it (`finished`) or has
    handed it the lead (`lead`): one wake-up per waiter, never a crowd woken to check and sleep again."""

    __slots__ = ("error", "finished", "lead", "op", "result", "wake")

    def __init__(self, op: Callable[[Any], Any]) -> None:
        self.op = op
        self.finished = False
        self.lead = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.wake = threading.Lock()
        self.wake.acquire()


class Connection(Protocol):
    """What the store's SQL runs on: a sqlite3 connection as it is, or a thin wrapper around a psycopg one."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


class Engine(Protocol):
    """What the store needs from a database: reads, durable writes, migrations and a nudge when the ledger grows.

    The store's SQL is written once, in the subset both engines speak (`?` placeholders, `RETURNING`,
    `ON CONFLICT ... DO NOTHING`); an engine owns connections, transactions and how writers take turns.
    """

    backend: str
    serial_writes: bool
    """True when writers take turns (SQLite), so a read inside a write sees everything committed before it."""
    errors: tuple[type[Exception], ...]

    def reader(self) -> AbstractContextManager[Connection]: ...

    def submit(self, op: Callable[[Connection], T]) -> T: ...

    def migrate(self, migrations: Sequence[str], seed: Callable[[Connection], None]) -> None: ...

    def wait_for_ledger(self, timeout: float) -> None: ...

    def close(self) -> None: ...


class SqliteEngine:
    """One SQLite file, safe for many threads and many processes, with writes committed in groups."""

    backend = "sqlite"
    serial_writes = True
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    LEDGER_POLL_SECONDS = 0.1
    """How often a follower looks for other processes' commits; this process's own commits wake it at once."""

    def __init__(self, path: str, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all_connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._pending: list[_Job] = []
        self._queue_lock = threading.Lock()
        """Guards the queue and the leader flag: with them, the in-process mutual exclusion of the write path."""
        self._leading = False
        self._idle = threading.Event()
        self._idle.set()
        self._committed = threading.Condition()
        self._closed = False
        self._writer_connection = self._connect()
        self._process_lock = os.open(f"{path}.write-lock", os.O_RDWR | os.O_CREAT, 0o600)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout_ms / 1000)
        connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = ON")
        with self._connections_lock:
            self._all_connections.append(connection)
        return connection

    @contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise Unavailable("the store is closed")
        try:
            connection = self._readers.get_nowait()
        except queue.Empty:
            connection = self._connect()
        try:
            yield connection
        except sqlite3.Error as exc:
            raise Unavailable(f"database error: {exc}") from exc
        finally:
            if connection.in_transaction:
                connection.rollback()
            self._readers.put(connection)

    def migrate(self, migrations: Sequence[str], seed: Callable[[sqlite3.Connection], None]) -> None:
        connection = self._writer_connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > len(migrations):
                raise RuntimeError(f"{self.path} has schema version {version}, newer than this program ({len(migrations)})")
            for number in range(version, len(migrations)):
                for statement in migrations[number].split(";"):
                    if statement.strip():
                        connection.execute(statement)
                log.info("migrated %s to schema version %d", self.path, number + 1)
            connection.execute(f"PRAGMA user_version = {len(migrations)}")
            if version == 0:
                seed(connection)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` inside the next group commit and return once it is durable.

        Callers queue their write; if nobody is committing, the caller becomes the leader, takes every
        write queued so far (its own and others') and commits them in one transaction. It then wakes the
        owner of each write it committed, and hands the lead to the oldest write still queued, if any.
        No writer thread, so no hand-off on the way in, and each caller is woken exactly once.
        """
        job = _Job(op)
        with self._queue_lock:
            if self._closed:
                raise Unavailable("the store is closed")
            self._pending.append(job)
            if not self._leading:
                job.lead = self._leading = True
                self._idle.clear()
        if not job.lead and not job.wake.acquire(timeout=WRITE_TIMEOUT_SECONDS):
            self._give_up(job)
        if not job.finished:
            self._lead()
        if job.error is not None:
            raise job.error
        return job.result

    def _give_up(self, job: _Job) -> None:
        """A follower that waited too long leaves, unless its write is already being committed or it was
        just handed the lead (then it stays: nobody else would lead)."""
        with self._queue_lock:
            if job in self._pending and not job.lead:
                self._pending.remove(job)
                raise Unavailable(f"the database did not finish the write within {WRITE_TIMEOUT_SECONDS:.0f} s")
        job.wake.acquire()

    def _lead(self) -> None:
        with self._queue_lock:
            batch, self._pending = self._pending, []
        try:
            self._commit_batch(batch)
        finally:
            with self._queue_lock:
                if self._pending and not self._closed:
                    successor = self._pending[0]
                    successor.lead = True
                else:
                    successor = None
                    self._leading = False
                    self._idle.set()
            for other in batch:
                if not other.lead:
                    other.wake.release()
            if successor is not None:
                successor.wake.release()

    def _commit_batch(self, batch: list[_Job]) -> None:
        """One transaction for the whole group; every job leaves finished, with a result or an error."""
        connection = self._writer_connection
        committed = False
        reason = "the write was interrupted"
        # SQLite makes a writer that finds the file locked sleep and poll, up to 100 ms a time, while the
        # holder may take the lock straight back; a kernel lock queues the server processes instead.
        fcntl.flock(self._process_lock, fcntl.LOCK_EX)
        try:
            connection.execute("BEGIN IMMEDIATE")
            for job in batch:
                connection.execute("SAVEPOINT request")
                try:
                    job.result = job.op(connection)
                except Exception as exc:  # noqa: BLE001 - whatever went wrong, only this request's savepoint is undone
                    connection.execute("ROLLBACK TO request")
                    job.error = exc if isinstance(exc, ReservationError) else _as_unavailable(exc, self.errors)
                connection.execute("RELEASE request")
            connection.execute("COMMIT")
            committed = True
        except sqlite3.Error as exc:
            log.error("group of %d writes not committed: %s", len(batch), exc)
            reason = f"the database could not commit: {exc}"
        finally:
            if not committed:
                self._roll_back(connection)
                for job in batch:
                    job.result, job.error = None, Unavailable(reason)
            for job in batch:
                job.finished = True
            fcntl.flock(self._process_lock, fcntl.LOCK_UN)
        if committed:
            with self._committed:
                self._committed.notify_all()

    def _roll_back(self, connection: sqlite3.Connection) -> None:
        """Undo an unfinished transaction; if even that fails (a full disk), start over on a new connection,
        since closing one discards what it had not committed."""
        if not connection.in_transaction:
            return
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.error("rollback failed (%s); reopening the write connection", exc)
            with self._connections_lock:
                self._all_connections.remove(connection)
            connection.close()
            self._writer_connection = self._connect()

    def wait_for_ledger(self, timeout: float) -> None:
        """Woken by this process's commits; other processes' commits are seen at the next poll."""
        with self._committed:
            self._committed.wait(min(timeout, self.LEDGER_POLL_SECONDS))

    def close(self) -> None:
        """Let the write in progress finish, then close every connection (the last close checkpoints the WAL)."""
        with self._queue_lock:
            if self._closed:
                return
            self._closed = True
            abandoned, self._pending = self._pending, []
            for job in abandoned:
                job.error, job.finished = Unavailable("the store is closed"), True
                if job.lead:  # the lead was handed to a write that will now never run
                    self._leading = False
                    self._idle.set()
                else:
                    job.wake.release()
        self._idle.wait(WRITE_TIMEOUT_SECONDS)
        os.close(self._process_lock)
        with self._connections_lock:
            for connection in self._all_connections:
                connection.close()
            self._all_connections.clear()


def _as_unavailable(exc: BaseException, driver_errors: tuple[type[Exception], ...]) -> BaseException:
    """A driver error inside a write is the system failing, not the user asking for the impossible."""
    if isinstance(exc, driver_errors):
        return Unavailable(f"database error: {exc}")
    log.exception("unexpected error inside a write", exc_info=exc)
    return exc


def open_engine(location: str, busy_timeout_ms: int = 10_000) -> Engine:
    """A `postgresql://` URL selects PostgreSQL (psycopg is imported only then); anything else is a SQLite file."""
    if location.startswith(("postgresql://", "postgres://")):
        from storage.postgres import PostgresEngine

        return PostgresEngine(location)
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
        if hold_seconds <= 0 or offer_seconds <= 0:
            raise ValueError("hold_seconds and offer_seconds must be positive")
        self.path = str(path)
        self.hold_seconds = float(hold_seconds)
        self.max_per_order = max_per_order
        self.offer_seconds = float(offer_seconds)
        self.clock = clock
        self.engine = open_engine(self.path, busy_timeout_ms)
        self.backend = self.engine.backend
        self._submit = self.engine.submit
        self._reader = self.engine.reader
        self._sale_lanes = [threading.Lock() for _ in range(SALE_LANES)]
        self.engine.migrate(MIGRATIONS, self._seed if seed_demo else lambda connection: None)
        expired = self.expire_holds()
        if expired:
            log.info("expired %d holds that lapsed while the server was down", expired)

    def _seed(self, connection: Connection) -> None:
        for name, venue, starts_at, sectors in DEMO_CATALOGUE:
            self._insert_event(connection, name, venue, starts_at, sectors)
        log.info("seeded the demo catalogue (%d events)", len(DEMO_CATALOGUE))

    def close(self) -> None:
        self.engine.close()

    # -- reads --------------------------------------------------------------------------------------

    def list_events(self) -> tuple[Event, ...]:
        with self._reader() as connection:
            rows = connection.execute(
                "SELECT e.id, e.name, e.venue, e.starts_at, e.status, s.name, s.price_cents, s.capacity, s.available, s.half_limit, "
                "s.seat_rows, s.seats_per_row "
                "FROM events e LEFT JOIN sectors s ON s.event_id = e.id ORDER BY e.id, s.position"
            ).fetchall()
        return tuple(self._events_from_rows(rows))

    def get_event(self, event_id: int) -> Event:
        with self._reader() as connection:
            rows = connection.execute(
                "SELECT e.id, e.name, e.venue, e.starts_at, e.status, s.name, s.price_cents, s.capacity, s.available, s.half_limit, "
                "s.seat_rows, s.seats_per_row "
                "FROM events e LEFT JOIN sectors s ON s.event_id = e.id WHERE e.id = ? ORDER BY s.position",
                (event_id,),
            ).fetchall()
        if not rows:
            raise NotFound(f"No event with id {event_id}")
        return self._events_from_rows(rows)[0]

    @staticmethod
    def _events_from_rows(rows: Iterable[tuple]) -> list[Event]:
        events: list[Event] = []
        heads: dict[int, tuple] = {}
        sectors: dict[int, list[Sector]] = {}
        for event_id, name, venue, starts_at, status, *sector in rows:
            if event_id not in heads:
                heads[event_id] = (event_id, name, venue, starts_at, status)
                sectors[event_id] = []
            if sector[0] is not None:
                sectors[event_id].append(Sector(*sector))
        for event_id, head in heads.items():
            events.append(Event(*head, tuple(sectors[event_id])))
        return events

    def get_reservation(self, code: str, email: str) -> Reservation:
        with self._reader() as connection:
            row = connection.execute(f"SELECT {_RESERVATION_COLUMNS} FROM reservations WHERE code = ?", (code.strip().upper(),)).fetchone()
        return self._owned(row, code, email)

    @staticmethod
    def _owned(row: tuple | None, code: str, email: str) -> Reservation:
        """The reservation if the email matches; a wrong email looks exactly like a wrong code."""
        if row is None or row[5].casefold() != email.strip().casefold():
            raise NotFound(f"No reservation {code.strip().upper()!r} for that email")
        return _reservation(row)

    def ledger(self, since: int = 0, limit: int = 1000) -> tuple[LedgerEntry, ...]:
        with self._reader() as connection:
            rows = connection.execute(
                "SELECT seq, at, action, code, event_id, sector, quantity, detail FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?",
                (since, limit),
            ).fetchall()
        return tuple(LedgerEntry(seq, iso(at), *rest) for seq, at, *rest in rows)

    def ledger_end(self) -> int:
        """The last sequence number written: where a follower that wants no history starts."""
        with self._reader() as connection:
            return connection.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger").fetchone()[0]

    def reservations(self, event_id: int | None = None) -> tuple[Reservation, ...]:
        """Every reservation (of one event): for audits and tests, not for the hot path."""
        query = f"SELECT {_RESERVATION_COLUMNS} FROM reservations"
        params: tuple = ()
        if event_id is not None:
            query += " WHERE event_id = ?"
            params = (event_id,)
        with self._reader() as connection:
            rows = connection.execute(query + " ORDER BY created_at, code", params).fetchall()
        return tuple(_reservation(row) for row in rows)

    def check_invariants(self) -> list[str]:
        """Violations, per sector, of capacity == available + held + confirmed, and of the half-price counter
        (it equals the active half-price tickets and stays within its limit); empty when healthy."""
        with self._reader() as connection:
            rows = connection.execute(
                "SELECT s.event_id, s.name, s.capacity, s.available, s.half_limit, s.half_taken, "
                "COALESCE(SUM(CASE WHEN r.status = 'held' THEN r.quantity END), 0), "
                "COALESCE(SUM(CASE WHEN r.status = 'confirmed' THEN r.quantity END), 0), "
                "COALESCE(SUM(CASE WHEN r.status IN ('held', 'confirmed') AND r.category = 'half' THEN r.quantity END), 0) "
                "FROM sectors s LEFT JOIN reservations r ON r.event_id = s.event_id AND r.sector = s.name "
                "GROUP BY s.event_id, s.name ORDER BY s.event_id, s.position"
            ).fetchall()
        problems = []
        for event_id, name, capacity, available, half_limit, half_taken, held, confirmed, half_active in rows:
            where = f"event {event_id} sector {name!r}"
            if capacity != available + held + confirmed:
                problems.append(f"{where}: capacity {capacity} != available {available} + held {held} + confirmed {confirmed}")
            if half_taken != half_active:
                problems.append(f"{where}: half-price counter {half_taken} != active half-price tickets {half_active}")
            if half_limit is not None and half_active > half_limit:
                problems.append(f"{where}: {half_active} half-price tickets over the limit of {half_limit}")
        return problems + self._seat_problems()

    def _seat_problems(self) -> list[str]:
        """Seated sectors: the seats held are exactly those of the active reservations, one per ticket."""
        with self._reader() as connection:
            stray = connection.execute(
                "SELECT h.event_id, h.sector, h.seat, r.code, r.status FROM seat_holds h JOIN reservations r ON r.code = h.code "
                "WHERE r.status NOT IN ('held', 'confirmed') OR r.event_id <> h.event_id OR r.sector <> h.sector"
            ).fetchall()
            mismatched = connection.execute(
                "SELECT r.code, r.quantity, r.seats, (SELECT COUNT(*) FROM seat_holds h WHERE h.code = r.code) "
                "FROM reservations r JOIN sectors s ON s.event_id = r.event_id AND s.name = r.sector "
                "WHERE s.seat_rows > 0 AND r.status IN ('held', 'confirmed')"
            ).fetchall()
        problems = [f"event {event_id} sector {sector!r}: seat {seat} held by {status} reservation {code}"
                    for event_id, sector, seat, code, status in stray]
        for code, quantity, seats, holds in mismatched:
            if len(seats.split(",")) != quantity or holds != quantity:
                problems.append(f"reservation {code}: {quantity} tickets, seats {seats!r}, {holds} seats held")
        return problems

    # -- writes -------------------------------------------------------------------------------------

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
        if not 1 <= quantity <= self.max_per_order:
            raise InvalidRequest(f"quantity must be between 1 and {self.max_per_order}, not {quantity}")
        customer = _clean_text(customer, "customer name")
        email = _clean_email(email)
        if category not in CATEGORIES:
            raise InvalidRequest(f"category must be 'full' or 'half', not {category[:20]!r}")
        if sector is not None:
            sector = _clean_text(sector, "sector", 100)
        if seats is not None and len(seats) != quantity:
            raise InvalidRequest(f"{len(seats)} seats named for {quantity} tickets; name one seat per ticket")
        request_id = uuid.uuid4().hex if request_id is None else _clean_text(request_id, "request_id", 100)
        wanted = (event_id, sector, quantity, customer, email, category)

        def op(connection: Connection) -> Reservation:
            half = quantity if category == "half" else 0
            taken = self._take_on_the_fast_path(connection, event_id, sector, quantity, half)
            if taken is None:
                existing = self._by_request_id(connection, request_id)
                if existing is not None:
                    return self._replayed(existing, wanted, seats)
                taken = self._take_or_explain(connection, event_id, sector, quantity, half)
            sector_name, price, rows, seats_per_row = taken
            if not self.engine.serial_writes:
                self._still_on_sale(connection, event_id)
            chosen = self._seats_for_sale(connection, event_id, sector_name, rows, seats_per_row, quantity, seats)
            now = self.clock()
            numerator, denominator = CATEGORIES[category]
            unit = -(-price * numerator // denominator)
            status, expires_at = ("confirmed", None) if confirm else ("held", now + self.hold_seconds)
            details = (event_id, sector_name, quantity, customer, email, category, unit, unit * quantity, status, now, expires_at, chosen)
            row, fresh = self._insert_reservation(connection, details, request_id)
            if not fresh:
                # The request id is taken: this is a retry of a reservation made earlier. Give back what
                # was just taken, inside this same transaction, and answer with the original.
                self._give_back(connection, event_id, sector_name, quantity, half)
                return self._replayed(row, wanted, seats)
            self._hold_seats(connection, row)
            self._record(connection, now, "sell" if confirm else "hold", row[0], event_id, sector_name, quantity)
            if confirm:
                self._announce(connection, now, "confirmed", row)
            return _reservation(row)

        if self.engine.serial_writes:
            return self._submit(op)  # one writer at a time already; the group commit wants every sale queued at once
        return self._in_lane(event_id, op)

    def _in_lane(self, event_id: int, op: Callable[[Connection], T]) -> T:
        """Run a sale after this process's earlier sales of the same event (lock striping by event id).

        Sales of one event meet at its sector's row lock. Queued there, each waiter holds a pooled connection and
        an open transaction, and PostgreSQL wakes them one by one through its lock manager; queued on a Python
        lock, they wait for nothing but the lock. The row lock still keeps sales apart, across processes too; the
        lane only orders this process's own, and other events' sales go by in other lanes.
        """
        lane = self._sale_lanes[event_id % SALE_LANES]
        if not lane.acquire(timeout=WRITE_TIMEOUT_SECONDS):
            raise Unavailable(f"the database did not finish this event's earlier sales within {WRITE_TIMEOUT_SECONDS:.0f} s")
        try:
            return self._submit(op)
        finally:
            lane.release()

    @staticmethod
    def _seats_for_sale(
        connection: Connection, event_id: int, sector: str, rows: int, seats_per_row: int, quantity: int, seats: Sequence[str] | None
    ) -> str:
        """The seats of a sale as stored ("A1,A2"), or "" in an unnumbered sector."""
        if not rows:
            if seats is not None:
                raise InvalidRequest(f"sector {sector} has no numbered seats; reserve without naming seats")
            return ""
        if seats is not None:
            try:
                return ",".join(seating.canonical(seats, rows, seats_per_row))
            except seating.SeatError as exc:
                raise InvalidRequest(f"bad seats for {sector}: {exc}") from None
        taken = {seat for (seat,) in connection.execute(
            "SELECT seat FROM seat_holds WHERE event_id = ? AND sector = ?", (event_id, sector)
        ).fetchall()}
        block = seating.best_block(taken, rows, seats_per_row, quantity)
        if block is None:
            raise SoldOut(f"No {quantity} adjacent seats left in one row of {sector}; choose the seats one by one")
        return ",".join(block)

    @staticmethod
    def _hold_seats(connection: Connection, row: tuple) -> None:
        """One row per seat; the primary key turns a seat already held into a refusal of the whole reservation."""
        if not row[12]:
            return
        labels = row[12].split(",")
        values = ", ".join("(?, ?, ?, ?)" for _ in labels)
        params = [value for seat in labels for value in (row[1], row[2], seat, row[0])]
        held = {seat for (seat,) in connection.execute(
            f"INSERT INTO seat_holds (event_id, sector, seat, code) VALUES {values} ON CONFLICT DO NOTHING RETURNING seat", params
        ).fetchall()}
        if len(held) != len(labels):
            gone = [seat for seat in labels if seat not in held]
            raise SoldOut(f"{plural_seats(gone)} already taken in {row[2]}; choose others")

    @staticmethod
    def _take_on_the_fast_path(
        connection: Connection, event_id: int, sector: str | None, quantity: int, half: int
    ) -> tuple[str, int, int, int] | None:
        """The common case in one statement: the event is on sale and the sector (named, or the event's only
        one) has the tickets. None means "look closer": a refusal to explain, or a retry to recognise.
        """
        row = connection.execute(
            "UPDATE sectors SET available = available - ?, half_taken = half_taken + ? "
            "WHERE event_id = ? AND available >= ? AND (SELECT status FROM events WHERE id = ?) = 'on_sale' "
            "AND name = COALESCE(?, (SELECT MIN(name) FROM sectors WHERE event_id = ? HAVING COUNT(*) = 1)) "
            "AND (? = 0 OR half_limit IS NULL OR half_taken + ? <= half_limit) "
            "RETURNING name, price_cents, seat_rows, seats_per_row",
            (quantity, half, event_id, quantity, event_id, sector, event_id, half, half),
        ).fetchone()
        return row

    def _take_or_explain(
        self, connection: Connection, event_id: int, sector: str | None, quantity: int, half: int
    ) -> tuple[str, int, int, int]:
        """The slow path: resolve the sector, then take the tickets or say precisely why not."""
        sector_name, price, event_name, event_status, rows, seats_per_row = self._sector_for_sale(connection, event_id, sector)
        if event_status != "on_sale":
            raise EventClosed(f"{event_name} is {event_status.replace('_', ' ')}; it takes no new reservations")
        updated = connection.execute(
            "UPDATE sectors SET available = available - ?, half_taken = half_taken + ? WHERE event_id = ? AND name = ? "
            "AND available >= ? AND (? = 0 OR half_limit IS NULL OR half_taken + ? <= half_limit)",
            (quantity, half, event_id, sector_name, quantity, half, half),
        ).rowcount
        if updated != 1:
            left, half_limit, half_taken = connection.execute(
                "SELECT available, half_limit, half_taken FROM sectors WHERE event_id = ? AND name = ?", (event_id, sector_name)
            ).fetchone()
            if left >= quantity:
                half_left = max(0, half_limit - half_taken)
                if half_left:
                    raise SoldOut(f"Only {half_left} half-price tickets left in {sector_name} for {event_name}")
                raise SoldOut(f"No half-price tickets left in {sector_name} for {event_name}; full price still available")
            if left:
                raise SoldOut(f"Only {left} tickets left in {sector_name} for {event_name}")
            raise SoldOut(f"{sector_name} for {event_name} is sold out")
        return sector_name, price, rows, seats_per_row

    @staticmethod
    def _still_on_sale(connection: Connection, event_id: int) -> None:
        """With writers side by side, the event may have been cancelled while this sale waited for the sector's row
        lock; a cancel takes that lock first, so a fresh read after it is the truth (see cancel_event)."""
        status = connection.execute("SELECT status FROM events WHERE id = ?", (event_id,)).fetchone()[0]
        if status != "on_sale":
            raise EventClosed(f"The event is {status.replace('_', ' ')}; it takes no new reservations")

    @staticmethod
    def _give_back(connection: Connection, event_id: int, sector: str, quantity: int, half: int) -> None:
        connection.execute(
            "UPDATE sectors SET available = available + ?, half_taken = half_taken - ? WHERE event_id = ? AND name = ?",
            (quantity, half, event_id, sector),
        )

    @staticmethod
    def _by_request_id(connection: Connection, request_id: str) -> tuple | None:
        return connection.execute(f"SELECT {_RESERVATION_COLUMNS} FROM reservations WHERE request_id = ?", (request_id,)).fetchone()

    def _insert_reservation(self, connection: Connection, details: tuple, request_id: str) -> tuple[tuple, bool]:
        """Insert under a fresh code: (the row, True); or, when the request id is already taken, (the original's
        row, False).

        A clash between two random codes is rare enough to just draw again. Neither clash raises (a failed
        statement would spoil a PostgreSQL transaction); the insert that did nothing says which it was.
        """
        for _ in range(5):
            row = (new_code(), *details)
            inserted = connection.execute(
                f"INSERT INTO reservations ({_RESERVATION_COLUMNS}, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (*row, request_id),
            ).rowcount
            if inserted:
                return row, True
            original = self._by_request_id(connection, request_id)
            if original is not None:
                return original, False
        raise Unavailable("could not draw an unused reservation code")

    @staticmethod
    def _replayed(row: tuple, wanted: tuple, seats: Sequence[str] | None) -> Reservation:
        event_id, sector, quantity, customer, email, category = wanted
        same = (row[1], row[3], row[4], row[5].casefold(), row[6]) == (event_id, quantity, customer, email.casefold(), category)
        if seats is not None and sorted(label.strip().upper() for label in seats) != sorted(row[12].split(",")):
            same = False
        if not same or (sector is not None and sector != row[2]):
            raise InvalidRequest("this request_id was already used for a different reservation")
        return _reservation(row)

    @staticmethod
    def _sector_for_sale(connection: Connection, event_id: int, sector: str | None) -> tuple[str, int, str, str, int, int]:
        """(sector, price, event name, event status, seat rows, seats per row); the sector may go unnamed in a one-sector event."""
        rows = connection.execute(
            "SELECT s.name, s.price_cents, e.name, e.status, s.seat_rows, s.seats_per_row FROM events e "
            "LEFT JOIN sectors s ON s.event_id = e.id "
            "WHERE e.id = ? ORDER BY s.position",
            (event_id,),
        ).fetchall()
        if not rows:
            raise NotFound(f"No event with id {event_id}")
        if sector is None:
            if len(rows) > 1:
                names = ", ".join(row[0] for row in rows)
                raise InvalidRequest(f"{rows[0][2]} has several sectors ({names}); say which one")
            return rows[0]
        for row in rows:
            if row[0] == sector:
                return row
        names = ", ".join(row[0] for row in rows if row[0] is not None)
        raise NotFound(f"{rows[0][2]} has no sector {sector!r} (sectors: {names})")

    def confirm(self, code: str, email: str, payment_ref: str | None = None) -> Reservation:
        """Turn a hold into a sale; confirming twice answers with the same sale. `payment_ref` is what the
        (fictitious) payment step answered, kept with the sale for the clerk who has to trace it."""
        if payment_ref is not None:
            payment_ref = _clean_text(payment_ref, "payment reference", 100)

        def op(connection: Connection) -> Reservation:
            row = self._locked_reservation(connection, code, email)
            status, expires_at = row[9], row[11]
            if status == "confirmed":
                return _reservation(row)
            if status == "cancelled":
                raise InvalidRequest(f"Reservation {row[0]} was cancelled; make a new one")
            now = self.clock()
            if status == "expired" or expires_at <= now:
                raise HoldExpired(f"Reservation {row[0]} expired at {iso(expires_at)}; its tickets went back on sale")
            event_status = connection.execute("SELECT status FROM events WHERE id = ?", (row[1],)).fetchone()[0]
            if event_status == "cancelled":
                raise EventClosed(f"The event of reservation {row[0]} was cancelled")
            connection.execute(
                "UPDATE reservations SET status = 'confirmed', expires_at = NULL, payment_ref = ? WHERE code = ?", (payment_ref, row[0])
            )
            self._record(connection, now, "confirm", row[0], row[1], row[2], row[3])
            connection.execute("UPDATE waitlist SET status = 'accepted' WHERE code = ? AND status = 'offered'", (row[0],))
            confirmed = (*row[:9], "confirmed", row[10], None, row[12])
            self._announce(connection, now, "confirmed", confirmed)
            return _reservation(confirmed)

        return self._submit(op)

    def cancel(self, code: str, email: str) -> Reservation:
        """Give the tickets back; cancelling twice (or a lapsed hold) changes nothing and says how it stands."""

        def op(connection: Connection) -> Reservation:
            row = self._locked_reservation(connection, code, email)
            if row[9] not in ("held", "confirmed"):
                return _reservation(row)
            now = self.clock()
            self._release(connection, now, "cancel", row, announce="cancelled")
            return _reservation((*row[:9], "cancelled", row[10], None, row[12]))

        return self._submit(op)

    def _locked_reservation(self, connection: Connection, code: str, email: str) -> tuple:
        """The reservation as it stands, locked until the write commits: the do-nothing update takes the row
        lock (PostgreSQL writers run side by side; SQLite's are serial anyway), so a confirm and a cancel of
        one hold cannot both act on what each read before the other committed."""
        row = connection.execute(
            f"UPDATE reservations SET status = status WHERE code = ? RETURNING {_RESERVATION_COLUMNS}", (code.strip().upper(),)
        ).fetchone()
        self._owned(row, code, email)
        return row

    def _release(self, connection: Connection, now: float, action: str, row: tuple, announce: str | None = None) -> None:
        """Cancel or expire an active reservation and give its tickets and seats back, to the waitlist first;
        `announce` mails the customer. A waitlist offer that ends here lapses (expiry) or is left (cancel).
        Only a hold expires: one confirmed since `row` was read (by another replica) stays sold."""
        new_status = "cancelled" if action == "cancel" else "expired"
        keep_expiry = row[11] if new_status == "expired" else None
        changed = connection.execute(
            "UPDATE reservations SET status = ?, expires_at = ? WHERE code = ? AND status IN ('held', ?)",
            (new_status, keep_expiry, row[0], "confirmed" if action == "cancel" else "held"),
        ).rowcount
        if not changed:
            return
        self._give_back(connection, row[1], row[2], row[3], row[3] if row[6] == "half" else 0)
        if row[12]:
            connection.execute("DELETE FROM seat_holds WHERE code = ?", (row[0],))
        self._record(connection, now, action, row[0], row[1], row[2], row[3])
        if announce is not None:
            self._announce(connection, now, announce, (*row[:9], "cancelled", row[10], None, row[12]))
        entry_status = "lapsed" if action == "expire" else "left"
        entry_action = "lapse" if action == "expire" else "leave"
        for (entry_id,) in connection.execute(
            "UPDATE waitlist SET status = ? WHERE code = ? AND status = 'offered' RETURNING id", (entry_status, row[0])
        ).fetchall():
            self._record(connection, now, entry_action, row[0], row[1], row[2], row[3], f"waitlist:{entry_id}")
        self._offer_freed(connection, now, row[1], row[2])

    def _offer_freed(self, connection: Connection, now: float, event_id: int, sector: str) -> None:
        """Hand freed tickets to the waitlist, first come first served, before anyone else can buy them: each
        waiting entry that fits, in order, gets a hold for the offer window in this same transaction."""
        state = connection.execute(
            "SELECT s.available, s.price_cents, s.seat_rows, s.seats_per_row, e.status FROM sectors s "
            "JOIN events e ON e.id = s.event_id WHERE s.event_id = ? AND s.name = ?",
            (event_id, sector),
        ).fetchone()
        available, price, rows, seats_per_row, event_status = state
        if not available or event_status != "on_sale":
            return
        waiting = connection.execute(
            "SELECT id, quantity, customer, email FROM waitlist WHERE event_id = ? AND sector = ? AND status = 'waiting' ORDER BY id",
            (event_id, sector),
        ).fetchall()
        for entry_id, quantity, customer, email in waiting:
            if quantity > available or not connection.execute(
                "UPDATE sectors SET available = available - ? WHERE event_id = ? AND name = ? AND available >= ?",
                (quantity, event_id, sector, quantity),
            ).rowcount:
                continue
            try:
                chosen = self._seats_for_sale(connection, event_id, sector, rows, seats_per_row, quantity, None)
            except SoldOut:
                self._give_back(connection, event_id, sector, quantity, 0)
                continue
            expires_at = now + self.offer_seconds
            details = (event_id, sector, quantity, customer, email, "full", price, price * quantity, "held", now, expires_at, chosen)
            row, fresh = self._insert_reservation(connection, details, f"waitlist-{entry_id}")
            if not fresh:
                self._give_back(connection, event_id, sector, quantity, 0)
                continue
            self._hold_seats(connection, row)
            connection.execute(
                "UPDATE waitlist SET status = 'offered', code = ?, offer_expires_at = ? WHERE id = ?", (row[0], expires_at, entry_id)
            )
            self._record(connection, now, "offer", row[0], event_id, sector, quantity, f"waitlist:{entry_id}")
            self._announce(connection, now, "offered", row)
            available -= quantity
            if not available:
                return

    def expire_holds(self, limit: int = 500) -> int:
        """Return the tickets of lapsed holds; safe to run from every replica at once (each expiry happens once)."""

        def op(connection: Connection) -> int:
            now = self.clock()
            rows = connection.execute(
                f"SELECT {_RESERVATION_COLUMNS} FROM reservations WHERE status = 'held' AND expires_at <= ? ORDER BY expires_at LIMIT ?",
                (now, limit),
            ).fetchall()
            for row in rows:
                self._release(connection, now, "expire", row)
            return len(rows)

        return self._submit(op)

    # -- seats and the waitlist -------------------------------------------------------------------------

    def seat_map(self, event_id: int, sector: str) -> SeatMap:
        """Every seat's state in one string, from the seat holds and the status of the reservations holding them."""
        sector = _clean_text(sector, "sector", 100)
        with self._reader() as connection:
            row = connection.execute(
                "SELECT seat_rows, seats_per_row FROM sectors WHERE event_id = ? AND name = ?", (event_id, sector)
            ).fetchone()
            if row is None:
                self._event_row(connection, event_id)
                raise NotFound(f"Event {event_id} has no sector {sector[:100]!r}")
            rows, seats_per_row = row
            if not rows:
                raise InvalidRequest(f"sector {sector} has no numbered seats")
            holds = connection.execute(
                "SELECT h.seat, r.status FROM seat_holds h JOIN reservations r ON r.code = h.code WHERE h.event_id = ? AND h.sector = ?",
                (event_id, sector),
            ).fetchall()
        states = [SeatMap.FREE] * (rows * seats_per_row)
        for seat, status in holds:
            row_index, seat_index = seating.parse_label(seat, rows, seats_per_row)
            states[row_index * seats_per_row + seat_index] = SeatMap.SOLD if status == "confirmed" else SeatMap.HELD
        return SeatMap(event_id, sector, rows, seats_per_row, "".join(states))

    def join_waitlist(self, event_id: int, quantity: int, customer: str, email: str, sector: str | None = None) -> WaitlistEntry:
        """Queue for a sold-out sector. Joining again with the same email while still waiting answers with the same
        entry, so a retried call never queues a customer twice."""
        if not 1 <= quantity <= self.max_per_order:
            raise InvalidRequest(f"quantity must be between 1 and {self.max_per_order}, not {quantity}")
        customer = _clean_text(customer, "customer name")
        email = _clean_email(email)
        if sector is not None:
            sector = _clean_text(sector, "sector", 100)

        def op(connection: Connection) -> int:
            sector_name, _, event_name, event_status, rows, seats_per_row = self._sector_for_sale(connection, event_id, sector)
            if event_status == "cancelled":
                raise EventClosed(f"{event_name} was cancelled")
            existing = connection.execute(
                "SELECT id FROM waitlist WHERE event_id = ? AND sector = ? AND lower(email) = lower(?) AND status = 'waiting'",
                (event_id, sector_name, email),
            ).fetchone()
            if existing is not None:
                return existing[0]
            available = connection.execute(
                "SELECT available FROM sectors WHERE event_id = ? AND name = ?", (event_id, sector_name)
            ).fetchone()[0]
            if available >= quantity and event_status == "on_sale":
                try:
                    self._seats_for_sale(connection, event_id, sector_name, rows, seats_per_row, quantity, None)
                except SoldOut:
                    pass  # tickets are left, but not side by side: waiting for a block is a fair wish
                else:
                    raise InvalidRequest(f"{sector_name} still has {available} tickets; reserve them instead")
            now = self.clock()
            entry_id = connection.execute(
                "INSERT INTO waitlist (event_id, sector, quantity, customer, email, status, created_at) "
                "VALUES (?, ?, ?, ?, ?, 'waiting', ?) RETURNING id",
                (event_id, sector_name, quantity, customer, email, now),
            ).fetchone()[0]
            self._record(connection, now, "join", None, event_id, sector_name, quantity, f"waitlist:{entry_id}")
            return entry_id

        return self.waitlist_entry(self._submit(op))

    def leave_waitlist(self, entry_id: int, email: str) -> WaitlistEntry:
        """Leave the queue; an offer not yet confirmed is given up (its tickets pass to the next in line)."""

        def op(connection: Connection) -> None:
            status, code, event_id, sector, quantity = self._owned_entry(connection, entry_id, email)
            now = self.clock()
            if status == "waiting":
                connection.execute("UPDATE waitlist SET status = 'left' WHERE id = ?", (entry_id,))
                self._record(connection, now, "leave", None, event_id, sector, quantity, f"waitlist:{entry_id}")
            elif status == "offered":
                row = connection.execute(f"SELECT {_RESERVATION_COLUMNS} FROM reservations WHERE code = ?", (code,)).fetchone()
                self._release(connection, now, "cancel", row)

        self._submit(op)
        return self.waitlist_entry(entry_id)

    def get_waitlist_entry(self, entry_id: int, email: str) -> WaitlistEntry:
        with self._reader() as connection:
            self._owned_entry(connection, entry_id, email)
        return self.waitlist_entry(entry_id)

    @staticmethod
    def _owned_entry(connection: Connection, entry_id: int, email: str) -> tuple[str, str | None, int, str, int]:
        """(status, offered code, event, sector, quantity) if the email matches; a wrong email looks exactly like a wrong id."""
        row = connection.execute(
            "SELECT status, code, event_id, sector, quantity, email FROM waitlist WHERE id = ?", (entry_id,)
        ).fetchone()
        if row is None or row[5].casefold() != email.strip().casefold():
            raise NotFound(f"No waitlist entry {entry_id} for that email")
        return row[:5]

    def waitlist_entry(self, entry_id: int) -> WaitlistEntry:
        """The entry with its place in line, without the owner's email: what a server pushes to the owner's callback."""
        with self._reader() as connection:
            row = connection.execute(
                "SELECT w.id, w.event_id, w.sector, w.quantity, w.customer, w.status, "
                "CASE WHEN w.status = 'waiting' THEN (SELECT COUNT(*) FROM waitlist a WHERE a.event_id = w.event_id "
                "AND a.sector = w.sector AND a.status = 'waiting' AND a.id <= w.id) ELSE 0 END, "
                "w.code, w.offer_expires_at, w.created_at FROM waitlist w WHERE w.id = ?",
                (entry_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"No waitlist entry {entry_id}")
        return WaitlistEntry(*row[:8], iso(row[8]), iso(row[9]))

    def create_event(self, name: str, venue: str, starts_at: str, sectors: Sequence[SectorSpec]) -> Event:
        """A new event on sale with its sectors, all or nothing; a sector given with rows and seats per row is seated."""
        name = _clean_text(name, "event name")
        venue = _clean_text(venue, "venue")
        starts_at = _clean_starts_at(starts_at)
        if not 1 <= len(sectors) <= MAX_SECTORS:
            raise InvalidRequest(f"an event needs between 1 and {MAX_SECTORS} sectors")
        cleaned = [_clean_sector(sector) for sector in sectors]
        if len({sector[0] for sector in cleaned}) != len(cleaned):
            raise InvalidRequest("sector names must be unique within an event")
        event_id = self._submit(lambda connection: self._insert_event(connection, name, venue, starts_at, cleaned))
        return self.get_event(event_id)

    def _insert_event(self, connection: Connection, name: str, venue: str, starts_at: str, sectors: Iterable[SectorSpec]) -> int:
        now = self.clock()
        # An id is never reused, not even a deleted event's: the ledger still speaks of it, and a terminal
        # holding it must get NotFound, not a new event. The ledger remembers every id ever opened.
        event_id = connection.execute(
            "INSERT INTO events (id, name, venue, starts_at, status, created_at) SELECT 1 + COALESCE(MAX(id), 0), ?, ?, ?, 'on_sale', ? "
            "FROM (SELECT MAX(id) AS id FROM events UNION ALL SELECT MAX(event_id) FROM ledger) AS used RETURNING id",
            (name, venue, starts_at, now),
        ).fetchone()[0]
        for position, (sector_name, price, *size) in enumerate(sectors):
            rows, seats_per_row = size if len(size) == 2 else (0, 0)
            capacity = rows * seats_per_row or size[0]
            connection.execute(
                "INSERT INTO sectors (event_id, name, position, price_cents, capacity, available, seat_rows, seats_per_row) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (event_id, sector_name, position, price, capacity, capacity, rows, seats_per_row),
            )
            self._record(connection, now, "open", None, event_id, sector_name, capacity)
        return event_id

    @staticmethod
    def _record(
        connection: Connection, now: float, action: str, code: str | None, event_id: int, sector: str | None, quantity: int | None,
        detail: str | None = None,
    ) -> None:
        connection.execute(
            "INSERT INTO ledger (at, action, code, event_id, sector, quantity, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (now, action, code, event_id, sector, quantity, detail),
        )

    # -- the outbox ---------------------------------------------------------------------------------

    def _announce(self, connection: Connection, now: float, kind: str, row: tuple) -> None:
        """Queue the customer's mail in the transaction that made the change, so it exists if and only if the change does."""
        code, event_id, sector, quantity, customer, email, category, unit, total = row[:9]
        name, venue, starts_at, currency = connection.execute(
            "SELECT name, venue, starts_at, currency FROM events WHERE id = ?", (event_id,)
        ).fetchone()
        subject = {
            "confirmed": f"Your tickets for {name} - {code}",
            "cancelled": f"Reservation {code} cancelled - {name}",
            "event_cancelled": f"{name} was cancelled - reservation {code}",
            "offered": f"Tickets held for you from the waitlist - {name} - {code}",
        }[kind]
        opening = {
            "confirmed": "your purchase is confirmed.",
            "cancelled": "your reservation was cancelled and its tickets went back on sale.",
            "event_cancelled": "the event was cancelled by the organiser, so your reservation was cancelled. Refunds follow.",
            "offered": "tickets came back and, as you were first on the waitlist, they are held for you. Confirm them with "
            "this code before the hold runs out, or they pass to the next in line.",
        }[kind]
        body = "\n".join((
            f"Hello {customer},",
            "",
            f"{opening}",
            "",
            f"Reservation: {code}",
            f"Event: {name}",
            f"Venue: {venue}",
            f"Starts: {starts_at}",
            f"Sector: {sector}" + (f", seats {row[12].replace(',', ' ')}" if row[12] else ""),
            f"Tickets: {quantity} x {format_money(unit, currency)} ({category} price)",
            f"Total: {format_money(total, currency)}",
            "",
            "bilheteria",
        ))
        connection.execute(
            "INSERT INTO outbox (created_at, kind, recipient, subject, body, code, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (now, kind, email, subject, body, code, now),
        )

    def claim_messages(self, worker: str, limit: int = 20, lease_seconds: float = 60.0) -> tuple[OutboxMessage, ...]:
        """Lease due messages to `worker`. A lease keeps other replicas off them in the normal path; one that
        expires (its worker died) lets another replica take over, at the price of a possible second send."""

        now = self.clock()
        with self._reader() as reader:
            due = reader.execute(
                "SELECT 1 FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? "
                "AND (claimed_until IS NULL OR claimed_until < ?) LIMIT 1",
                (now, now),
            ).fetchone()
        if due is None:
            return ()  # the common case, answered by a read: no write transaction (and no fsync) per idle poll

        def op(connection: Connection) -> tuple[OutboxMessage, ...]:
            now = self.clock()
            rows = connection.execute(
                f"UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id IN ("
                f"SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? "
                f"AND (claimed_until IS NULL OR claimed_until < ?) ORDER BY id LIMIT ?) RETURNING {_OUTBOX_COLUMNS}",
                (worker, now + lease_seconds, now, now, limit),
            ).fetchall()
            return tuple(sorted((OutboxMessage(*row) for row in rows), key=lambda message: message.id))

        return self._submit(op)

    def mark_sent(self, message_id: int, worker: str) -> None:
        """Whoever holds the lease now: the mail left, so it is sent (a second send is the documented risk)."""
        self._submit(lambda connection: connection.execute(
            "UPDATE outbox SET status = 'sent', sent_at = ?, claimed_until = NULL WHERE id = ?", (self.clock(), message_id)
        ))
        log.debug("outbox %d sent by %s", message_id, worker)

    def mark_logged(self, message_ids: Sequence[int], worker: str) -> None:
        """Many at once: writing a log line is instant, so a round's messages share one commit."""

        def op(connection: Connection) -> None:
            now = self.clock()
            connection.executemany(
                "UPDATE outbox SET status = 'logged', sent_at = ?, claimed_until = NULL WHERE id = ?",
                [(now, message_id) for message_id in message_ids],
            )

        self._submit(op)
        log.debug("outbox %s logged by %s", ",".join(map(str, message_ids)), worker)

    def mark_failed(self, message_id: int, worker: str, error: str, retry_in: float) -> None:
        """Count a failed try and schedule the next, only while `worker` still holds the lease: a worker whose
        lease lapsed must not clear the lease another replica now holds."""
        self._submit(lambda connection: connection.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, claimed_by = NULL, "
            "claimed_until = NULL WHERE id = ? AND status = 'pending' AND claimed_by = ?",
            (self.clock() + retry_in, error[:500], message_id, worker),
        ))

    def outbox(self, status: str | None = None) -> tuple[OutboxMessage, ...]:
        """Every message (with one status): for audits and tests, not for the hot path."""
        query = f"SELECT {_OUTBOX_COLUMNS} FROM outbox" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        with self._reader() as connection:
            rows = connection.execute(query, (status,) if status else ()).fetchall()
        return tuple(OutboxMessage(*row) for row in rows)

    # -- administration -----------------------------------------------------------------------------

    def _event_row(self, connection: Connection, event_id: int) -> tuple[str, str]:
        row = connection.execute("SELECT name, status FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None:
            raise NotFound(f"No event with id {event_id}")
        return row

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
            "name": None if name is None else _clean_text(name, "event name"),
            "venue": None if venue is None else _clean_text(venue, "venue"),
            "starts_at": None if starts_at is None else _clean_starts_at(starts_at),
        }
        for sector, capacity in capacities:
            if not 0 <= capacity <= MAX_CAPACITY:
                raise InvalidRequest(f"capacity of {sector} must be between 0 (closed) and {MAX_CAPACITY}")
        for sector, limit in half_limits:
            if limit is not None and not 0 <= limit <= MAX_CAPACITY:
                raise InvalidRequest(f"half-price limit of {sector} must be between 0 and {MAX_CAPACITY}, or None")

        def op(connection: Connection) -> None:
            self._event_row(connection, event_id)
            now = self.clock()
            for column, value in changes.items():
                if value is not None:
                    connection.execute(f"UPDATE events SET {column} = ? WHERE id = ?", (value, event_id))
            for sector, capacity in capacities:
                current = self._sector_row(connection, event_id, sector)
                if current[3]:
                    raise InvalidRequest(f"{sector} is seated: its capacity is its seat map")
                taken = current[0] - current[1]
                if capacity < taken:
                    raise InvalidRequest(f"{sector} has {taken} tickets held or sold; its capacity cannot go below that")
                connection.execute(
                    "UPDATE sectors SET capacity = ?, available = available + ? WHERE event_id = ? AND name = ?",
                    (capacity, capacity - current[0], event_id, sector),
                )
                self._record(connection, now, "capacity", None, event_id, sector, capacity)
                if capacity > current[0]:
                    self._offer_freed(connection, now, event_id, sector)
            for sector, limit in half_limits:
                half_taken = self._sector_row(connection, event_id, sector)[2]
                if limit is not None and limit < half_taken:
                    raise InvalidRequest(f"{sector} has {half_taken} half-price tickets held or sold; the limit cannot go below that")
                connection.execute("UPDATE sectors SET half_limit = ? WHERE event_id = ? AND name = ?", (limit, event_id, sector))
                self._record(connection, now, "half_limit", None, event_id, sector, limit)
            if any(value is not None for value in changes.values()):
                self._record(connection, now, "update", None, event_id, None, None)

        self._submit(op)
        return self.get_event(event_id)

    @staticmethod
    def _sector_row(connection: Connection, event_id: int, sector: str) -> tuple[int, int, int, int]:
        """(capacity, available, half-price taken, seat rows)."""
        row = connection.execute(
            "SELECT capacity, available, half_taken, seat_rows FROM sectors WHERE event_id = ? AND name = ?", (event_id, sector)
        ).fetchone()
        if row is None:
            raise NotFound(f"Event {event_id} has no sector {sector!r}")
        return row

    def add_sector(self, event_id: int, name: str, price_cents: int, capacity: int, half_limit: int | None = None) -> Event:
        name = _clean_text(name, "sector name", 100)
        if not 0 <= price_cents <= MAX_PRICE_CENTS:
            raise InvalidRequest(f"price_cents of {name} must be between 0 and {MAX_PRICE_CENTS}")
        if not 1 <= capacity <= MAX_CAPACITY:
            raise InvalidRequest(f"capacity of {name} must be between 1 and {MAX_CAPACITY}")
        if half_limit is not None and not 0 <= half_limit <= capacity:
            raise InvalidRequest(f"half-price limit of {name} must be between 0 and its capacity, or None")

        def op(connection: Connection) -> None:
            event_name, status = self._event_row(connection, event_id)
            if status == "cancelled":
                raise EventClosed(f"{event_name} was cancelled")
            count, taken = connection.execute(
                "SELECT COUNT(*), COALESCE(MAX(position), -1) + 1 FROM sectors WHERE event_id = ?", (event_id,)
            ).fetchone()
            if count >= MAX_SECTORS:
                raise InvalidRequest(f"an event has at most {MAX_SECTORS} sectors")
            if connection.execute("SELECT 1 FROM sectors WHERE event_id = ? AND name = ?", (event_id, name)).fetchone():
                raise InvalidRequest(f"{event_name} already has a sector {name!r}")
            connection.execute(
                "INSERT INTO sectors (event_id, name, position, price_cents, capacity, available, half_limit) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (event_id, name, taken, price_cents, capacity, capacity, half_limit),
            )
            self._record(connection, self.clock(), "open", None, event_id, name, capacity)

        self._submit(op)
        return self.get_event(event_id)

    def set_event_status(self, event_id: int, status: str) -> Event:
        """Pause (no new reservations; holds may still be confirmed) or resume sales; a cancelled event stays so."""
        if status not in ("on_sale", "paused"):
            raise InvalidRequest("an event can be put on sale or paused here; cancel it with cancel_event")

        def op(connection: Connection) -> None:
            event_name, current = self._event_row(connection, event_id)
            if current == "cancelled":
                raise EventClosed(f"{event_name} was cancelled; it cannot be paused or resumed")
            if current != status:
                now = self.clock()
                connection.execute("UPDATE events SET status = ? WHERE id = ?", (status, event_id))
                self._record(connection, now, "pause" if status == "paused" else "resume", None, event_id, None, None)
                if status == "on_sale":
                    for (sector,) in connection.execute("SELECT name FROM sectors WHERE event_id = ?", (event_id,)).fetchall():
                        self._offer_freed(connection, now, event_id, sector)

        self._submit(op)
        return self.get_event(event_id)

    def cancel_event(self, event_id: int) -> tuple[Event, int]:
        """Cancel the event and every active reservation in it, mailing each customer; answers how many were cancelled."""

        def op(connection: Connection) -> int:
            self._event_row(connection, event_id)
            now = self.clock()
            # The sectors' rows first: a sale in flight holds one, so this waits for it, and the reservations read
            # below include it; a sale arriving later waits here and then finds the event cancelled.
            connection.execute("UPDATE sectors SET available = available WHERE event_id = ?", (event_id,))
            connection.execute("UPDATE events SET status = 'cancelled' WHERE id = ?", (event_id,))
            rows = connection.execute(
                f"SELECT {_RESERVATION_COLUMNS} FROM reservations WHERE event_id = ? AND status IN ('held', 'confirmed')",
                (event_id,),
            ).fetchall()
            for row in rows:
                self._release(connection, now, "cancel", row, announce="event_cancelled")
            connection.execute("UPDATE waitlist SET status = 'left' WHERE event_id = ? AND status = 'waiting'", (event_id,))
            self._record(connection, now, "cancel_event", None, event_id, None, len(rows))
            return len(rows)

        cancelled = self._submit(op)
        return self.get_event(event_id), cancelled

    def delete_event(self, event_id: int) -> None:
        """Only an event that never took a reservation can vanish; one with history must be cancelled instead."""

        def op(connection: Connection) -> None:
            event_name, _ = self._event_row(connection, event_id)
            if connection.execute("SELECT 1 FROM reservations WHERE event_id = ? LIMIT 1", (event_id,)).fetchone():
                raise InvalidRequest(f"{event_name} has reservations on record; cancel it instead of deleting it")
            connection.execute("DELETE FROM sectors WHERE event_id = ?", (event_id,))
            connection.execute("DELETE FROM events WHERE id = ?", (event_id,))
            self._record(connection, self.clock(), "delete_event", None, event_id, None, None)

        self._submit(op)

    def list_reservations(
        self, event_id: int | None = None, email: str | None = None, status: str | None = None, limit: int = 1000
    ) -> tuple[Reservation, ...]:
        """The clerk's search: newest first, filtered by event, customer email and status."""
        if status is not None and status not in ("held", "confirmed", "cancelled", "expired"):
            raise InvalidRequest("status must be held, confirmed, cancelled or expired")
        clauses, params = [], []
        for clause, value in (("event_id = ?", event_id), ("lower(email) = lower(?)", email), ("status = ?", status)):
            if value is not None:
                clauses.append(clause)
                params.append(value.strip() if isinstance(value, str) else value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._reader() as connection:
            rows = connection.execute(
                f"SELECT {_RESERVATION_COLUMNS} FROM reservations{where} ORDER BY created_at DESC, code LIMIT ?", (*params, limit)
            ).fetchall()
        return tuple(_reservation(row) for row in rows)

    def report(self) -> tuple[SectorReport, ...]:
        """Per event and sector: where it stands, what it earned by category (confirmed only), and the last minute's sales."""
        since = self.clock() - 60
        with self._reader() as connection:
            rows = connection.execute(
                "SELECT e.id, e.name, e.status, s.name, s.price_cents, s.capacity, s.available, "
                "COALESCE(SUM(CASE WHEN r.status = 'held' THEN r.quantity END), 0), "
                "COALESCE(SUM(CASE WHEN r.status = 'confirmed' THEN r.quantity END), 0), "
                "COALESCE(SUM(CASE WHEN r.status = 'confirmed' AND r.category = 'full' THEN r.quantity END), 0), "
                "COALESCE(SUM(CASE WHEN r.status = 'confirmed' AND r.category = 'half' THEN r.quantity END), 0), "
                "COALESCE(SUM(CASE WHEN r.status = 'confirmed' AND r.category = 'full' THEN r.total_cents END), 0), "
                "COALESCE(SUM(CASE WHEN r.status = 'confirmed' AND r.category = 'half' THEN r.total_cents END), 0), "
                "(SELECT COALESCE(SUM(l.quantity), 0) FROM ledger l WHERE l.at >= ? AND l.event_id = e.id AND l.sector = s.name "
                "AND l.action IN ('sell', 'confirm')), s.half_limit "
                "FROM events e JOIN sectors s ON s.event_id = e.id "
                "LEFT JOIN reservations r ON r.event_id = s.event_id AND r.sector = s.name "
                "GROUP BY e.id, s.event_id, s.name ORDER BY e.id, s.position",
                (since,),
            ).fetchall()
        return tuple(SectorReport(*row) for row in rows)
