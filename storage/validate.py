"""The cleaning of what callers send before any of it reaches SQL: text, emails, quantities, sectors, dates.

Each check refuses with `InvalidRequest` and a sentence a clerk can act on; the store calls these before it
opens a transaction, so a malformed request never costs a write.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import seating
from errors import InvalidRequest

MAX_TEXT = 200
MAX_EMAIL = 254
MAX_CAPACITY = 10_000_000
MAX_PRICE_CENTS = 100_000_000
MAX_SECTORS = 50

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

SectorSpec = tuple[str, int, int] | tuple[str, int, int, int]
"""(name, price_cents, capacity) for unnumbered tickets, (name, price_cents, rows, seats_per_row) for seats."""


def clean_text(value: str, what: str, limit: int = MAX_TEXT) -> str:
    text = value.strip()
    if not text:
        raise InvalidRequest(f"{what} must not be empty")
    if len(text) > limit:
        raise InvalidRequest(f"{what} is too long ({len(text)} characters, at most {limit})")
    if CONTROL_CHARACTERS.search(text):
        raise InvalidRequest(f"{what} must not contain control characters")
    return text


def clean_email(value: str) -> str:
    email = clean_text(value, "email", MAX_EMAIL)
    if not EMAIL_SHAPE.fullmatch(email):
        raise InvalidRequest(f"{email!r} does not look like an email address (name@domain.tld)")
    return email


def clean_quantity(quantity: int, max_per_order: int) -> int:
    if not 1 <= quantity <= max_per_order:
        raise InvalidRequest(f"quantity must be between 1 and {max_per_order}, not {quantity}")
    return quantity


def clean_sector_name(sector: str | None) -> str | None:
    return None if sector is None else clean_text(sector, "sector", 100)


def clean_sector(sector: Sequence[Any]) -> SectorSpec:
    if len(sector) not in (3, 4):
        raise InvalidRequest("each sector is (name, price_cents, capacity) or (name, price_cents, rows, seats_per_row)")
    name = clean_text(sector[0], "sector name", 100)
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


def clean_starts_at(value: str) -> str:
    text = clean_text(value, "starts_at", 40)
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"starts_at {text!r} is not an ISO 8601 date and time (e.g. 2027-03-13T20:00:00-03:00)") from None
    return text
