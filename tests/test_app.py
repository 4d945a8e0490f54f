"""The counter app as a clerk drives it at 80x24, through Textual's Pilot, against real servers (the cluster
fixture): a whole sale, a slip at each field, Escape at each step, pushes arriving mid-typing, a failover."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ADMIN_TOKEN
from counter_pilot import at_the_counter, screen_text, type_into, until, until_notified, until_shown, value
from procs import free_port
from textual.pilot import Pilot

from client_core import TicketClient
from terminal.app.counter import CounterApp
from terminal.app.hold import Hold
from terminal.app.order import Order
from terminal.app.seatgrid import SeatGrid

PLATEIA = 2
"""Row of the catalogue: Bachianas Brasileiras, Plateia (seated, 10 rows of 12, R$ 90,00)."""
VIP = 1
"""Row of the catalogue: Noite de Abertura, VIP (R$ 680,00, 50 tickets)."""


@pytest.fixture
def cluster(cluster_factory) -> Any:
    """One ticket server is enough for what a clerk sees; the failover test starts two."""
    return cluster_factory(servers=1)


@pytest.fixture
def client(cluster) -> Any:
    with TicketClient([cluster.name_server_address], timeout=5) as client:
        yield client


async def open_sector(pilot: Pilot[Any], row: int) -> Order:
    await until_shown(pilot, "Stand-up")
    await pilot.press(*["down"] * row, "enter")
    order = await until(pilot, lambda: isinstance(pilot.app.screen, Order) and pilot.app.screen, "the order form")
    await pilot.pause()
    return order


def test_a_whole_sale_seats_picked_on_the_map_then_paid(cluster, client) -> None:
    async def clerk(app: CounterApp, pilot: Pilot[Any]) -> None:
        await open_sector(pilot, PLATEIA)
        grid = await until(pilot, lambda: app.screen.query(SeatGrid).first() if app.screen.query(SeatGrid) else None, "the seat map")
        grid.focus()
        await pilot.press("down", "right", "right", "space", "right", "space")
        assert value(app, "seats") == "B3 B4"
        await pilot.click(SeatGrid, offset=(3 + 2 * 5, 3))
        assert value(app, "seats") == "B3 B4 C6"
        await type_into(pilot, "name", "Ana Souza")
        await type_into(pilot, "email", "ana@example.com")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, Hold), "the hold")
        held = await until_shown(pilot, "left to pay")
        assert "seats B3 B4 C6" in held and "R$\u00a0270.00" in held
        await pilot.press("enter")
        ticket = await until_shown(pilot, "Paid. Code")
        assert "Ticket" in ticket
        await pilot.press("enter")
        await until(pilot, lambda: len(app.screen_stack) == 1, "back to the catalogue")

    at_the_counter(client, clerk)
    [reservation] = client.list_reservations(ADMIN_TOKEN, email="ana@example.com")
    assert (reservation.status, reservation.seats, reservation.total_cents) == ("confirmed", ("B3", "B4", "C6"), 27000)


def test_a_slip_at_each_field_is_shown_at_once_and_nothing_is_sent(cluster, client) -> None:
    client.reserve(2, 1, "Bia", "bia@example.com", sector="Plateia", seats=["A1"])

    async def clerk(app: CounterApp, pilot: Pilot[Any]) -> None:
        order = await open_sector(pilot, PLATEIA)
        await until(pilot, lambda: order.query(SeatGrid), "the seat map")
        checks = [
            ("quantity", "0", "At least 1 ticket."), ("quantity", "11", "At most 10 tickets per order."),
            ("quantity", "x", "A quantity is a whole number"), ("seats", "Z9", "within rows A-J and seats 1-12"),
            ("seats", "A1 A2", "Not free: A1."), ("name", "N", "at most 200 characters"),
            ("email", "ana.example.com", "An email looks like name@domain.com."), ("sector", "Camarim", "Not a sector of this event"),
        ]
        for field, typed, complaint in checks:
            order.query_one(f"#{field}").value = "N" * 200 if field == "name" else ""
            await type_into(pilot, field, typed)
            shown = order.query_one(f"#{field}-error")
            assert shown.display and complaint in str(shown.render()), (field, typed, screen_text(app))
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert app.focused is not None and app.focused.id in {field, "quantity", "seats", "name", "email", "sector"}
        order.query_one("#sector").value = ""
        await type_into(pilot, "sector", "pLATEIA")
        assert "Not a sector" not in screen_text(app), "sector names are read in any case"

    at_the_counter(client, clerk)
    assert [r.customer for r in client.list_reservations(ADMIN_TOKEN)] == ["Bia"], "no slip reached the server"


def test_escape_backs_out_one_step_and_keeps_what_was_typed(cluster, client) -> None:
    async def clerk(app: CounterApp, pilot: Pilot[Any]) -> None:
        await open_sector(pilot, VIP)
        app.screen.query_one("#quantity").value = ""
        await type_into(pilot, "quantity", "2")
        await type_into(pilot, "name", "Caio")
        await pilot.press("escape")
        await until(pilot, lambda: len(app.screen_stack) == 1, "the catalogue")
        await pilot.press("escape")
        assert len(app.screen_stack) == 1, "Escape on the first screen quits nothing"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, Order), "the form again")
        assert (value(app, "quantity"), value(app, "name")) == ("2", "Caio")
        await type_into(pilot, "email", "caio@example.com")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, Hold), "the hold")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, Order), "the form after the hold")
        assert (value(app, "quantity"), value(app, "name"), value(app, "email")) == ("2", "Caio", "caio@example.com")
        await until_notified(pilot, "kept: confirm it")
        await pilot.press("escape", "q")
        await until_shown(pilot, "Quit the counter?")
        await pilot.press("escape")
        await until(pilot, lambda: "Quit the counter?" not in screen_text(app), "the question gone")
        assert app.is_running

    at_the_counter(client, clerk)
    [held] = client.list_reservations(ADMIN_TOKEN, email="caio@example.com")
    assert (held.status, held.quantity) == ("held", 2), "backing out of the hold kept it"


def test_a_sale_elsewhere_and_a_waitlist_offer_arrive_while_the_clerk_types(cluster, client) -> None:
    event = client.create_event(ADMIN_TOKEN, "Sarau", "Sala", "2027-05-01T20:00:00-03:00", [("Geral", 1000, 2)])
    other = client.reserve(event.id, 2, "Dora", "dora@example.com")

    async def clerk(app: CounterApp, pilot: Pilot[Any]) -> None:
        await until_shown(pilot, "Sarau")
        await pilot.press(*["down"] * 5, "enter")
        await until(pilot, lambda: isinstance(app.screen, Order), "the order form")
        await type_into(pilot, "name", "Sa")
        await type_into(pilot, "email", "sam@example.com")
        app.screen.query_one("#quantity").value = ""
        await type_into(pilot, "quantity", "1")
        await pilot.press("ctrl+s")
        await until_shown(pilot, "Join the waitlist for 1 in Geral")
        await pilot.press("tab", "enter")
        await until_shown(pilot, "On the waitlist: entry")
        await type_into(pilot, "name", "")
        client.cancel(other.code, "dora@example.com")
        await until_notified(pilot, "Waitlist offer")
        await pilot.press("m")
        assert value(app, "name") == "Sam", "nothing typed is lost or doubled"
        await until_shown(pilot, "1 left")  # one back on sale, the other held for the waitlist

    at_the_counter(client, clerk)


def test_a_seat_sold_elsewhere_while_it_is_chosen_is_flagged_at_once(cluster, client) -> None:
    async def clerk(app: CounterApp, pilot: Pilot[Any]) -> None:
        order = await open_sector(pilot, PLATEIA)
        await until(pilot, lambda: order.query(SeatGrid), "the seat map")
        await type_into(pilot, "seats", "E5 E6")
        await type_into(pilot, "name", "Gil")
        client.reserve(2, 1, "Hana", "hana@example.com", sector="Plateia", seats=["E6"])
        await until(pilot, lambda: "Not free: E6." in str(order.query_one("#seats-error").render()), "the seat flagged")
        assert (value(app, "seats"), value(app, "name")) == ("E5 E6", "Gil")

    at_the_counter(client, clerk)


def test_a_lapsed_hold_is_no_longer_offered_for_payment(cluster_factory) -> None:
    cluster = cluster_factory(servers=1, hold_seconds=2)

    async def clerk(app: CounterApp, pilot: Pilot[Any]) -> None:
        await open_sector(pilot, VIP)
        await type_into(pilot, "name", "Ivo")
        await type_into(pilot, "email", "ivo@example.com")
        await pilot.press("ctrl+s")
        await until_shown(pilot, "left to pay")
        await until_shown(pilot, "The hold lapsed")
        assert app.screen.query_one("#confirm").disabled

    with TicketClient([cluster.name_server_address], timeout=5) as client:
        at_the_counter(client, clerk)


def test_the_sale_completes_when_its_server_is_killed_under_the_app(cluster_factory) -> None:
    cluster = cluster_factory(servers=2)

    async def clerk(app: CounterApp, pilot: Pilot[Any]) -> None:
        await open_sector(pilot, VIP)
        await type_into(pilot, "name", "Eva")
        await type_into(pilot, "email", "eva@example.com")
        port = int((client.current_server or "").rpartition(":")[2])
        cluster.servers[port].kill()
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, Hold), "the hold, from the other server", timeout=20)
        await pilot.press("enter")
        await until_shown(pilot, "Paid. Code", timeout=20)
        assert client.current_server != f"127.0.0.1:{port}"

    with TicketClient([cluster.name_server_address], timeout=5) as client:
        at_the_counter(client, clerk)
        [sold] = client.list_reservations(ADMIN_TOKEN, email="eva@example.com")
    assert sold.status == "confirmed"


def test_quitting_the_demos_terminal_says_it_stops_the_demo(client) -> None:
    async def clerk(app: CounterApp, pilot: Pilot[Any]) -> None:
        await pilot.press("q")
        question = await until_shown(pilot, "Quit the counter?")
        assert "ends the demo: its 3 processes" in question
        await pilot.press("enter")
        assert app.is_running, "No is the default answer"
        await pilot.press("q")
        await until_shown(pilot, "Quit the counter?")
        await pilot.press("tab", "enter")
        await until(pilot, lambda: not app.is_running, "the app to end")

    at_the_counter(client, clerk, demo_processes=3)


def test_admin_asks_the_token_once_says_where_it_lives_and_pauses_an_event(cluster, client) -> None:
    async def clerk(app: CounterApp, pilot: Pilot[Any]) -> None:
        await until_shown(pilot, "Stand-up")
        await pilot.press("a")
        await until_shown(pilot, "Admin token")
        await pilot.press(*"wrong", "enter")
        complaint = await until(pilot, lambda: app.screen.query(".error") and str(app.screen.query_one(".error").render()), "a refusal")
        assert "tickets.db.admin-token" in complaint and "--admin-token" in complaint
        await pilot.press(*ADMIN_TOKEN, "enter")
        report = await until_shown(pilot, "Total")
        assert "R$\u00a00.00" in report and ADMIN_TOKEN not in report and "wrong" not in report
        await pilot.press("p")
        await until_notified(pilot, "Noite de Abertura - Rock na Praia: paused")
        await pilot.press("escape", "a")
        await until_shown(pilot, "Admin: sales report")
        assert "Admin token" not in screen_text(app), "the token is asked once per session"
        await until_shown(pilot, "Festa")
        await pilot.press(*["down"] * 5, "d")
        await until_shown(pilot, "Delete event 4?")
        await pilot.press("y")
        await until_notified(pilot, "Event 4 deleted.")

    client.create_event(ADMIN_TOKEN, "Festa", "Praça", "2027-06-01T18:00:00-03:00", [("Pista", 5000, 100)])
    at_the_counter(client, clerk)
    assert client.get_event(1).status == "paused"
    assert [event.id for event in client.list_events()] == [1, 2, 3], "the event was deleted after asking"


def test_the_demos_own_terminal_is_handed_the_token(client) -> None:
    async def clerk(app: CounterApp, pilot: Pilot[Any]) -> None:
        await until_shown(pilot, "Stand-up")
        await pilot.press("a")
        report = await until_shown(pilot, "Total")
        assert "Admin token" not in report

    at_the_counter(client, clerk, admin_token=ADMIN_TOKEN, demo_processes=3)


def test_with_no_server_the_catalogue_says_what_to_do_next() -> None:
    closed = f"127.0.0.1:{free_port()}"

    async def clerk(app: CounterApp, pilot: Pilot[Any]) -> None:
        shown = await until_shown(pilot, "Start name_server.py")
        assert "Unavailable" not in shown and "Traceback" not in shown

    with TicketClient(servers=[closed], timeout=1) as client:
        at_the_counter(client, clerk)
