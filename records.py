"""The records the box office hands out, and their wire form.

On the wire a record is a tuple of (field, value) pairs: RPyC copies tuples of plain values by value in
the one reply message, while any other object would travel as a proxy costing a round trip per attribute.
`dict(pairs)` gives a dict, so a stock RPyC client can read a record without this module.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

WirePairs = tuple[tuple[str, Any], ...]


class ReservationStatus(StrEnum):
    """Where a reservation stands; the values are what the database and the wire carry."""

    HELD = "held"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class WaitlistStatus(StrEnum):
    """Where a place in a waitlist stands; the values are what the database and the wire carry."""

    WAITING = "waiting"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    LAPSED = "lapsed"
    LEFT = "left"


class Transition(NamedTuple):
    """An action moves a row from one of `sources` (none: the row is new) to `target`."""

    sources: tuple[str, ...]
    target: str


ACTIVE = (ReservationStatus.HELD.value, ReservationStatus.CONFIRMED.value)
"""The statuses whose tickets (and seats) are taken from the sector."""

RESERVATION_LIFECYCLE: dict[str, Transition] = {
    "hold": Transition((), ReservationStatus.HELD.value),
    "sell": Transition((), ReservationStatus.CONFIRMED.value),
    "confirm": Transition((ReservationStatus.HELD.value,), ReservationStatus.CONFIRMED.value),
    "cancel": Transition(ACTIVE, ReservationStatus.CANCELLED.value),
    "expire": Transition((ReservationStatus.HELD.value,), ReservationStatus.EXPIRED.value),
}
"""Every way a reservation's status changes, by the ledger action that records it: the one table the store consults."""

WAITLIST_LIFECYCLE: dict[str, Transition] = {
    "join": Transition((), WaitlistStatus.WAITING.value),
    "offer": Transition((WaitlistStatus.WAITING.value,), WaitlistStatus.OFFERED.value),
    "accept": Transition((WaitlistStatus.OFFERED.value,), WaitlistStatus.ACCEPTED.value),
    "lapse": Transition((WaitlistStatus.OFFERED.value,), WaitlistStatus.LAPSED.value),
    "leave": Transition((WaitlistStatus.WAITING.value, WaitlistStatus.OFFERED.value), WaitlistStatus.LEFT.value),
}
"""Every way a waitlist entry's status changes, by action (an accepted offer is recorded as its reservation's confirm)."""


@dataclass(frozen=True, slots=True)
class Sector:
    name: str
    price_cents: int
    capacity: int
    available: int
    half_limit: int | None = None
    """At most this many half-price tickets held or sold at once; None: no limit."""
    rows: int = 0
    seats_per_row: int = 0
    """A seated sector is rows x seats_per_row (capacity is their product); 0 and 0 when tickets are unnumbered."""

    @property
    def seated(self) -> bool:
        return self.rows > 0


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    name: str
    venue: str
    starts_at: str
    status: str
    sectors: tuple[Sector, ...]

    def sector(self, name: str) -> Sector | None:
        return next((s for s in self.sectors if s.name == name), None)


@dataclass(frozen=True, slots=True)
class Reservation:
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
    created_at: str
    expires_at: str | None
    seats: tuple[str, ...] = ()
    """Labels such as ("A1", "A2") in a seated sector, front row first; empty for unnumbered tickets."""


@dataclass(frozen=True, slots=True)
class SeatMap:
    """A seated sector at one moment, compact enough for one reply: one character per seat, row A first."""

    FREE = "."
    HELD = "h"
    SOLD = "s"

    event_id: int
    sector: str
    rows: int
    seats_per_row: int
    states: str

    def state(self, row: int, seat: int) -> str:
        """FREE, HELD or SOLD for zero-based row and seat."""
        return self.states[row * self.seats_per_row + seat]

    @property
    def free(self) -> int:
        return self.states.count(self.FREE)


@dataclass(frozen=True, slots=True)
class WaitlistEntry:
    """A place in the queue for a sold-out sector: waiting, offered (a hold `code` until `offer_expires_at`),
    accepted (the offer was confirmed), lapsed (the offer ran out) or left."""

    id: int
    event_id: int
    sector: str
    quantity: int
    customer: str
    status: str
    position: int
    """1 for the next in line; 0 once the entry is no longer waiting."""
    code: str | None
    offer_expires_at: str | None
    created_at: str


