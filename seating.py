"""Seat labels and seat choice: the geometry of a seated sector, with no database and no network.

A seated sector is `rows` x `seats_per_row`; rows are lettered from the stage (A is the front row) and
seats are numbered from 1, so `C5` is the fifth seat of the third row. Both the server (to pick the best
block) and the terminal (to read what a clerk typed) use this module, so the two never disagree on what
a label means.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_ROWS = 26
"""One letter per row, A to Z."""
MAX_SEATS_PER_ROW = 50
_LABEL = re.compile(r"([A-Z])([1-9][0-9]?)")
_RANGE = re.compile(r"([A-Z])([1-9][0-9]?)-(?:([A-Z]))?([1-9][0-9]?)")


class SeatError(ValueError):
    """A seat label or selection that does not name seats of this sector."""


def row_letter(row: int) -> str:
    return chr(ord("A") + row)


def label(row: int, seat: int) -> str:
    """`label(0, 0)` is `A1`: zero-based row and seat in, the printed label out."""
    return f"{row_letter(row)}{seat + 1}"


def parse_label(text: str, rows: int, seats_per_row: int) -> tuple[int, int]:
    """Zero-based (row, seat) of a label such as `C5`, checked against the sector's size."""
    match = _LABEL.fullmatch(text.strip().upper())
    if match is None:
        raise SeatError(f"{text[:10]!r} is not a seat (a row letter and a seat number, like A1)")
    row, seat = ord(match[1]) - ord("A"), int(match[2]) - 1
    if row >= rows or seat >= seats_per_row:
        raise SeatError(f"there is no seat {match[0]}: rows A-{row_letter(rows - 1)}, seats 1-{seats_per_row}")
    return row, seat


def parse_selection(text: str, rows: int, seats_per_row: int) -> tuple[str, ...]:
    """What a clerk types, `A1 A2` or `C5-C8` or both, as labels in the order given, without repeats."""
    chosen: list[str] = []
    for word in text.replace(",", " ").upper().split():
        match = _RANGE.fullmatch(word)
        if match is None:
            row, seat = parse_label(word, rows, seats_per_row)
            chosen.append(label(row, seat))
            continue
        if match[3] not in (None, match[1]):
            raise SeatError(f"{word}: a range stays in one row (like C5-C8)")
        row, first = parse_label(f"{match[1]}{match[2]}", rows, seats_per_row)
        _, last = parse_label(f"{match[1]}{match[4]}", rows, seats_per_row)
        step = 1 if last >= first else -1
        chosen.extend(label(row, seat) for seat in range(first, last + step, step))
    if not chosen:
        raise SeatError("no seats given")
    if len(set(chosen)) != len(chosen):
        raise SeatError("a seat is named twice")
    return tuple(chosen)


def canonical(labels: Iterable[str], rows: int, seats_per_row: int) -> tuple[str, ...]:
    """Labels checked and sorted front row first, left to right: how a reservation lists its seats."""
    positions = sorted(parse_label(text, rows, seats_per_row) for text in labels)
    if len(set(positions)) != len(positions):
        raise SeatError("a seat is named twice")
    return tuple(label(row, seat) for row, seat in positions)


def best_block(taken: set[str], rows: int, seats_per_row: int, quantity: int) -> tuple[str, ...] | None:
    """The best `quantity` adjacent free seats in one row: the front-most row that has such a block, and in
    it the block whose middle is closest to the middle of the row (ties go to the left). None if no row fits."""
    middle = (seats_per_row - 1) / 2
    for row in range(rows):
        free = [label(row, seat) not in taken for seat in range(seats_per_row)]
        best: int | None = None
        run = 0
        for seat in range(seats_per_row):
            run = run + 1 if free[seat] else 0
            if run >= quantity:
                start = seat - quantity + 1
                if best is None or abs(start + (quantity - 1) / 2 - middle) < abs(best + (quantity - 1) / 2 - middle):
                    best = start
        if best is not None:
            return tuple(label(row, seat) for seat in range(best, best + quantity))
    return None
