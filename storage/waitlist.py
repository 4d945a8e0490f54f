"""The waitlist of a sold-out sector: joining, leaving, and where an entry stands.

Offers are made by the sale kernel (sales.offer_freed), in the transaction that frees the tickets, so
freed tickets reach the first in line before anyone else can buy them; this module keeps the queue itself.
"""

from __future__ import annotations

from errors import EventClosed, InvalidRequest, NotFound, SoldOut
from records import WAITLIST_LIFECYCLE, WaitlistEntry, WaitlistStatus
from storage import ledger, sales
from storage.engine import Connection
from storage.rows import SaleSector, WaitlistRow, WaitlistView, one


def join(connection: Connection, now: float, event_id: int, quantity: int, customer: str, email: str, sector: str | None) -> int:
    """Queue for a sold-out sector; joining again with the same email while still waiting answers with the same id."""
    found = sales.sector_for_sale(connection, event_id, sector)
    if found.event_status == "cancelled":
        raise EventClosed(f"{found.event_name} was cancelled")
    waiting = WaitlistStatus.WAITING.value
    existing = connection.execute(
        "SELECT id FROM waitlist WHERE event_id = ? AND sector = ? AND lower(email) = lower(?) AND status = ?",
        (event_id, found.name, email, waiting),
    ).fetchone()
    if existing is not None:
        return existing[0]
    available = connection.execute(
        "SELECT available FROM sectors WHERE event_id = ? AND name = ?", (event_id, found.name)
    ).fetchone()[0]
    if available >= quantity and found.event_status == "on_sale":
        sector_now = SaleSector(found.name, found.price_cents, found.seat_rows, found.seats_per_row)  # type: ignore[arg-type]
        try:
            sales.seats_for_sale(connection, event_id, sector_now, quantity, None)
        except SoldOut:
            pass  # tickets are left, but not side by side: waiting for a block is a fair wish
        else:
            raise InvalidRequest(f"{found.name} still has {available} tickets; reserve them instead")
    entry_id = connection.execute(
        "INSERT INTO waitlist (event_id, sector, quantity, customer, email, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (event_id, found.name, quantity, customer, email, WAITLIST_LIFECYCLE["join"].target, now),
    ).fetchone()[0]
    ledger.record(connection, now, "join", None, event_id, found.name, quantity, f"waitlist:{entry_id}")
    return entry_id


def leave(connection: Connection, now: float, entry_id: int, email: str, offer_seconds: float) -> None:
    """Leave the queue; an offer not yet confirmed is given up (its tickets pass to the next in line)."""
    entry = owned(connection, entry_id, email)
    if entry.status == WaitlistStatus.WAITING:
        connection.execute("UPDATE waitlist SET status = ? WHERE id = ?", (WAITLIST_LIFECYCLE["leave"].target, entry_id))
        ledger.record(connection, now, "leave", None, entry.event_id, entry.sector, entry.quantity, f"waitlist:{entry_id}")
    elif entry.status == WaitlistStatus.OFFERED:
        offered = sales.by_code(connection, entry.code)  # type: ignore[arg-type]
        sales.release(connection, now, "cancel", offered, offer_seconds)  # type: ignore[arg-type]


def event_of(connection: Connection, entry_id: int) -> tuple[int, ...]:
    """The event of an entry (none for an unknown id): what leaving the queue locks first."""
    found = connection.execute("SELECT event_id FROM waitlist WHERE id = ?", (entry_id,)).fetchone()
    return () if found is None else (found[0],)


def close(connection: Connection, event_id: int) -> None:
    """Everyone still waiting for a cancelled event leaves the queue."""
    leave_ = WAITLIST_LIFECYCLE["leave"]
    connection.execute(
        "UPDATE waitlist SET status = ? WHERE event_id = ? AND status = ?", (leave_.target, event_id, WaitlistStatus.WAITING.value)
    )


def owned(connection: Connection, entry_id: int, email: str) -> WaitlistRow:
    """The entry if the email matches; a wrong email looks exactly like a wrong id."""
    row = one(WaitlistRow, connection.execute(
        "SELECT status, code, event_id, sector, quantity, email FROM waitlist WHERE id = ?", (entry_id,)
    ).fetchone())
    if row is None or row.email.casefold() != email.strip().casefold():
        raise NotFound(f"No waitlist entry {entry_id} for that email")
    return row


def entry(connection: Connection, entry_id: int) -> WaitlistEntry:
    """The entry with its place in line, without the owner's email."""
    row = one(WaitlistView, connection.execute(
        "SELECT w.id, w.event_id, w.sector, w.quantity, w.customer, w.status, "
        "CASE WHEN w.status = 'waiting' THEN (SELECT COUNT(*) FROM waitlist a WHERE a.event_id = w.event_id "
        "AND a.sector = w.sector AND a.status = 'waiting' AND a.id <= w.id) ELSE 0 END, "
        "w.code, w.offer_expires_at, w.created_at FROM waitlist w WHERE w.id = ?",
        (entry_id,),
    ).fetchone())
    if row is None:
        raise NotFound(f"No waitlist entry {entry_id}")
    return row.record()
