"""The counter app: the screens a clerk moves between, and the state a session keeps across them.

The session keeps the admin token (asked once), the drafts of order forms left with Escape, and the waitlist
entries joined here; `Live` brings what the servers push. Quitting always asks, and in the demo says first
that it stops the demo's servers.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.screen import Screen

from client_core import TicketClient
from records import AvailabilityUpdate, Event, Reservation, WaitlistEntry
from terminal.app.admin import Admin
from terminal.app.catalogue import Catalogue
from terminal.app.dialogs import Confirm
from terminal.app.draft import Draft
from terminal.app.find import Find
from terminal.app.hold import Hold
from terminal.app.i18n import Words
from terminal.app.live import Live
from terminal.app.order import Order
from terminal.app.status import Status
from terminal.app.waitlist import Waitlist, entry_text

SCREENS = {"find": Find, "waitlist": Waitlist, "admin": Admin, "status": Status}


class CounterApp(App[None]):
    """One clerk's session at the counter."""

    CSS_PATH = Path(__file__).with_name("counter.tcss")
    TITLE = "bilheteria"
    ENABLE_COMMAND_PALETTE = False

    def __init__(self, client: TicketClient, words: Words, *, admin_token: str | None = None, demo_processes: int = 0) -> None:
        super().__init__()
        self.client = client
        self.words = words
        self.admin_token = admin_token
        self.demo_processes = demo_processes
        """The demo's servers, stopped when this terminal quits (0: not the demo's terminal); said before asking."""
        self.drafts: dict[int, Draft] = {}
        self.entries: dict[int, WaitlistEntry] = {}
        self.live = Live(self, client, on_update=self.availability, on_offer=self.offer_arrived, on_breaker=self.breaker_changed)

    def get_default_screen(self) -> Screen[None]:
        return Catalogue()

    @property
    def catalogue(self) -> Catalogue:
        screen = self.screen_stack[0]
        assert isinstance(screen, Catalogue), "the catalogue is the first screen"
        return screen

    # -- moving between screens ---------------------------------------------------------------------------

    def open(self, name: str) -> None:
        self.push_screen(SCREENS[name]())

    def sell(self, event: Event, sector: str) -> None:
        draft = self.drafts.get(event.id)
        self.push_screen(Order(event, draft if draft and draft.sector.casefold() == sector.casefold() else Draft(sector)))

    def pay(self, reservation: Reservation, email: str) -> None:
        self.push_screen(Hold(reservation, email))

    def new_sale(self) -> None:
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def keep_draft(self, event_id: int, draft: Draft) -> None:
        self.drafts[event_id] = draft

    def forget_draft(self, event_id: int) -> None:
        self.drafts.pop(event_id, None)

    def catalogue_event(self, event_id: int) -> Event | None:
        return self.catalogue.events.get(event_id)

    # -- what the servers push ----------------------------------------------------------------------------

    def follow(self, events: tuple[Event, ...]) -> None:
        self.run_worker(lambda: self.live.follow(events), thread=True, group="live")

    def availability(self, update: AvailabilityUpdate) -> None:
        self.catalogue.update_availability(update)
        for screen in self.screen_stack[1:]:
            if isinstance(screen, Order):
                screen.update_availability(update)

    def join_waitlist(self, event_id: int, quantity: int, customer: str, email: str, sector: str) -> WaitlistEntry:
        entry = self.live.join_waitlist(event_id, quantity, customer, email, sector)
        self.live.deliver(self.remember, entry)
        return entry

    def remember(self, entry: WaitlistEntry) -> None:
        self.entries[entry.id] = entry
        for screen in self.screen_stack:
            if isinstance(screen, Waitlist):
                screen.refresh_session()

    def waitlist_entries(self) -> list[WaitlistEntry]:
        return list(self.entries.values())

    def offer_arrived(self, entry: WaitlistEntry) -> None:
        """A toast and the waitlist screen's list: never a field, so nothing being typed is touched."""
        self.remember(entry)
        title = self.words("Waitlist offer") if entry.status == "offered" else self.words("Waitlist")
        self.notify(entry_text(entry, self.words), title=title, timeout=30 if entry.status == "offered" else 8)

    def breaker_changed(self, server: str, state: str) -> None:
        if state == "open":
            self.notify(self.words("Server {server} stopped answering; the counter uses the others.", server=server), severity="warning")
        elif state == "closed":
            self.notify(self.words("Server {server} answers again.", server=server))

    # -- leaving ----------------------------------------------------------------------------------------------

    async def action_quit(self) -> None:
        """Asks first; in the demo, says that quitting stops the demo's servers."""
        question = self.words("Quit the counter?")
        if self.demo_processes:
            warning = self.words("Quitting this counter ends the demo: its {count} processes (name server and ticket servers) stop.",
                                 count=self.demo_processes)
            question = f"{warning}\n{question}"
        self.push_screen(Confirm(question, self.words("Quit")), lambda yes: self.exit() if yes else None)

    async def action_help_quit(self) -> None:
        await self.action_quit()

    def on_unmount(self) -> None:
        self.live.close()
