"""What every screen of the counter shares: its words, the client, the app, the line of keys at the bottom."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, cast

from textual.binding import BindingType
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from client_core import TicketClient
from records import Event, Reservation, WaitlistEntry
from terminal.app.draft import Draft
from terminal.app.i18n import Words


class Counter(Protocol):
    """What a screen may ask of the session (the app, counter.py), named here so screens need not import the app."""

    client: TicketClient
    words: Words
    admin_token: str | None

    def open(self, name: str) -> None: ...
    def sell(self, event: Event, sector: str) -> None: ...
    def pay(self, reservation: Reservation, email: str) -> None: ...
    def new_sale(self) -> None: ...
    def keep_draft(self, event_id: int, draft: Draft) -> None: ...
    def forget_draft(self, event_id: int) -> None: ...
    def catalogue_event(self, event_id: int) -> Event | None: ...
    def follow(self, events: tuple[Event, ...]) -> None: ...
    def join_waitlist(self, event_id: int, quantity: int, customer: str, email: str, sector: str) -> WaitlistEntry: ...
    def waitlist_entries(self) -> list[WaitlistEntry]: ...


class Note(Static):
    """A line that takes no room while it has nothing to say: a field's slip, a refusal, a hint."""

    def __init__(self, text: str = "", **options: Any) -> None:
        super().__init__(text, **options)
        self.display = bool(text)

    def update(self, content: Any = "", *, layout: bool = True) -> None:
        super().update(content, layout=layout)
        self.display = bool(content)


class Shared:
    """Mixed into screens and dialogs: the app's words and client, named once."""

    @property
    def counter(self) -> Counter:
        return cast(Counter, cast(Any, self).app)

    @property
    def w(self) -> Words:
        return self.counter.words

    @property
    def client(self) -> TicketClient:
        return self.counter.client


class CounterScreen(Shared, Screen[None]):
    """A screen of the counter; Escape goes back one step (the screen below keeps what was typed in it)."""

    BINDINGS: ClassVar[list[BindingType]] = [("escape", "back")]

    def action_back(self) -> None:
        self.dismiss()

    def keys(self, *pairs: tuple[str, str]) -> Static:
        """The keys this screen answers to, in the clerk's language, as one line at the bottom."""
        return Static(self.key_line(pairs), classes="keys", id="keys")

    def key_line(self, pairs: tuple[tuple[str, str], ...]) -> str:
        return "  ".join(f"[b]{key}[/b] {self.w(label)}" for key, label in pairs)


class CounterDialog(Shared, ModalScreen[Any]):
    """A question over the current screen; Escape answers it with None (no, or nothing typed)."""

    BINDINGS: ClassVar[list[BindingType]] = [("escape", "back")]

    def action_back(self) -> None:
        self.dismiss(None)
