"""The schema, as the list of migrations that build it, and the demo catalogue a fresh database starts with.

A database records how many migrations it has run (SQLite's user_version, PostgreSQL's schema_version
table); an engine runs the rest in one transaction at start-up, so an old database is brought forward and
one from a newer program is refused. Migrations are written once, in SQLite's words; postgres.py translates.
"""

from __future__ import annotations

import logging

from storage import admin
from storage.engine import Connection
from storage.validate import SectorSpec

log = logging.getLogger("bilheteria.storage.schema")

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
    # 5: the outbox keeps the facts of each letter (JSON), and the mailer words it; older rows keep subject and body.
    """
    ALTER TABLE outbox ADD COLUMN facts TEXT NOT NULL DEFAULT '';
    """,
    # 6: the lookups by customer email read an index, not the table: the clerk's search, and a join that finds
    # the same customer already waiting in that sector (a bot-filled queue must not be read whole per join).
    # Both compare lower(email), so the indexes are on that expression.
    """
    CREATE INDEX reservations_by_email ON reservations(lower(email));
    CREATE INDEX waitlist_by_email ON waitlist(event_id, sector, lower(email)) WHERE status = 'waiting';
    """,
)

DEMO_CATALOGUE: tuple[tuple[str, str, str, tuple[SectorSpec, ...]], ...] = (
    ("Noite de Abertura - Rock na Praia", "Arena Copacabana, Rio de Janeiro", "2027-03-13T20:00:00-03:00",
     (("Pista", 25000, 300), ("VIP", 68000, 50))),
    ("Bachianas Brasileiras", "Sala São Paulo, São Paulo", "2027-04-02T21:00:00-03:00",
     (("Plateia", 9000, 10, 12), ("Camarote", 18000, 30))),
    ("Stand-up: Noite de Estreia", "Teatro Rival, Rio de Janeiro", "2027-02-20T22:00:00-03:00",
     (("Geral", 6000, 80),)),
)


def seed(connection: Connection, now: float) -> None:
    """The demo catalogue, in the transaction that created the schema."""
    for name, venue, starts_at, sectors in DEMO_CATALOGUE:
        admin.insert_event(connection, now, name, venue, starts_at, sectors)
    log.info("seeded the demo catalogue (%d events)", len(DEMO_CATALOGUE))
