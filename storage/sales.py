"""The sale kernel: the one place tickets leave a sector and come back to it.

Every write to `sectors.available` is in this file. `take` is the conditional decrement that refuses an
oversell (`available >= quantity`, with the half-price cap, behind the `CHECK (available >= 0)` of the
schema), `give_back` its inverse; around them sit the sale (`reserve`, with insert-and-replay of a request
id), the seats (a seat is refused twice by the primary key of seat_holds), the lifecycle of a reservation
(`confirm`, `cancel`, `expire`, through `release`) and the offers that hand freed tickets to the waitlist
before anyone else can buy them. Each function runs inside the caller's transaction on a bare connection.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import seating
from errors import EventClosed, HoldExpired, InvalidRequest, NotFound, SoldOut, Unavailable
from records import ACTIVE, RESERVATION_LIFECYCLE, WAITLIST_LIFECYCLE, Reservation, ReservationStatus, SeatMap, WaitlistStatus
from storage import ledger, outbox
from storage.engine import Connection
from storage.rows import RESERVATION_COLUMNS, ReservationRow, SaleSector, SectorForSale, WaitingRow, every, iso, one

CATEGORIES = {"full": (1, 1), "half": (1, 2)}
"""Price category -> (numerator, denominator) of the sector price; half rounds up to the cent."""
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""No 0/O or 1/I: codes are read aloud at a counter."""
_CODE_TABLE = bytes(ord(CODE_ALPHABET[byte % 32]) for byte in range(256))
OFFER_REQUEST_PREFIX = "\x01"
"""What every waitlist offer's request id begins with: a control character, which no client's request id can
hold (the store refuses control characters in any text it is given, request ids included). Request ids are
one space shared by every reservation, so an offer's id must lie outside what a client may send, or a client
reserving with it first would block the offer for good."""


class Sale(NamedTuple):
    """A reservation as asked for, cleaned: what a retry with the same request id must match."""

    event_id: int
    sector: str | None
    quantity: int
    customer: str
    email: str
    category: str
    request_id: str
    confirm: bool
    seats: Sequence[str] | None


def new_code() -> str:
    """A short code a clerk can read aloud (`K7Q-2M9`): 30 bits from the OS's secure source, about a billion
    values. Unpredictable on purpose: with the customer's email, a code is enough to cancel."""
    chars = os.urandom(6).translate(_CODE_TABLE).decode("ascii")
    return f"{chars[:3]}-{chars[3:]}"


def plural_seats(labels: Sequence[str]) -> str:
    return f"Seat {labels[0]} is" if len(labels) == 1 else f"Seats {', '.join(labels)} are"


