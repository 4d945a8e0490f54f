"""The records the box office hands out, and their wire form.

On the wire a record is a tuple of (field, value) pairs: RPyC copies tuples of plain values by value in
the one reply message, while any other object would travel as a proxy costing a round trip per attribute.
`dict(pairs)` gives a dict, so a stock RPyC client can read a record without this module.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

WirePairs = tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Sector:
    name: str
    price_cents: int
    capacity: int
    available: int
    half_limit: int | None = None
    """At most this many half-price tickets held or sold at once; None: no limit."""


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


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    seq: int
    at: str
    action: str
    code: str | None
    event_id: int | None
    sector: str | None
    quantity: int | None


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
    """A mail waiting in (or gone from) the outbox; `id` travels in its headers so a duplicate is recognisable."""

    id: int
    kind: str
    recipient: str
    subject: str
    body: str
    code: str | None
    attempts: int
    status: str


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


Record = TypeVar("Record", Sector, Event, Reservation, LedgerEntry, SectorReport, OutboxMessage, ServerStatus)
_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls))
    for cls in (Sector, Event, Reservation, LedgerEntry, SectorReport, OutboxMessage, ServerStatus)
}


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
    return cls(**values)
