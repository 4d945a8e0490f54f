"""Seats, holds and the waitlist at the terminal's script commands: the seat map as drawn (80 columns for a 20 x 30
room), typed selections, the waitlist from join to offer to confirm, the prompt console's announcements, and
`watch` following another terminal's sale. Views are checked directly; everything else against real servers.
The counter app's own seat map, clock and offers are tests/test_app.py's."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pexpect
import pytest
from conftest import ADMIN_TOKEN
from procs import PseudoTerminal, wait_until
from rich.console import Console
from rich.text import Text
from test_cli import CLEAN_ENV

from cli import main
from client_core import TicketClient
from records import AvailabilityUpdate, Event, SeatMap, Sector
from seating import label
from terminal.console import PromptConsole
from terminal.views import seat_map_document, seat_map_view
from terminal.watch import EventWatch

ROW_LINE = re.compile(r"^([A-Z]) (.*) \1\r?$")
GLYPHS = {"○": "free", "◐": "held", "●": "sold", "◉": "yours"}
ANA = ("--name", "Ana Souza", "--email", "ana@example.com")


def seat_map(rows: int, seats_per_row: int, held: tuple[str, ...] = (), sold: tuple[str, ...] = ()) -> SeatMap:
    states = []
    for row in range(rows):
        for seat in range(seats_per_row):
            name = label(row, seat)
            states.append(SeatMap.HELD if name in held else SeatMap.SOLD if name in sold else SeatMap.FREE)
    return SeatMap(7, "Plateia", rows, seats_per_row, "".join(states))


def render(renderable: object, width: int) -> str:
    """As cli.py's console draws it (soft wrap: a line too long runs over instead of wrapping)."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None, soft_wrap=True)
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
def test_seat_and_waitlist_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2 and "usage:" in capsys.readouterr().err


class FakeSubscription:
    server = "127.0.0.1:9"

    def close(self) -> None:
        self.server = None


class FakeClient:
    """Just what EventWatch asks of a TicketClient, so the order of readings and pushes can be chosen."""

    def __init__(self) -> None:
        self.on_update: Callable[[AvailabilityUpdate], None] | None = None

    def subscribe(self, event_id: int, on_update: Callable[[AvailabilityUpdate], None]) -> FakeSubscription:
        self.on_update = on_update
        on_update(AvailabilityUpdate(4, event_id, "Pista", 7, 10, "", "server-a"))
        return FakeSubscription()

    def get_event(self, event_id: int) -> Event:
        return Event(event_id, "Ópera", "Theatro", "2027-05-01T20:00:00-03:00", "on_sale",
                     (Sector("Plateia", 12000, 6, 6, None, 2, 3), Sector("Pista", 5000, 10, 10)))

    def get_seat_map(self, event_id: int, sector: str) -> SeatMap:
        return SeatMap(event_id, sector, 2, 3, "......")


def test_watch_keeps_the_newest_update_per_sector_and_names_the_subscriptions_server() -> None:
    client = FakeClient()
    watch = EventWatch(client, 5)  # type: ignore[arg-type]
    watch.start()
    assert watch.sectors == {"Plateia": (6, 6), "Pista": (7, 10)}, "a reading must not overwrite an earlier push"
    assert client.on_update is not None
    client.on_update(AvailabilityUpdate(9, 5, "Plateia", 4, 6, ".s..h.", "server-a"))
    client.on_update(AvailabilityUpdate(8, 5, "Plateia", 6, 6, "......", "server-a"))
    client.on_update(AvailabilityUpdate(10, 6, "Plateia", 0, 6, "ssssss", "server-a"))
    text = render(watch.frame(), 80)
    assert "Subscribed at 127.0.0.1:9" in text and "2 updates" in text
    assert max(len(line) for line in text.splitlines()) <= 80, text
    seats = drawn_seats(text)
    assert (seats["A2"], seats["B2"], seats["A1"]) == ("sold", "held", "free")


