"""The clerk's interactive menu (`python cli.py` with no command): a loop of prompts for selling, confirming,
cancelling and looking up reservations, and an admin sub-menu behind the admin token.

It exists apart from cli.py because it is a different way of talking to the same box office: cli.py runs one
command for a script and exits with a code that says how it went; the menu keeps a clerk going through
refusals and outages, shows each circuit-breaker change as it happens, and ends only when the clerk quits.
Both show answers through views.py, so a table looks the same in either. Like the rest of the terminal it
holds no business rule: it asks, calls `TicketClient` and shows what the server said.

Two things happen while the clerk is typing: a hold's clock ticks on the line above the prompt, and a
waitlist offer pushed by the server pops up above it; `PromptConsole` (console.py) makes both possible
without garbling the prompt.
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from rich.panel import Panel
from rich.prompt import Confirm, IntPrompt, Prompt
from rich.table import Table
from rich.text import Text

from client_core import BreakerListener, TicketClient
from errors import Forbidden, ReservationError, SoldOut, Unavailable
from records import Event, LedgerEntry, Reservation, Sector, WaitlistEntry
from seating import SeatError, parse_selection
from terminal.console import PromptConsole
from terminal.inputs import TOKEN_ENV, parse_optional_limit, parse_sector
from terminal.views import (
    events_table,
    hold_clock,
    ledger_table,
    offer_panel,
    report_table,
    reservation_view,
    reservations_table,
    seat_map_view,
    show_refusal,
    show_unavailable,
    status_view,
    ticket_view,
    waitlist_entry_view,
)
from terminal.widgets import breakers_text, format_time, plural, styled

LEDGER_PAGE = 1000
"""Ledger entries asked for at a time when looking for the latest ones."""
class OfferDesk:
    """Shows waitlist news the moment the server pushes it, above whatever the clerk is doing.

    The client runs `arrived` on its background thread, which must be handed back quickly, so the seats are
    looked up (with the email the entry was joined with) and the panel printed on a thread of our own. If the
    lookup fails the panel shows the quantity instead: the offer itself is what the clerk must not miss.
    """

    def __init__(self, client: TicketClient, console: PromptConsole) -> None:
        self.client = client
        self.console = console
        self._emails: dict[int, str] = {}

    def remember(self, entry: WaitlistEntry, email: str) -> None:
        self._emails[entry.id] = email

    def arrived(self, entry: WaitlistEntry) -> None:
        threading.Thread(target=self._show, args=(entry,), name=f"offer-{entry.id}", daemon=True).start()

    def _show(self, entry: WaitlistEntry) -> None:
        if entry.status != "offered":
            self.console.announce(Panel(waitlist_entry_view(entry), title="Waitlist", expand=False))
            return
        self.console.announce(offer_panel(entry, self._seats(entry)))

    def _seats(self, entry: WaitlistEntry) -> tuple[str, ...]:
        email = self._emails.get(entry.id)
        if not entry.code or not email:
            return ()
        try:
            return self.client.get_reservation(entry.code, email).seats
        except (ReservationError, Unavailable):
            return ()


class BreakerWatch(BreakerListener):
    """Collects breaker transitions for the menu's status line, so a failover is seen as it happens: the
    transition, not each failure that caused it, is what the clerk needs."""

    def __init__(self) -> None:
        self._recent: deque[str] = deque(maxlen=4)

    def state_change(self, breaker: Any, old: str, new: str) -> None:
        self._recent.append(f"{breaker.name} {old} → {new}")

    def drain(self) -> list[str]:
        changes = list(self._recent)
        self._recent.clear()
        return changes


Entries = dict[str, tuple[str, Callable[[], None]]]
"""A menu: the key the clerk types, the label shown and the action run."""


def numbered(*entries: tuple[str, Callable[[], None]]) -> Entries:
    """Menu entries keyed 1, 2, 3... in the order given, so adding one never means renumbering by hand."""
    return {str(number): entry for number, entry in enumerate(entries, start=1)}


class Menu:
    """The clerk's loop: each action is one sequence of prompts, and no answer (refusal or outage) ends it."""

    def __init__(self, client: TicketClient, console: PromptConsole, admin_token: str | None = None) -> None:
        self.client = client
        self.console = console
        self.preset_token = admin_token
        """The token the terminal was started with (BILHETERIA_ADMIN_TOKEN), offered when Admin asks for one."""
        self.watch = BreakerWatch()
        client.add_breaker_listener(self.watch)
        self.offers = OfferDesk(client, console)
        self.admin = AdminMenu(self)
        self.actions = numbered(
            ("List events", self.list_events), ("Reserve tickets", self.reserve), ("Confirm a reservation", self.confirm),
            ("Cancel a reservation", self.cancel), ("Look up a reservation", self.look_up), ("Server status", self.server_status),
            ("Admin: events, reservations, report, ledger", self.admin.run), ("Seat map of a sector", self.seat_map),
            ("Waitlist: check an entry", self.waitlist_entry), ("Waitlist: leave", self.leave_waitlist),
        )

    def run(self) -> None:
        """Until the clerk quits; the exit code is the caller's (cli.py), so the menu needs none of its own."""
        while True:
            self.console.print()
            self.console.print(self.status_line())
            self.show_menu(self.actions, ("q", "Quit"))
            choice = Prompt.ask("Choose", choices=[*self.actions, "q"], console=self.console)
            if choice == "q":
                self.console.print("Bye.")
                return
            self.attempt(self.actions[choice][1])

    def attempt(self, action: Callable[[], None], passing: type[ReservationError] | None = None) -> None:
        """Run one action of a loop: a refusal or an outage is shown and the loop goes on; a refusal of the
        `passing` kind is the caller's to handle."""
        try:
            action()
        except ReservationError as exc:
            if passing is not None and isinstance(exc, passing):
                raise
            show_refusal(self.console, exc)
        except Unavailable as exc:
            show_unavailable(self.console, exc, self.client)

    def status_line(self) -> Text:
        line = Text.assemble(("Server: ", "dim"), self.client.current_server or "none yet", ("   Breakers: ", "dim"),
                             breakers_text(self.client.breaker_states()))
        changes = self.watch.drain()
        if changes:
            line.append("   Recent: " + "; ".join(changes), style="yellow")
        return line

    def ask(self, prompt: str, **options: Any) -> str:
        return Prompt.ask(Text(prompt), console=self.console, **options)

    def list_events(self) -> None:
        self.console.print(events_table(self.client.list_events()))

    def choose_event(self) -> Event | None:
        events = self.client.list_events()
        if not events:
            self.console.print("No events yet.")
            return None
        self.console.print(events_table(events))
        ids = [str(event.id) for event in events]
        event_id = IntPrompt.ask("Event id", choices=ids, show_choices=len(ids) <= 12, console=self.console)
        return next(event for event in events if event.id == event_id)

    def choose_sector(self, event: Event, seated_only: bool = False) -> Sector | None:
        sectors = [s for s in event.sectors if s.seated or not seated_only]
        if not sectors:
            self.console.print(Text(f"{event.name} has no numbered seats.", style="yellow"))
            return None
        if len(sectors) == 1:
            return sectors[0]
        return event.sector(self.ask("Sector", choices=[s.name for s in sectors]))

    def reserve(self) -> None:
        event = self.choose_event()
        sector = self.choose_sector(event) if event else None
        if event is None or sector is None:
            return
        seats: tuple[str, ...] = ()
        if sector.seated:
            self.console.print(seat_map_view(self.client.get_seat_map(event.id, sector.name)))
            seats = self.ask_seats(sector)
        quantity = len(seats) or IntPrompt.ask("Quantity", default=1, console=self.console)
        customer = self.ask("Name")
        email = self.ask("Email")
        category = self.ask("Category", choices=["full", "half"], default="full")
        try:
            reservation = self.client.reserve(event.id, quantity, customer, email, sector=sector.name, category=category,
                                              seats=seats or None)
        except SoldOut as exc:
            show_refusal(self.console, exc)
            if seats:
                self.console.print(seat_map_view(self.client.get_seat_map(event.id, sector.name)))
            else:
                self.offer_waitlist(event, sector, quantity, customer, email)
            return
        self.console.print(reservation_view(reservation))
        if reservation.seats:
            self.console.print(seat_map_view(self.client.get_seat_map(event.id, sector.name), yours=reservation.seats))
        if reservation.status == "held":
            self.pay(reservation, email)

    def ask_seats(self, sector: Sector) -> tuple[str, ...]:
        """Labels as typed (`A1 A2`, `C5-C8`), read with seating.py's rules; asks again after a bad one, so a
        mistyped seat never reaches the server. Enter leaves the choice to the box office (the best block)."""
        while True:
            text = self.ask("Seats, like A1 A2 or C5-C8 (Enter: the best seats free)", default="", show_default=False)
            if not text.strip():
                return ()
            try:
                return parse_selection(text, sector.rows, sector.seats_per_row)
            except SeatError as exc:
                self.console.print(Text(str(exc), style="red"))

    def pay(self, reservation: Reservation, email: str) -> None:
        """The fictitious payment step, with the hold's clock ticking above the prompts; then the ticket."""
        expires = format_time(reservation.expires_at)
        with self.console.clock(lambda: hold_clock(reservation.expires_at)):
            if not Confirm.ask(Text(f"Confirm now? Otherwise the hold is kept until {expires}"), default=True, console=self.console):
                self.console.print(Text(f"Hold kept: confirm {reservation.code} with the same email before {expires}.", style="yellow"))
                return
            reference = self.ask("Payment reference (fictitious: the card slip number)", default=f"POS-{secrets.randbelow(10**6):06d}")
        self.console.print(ticket_view(self.client.confirm(reservation.code, email, payment_ref=reference)))

    def offer_waitlist(self, event: Event, sector: Sector, quantity: int, customer: str, email: str) -> None:
        question = Text(f"Join the waitlist for {plural(quantity, 'ticket')} in {sector.name}? An offer pops up here when they come back")
        if not Confirm.ask(question, default=True, console=self.console):
            return
        entry = self.client.join_waitlist(event.id, quantity, customer, email, sector=sector.name, on_offer=self.offers.arrived)
        self.offers.remember(entry, email)
        self.console.print(waitlist_entry_view(entry))
        self.console.print(Text(f"Check it any time with menu 9: entry {entry.id} and {email}.", style="yellow"))

    def seat_map(self) -> None:
        event = self.choose_event()
        sector = self.choose_sector(event, seated_only=True) if event else None
        if event is not None and sector is not None:
            self.console.print(seat_map_view(self.client.get_seat_map(event.id, sector.name)))

    def entry_and_email(self) -> tuple[int, str]:
        return IntPrompt.ask("Waitlist entry number", console=self.console), self.ask("Email")

    def waitlist_entry(self) -> None:
        self.console.print(waitlist_entry_view(self.client.get_waitlist_entry(*self.entry_and_email())))

    def leave_waitlist(self) -> None:
        entry_id, email = self.entry_and_email()
        if Confirm.ask(Text(f"Take entry {entry_id} off the waitlist?"), default=False, console=self.console):
            self.console.print(waitlist_entry_view(self.client.leave_waitlist(entry_id, email)))

    def code_and_email(self) -> tuple[str, str]:
        return self.ask("Reservation code"), self.ask("Email")

    def confirm(self) -> None:
        """A hold made elsewhere (or a waitlist offer): look it up, then the same payment step as at the sale."""
        code, email = self.code_and_email()
        reservation = self.client.get_reservation(code, email)
        self.console.print(reservation_view(reservation))
        if reservation.status == "held":
            self.pay(reservation, email)

    def cancel(self) -> None:
        code, email = self.code_and_email()
        if Confirm.ask(Text(f"Cancel {code}? Its tickets go back on sale"), default=False, console=self.console):
            self.console.print(reservation_view(self.client.cancel(code, email)))

    def look_up(self) -> None:
        self.console.print(reservation_view(self.client.get_reservation(*self.code_and_email())))

    def server_status(self) -> None:
        self.console.print(status_view(self.client.status(), self.client))

    def show_menu(self, entries: Entries, last: tuple[str, str]) -> None:
        menu = Table.grid(padding=(0, 1))
        for key, (label, _) in entries.items():
            menu.add_row(Text(key, style="bold cyan"), label)
        menu.add_row(Text(last[0], style="bold cyan"), last[1])
        self.console.print(menu)

    def optional(self, prompt: str) -> str | None:
        """A free-text answer where Enter means 'leave it'."""
        return self.ask(prompt, default="", show_default=False).strip() or None

    def optional_number(self, prompt: str, parse: Callable[[str], Any] = int) -> tuple[bool, Any]:
        """(False, None) when Enter was pressed, else (True, the parsed answer); asks again until it parses."""
        while True:
            text = self.optional(prompt)
            if text is None:
                return False, None
            try:
                return True, parse(text)
            except ValueError:
                self.console.print(Text(f"{text!r} is not a whole number", style="red"))


