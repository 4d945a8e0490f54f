"""The waitlist: the entries joined at this counter with their offers as the servers push them, and any entry
checked or taken off the list by its number and email."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Static

from errors import BoxOfficeError
from records import WaitlistEntry
from terminal.app.base import CounterScreen, Note
from terminal.app.calls import explain, run_call
from terminal.app.dialogs import Confirm
from terminal.app.i18n import Words
from terminal.app.words import status_word


def entry_text(entry: WaitlistEntry, words: Words) -> str:
    """One entry in a line or two: who, what, where it stands, and the offer's code and end when there is one."""
    text = words("Entry {id}: {customer}, {count} in {sector}: {status}", id=entry.id, customer=entry.customer, count=entry.quantity,
                 sector=entry.sector, status=status_word(entry.status, words))
    if entry.position:
        text += " · " + words("number {position} in line", position=entry.position)
    if entry.code:
        text += "\n  " + words("Offer: hold {code} until {time}; confirm it with f (find a code).", code=entry.code,
                               time=words.when(entry.offer_expires_at))
    return text


class Waitlist(CounterScreen):
    """This session's entries (kept current by pushed offers) and a look-up of any entry."""

    def compose(self) -> ComposeResult:
        yield Static(self.w("Waitlist"), classes="title")
        with Vertical(id="body"):
            yield Static("", id="session")
            for key, label in (("entry", self.w("Entry")), ("email", self.w("Email"))):
                with Horizontal(classes="field"):
                    yield Static(label, classes="label")
                    yield Input(id=key, compact=True)
            yield Note(id="problem", classes="error")
            yield Static("", id="found")
            with Horizontal(classes="buttons"):
                yield Button(self.w("Check"), id="check", compact=True, variant="primary")
                yield Button(self.w("Leave the waitlist"), id="leave", compact=True, variant="error")
        yield self.keys(("Enter", "check"), ("Escape", "back"))

    def on_mount(self) -> None:
        self.refresh_session()
        self.query_one("#entry", Input).focus()

    def refresh_session(self) -> None:
        entries = self.counter.waitlist_entries()
        lines = [entry_text(entry, self.w) for entry in entries] or [self.w("No entries joined at this counter yet.")]
        self.query_one("#session", Static).update("\n".join(lines))

    def typed(self) -> tuple[int, str] | None:
        text, email = self.query_one("#entry", Input).value.strip(), self.query_one("#email", Input).value.strip()
        if not text.isdigit() or not email:
            self.query_one("#problem", Static).update(self.w("Type the entry number and the email it was joined with."))
            return None
        return int(text), email

    def on_input_submitted(self) -> None:
        self.check()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "check":
            self.check()
            return
        typed = self.typed()
        if typed is not None:
            question = self.w("Take entry {id} off the waitlist?", id=typed[0])
            self.app.push_screen(Confirm(question, self.w("Take it off")), lambda yes: self.leave(*typed) if yes else None)

    def check(self) -> None:
        typed = self.typed()
        if typed is not None:
            run_call(self, lambda: self.client.get_waitlist_entry(*typed), self.show, self.trouble, busy=self.query_one("#body"))

    def leave(self, entry_id: int, email: str) -> None:
        run_call(self, lambda: self.client.leave_waitlist(entry_id, email), self.show, self.trouble, busy=self.query_one("#body"))

    def show(self, entry: WaitlistEntry) -> None:
        self.query_one("#problem", Static).update("")
        self.query_one("#found", Static).update(entry_text(entry, self.w))

    def trouble(self, exc: BoxOfficeError) -> None:
        self.query_one("#problem", Static).update(explain(exc, self.w))