def _placeholders(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


# -- the stock of a sector ----------------------------------------------------------------------------


def take(connection: Connection, event_id: int, sector: str | None, quantity: int, half: int) -> SaleSector | None:
    """Take `quantity` tickets (`half` of them at half price) in one statement, if the event is on sale and the
    sector (named, or the event's only one) has them within its half-price cap. None means "not taken": a
    refusal to explain, or a retry to recognise."""
    found = connection.execute(
        "UPDATE sectors SET available = available - ?, half_taken = half_taken + ? "
        "WHERE event_id = ? AND available >= ? AND (SELECT status FROM events WHERE id = ?) = 'on_sale' "
        "AND name = COALESCE(?, (SELECT MIN(name) FROM sectors WHERE event_id = ? HAVING COUNT(*) = 1)) "
        "AND (? = 0 OR half_limit IS NULL OR half_taken + ? <= half_limit) "
        "RETURNING name, price_cents, seat_rows, seats_per_row",
        (quantity, half, event_id, quantity, event_id, sector, event_id, half, half),
    ).fetchone()
    return one(SaleSector, found)


def give_back(connection: Connection, event_id: int, sector: str, quantity: int, half: int) -> None:
    connection.execute(
        "UPDATE sectors SET available = available + ?, half_taken = half_taken - ? WHERE event_id = ? AND name = ?",
        (quantity, half, event_id, sector),
    )


def open_sector(
    connection: Connection, event_id: int, name: str, position: int, price_cents: int, capacity: int,
    seat_rows: int = 0, seats_per_row: int = 0, half_limit: int | None = None,
) -> None:
    """A new sector with all of its tickets available."""
    connection.execute(
        "INSERT INTO sectors (event_id, name, position, price_cents, capacity, available, half_limit, seat_rows, seats_per_row) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (event_id, name, position, price_cents, capacity, capacity, half_limit, seat_rows, seats_per_row),
    )


def resize(connection: Connection, event_id: int, sector: str, capacity: int, old_capacity: int) -> None:
    """A new capacity; what is held or sold stays taken, so only the available tickets change."""
    connection.execute(
        "UPDATE sectors SET capacity = ?, available = available + ? WHERE event_id = ? AND name = ?",
        (capacity, capacity - old_capacity, event_id, sector),
    )


# -- the sale -----------------------------------------------------------------------------------------


def reserve(connection: Connection, now: float, sale: Sale, hold_seconds: float) -> Reservation:
    """Hold (or, with confirm, sell) tickets; the same request id always answers with the same reservation."""
    half = sale.quantity if sale.category == "half" else 0
    taken = take(connection, sale.event_id, sale.sector, sale.quantity, half)
    if taken is None:
        existing = by_request_id(connection, sale.request_id)
        if existing is not None:
            return _replayed(existing, sale)
        taken = _take_or_explain(connection, sale.event_id, sale.sector, sale.quantity, half)
    chosen = seats_for_sale(connection, sale.event_id, taken, sale.quantity, sale.seats)
    numerator, denominator = CATEGORIES[sale.category]
    unit = -(-taken.price_cents * numerator // denominator)
    action = "sell" if sale.confirm else "hold"
    status = RESERVATION_LIFECYCLE[action].target
    expires_at = None if sale.confirm else now + hold_seconds
    wanted = ReservationRow("", sale.event_id, taken.name, sale.quantity, sale.customer, sale.email, sale.category, unit,
                            unit * sale.quantity, status, now, expires_at, chosen)
    row, fresh = insert_reservation(connection, wanted, sale.request_id)
    if not fresh:
        # The request id is taken: this is a retry of a reservation made earlier. Give back what was just
        # taken, inside this same transaction, and answer with the original.
        give_back(connection, sale.event_id, taken.name, sale.quantity, half)
        return _replayed(row, sale)
    hold_seats(connection, row)
    ledger.record(connection, now, action, row.code, sale.event_id, taken.name, sale.quantity)
    if sale.confirm:
        outbox.announce(connection, now, "confirmed", row)
    return row.record()


def _take_or_explain(connection: Connection, event_id: int, sector: str | None, quantity: int, half: int) -> SaleSector:
    """The slow path: resolve the sector, then take the tickets or say precisely why not."""
    found = sector_for_sale(connection, event_id, sector)
    if found.event_status != "on_sale":
        raise EventClosed(f"{found.event_name} is {found.event_status.replace('_', ' ')}; it takes no new reservations")
    taken = take(connection, event_id, found.name, quantity, half)
    if taken is not None:
        return taken
    # The event is locked (or writes are serial), so this read is what the failed take saw.
    left, half_limit, half_taken = connection.execute(
        "SELECT available, half_limit, half_taken FROM sectors WHERE event_id = ? AND name = ?", (event_id, found.name)
    ).fetchone()
    if left < quantity:
        if left:
            raise SoldOut(f"Only {left} tickets left in {found.name} for {found.event_name}")
        raise SoldOut(f"{found.name} for {found.event_name} is sold out")
    half_left = 0 if half_limit is None else max(0, half_limit - half_taken)
    if half and half_limit is not None and half_left < half:
        if half_left:
            raise SoldOut(f"Only {half_left} half-price tickets left in {found.name} for {found.event_name}")
        raise SoldOut(f"No half-price tickets left in {found.name} for {found.event_name}; full price still available")
    raise Unavailable(f"{found.name} for {found.event_name} changed while this sale was taken; try again")


def sector_for_sale(connection: Connection, event_id: int, sector: str | None) -> SectorForSale:
    """The sector with its event; the sector may go unnamed in a one-sector event."""
    rows = every(SectorForSale, connection.execute(
        "SELECT s.name, s.price_cents, e.name, e.status, s.seat_rows, s.seats_per_row FROM events e "
        "LEFT JOIN sectors s ON s.event_id = e.id WHERE e.id = ? ORDER BY s.position",
        (event_id,),
    ).fetchall())
    if not rows:
        raise NotFound(f"No event with id {event_id}")
    if sector is None:
        if len(rows) > 1:
            names = ", ".join(str(row.name) for row in rows)
            raise InvalidRequest(f"{rows[0].event_name} has several sectors ({names}); say which one")
        return rows[0]
    for row in rows:
        if row.name == sector:
            return row
    names = ", ".join(row.name for row in rows if row.name is not None)
    raise NotFound(f"{rows[0].event_name} has no sector {sector!r} (sectors: {names})")


def by_request_id(connection: Connection, request_id: str) -> ReservationRow | None:
    return one(ReservationRow, connection.execute(
        f"SELECT {RESERVATION_COLUMNS} FROM reservations WHERE request_id = ?", (request_id,)
    ).fetchone())


def insert_reservation(connection: Connection, wanted: ReservationRow, request_id: str) -> tuple[ReservationRow, bool]:
    """Insert `wanted` under a fresh code: (the row, True); or, when the request id is already taken, (the
    original's row, False).

    A clash between two random codes is rare enough to just draw again. Neither clash raises (a failed
    statement would spoil a PostgreSQL transaction); the insert that did nothing says which it was.
    """
    for _ in range(5):
        row = wanted._replace(code=new_code())
        inserted = connection.execute(
            f"INSERT INTO reservations ({RESERVATION_COLUMNS}, request_id) VALUES ({_placeholders(row)}, ?) ON CONFLICT DO NOTHING",
            (*row, request_id),
        ).rowcount
        if inserted:
            return row, True
        original = by_request_id(connection, request_id)
        if original is not None:
            return original, False
    raise Unavailable("could not draw an unused reservation code")


def _replayed(row: ReservationRow, sale: Sale) -> Reservation:
    same = (row.event_id, row.quantity, row.customer, row.email.casefold(), row.category) == (
        sale.event_id, sale.quantity, sale.customer, sale.email.casefold(), sale.category)
    if sale.seats is not None and sorted(label.strip().upper() for label in sale.seats) != sorted(row.seats.split(",")):
        same = False
    if not same or (sale.sector is not None and sale.sector != row.sector):
        raise InvalidRequest("this request_id was already used for a different reservation")
    return row.record()


# -- seats --------------------------------------------------------------------------------------------


def seats_for_sale(connection: Connection, event_id: int, sector: SaleSector, quantity: int, seats: Sequence[str] | None) -> str:
    """The seats of a sale as stored ("A1,A2"), or "" in an unnumbered sector."""
    if not sector.seat_rows:
        if seats is not None:
            raise InvalidRequest(f"sector {sector.name} has no numbered seats; reserve without naming seats")
        return ""
    if seats is not None:
        try:
            return ",".join(seating.canonical(seats, sector.seat_rows, sector.seats_per_row))
        except seating.SeatError as exc:
            raise InvalidRequest(f"bad seats for {sector.name}: {exc}") from None
    taken = {seat for (seat,) in connection.execute(
        "SELECT seat FROM seat_holds WHERE event_id = ? AND sector = ?", (event_id, sector.name)
    ).fetchall()}
    block = seating.best_block(taken, sector.seat_rows, sector.seats_per_row, quantity)
    if block is None:
        raise SoldOut(f"No {quantity} adjacent seats left in one row of {sector.name}; choose the seats one by one")
    return ",".join(block)


def hold_seats(connection: Connection, row: ReservationRow) -> None:
    """One row per seat; the primary key turns a seat already held into a refusal of the whole reservation."""
    labels = row.seat_labels
    if not labels:
        return
    values = ", ".join("(?, ?, ?, ?)" for _ in labels)
    params = [value for seat in labels for value in (row.event_id, row.sector, seat, row.code)]
    held = {seat for (seat,) in connection.execute(
        f"INSERT INTO seat_holds (event_id, sector, seat, code) VALUES {values} ON CONFLICT DO NOTHING RETURNING seat", params
    ).fetchall()}
    if len(held) != len(labels):
        gone = [seat for seat in labels if seat not in held]
        raise SoldOut(f"{plural_seats(gone)} already taken in {row.sector}; choose others")


# -- the lifecycle of a reservation -------------------------------------------------------------------


def owned(row: ReservationRow | None, code: str, email: str) -> ReservationRow:
    """The reservation if the email matches; a wrong email looks exactly like a wrong code."""
    if row is None or row.email.casefold() != email.strip().casefold():
        raise NotFound(f"No reservation {code.strip().upper()!r} for that email")
    return row


def event_of(connection: Connection, code: str) -> tuple[int, ...]:
    """The event of a reservation (none for an unknown code): what a confirm or cancel by code locks first."""
    found = connection.execute("SELECT event_id FROM reservations WHERE code = ?", (code.strip().upper(),)).fetchone()
    return () if found is None else (found[0],)


def by_code(connection: Connection, code: str) -> ReservationRow | None:
    return one(ReservationRow, connection.execute(
        f"SELECT {RESERVATION_COLUMNS} FROM reservations WHERE code = ?", (code.strip().upper(),)
    ).fetchone())


def confirm(connection: Connection, now: float, code: str, email: str, payment_ref: str | None) -> Reservation:
    """Turn a hold into a sale; confirming twice answers with the same sale."""
    row = owned(by_code(connection, code), code, email)  # read under the event's lock (or the serial writer)
    if row.status == ReservationStatus.CONFIRMED:
        return row.record()
    if row.status == ReservationStatus.CANCELLED:
        raise InvalidRequest(f"Reservation {row.code} was cancelled; make a new one")
    if row.status == ReservationStatus.EXPIRED or row.expires_at <= now:  # type: ignore[operator]
        raise HoldExpired(f"Reservation {row.code} expired at {iso(row.expires_at)}; its tickets went back on sale")
    event_status = connection.execute("SELECT status FROM events WHERE id = ?", (row.event_id,)).fetchone()[0]
    if event_status == "cancelled":
        raise EventClosed(f"The event of reservation {row.code} was cancelled")
    confirmed = row._replace(status=RESERVATION_LIFECYCLE["confirm"].target, expires_at=None)
    connection.execute(
        "UPDATE reservations SET status = ?, expires_at = NULL, payment_ref = ? WHERE code = ?", (confirmed.status, payment_ref, row.code)
    )
    ledger.record(connection, now, "confirm", row.code, row.event_id, row.sector, row.quantity)
    accept = WAITLIST_LIFECYCLE["accept"]
    connection.execute(
        f"UPDATE waitlist SET status = ? WHERE code = ? AND status IN ({_placeholders(accept.sources)})",
        (accept.target, row.code, *accept.sources),
    )
    outbox.announce(connection, now, "confirmed", confirmed)
    return confirmed.record()


def cancel(connection: Connection, now: float, code: str, email: str, offer_seconds: float) -> Reservation:
    """Give the tickets back; cancelling twice (or a lapsed hold) changes nothing and says how it stands."""
    row = owned(by_code(connection, code), code, email)  # read under the event's lock (or the serial writer)
    if row.status not in ACTIVE:
        return row.record()
    release(connection, now, "cancel", row, offer_seconds, announce="cancelled")
    return row._replace(status=RESERVATION_LIFECYCLE["cancel"].target, expires_at=None).record()


def lapsed_events(connection: Connection, now: float, limit: int) -> tuple[int, ...]:
    """The events of the (at most `limit`) oldest holds that lapsed by `now`: what an expiry sweep locks."""
    return tuple(event_id for (event_id,) in connection.execute(
        "SELECT DISTINCT event_id FROM (SELECT event_id FROM reservations WHERE status = ? AND expires_at <= ? "
        "ORDER BY expires_at LIMIT ?) AS lapsed ORDER BY event_id",
        (ReservationStatus.HELD.value, now, limit),
    ).fetchall())


def expire(connection: Connection, now: float, limit: int, offer_seconds: float, events: Sequence[int]) -> int:
    """Release every hold of `events` that lapsed by `now` (at most `limit`); each expiry happens once, whoever runs it."""
    rows = every(ReservationRow, connection.execute(
        f"SELECT {RESERVATION_COLUMNS} FROM reservations WHERE status = ? AND expires_at <= ? "
        f"AND event_id IN ({_placeholders(events)}) ORDER BY expires_at LIMIT ?",
        (ReservationStatus.HELD.value, now, *events, limit),
    ).fetchall())
    for row in rows:
        release(connection, now, "expire", row, offer_seconds)
    return len(rows)


def release(
    connection: Connection, now: float, action: str, row: ReservationRow, offer_seconds: float, announce: str | None = None
) -> None:
    """Cancel or expire an active reservation and give its tickets and seats back, to the waitlist first;
    `announce` mails the customer. A waitlist offer that ends here lapses (expiry) or is left (cancel).
    Only a hold expires: one confirmed since `row` was read (by another replica) stays sold."""
    transition = RESERVATION_LIFECYCLE[action]
    ended = row._replace(status=transition.target, expires_at=row.expires_at if action == "expire" else None)
    changed = connection.execute(
        f"UPDATE reservations SET status = ?, expires_at = ? WHERE code = ? AND status IN ({_placeholders(transition.sources)})",
        (ended.status, ended.expires_at, row.code, *transition.sources),
    ).rowcount
    if not changed:
        return
    give_back(connection, row.event_id, row.sector, row.quantity, row.half)
    if row.seats:
        connection.execute("DELETE FROM seat_holds WHERE code = ?", (row.code,))
    ledger.record(connection, now, action, row.code, row.event_id, row.sector, row.quantity)
    if announce is not None:
        outbox.announce(connection, now, announce, ended)
    entry_action = "lapse" if action == "expire" else "leave"
    entry = WAITLIST_LIFECYCLE[entry_action]
    offered = (WaitlistStatus.OFFERED.value,)
    for (entry_id,) in connection.execute(
        f"UPDATE waitlist SET status = ? WHERE code = ? AND status IN ({_placeholders(offered)}) RETURNING id",
        (entry.target, row.code, *offered),
    ).fetchall():
        ledger.record(connection, now, entry_action, row.code, row.event_id, row.sector, row.quantity, f"waitlist:{entry_id}")
    offer_freed(connection, now, row.event_id, row.sector, offer_seconds)


# -- offers to the waitlist ---------------------------------------------------------------------------


def offer_freed(connection: Connection, now: float, event_id: int, sector: str, offer_seconds: float) -> None:
    """Hand freed tickets to the waitlist, first come first served, before anyone else can buy them: each
    waiting entry that fits, in order, gets a hold for the offer window in this same transaction."""
    available, event_status = connection.execute(
        "SELECT s.available, e.status FROM sectors s JOIN events e ON e.id = s.event_id WHERE s.event_id = ? AND s.name = ?",
        (event_id, sector),
    ).fetchone()
    if not available or event_status != "on_sale":
        return
    offer = WAITLIST_LIFECYCLE["offer"]
    waiting = every(WaitingRow, connection.execute(
        f"SELECT id, quantity, customer, email FROM waitlist WHERE event_id = ? AND sector = ? "
        f"AND status IN ({_placeholders(offer.sources)}) ORDER BY id",
        (event_id, sector, *offer.sources),
    ).fetchall())
    for entry in waiting:
        if entry.quantity > available:
            continue
        taken = take(connection, event_id, sector, entry.quantity, 0)
        if taken is None:
            continue
        try:
            chosen = seats_for_sale(connection, event_id, taken, entry.quantity, None)
        except SoldOut:
            give_back(connection, event_id, sector, entry.quantity, 0)
            continue
        expires_at = now + offer_seconds
        wanted = ReservationRow("", event_id, sector, entry.quantity, entry.customer, entry.email, "full", taken.price_cents,
                                taken.price_cents * entry.quantity, RESERVATION_LIFECYCLE["hold"].target, now, expires_at, chosen)
        row, fresh = insert_reservation(connection, wanted, f"{OFFER_REQUEST_PREFIX}waitlist:{entry.id}")
        if not fresh:
            give_back(connection, event_id, sector, entry.quantity, 0)
            continue
        hold_seats(connection, row)
        connection.execute(
            "UPDATE waitlist SET status = ?, code = ?, offer_expires_at = ? WHERE id = ?", (offer.target, row.code, expires_at, entry.id)
        )
        ledger.record(connection, now, "offer", row.code, event_id, sector, entry.quantity, f"waitlist:{entry.id}")
        outbox.announce(connection, now, "offered", row)
        available -= entry.quantity
        if not available:
            return


def seat_map(connection: Connection, event_id: int, sector: str) -> SeatMap:
    """Every seat's state in one string, from the seat holds and the status of the reservations holding them."""
    found = connection.execute(
        "SELECT seat_rows, seats_per_row FROM sectors WHERE event_id = ? AND name = ?", (event_id, sector)
    ).fetchone()
    if found is None:
        if connection.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is None:
            raise NotFound(f"No event with id {event_id}")
        raise NotFound(f"Event {event_id} has no sector {sector[:100]!r}")
    rows, seats_per_row = found
    if not rows:
        raise InvalidRequest(f"sector {sector} has no numbered seats")
    holds = connection.execute(
        "SELECT h.seat, r.status FROM seat_holds h JOIN reservations r ON r.code = h.code WHERE h.event_id = ? AND h.sector = ?",
        (event_id, sector),
    ).fetchall()
    states = [SeatMap.FREE] * (rows * seats_per_row)
    for seat, status in holds:
        row_index, seat_index = seating.parse_label(seat, rows, seats_per_row)
        states[row_index * seats_per_row + seat_index] = SeatMap.SOLD if status == ReservationStatus.CONFIRMED else SeatMap.HELD
    return SeatMap(event_id, sector, rows, seats_per_row, "".join(states))