class AdminMenu:
    """The admin's sub-menu. The token is asked once per session (masked) and checked at once; a Forbidden
    answer at any point forgets it, so the next visit asks again. The server decides everything else."""

    def __init__(self, menu: Menu) -> None:
        self.menu = menu
        self.client = menu.client
        self.console = menu.console
        self.token: str | None = None
        self.actions = numbered(
            ("Create an event", self.create_event), ("Update an event", self.update_event), ("Add a sector", self.add_sector),
            ("Pause sales", self.pause), ("Resume sales", self.resume), ("Cancel an event", self.cancel), ("Delete an event", self.delete),
            ("List reservations", self.reservations), ("Sales report", self.report), ("Ledger (last 20 entries)", self.ledger),
        )

    def run(self) -> None:
        """Until 'b'. A refusal or an outage is shown and the sub-menu stays, except Forbidden, which leaves it."""
        try:
            if self.token is None:
                self.token = self.ask_token()
            while True:
                self.console.print()
                self.console.print(Text("Admin", style="bold"), self.menu.status_line())
                self.menu.show_menu(self.actions, ("b", "Back"))
                choice = Prompt.ask("Admin action", choices=[*self.actions, "b"], console=self.console)
                if choice == "b":
                    return
                self.menu.attempt(self.actions[choice][1], passing=Forbidden)
        except Forbidden as exc:
            self.token = None
            show_refusal(self.console, exc)
            self.console.print(Text("The token was forgotten; Admin will ask for it again.", style="yellow"))

    def ask_token(self) -> str:
        """Masked; the token the terminal was started with is offered as the default. One cheap admin call (the
        first ledger entry) checks it now, so a wrong token is known before an event has been typed in."""
        preset = self.menu.preset_token or ""
        hint = f" (Enter for ${TOKEN_ENV})" if preset else ""
        token = self.menu.ask(f"Admin token{hint}", password=True, default=preset, show_default=False)
        self.client.ledger(token, since=0, limit=1)
        return token

    @property
    def admin_token(self) -> str:
        assert self.token is not None, "the sub-menu runs only with a token"
        return self.token

    def event_id(self) -> int:
        """Lists the events in a line each, then asks for an id; whether it exists is the server's answer."""
        for event in self.client.list_events():
            self.console.print(Text.assemble((f"{event.id:>4} ", "bold cyan"), event.name, "  ", styled(event.status)))
        return IntPrompt.ask("Event id", console=self.console)

    def show_event(self, event: Event, title: str) -> None:
        self.console.print(events_table([event], title=title))

    def create_event(self) -> None:
        ask = self.menu.ask
        name = ask("Event name")
        venue = ask("Venue")
        starts_at = ask("Starts at (ISO 8601, e.g. 2027-03-13T20:00:00-03:00)")
        while True:
            text = ask("Sectors as Name:price_cents:capacity, comma separated")
            try:
                sectors = [parse_sector(part) for part in text.split(",") if part.strip()]
            except ValueError as exc:
                self.console.print(Text(str(exc), style="red"))
                continue
            break
        self.show_event(self.client.create_event(self.admin_token, name, venue, starts_at, sectors), "Event created")

    def update_event(self) -> None:
        """Enter keeps a value; only what was typed is sent."""
        event = self.client.get_event(self.event_id())
        name = self.menu.optional(f"Name (Enter keeps {event.name!r})")
        venue = self.menu.optional(f"Venue (Enter keeps {event.venue!r})")
        starts_at = self.menu.optional(f"Starts at (Enter keeps {event.starts_at})")
        capacities: list[tuple[str, int]] = []
        half_limits: list[tuple[str, int | None]] = []
        for sector in event.sectors:
            given, capacity = self.menu.optional_number(f"Capacity of {sector.name} (Enter keeps {sector.capacity})")
            if given:
                capacities.append((sector.name, capacity))
            current = "none" if sector.half_limit is None else sector.half_limit
            given, limit = self.menu.optional_number(f"Half-price limit of {sector.name}, a number or none (Enter keeps {current})",
                                                     parse_optional_limit)
            if given:
                half_limits.append((sector.name, limit))
        event = self.client.update_event(self.admin_token, event.id, name=name, venue=venue, starts_at=starts_at,
                                         capacities=capacities, half_limits=half_limits)
        self.show_event(event, "Event updated")

    def add_sector(self) -> None:
        event_id = self.event_id()
        name = self.menu.ask("Sector name")
        price = IntPrompt.ask("Price in cents", console=self.console)
        capacity = IntPrompt.ask("Capacity", console=self.console)
        _, half_limit = self.menu.optional_number("Half-price limit (Enter for none)")
        self.show_event(self.client.add_sector(self.admin_token, event_id, name, price, capacity, half_limit), "Sector added")

    def pause(self) -> None:
        self.show_event(self.client.pause_event(self.admin_token, self.event_id()), "Sales paused")

    def resume(self) -> None:
        self.show_event(self.client.resume_event(self.admin_token, self.event_id()), "Sales resumed")

    def cancel(self) -> None:
        event = self.client.get_event(self.event_id())
        if not Confirm.ask(Text(f"Cancel {event.name}? Every held or confirmed reservation in it is cancelled"), default=False,
                           console=self.console):
            self.console.print("Nothing cancelled.")
            return
        event, cancelled = self.client.cancel_event(self.admin_token, event.id)
        self.show_event(event, "Event cancelled")
        self.console.print(f"{plural(cancelled, 'reservation')} cancelled.")

    def delete(self) -> None:
        event_id = self.event_id()
        self.client.delete_event(self.admin_token, event_id)
        self.console.print(f"Event {event_id} deleted.")

    def reservations(self) -> None:
        _, event_id = self.menu.optional_number("Event id (Enter for every event)")
        email = self.menu.optional("Customer email (Enter for anyone)")
        status = self.menu.optional("Status: held, confirmed, cancelled or expired (Enter for any)")
        self.console.print(reservations_table(self.client.list_reservations(self.admin_token, event_id, email, status)))

    def report(self) -> None:
        self.console.print(report_table(self.client.report(self.admin_token)))

    def ledger(self) -> None:
        self.console.print(ledger_table(latest_ledger(self.client, self.admin_token, 20), title="Ledger: the last 20 entries"))


def latest_ledger(client: TicketClient, token: str, count: int) -> tuple[LedgerEntry, ...]:
    """The newest `count` entries. The ledger is read oldest first from a sequence number, so this pages to the end."""
    latest: deque[LedgerEntry] = deque(maxlen=count)
    since = 0
    while True:
        page = client.ledger(token, since=since, limit=LEDGER_PAGE)
        latest.extend(page)
        if len(page) < LEDGER_PAGE:
            return tuple(latest)
        since = page[-1].seq
