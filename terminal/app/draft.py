"""What was typed into an order form, kept by the session when the clerk backs out with Escape."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Draft:
    """What was typed into an event's order form, kept while the clerk looks elsewhere."""

    sector: str
    quantity: str = "1"
    seats: str = ""
    name: str = ""
    email: str = ""
    category: str = "full"
