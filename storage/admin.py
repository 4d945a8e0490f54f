"""The organiser's side of the inventory: events and sectors made, changed, paused, cancelled; the clerk's
search and the sales report.

Each change is a transaction function over a connection; what it does to the tickets themselves (opening a
sector's stock, resizing it, handing freed tickets to the waitlist, releasing reservations) it asks of the
sale kernel (sales.py), so the counts are kept in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from errors import EventClosed, InvalidRequest, NotFound
from records import ACTIVE, Event, Reservation, SectorReport
from storage import ledger, sales, waitlist
from storage.engine import Connection
from storage.rows import (
    EVENT_SECTOR_SELECT,
    RESERVATION_COLUMNS,
    EventHead,
    EventSectorRow,
    ReservationRow,
    SectorStock,
    every,
    one,
)
from storage.validate import MAX_SECTORS, SectorSpec

# -- reads --------------------------------------------------------------------------------------------


def events(connection: Connection, event_id: int | None = None) -> list[Event]:
    """Every event (or the one asked for) with its sectors in their order."""
    if event_id is None:
        found = connection.execute(f"{EVENT_SECTOR_SELECT} ORDER BY e.id, s.position").fetchall()
    else:
        found = connection.execute(f"{EVENT_SECTOR_SELECT} WHERE e.id = ? ORDER BY s.position", (event_id,)).fetchall()
    heads: dict[int, EventSectorRow] = {}
    sectors: dict[int, list] = {}
    for row in every(EventSectorRow, found):
        if row.id not in heads:
            heads[row.id] = row
            sectors[row.id] = []
        if row.sector is not None:
            sectors[row.id].append(row.sector_record())
    return [Event(head.id, head.name, head.venue, head.starts_at, head.status, tuple(sectors[head.id])) for head in heads.values()]


def reservations(
    connection: Connection, event_id: int | None, email: str | None, status: str | None, limit: int
) -> tuple[Reservation, ...]:
    """The clerk's search: newest first, filtered by event, customer email and status."""
    clauses, params = [], []
    for clause, value in (("event_id = ?", event_id), ("lower(email) = lower(?)", email), ("status = ?", status)):
        if value is not None:
            clauses.append(clause)
            params.append(value.strip() if isinstance(value, str) else value)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = every(ReservationRow, connection.execute(
        f"SELECT {RESERVATION_COLUMNS} FROM reservations{where} ORDER BY created_at DESC, code LIMIT ?", (*params, limit)
    ).fetchall())
    return tuple(row.record() for row in rows)


def every_reservation(connection: Connection, event_id: int | None) -> tuple[Reservation, ...]:
    """Every reservation (of one event), oldest first."""
    query = f"SELECT {RESERVATION_COLUMNS} FROM reservations"
    params: tuple = ()
    if event_id is not None:
        query += " WHERE event_id = ?"
        params = (event_id,)
    rows = every(ReservationRow, connection.execute(query + " ORDER BY created_at, code", params).fetchall())
    return tuple(row.record() for row in rows)


def report(connection: Connection, since: float) -> tuple[SectorReport, ...]:
    """Per event and sector: where it stands, what it earned by category (confirmed only), and sales since `since`."""
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


def event_head(connection: Connection, event_id: int) -> EventHead:
    row = one(EventHead, connection.execute("SELECT name, status FROM events WHERE id = ?", (event_id,)).fetchone())
    if row is None:
        raise NotFound(f"No event with id {event_id}")
    return row


def _stock(connection: Connection, event_id: int, sector: str) -> SectorStock:
    row = one(SectorStock, connection.execute(
        "SELECT capacity, available, half_taken, seat_rows FROM sectors WHERE event_id = ? AND name = ?", (event_id, sector)
    ).fetchone())
    if row is None:
        raise NotFound(f"Event {event_id} has no sector {sector!r}")
    return row


# -- changes ------------------------------------------------------------------------------------------


def insert_event(connection: Connection, now: float, name: str, venue: str, starts_at: str, sectors: Iterable[SectorSpec]) -> int:
    """A new event on sale with its sectors."""
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
        sales.open_sector(connection, event_id, sector_name, position, price, capacity, rows, seats_per_row)
        ledger.record(connection, now, "open", None, event_id, sector_name, capacity)
    return event_id


