"""Seats, holds and the waitlist at the terminal: the seat map as drawn (80 columns for a 20 x 30 room), what a
clerk types, the payment step with its ticking clock, the waitlist offer popping up above the prompt, and
`watch` following another terminal's sale. Views are checked directly; everything else against real servers."""

from __future__ import annotations

import io
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console
from rich.text import Text

from menu import PromptConsole
from records import SeatMap
from seating import label
from views import hold_clock, seat_map_document, seat_map_view

ROW_LINE = re.compile(r"^([A-Z]) (.*) \1$")
GLYPHS = {"○": "free", "◐": "held", "●": "sold", "◉": "yours"}


def seat_map(rows: int, seats_per_row: int, held: tuple[str, ...] = (), sold: tuple[str, ...] = ()) -> SeatMap:
    states = []
    for row in range(rows):
        for seat in range(seats_per_row):
            name = label(row, seat)
            states.append(SeatMap.HELD if name in held else SeatMap.SOLD if name in sold else SeatMap.FREE)
    return SeatMap(7, "Plateia", rows, seats_per_row, "".join(states))


def render(renderable: object, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def drawn_seats(text: str) -> dict[str, str]:
    """Each seat's state as drawn, by label: the map read back from the screen."""
    states = {}
    for line in text.splitlines():
        match = ROW_LINE.match(line)
        if match:
            glyphs = match[2].replace(" ", "")
            for seat, glyph in enumerate(glyphs):
                states[f"{match[1]}{seat + 1}"] = GLYPHS[glyph]
    return states


def test_a_20_by_30_room_fits_80_columns_with_every_state_and_a_legend() -> None:
    room = seat_map(20, 30, held=("B2", "C5", "C6", "C7", "C8"), sold=("A1", "T30"))
    text = render(seat_map_view(room, yours=("C5", "C6", "C7", "C8")), 80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert "STAGE" in lines[1] and lines.index(next(line for line in lines if line.startswith("A "))) > 1
    seats = drawn_seats(text)
    assert len(seats) == 600
    assert (seats["A1"], seats["T30"], seats["B2"], seats["A2"]) == ("sold", "sold", "held", "free")
    assert [seats[f"C{n}"] for n in range(4, 10)] == ["free", "yours", "yours", "yours", "yours", "free"]
    assert "○ free 593   ◐ held 5   ● sold 2   ◉ yours 4" in text
    numbers = lines[2]
    assert numbers.split() == ["1", "5", "10", "15", "20", "25", "30"]
    a_row = next(line for line in lines if line.startswith("A "))
    assert a_row.index("●") == numbers.index("1") and a_row.rindex("○") == numbers.index("30") + 1


def test_the_map_spreads_out_when_there_is_room_and_packs_50_seats_into_80_columns() -> None:
    small = render(seat_map_view(seat_map(3, 12, sold=("B12",))), 80).splitlines()
    assert small[2].split() == [str(n) for n in range(1, 13)]
    assert drawn_seats("\n".join(small))["B12"] == "sold"
    wide = render(seat_map_view(seat_map(26, 50, held=("Z50",))), 80)
    assert max(len(line) for line in wide.splitlines()) <= 80
    assert drawn_seats(wide)["Z50"] == "held" and len(drawn_seats(wide)) == 1300


def test_the_map_as_a_document_names_the_taken_seats() -> None:
    document = seat_map_document(seat_map(2, 3, held=("A2",), sold=("B1", "B3")))
    assert (document["free"], document["held"], document["sold"]) == (3, 1, 2)
    assert (document["held_seats"], document["sold_seats"], document["states"]) == (["A2"], ["B1", "B3"], ".h.s.s")


def test_the_hold_clock_counts_down_to_expires_at() -> None:
    now = datetime(2027, 5, 1, 20, 0, 0, tzinfo=UTC)
    assert "9:58 left to pay" in hold_clock((now + timedelta(seconds=598)).isoformat(), now).plain
    assert "0:05 left to pay" in hold_clock((now + timedelta(seconds=5)).isoformat(), now).plain
    assert "Hold ended" in hold_clock((now - timedelta(seconds=1)).isoformat(), now).plain


class Keyboard:
    """Stands for stdin: while the console waits on it, another thread announces; then the clerk presses Enter."""

    def __init__(self, console: PromptConsole, announcement: str) -> None:
        self.console = console
        self.announcement = announcement

    def readline(self) -> str:
        other = threading.Thread(target=self.console.announce, args=(Text(self.announcement),))
        other.start()
        other.join(5)
        return "2\n"


def test_an_announcement_lands_above_the_prompt_and_the_prompt_is_drawn_again() -> None:
    screen = io.StringIO()
    console = PromptConsole(file=screen, force_terminal=True, color_system=None, width=80)
    assert console.input("Choose: ", stream=Keyboard(console, "OFFER K7Q-2M9")) == "2\n"
    assert screen.getvalue() == "Choose: \r\x1b[2KOFFER K7Q-2M9\nChoose: "
    with console.clock(lambda: Text("Hold: 9:58 left to pay")):
        console.input("Payment reference: ", stream=Keyboard(console, "OFFER 2"))
    assert screen.getvalue().endswith("Hold: 9:58 left to pay\nPayment reference: \r\x1b[2K\x1b[1A\r\x1b[2KOFFER 2\n"
                                      "Hold: 9:58 left to pay\nPayment reference: ")
    console.announce(Text("no prompt"))
    assert screen.getvalue().endswith("Payment reference: no prompt\n")


@pytest.mark.parametrize("args", [["reserve", "1", "--name", "A", "--email", "a@b.co"], ["confirm", "K7Q-2M9"],
                                  ["watch", "1", "--json"], ["waitlist"], ["waitlist", "join", "1", "2", "Ana"]])
def test_seat_and_waitlist_usage_errors_exit_2(args: list[str]) -> None:
    from test_cli import run_cli

    result = run_cli(*args)
    assert result.returncode == 2, (args, result.stdout, result.stderr)
    assert "usage:" in result.stderr
