"""The seat map a clerk moves through with the arrow keys (or the mouse) and picks seats from.

The map shows each seat's state as the servers last pushed it; the clerk's choice is a set of labels kept
apart from those states, so a live update redraws the map without touching what was chosen. Space, Enter or
a click toggles the seat under the cursor and tells the form (`SeatGrid.Toggled`), which writes the seats field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from records import SeatMap
from seating import label, row_letter

CELL = 2
"""Columns per seat: the seat's mark and a space."""
MARGIN = 3
"""Columns before the first seat: the row letter and two spaces."""
MARKS = {SeatMap.FREE: ("·", "green"), SeatMap.HELD: ("h", "yellow"), SeatMap.SOLD: ("x", "red")}


class SeatGrid(Widget, can_focus=True):
    """One seated sector's map: rows lettered from the stage, a cursor, the chosen seats in reverse video."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1, 0)", show=False), Binding("down", "move(1, 0)", show=False),
        Binding("left", "move(0, -1)", show=False), Binding("right", "move(0, 1)", show=False),
        Binding("space,enter", "toggle", show=False),
    ]
    DEFAULT_CSS = "SeatGrid { width: auto; height: auto; }"
    cursor: reactive[tuple[int, int]] = reactive((0, 0))

    @dataclass
    class Toggled(Message):
        """The clerk picked or dropped a seat; `chosen` is the whole choice, in the order picked."""

        chosen: tuple[str, ...]

    def __init__(self, seat_map: SeatMap, chosen: tuple[str, ...] = (), **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.seat_map = seat_map
        self.chosen: tuple[str, ...] = chosen

    def show_states(self, states: str) -> None:
        """A pushed update: new states, the same choice and cursor."""
        self.seat_map = SeatMap(self.seat_map.event_id, self.seat_map.sector, self.seat_map.rows, self.seat_map.seats_per_row, states)
        self.refresh()

    def choose(self, chosen: tuple[str, ...]) -> None:
        """What the seats field says now (the clerk typed it)."""
        self.chosen = chosen
        self.refresh()

    def render(self) -> Text:
        grid = self.seat_map
        numbers = "".join(f"{seat + 1:<{CELL}}" if (seat + 1) % 5 == 0 or seat == 0 else " " * CELL for seat in range(grid.seats_per_row))
        text = Text(" " * MARGIN + numbers.rstrip() + "\n", style="dim")
        for row in range(grid.rows):
            text.append(f"{row_letter(row)}  ", style="bold")
            for seat in range(grid.seats_per_row):
                mark, colour = MARKS.get(grid.state(row, seat), ("?", ""))
                style = colour
                if label(row, seat) in self.chosen:
                    mark, style = "■", "bold reverse cyan"
                if (row, seat) == self.cursor and self.has_focus:
                    style += " underline on grey37"
                text.append(mark, style=style)
                text.append(" ")
            text.append("\n")
        return text

    def get_content_height(self, *_: object) -> int:
        return self.seat_map.rows + 1

    def get_content_width(self, *_: object) -> int:
        return MARGIN + CELL * self.seat_map.seats_per_row

    def action_move(self, rows: int, seats: int) -> None:
        row, seat = self.cursor
        self.cursor = (min(max(row + rows, 0), self.seat_map.rows - 1), min(max(seat + seats, 0), self.seat_map.seats_per_row - 1))

    def action_toggle(self) -> None:
        row, seat = self.cursor
        if self.seat_map.state(row, seat) != SeatMap.FREE:
            self.app.bell()
            return
        here = label(row, seat)
        self.chosen = tuple(s for s in self.chosen if s != here) if here in self.chosen else (*self.chosen, here)
        self.refresh()
        self.post_message(self.Toggled(self.chosen))

    def on_click(self, event: events.Click) -> None:
        row, seat = event.y - 1, (event.x - MARGIN) // CELL
        if 0 <= row < self.seat_map.rows and 0 <= seat < self.seat_map.seats_per_row and event.x >= MARGIN:
            self.focus()
            self.cursor = (row, seat)
            self.action_toggle()

    def watch_cursor(self) -> None:
        self.refresh()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
