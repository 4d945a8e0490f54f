"""The rows the store reads, by name: each a NamedTuple whose fields are its columns, in the order selected.

A row read by position (`row[12]` for the seats) breaks silently when a column is added; a named row makes
the column list from its own fields, so the SELECT and the reader cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeVar

from records import Reservation, Sector, WaitlistEntry

Row = TypeVar("Row", bound=tuple)


def iso(timestamp: float | None) -> str | None:
    """UTC ISO 8601 to the second: what records carry, so every client reads times the same way."""
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def columns(row_type: type[tuple], alias: str = "") -> str:
    """The SELECT list of a row type: its field names, each prefixed by `alias.` when one is given."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + name for name in row_type._fields)  # type: ignore[attr-defined]


def one(row_type: type[Row], found: Sequence[Any] | None) -> Row | None:
    return None if found is None else row_type._make(found)  # type: ignore[attr-defined]


def every(row_type: type[Row], found: Sequence[Sequence[Any]]) -> list[Row]:
    return [row_type._make(row) for row in found]  # type: ignore[attr-defined]


class ReservationRow(NamedTuple):
    code: str
    event_id: int
    sector: str
    quantity: int
    customer: str
    email: str
    category: str
    unit_price_cents: int
    total_cents: int
    status: str
    created_at: float
    expires_at: float | None
    seats: str
    """Labels joined by commas ("A1,A2"), "" for unnumbered tickets."""

    @property
    def seat_labels(self) -> list[str]:
        return self.seats.split(",") if self.seats else []

    @property
    def half(self) -> int:
        """The tickets of this reservation counted against its sector's half-price limit."""
        return self.quantity if self.category == "half" else 0

    def record(self) -> Reservation:
        return Reservation(
            self.code, self.event_id, self.sector, self.quantity, self.customer, self.email, self.category,
            self.unit_price_cents, self.total_cents, self.status, iso(self.created_at), iso(self.expires_at),
            tuple(self.seat_labels),
        )


RESERVATION_COLUMNS = columns(ReservationRow)


class EventSectorRow(NamedTuple):
    """An event joined with one of its sectors (the sector's columns are NULL for an event without sectors)."""

    id: int
    name: str
    venue: str
    starts_at: str
    status: str
    sector: str | None
    price_cents: int | None
    capacity: int | None
    available: int | None
    half_limit: int | None
    seat_rows: int | None
    seats_per_row: int | None

    def sector_record(self) -> Sector:
        return Sector(self.sector, self.price_cents, self.capacity, self.available, self.half_limit,  # type: ignore[arg-type]
                      self.seat_rows, self.seats_per_row)  # type: ignore[arg-type]


EVENT_SECTOR_SELECT = (
    "SELECT e.id, e.name, e.venue, e.starts_at, e.status, s.name, s.price_cents, s.capacity, s.available, s.half_limit, "
    "s.seat_rows, s.seats_per_row FROM events e LEFT JOIN sectors s ON s.event_id = e.id"
)


class SaleSector(NamedTuple):
    """What a sale needs of the sector it took tickets from."""

    name: str
    price_cents: int
    seat_rows: int
    seats_per_row: int


class SectorForSale(NamedTuple):
    """A sector with its event, read to explain a refusal; `name` is None for an event without sectors."""

    name: str | None
    price_cents: int | None
    event_name: str
    event_status: str
    seat_rows: int | None
    seats_per_row: int | None


class SectorStock(NamedTuple):
    """A sector's counters, as an administrator's change needs them."""

    capacity: int
    available: int
    half_taken: int
    seat_rows: int


class EventHead(NamedTuple):
    name: str
    status: str


class WaitlistRow(NamedTuple):
    """An entry with its owner's email, read to check who asks."""

    status: str
    code: str | None
    event_id: int
    sector: str
    quantity: int
    email: str


class WaitlistView(NamedTuple):
    """An entry with its place in line, as the owner sees it."""

    id: int
    event_id: int
    sector: str
    quantity: int
    customer: str
    status: str
    position: int
    code: str | None
    offer_expires_at: float | None
    created_at: float

    def record(self) -> WaitlistEntry:
        return WaitlistEntry(self.id, self.event_id, self.sector, self.quantity, self.customer, self.status,
                             self.position, self.code, iso(self.offer_expires_at), iso(self.created_at))


class WaitingRow(NamedTuple):
    """A waiting entry, as an offer needs it."""

    id: int
    quantity: int
    customer: str
    email: str