def update_event(
    connection: Connection, now: float, event_id: int, changes: dict[str, str | None], capacities: Sequence[tuple[str, int]],
    half_limits: Sequence[tuple[str, int | None]], offer_seconds: float,
) -> None:
    """Rename, move or reschedule; resize sectors (never below what is taken); set or lift half-price limits."""
    event_head(connection, event_id)
    for column, value in changes.items():
        if value is not None:
            connection.execute(f"UPDATE events SET {column} = ? WHERE id = ?", (value, event_id))
    for sector, capacity in capacities:
        current = _stock(connection, event_id, sector)
        if current.seat_rows:
            raise InvalidRequest(f"{sector} is seated: its capacity is its seat map")
        taken = current.capacity - current.available
        if capacity < taken:
            raise InvalidRequest(f"{sector} has {taken} tickets held or sold; its capacity cannot go below that")
        sales.resize(connection, event_id, sector, capacity, current.capacity)
        ledger.record(connection, now, "capacity", None, event_id, sector, capacity)
        if capacity > current.capacity:
            sales.offer_freed(connection, now, event_id, sector, offer_seconds)
    for sector, limit in half_limits:
        half_taken = _stock(connection, event_id, sector).half_taken
        if limit is not None and limit < half_taken:
            raise InvalidRequest(f"{sector} has {half_taken} half-price tickets held or sold; the limit cannot go below that")
        connection.execute("UPDATE sectors SET half_limit = ? WHERE event_id = ? AND name = ?", (limit, event_id, sector))
        ledger.record(connection, now, "half_limit", None, event_id, sector, limit)
    if any(value is not None for value in changes.values()):
        ledger.record(connection, now, "update", None, event_id, None, None)


def add_sector(
    connection: Connection, now: float, event_id: int, name: str, price_cents: int, capacity: int, half_limit: int | None
) -> None:
    head = event_head(connection, event_id)
    if head.status == "cancelled":
        raise EventClosed(f"{head.name} was cancelled")
    count, position = connection.execute(
        "SELECT COUNT(*), COALESCE(MAX(position), -1) + 1 FROM sectors WHERE event_id = ?", (event_id,)
    ).fetchone()
    if count >= MAX_SECTORS:
        raise InvalidRequest(f"an event has at most {MAX_SECTORS} sectors")
    if connection.execute("SELECT 1 FROM sectors WHERE event_id = ? AND name = ?", (event_id, name)).fetchone():
        raise InvalidRequest(f"{head.name} already has a sector {name!r}")
    sales.open_sector(connection, event_id, name, position, price_cents, capacity, half_limit=half_limit)
    ledger.record(connection, now, "open", None, event_id, name, capacity)


def set_event_status(connection: Connection, now: float, event_id: int, status: str, offer_seconds: float) -> None:
    """Pause or resume sales; resuming offers what was freed meanwhile to the waitlist."""
    head = event_head(connection, event_id)
    if head.status == "cancelled":
        raise EventClosed(f"{head.name} was cancelled; it cannot be paused or resumed")
    if head.status == status:
        return
    connection.execute("UPDATE events SET status = ? WHERE id = ?", (status, event_id))
    ledger.record(connection, now, "pause" if status == "paused" else "resume", None, event_id, None, None)
    if status == "on_sale":
        for (sector,) in connection.execute("SELECT name FROM sectors WHERE event_id = ?", (event_id,)).fetchall():
            sales.offer_freed(connection, now, event_id, sector, offer_seconds)


def cancel_event(connection: Connection, now: float, event_id: int, offer_seconds: float) -> int:
    """Cancel the event and every active reservation in it, mailing each customer; answers how many were cancelled."""
    event_head(connection, event_id)
    connection.execute("UPDATE events SET status = 'cancelled' WHERE id = ?", (event_id,))
    rows = every(ReservationRow, connection.execute(
        f"SELECT {RESERVATION_COLUMNS} FROM reservations WHERE event_id = ? AND status IN (?, ?)", (event_id, *ACTIVE)
    ).fetchall())
    for row in rows:
        sales.release(connection, now, "cancel", row, offer_seconds, announce="event_cancelled")
    waitlist.close(connection, event_id)
    ledger.record(connection, now, "cancel_event", None, event_id, None, len(rows))
    return len(rows)


def delete_event(connection: Connection, now: float, event_id: int) -> None:
    """Only an event that never took a reservation can vanish; one with history must be cancelled instead."""
    head = event_head(connection, event_id)
    if connection.execute("SELECT 1 FROM reservations WHERE event_id = ? LIMIT 1", (event_id,)).fetchone():
        raise InvalidRequest(f"{head.name} has reservations on record; cancel it instead of deleting it")
    connection.execute("DELETE FROM sectors WHERE event_id = ?", (event_id,))
    connection.execute("DELETE FROM events WHERE id = ?", (event_id,))
    ledger.record(connection, now, "delete_event", None, event_id, None, None)