@dataclass(frozen=True, slots=True)
class AvailabilityUpdate:
    """Pushed to subscribers when a sector changes: where it stands now, and its seat states when seated."""

    seq: int
    """The ledger position this update reflects: a subscriber ignores anything older than what it has shown."""
    event_id: int
    sector: str
    available: int
    capacity: int
    states: str
    """SeatMap.states for a seated sector, "" otherwise."""
    server_id: str


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    seq: int
    at: str
    action: str
    code: str | None
    event_id: int | None
    sector: str | None
    quantity: int | None
    detail: str | None = None
    """What the action needs beyond the columns above, e.g. `waitlist:7` on an offer."""


@dataclass(frozen=True, slots=True)
class SectorReport:
    """One row of the admin report: where a sector stands and what it earned (confirmed sales only)."""

    event_id: int
    event_name: str
    event_status: str
    sector: str
    price_cents: int
    capacity: int
    available: int
    held: int
    sold: int
    sold_full: int
    sold_half: int
    revenue_full_cents: int
    revenue_half_cents: int
    sold_last_minute: int
    half_limit: int | None

    @property
    def revenue_cents(self) -> int:
        return self.revenue_full_cents + self.revenue_half_cents


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A mail waiting in (or gone from) the outbox; `id` travels in its headers so a duplicate is recognisable.

    `facts` is the JSON of what the letter says, frozen when the change was made; the mailer words it
    (service/letters.py). A row written before the facts were kept carries its `subject` and `body` instead.
    """

    id: int
    kind: str
    recipient: str
    subject: str
    body: str
    code: str | None
    attempts: int
    status: str
    facts: str = ""


@dataclass(frozen=True, slots=True)
class ServerStatus:
    server_id: str
    version: str
    uptime_s: float
    connections: int
    calls: int
    errors: int
    refusals: int
    forbidden: int
    """Calls refused for a missing or wrong admin token (also counted in refusals)."""
    backend: str
    database: str
    availability: tuple[tuple[int, str, str, int], ...]
    """(event id, event name, sector, available) for every sector."""


_RECORDS = (Sector, Event, Reservation, SeatMap, WaitlistEntry, AvailabilityUpdate, LedgerEntry, SectorReport, OutboxMessage, ServerStatus)
Record = TypeVar(
    "Record", Sector, Event, Reservation, SeatMap, WaitlistEntry, AvailabilityUpdate, LedgerEntry, SectorReport, OutboxMessage, ServerStatus
)
_FIELDS: dict[type, tuple[str, ...]] = {cls: tuple(f.name for f in fields(cls)) for cls in _RECORDS}


def format_money(cents: int, currency: str = "BRL") -> str:
    """Integer cents as people read them: BRL as `R$ 1.234,50`, others as `1,234.50 EUR`."""
    sign = "-" if cents < 0 else ""
    whole, fraction = divmod(abs(cents), 100)
    if currency == "BRL":
        return f"{sign}R$ {whole:,}".replace(",", ".") + f",{fraction:02d}"
    return f"{sign}{whole:,}.{fraction:02d} {currency}"


def to_wire(record: Any) -> WirePairs:
    """A record as (field, value) pairs; nested records (an event's sectors) become nested pairs."""
    pairs = []
    for name in _FIELDS[type(record)]:
        value = getattr(record, name)
        if name == "sectors":
            value = tuple(to_wire(sector) for sector in value)
        pairs.append((name, value))
    return tuple(pairs)


def from_wire(cls: type[Record], pairs: WirePairs) -> Record:
    """Rebuild a record; fields this version does not know (added by a newer server) are ignored."""
    known = _FIELDS[cls]
    values = {name: value for name, value in pairs if name in known}
    if cls is Event:
        values["sectors"] = tuple(from_wire(Sector, sector) for sector in values["sectors"])
    elif cls is ServerStatus:
        values["availability"] = tuple(tuple(row) for row in values["availability"])
    elif cls is Reservation and "seats" in values:
        values["seats"] = tuple(values["seats"])
    return cls(**values)