# -- against real servers ---------------------------------------------------------------------------------------

Script = Callable[..., tuple[int, Any]]


@pytest.fixture
def script(cluster: Any, capsys: pytest.CaptureFixture[str]) -> Script:
    """`cli.py --json ARGS` against the cluster, run in this process: the same parsing, calls and exit code,
    without an interpreter's start-up for each (the pseudo-terminal tests below run the real program)."""

    def run(*args: str) -> tuple[int, Any]:
        code = main(["--name-server", cluster.name_server_address, "--json", *args])
        return code, json.loads(capsys.readouterr().out)

    return run



def seated_event(cluster: Any, rows: int, seats_per_row: int) -> int:
    with TicketClient([cluster.name_server_address]) as client:
        event = client.create_event(ADMIN_TOKEN, "Ópera no Municipal", "Theatro", "2027-05-01T20:00:00-03:00",
                                    [("Plateia", 12000, rows, seats_per_row)])
    return event.id


def terminal(cluster: Any, *args: str, columns: int = 80) -> PseudoTerminal:
    """`cli.py ARGS` in a pseudo-terminal `columns` wide, its output kept for assertions."""
    return PseudoTerminal(["cli.py", "--name-server", cluster.name_server_address, *args], {**CLEAN_ENV, "TERM": "xterm"}, timeout=15,
                          dimensions=(60, columns))


def screen_until(pty: PseudoTerminal, wanted: Callable[[str], Any], what: str, timeout: float = 15) -> Any:
    """Read the terminal until `wanted(screen)` is truthy (screen: everything shown so far, without escapes)."""
    deadline = time.monotonic() + timeout
    while True:
        found = wanted(pty.screen)
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what}; the screen:\n" + pty.screen[-3000:])
        try:
            pty.child.read_nonblocking(65536, timeout=0.5)
        except pexpect.TIMEOUT:
            continue


def test_seats_draws_the_servers_map_in_80_columns(cluster, script: Script) -> None:
    event_id = seated_event(cluster, 20, 30)
    code, sold = script("reserve", str(event_id), "--sector", "Plateia", "--seats", "A1 A2", "--confirm", *ANA)
    assert (code, sold["seats"], sold["quantity"], sold["status"]) == (0, ["A1", "A2"], 2, "confirmed"), sold
    code, held = script("reserve", str(event_id), "--sector", "Plateia", "--seats", "c5-c8", *ANA)
    assert (code, held["seats"], held["status"]) == (0, ["C5", "C6", "C7", "C8"], "held"), held

    pty = terminal(cluster, "seats", str(event_id), "Plateia")
    child = pty.child
    child.expect(pexpect.EOF)
    child.close()
    screen = pty.screen
    assert child.exitstatus == 0, screen
    assert max(len(line) for line in screen.replace("\r", "").splitlines()) <= 80, screen
    seats = drawn_seats(screen)
    assert len(seats) == 600 and "STAGE" in screen and "free 594" in screen
    assert {name for name, state in seats.items() if state == "sold"} == {"A1", "A2"}
    assert {name for name, state in seats.items() if state == "held"} == {"C5", "C6", "C7", "C8"}

    code, document = script("seats", str(event_id), "Plateia")
    assert (code, document["sold_seats"], document["held_seats"], document["free"]) == (0, ["A1", "A2"], ["C5", "C6", "C7", "C8"], 594)


