"""The sale kernel (storage/sales.py) on a bare SQLite connection: no Store, no engine, no group commit.

Each test builds a fresh database from the schema module's migrations, opens an event through the admin
functions and then calls the kernel's helpers directly, asserting the counts a sale must keep: capacity ==
available + held + sold, the half-price cap, a refusal when sold out, a seat never taken twice, a retried
request answered with the original.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing

import pytest

from errors import SoldOut
from storage import admin, audit, sales, schema
from storage.sales import Sale

NOW = 1_800_000_000.0
HOLD = 600.0
OFFER = 900.0


@pytest.fixture
def connection() -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as connection:
        connection.execute("PRAGMA foreign_keys = ON")
        for migration in schema.MIGRATIONS:
            connection.executescript(migration)
        yield connection


def open_event(connection: sqlite3.Connection, *sectors: tuple) -> int:
    return admin.insert_event(connection, NOW, "Show X", "Teatro", "2027-01-01T20:00:00-03:00", sectors)


def stock(connection: sqlite3.Connection, event_id: int, sector: str) -> tuple[int, int, int]:
    """(capacity, available, half taken) of one sector, straight from its row."""
    return connection.execute(
        "SELECT capacity, available, half_taken FROM sectors WHERE event_id = ? AND name = ?", (event_id, sector)
    ).fetchone()


def counts(connection: sqlite3.Connection, event_id: int, sector: str) -> tuple[int, int]:
    """(held, sold) of one sector, from its reservations."""
    held, sold = connection.execute(
        "SELECT COALESCE(SUM(CASE WHEN status = 'held' THEN quantity END), 0), "
        "COALESCE(SUM(CASE WHEN status = 'confirmed' THEN quantity END), 0) FROM reservations WHERE event_id = ? AND sector = ?",
        (event_id, sector),
    ).fetchone()
    return held, sold


def sale(event_id: int, quantity: int, sector: str = "Pista", *, category: str = "full", request_id: str = "r1",
         confirm: bool = False, seats: tuple[str, ...] | None = None, email: str = "ana@example.com") -> Sale:
    return Sale(event_id, sector, quantity, "Ana", email, category, request_id, confirm, seats)


def test_take_and_give_back_move_exactly_the_tickets_asked_for(connection: sqlite3.Connection) -> None:
    event_id = open_event(connection, ("Pista", 10000, 10))
    taken = sales.take(connection, event_id, "Pista", 3, 0)
    assert taken is not None and (taken.name, taken.price_cents) == ("Pista", 10000)
    assert stock(connection, event_id, "Pista") == (10, 7, 0)
    sales.give_back(connection, event_id, "Pista", 3, 0)
    assert stock(connection, event_id, "Pista") == (10, 10, 0)
    assert sales.take(connection, event_id, None, 10, 0) is not None, "the only sector of an event may go unnamed"
    assert stock(connection, event_id, "Pista") == (10, 0, 0)


def test_a_sold_out_sector_refuses_and_keeps_its_count(connection: sqlite3.Connection) -> None:
    event_id = open_event(connection, ("Pista", 10000, 3))
    assert sales.take(connection, event_id, "Pista", 4, 0) is None
    assert stock(connection, event_id, "Pista") == (3, 3, 0)
    sales.reserve(connection, NOW, sale(event_id, 2, request_id="a"), HOLD)
    with pytest.raises(SoldOut, match="Only 1 tickets left in Pista for Show X"):
        sales.reserve(connection, NOW, sale(event_id, 2, request_id="b"), HOLD)
    sales.reserve(connection, NOW, sale(event_id, 1, request_id="c", confirm=True), HOLD)
    with pytest.raises(SoldOut, match="Pista for Show X is sold out"):
        sales.reserve(connection, NOW, sale(event_id, 1, request_id="d"), HOLD)
    capacity, available, _ = stock(connection, event_id, "Pista")
    assert (available, *counts(connection, event_id, "Pista")) == (0, 2, 1)
    assert capacity == available + sum(counts(connection, event_id, "Pista"))
    assert audit.problems(connection) == []


def test_the_half_price_cap_refuses_past_its_limit_and_counts_back(connection: sqlite3.Connection) -> None:
    event_id = open_event(connection, ("Pista", 1001, 10))
    connection.execute("UPDATE sectors SET half_limit = 2 WHERE event_id = ?", (event_id,))
    assert sales.take(connection, event_id, "Pista", 3, 3) is None, "3 half-price tickets over a limit of 2"
    assert stock(connection, event_id, "Pista") == (10, 10, 0)
    half = sales.reserve(connection, NOW, sale(event_id, 2, category="half", request_id="h1"), HOLD)
    assert (half.unit_price_cents, half.total_cents) == (501, 1002)
    assert stock(connection, event_id, "Pista") == (10, 8, 2)
    with pytest.raises(SoldOut, match="No half-price tickets left in Pista for Show X; full price still available"):
        sales.reserve(connection, NOW, sale(event_id, 1, category="half", request_id="h2"), HOLD)
    sales.reserve(connection, NOW, sale(event_id, 1, request_id="f1"), HOLD)
    assert stock(connection, event_id, "Pista") == (10, 7, 2)
    sales.cancel(connection, NOW, half.code, "ana@example.com", OFFER)
    assert stock(connection, event_id, "Pista") == (10, 9, 0), "a cancelled half-price sale gives its cap back"
    assert audit.problems(connection) == []


def test_a_seat_is_never_taken_twice(connection: sqlite3.Connection) -> None:
    event_id = open_event(connection, ("Plateia", 9000, 2, 3))
    first = sales.reserve(connection, NOW, sale(event_id, 2, "Plateia", request_id="s1", seats=("A1", "A2")), HOLD)
    assert first.seats == ("A1", "A2")
    connection.execute("SAVEPOINT refused")
    with pytest.raises(SoldOut, match="Seat A2 is already taken in Plateia"):
        sales.reserve(connection, NOW, sale(event_id, 2, "Plateia", request_id="s2", seats=("A2", "A3")), HOLD)
    connection.execute("ROLLBACK TO refused")  # what the engine does with a refused write: undo it alone
    connection.execute("RELEASE refused")
    best = sales.reserve(connection, NOW, sale(event_id, 3, "Plateia", request_id="s3"), HOLD)
    assert best.seats == ("B1", "B2", "B3")
    holds = connection.execute("SELECT seat FROM seat_holds WHERE event_id = ? ORDER BY seat", (event_id,)).fetchall()
    assert [seat for (seat,) in holds] == ["A1", "A2", "B1", "B2", "B3"]
    assert stock(connection, event_id, "Plateia") == (6, 1, 0)
    assert audit.problems(connection) == []


def test_a_replayed_request_answers_with_the_original_and_takes_nothing(connection: sqlite3.Connection) -> None:
    event_id = open_event(connection, ("Pista", 10000, 10))
    first = sales.reserve(connection, NOW, sale(event_id, 2, request_id="req-1", confirm=True), HOLD)
    again = sales.reserve(connection, NOW + 5, sale(event_id, 2, request_id="req-1", confirm=True), HOLD)
    assert again == first
    assert stock(connection, event_id, "Pista") == (10, 8, 0)
    assert counts(connection, event_id, "Pista") == (0, 2)
    assert audit.problems(connection) == []


def test_release_gives_tickets_and_seats_back_once(connection: sqlite3.Connection) -> None:
    event_id = open_event(connection, ("Plateia", 9000, 1, 4))
    held = sales.reserve(connection, NOW, sale(event_id, 2, "Plateia", request_id="h"), HOLD)
    assert stock(connection, event_id, "Plateia") == (4, 2, 0)
    row = sales.by_code(connection, held.code)
    sales.release(connection, NOW, "expire", row, OFFER)
    sales.release(connection, NOW, "expire", row, OFFER)  # a second replica expiring the same hold changes nothing
    assert stock(connection, event_id, "Plateia") == (4, 4, 0)
    assert sales.by_code(connection, held.code).status == "expired"
    assert connection.execute("SELECT COUNT(*) FROM seat_holds").fetchone()[0] == 0
    assert audit.problems(connection) == []


def test_expire_releases_only_lapsed_holds(connection: sqlite3.Connection) -> None:
    event_id = open_event(connection, ("Pista", 10000, 10))
    sales.reserve(connection, NOW, sale(event_id, 3, request_id="old"), HOLD)
    sales.reserve(connection, NOW + HOLD, sale(event_id, 2, request_id="new"), HOLD)
    sales.reserve(connection, NOW, sale(event_id, 1, request_id="sold", confirm=True), HOLD)
    assert sales.expire(connection, NOW + HOLD, 500, OFFER, (event_id,)) == 1
    assert stock(connection, event_id, "Pista") == (10, 7, 0)
    assert counts(connection, event_id, "Pista") == (2, 1)
    assert audit.problems(connection) == []


def test_freed_tickets_go_to_the_waitlist_first(connection: sqlite3.Connection) -> None:
    event_id = open_event(connection, ("Pista", 10000, 2))
    held = sales.reserve(connection, NOW, sale(event_id, 2, request_id="all"), HOLD)
    connection.execute(
        "INSERT INTO waitlist (event_id, sector, quantity, customer, email, status, created_at) VALUES (?, 'Pista', 2, 'Bia', "
        "'bia@example.com', 'waiting', ?)", (event_id, NOW),
    )
    sales.cancel(connection, NOW, held.code, "ana@example.com", OFFER)
    assert stock(connection, event_id, "Pista") == (2, 0, 0), "the freed tickets are held for the first in line"
    assert counts(connection, event_id, "Pista") == (2, 0)
    assert connection.execute("SELECT status FROM waitlist").fetchone()[0] == "offered"
    assert audit.problems(connection) == []
