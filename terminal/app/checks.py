"""The order form's checks, run on every keystroke so a slip is seen at the field where it was made.

They mirror what the server will refuse (the server still decides; these only spare the clerk a round trip
and a form typed twice): a quantity within the per-order limit and what is left, a name of sensible length,
an email of the shape name@domain.tld, seats that exist and are free on the map. Each check answers None
when the field is fine, else the sentence to show under it.
"""

from __future__ import annotations

import re

from records import SeatMap, Sector
from seating import SeatError, parse_label, parse_selection
from terminal.app.i18n import Words

MAX_PER_ORDER = 10
"""The servers' default per-order limit (server.py --max-per-order); a server set lower still refuses with its own."""
MAX_NAME = 200
EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def check_quantity(text: str, available: int, words: Words) -> str | None:
    """Within the per-order limit and what is left; a sold-out sector is no slip (the sale offers the waitlist)."""
    if not text.strip():
        return words("How many tickets?")
    if not text.strip().isdigit():
        return words("A quantity is a whole number, like 2.")
    quantity = int(text)
    if quantity < 1:
        return words("At least 1 ticket.")
    if quantity > MAX_PER_ORDER:
        return words("At most {limit} tickets per order.", limit=MAX_PER_ORDER)
    if 0 < available < quantity:
        return words("Only {left} left in this sector.", left=available)
    return None


def check_name(text: str, words: Words) -> str | None:
    if not text.strip():
        return words("The customer's name, please.")
    if len(text.strip()) > MAX_NAME:
        return words("A name has at most {limit} characters.", limit=MAX_NAME)
    return None


def check_email(text: str, words: Words) -> str | None:
    if not EMAIL_SHAPE.fullmatch(text.strip()):
        return words("An email looks like name@domain.com.")
    return None


def check_seats(text: str, seat_map: SeatMap | None, words: Words) -> str | None:
    """Empty means the box office picks the best seats; otherwise every label must be a free seat of the map."""
    if not text.strip() or seat_map is None:
        return None
    try:
        labels = parse_selection(text, seat_map.rows, seat_map.seats_per_row)
    except SeatError:
        return words("Seats look like A1 A2 or C5-C8, within rows A-{last} and seats 1-{seats}.",
                     last=chr(ord("A") + seat_map.rows - 1), seats=seat_map.seats_per_row)
    taken = [label for label in labels if seat_map.state(*parse_label(label, seat_map.rows, seat_map.seats_per_row)) != SeatMap.FREE]
    if taken:
        return words("Not free: {seats}.", seats=" ".join(taken))
    if len(labels) > MAX_PER_ORDER:
        return words("At most {limit} tickets per order.", limit=MAX_PER_ORDER)
    return None


def find_sector(sectors: tuple[Sector, ...], text: str) -> Sector | None:
    """A sector by name in any case and spacing, as a clerk types it."""
    wanted = " ".join(text.split()).casefold()
    return next((sector for sector in sectors if sector.name.casefold() == wanted), None)