def test_typed_selections_reach_the_server_and_bad_ones_never_leave_the_terminal(cluster, script: Script,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    event_id = seated_event(cluster, 4, 8)
    reserve = ("reserve", str(event_id), "--sector", "Plateia", *ANA)
    code, error = script(*reserve, "--seats", "E1")
    assert (code, error["error"]) == (2, "SeatError") and "rows A-D, seats 1-8" in error["message"]
    assert main(["--name-server", cluster.name_server_address, *reserve, "--seats", "A1 a1"]) == 2
    assert "Bad seats: a seat is named twice" in capsys.readouterr().err
    code, first = script(*reserve, "--seats", "A1 A2")
    assert (code, first["seats"]) == (0, ["A1", "A2"]), first
    code, clash = script(*reserve, "--seats", "A2-A4")
    assert code == 1 and "A2" in clash["message"], clash
    code, best = script("reserve", str(event_id), "3", "--sector", "Plateia", *ANA)
    assert code == 0 and len(best["seats"]) == 3, best
    _, document = script("seats", str(event_id), "Plateia")
    assert sorted(document["held_seats"]) == sorted(["A1", "A2", *best["seats"]])


def test_the_waitlist_from_join_to_offer_to_confirm_through_the_script_commands(cluster, script: Script) -> None:
    event_id = seated_event(cluster, 1, 2)
    with TicketClient([cluster.name_server_address]) as client:
        hold = client.reserve(event_id, 2, "Bia", "bia@example.com", sector="Plateia")
    code, waiting = script("waitlist", "join", str(event_id), "2", "Ana Souza", "ana@example.com", "--sector", "Plateia")
    assert (code, waiting["status"], waiting["position"]) == (0, "waiting", 1), waiting
    entry_id = str(waiting["id"])
    code, _ = script("cancel", hold.code, "--email", "bia@example.com")
    assert code == 0
    offered = wait_until(lambda: script("waitlist", "show", entry_id, "ana@example.com")[1]["code"], what="the offer")
    with TicketClient([cluster.name_server_address]) as client:
        assert client.get_reservation(offered, "ana@example.com").seats == ("A1", "A2")

    code, shown = script("waitlist", "show", entry_id, "ana@example.com")
    assert (code, shown["status"], shown["code"]) == (0, "offered", offered), shown
    code, error = script("waitlist", "show", entry_id, "someone@example.com")
    assert (code, error["error"]) == (1, "NotFound")
    code, joined = script("waitlist", "join", str(event_id), "1", "Caio", "caio@example.com", "--sector", "Plateia")
    assert (code, joined["status"], joined["position"]) == (0, "waiting", 1), joined
    code, left = script("waitlist", "leave", str(joined["id"]), "caio@example.com")
    assert (code, left["status"]) == (0, "left"), left
    code, confirmed = script("confirm", offered, "ana@example.com", "--payment-ref", "SLIP-7")
    assert (code, confirmed["status"], confirmed["seats"]) == (0, "confirmed", ["A1", "A2"]), confirmed


def last_frame(screen: str, event_id: int) -> str:
    return screen.split(f"Event {event_id} · ")[-1]


def subscribed_port(frame: str) -> int | None:
    found = re.search(r"Subscribed at 127\.0\.0\.1:(\d+)", frame)
    return int(found.group(1)) if found else None


def test_watch_follows_another_terminals_sale_and_survives_its_servers_death(cluster) -> None:
    event_id = seated_event(cluster, 4, 8)
    with terminal(cluster, "watch", str(event_id)) as pty:
        child = pty.child
        first = screen_until(pty, lambda screen: subscribed_port(last_frame(screen, event_id)), "the server line")
        with TicketClient([cluster.name_server_address]) as other:
            other.reserve(event_id, 1, "Ana", "ana@example.com", seats=["B3"], confirm=True)
        screen_until(pty, lambda screen: drawn_seats(last_frame(screen, event_id)).get("B3") == "sold", "B3 sold")
        cluster.servers[first].kill()
        screen_until(pty, lambda screen: subscribed_port(last_frame(screen, event_id)) not in (None, first), "another server")
        with TicketClient([cluster.name_server_address]) as other:
            other.reserve(event_id, 1, "Ana", "ana@example.com", seats=["D8"])
        screen_until(pty, lambda screen: drawn_seats(last_frame(screen, event_id)).get("D8") == "held", "D8 held")
        child.sendintr()
        child.expect(pexpect.EOF)
    screen = pty.screen
    assert child.exitstatus == 130 and "Traceback" not in screen, screen
