"""A reservation by its code and email: where it stands, and from here pay a hold or cancel it (after asking)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Static

from errors import BoxOfficeError
from records import Reservation
from terminal.app.base import CounterScreen, Note
from terminal.app.calls import explain, run_call
from terminal.app.dialogs import Confirm
from terminal.app.words import status_word

STATUSES = ("held", "confirmed", "cancelled", "expired")


class Find(CounterScreen):
    """Look a reservation up; the buttons offered are the ones its status allows."""

    def __init__(self) -> None:
        super().__init__()
        self.found: Reservation | None = None

    def compose(self) -> ComposeResult:
        yield Static(self.w("Find a reservation"), classes="title")
        with Vertical(id="body"):
            for key, label, hint in (("code", self.w("Code"), "ABC-123"), ("email", self.w("Email"), "")):
                with Horizontal(classes="field"):
                    yield Static(label, classes="label")
                    yield Input(id=key, compact=True, placeholder=hint)
            yield Note(id="problem", classes="error")
            yield Static("", id="found")
            with Horizontal(classes="buttons"):
                yield Button(self.w("Pay (confirm)"), id="pay", compact=True, variant="success")
                yield Button(self.w("Cancel reservation"), id="cancel", compact=True, variant="error")
        yield self.keys(("Enter", "find"), ("Escape", "back"))

    def on_mount(self) -> None:
        self.show(None)
        self.query_one("#code", Input).focus()

    def typed(self) -> tuple[str, str]:
        return self.query_one("#code", Input).value.strip().upper(), self.query_one("#email", Input).value.strip()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        code, email = self.typed()
        if event.input.id == "code" and not email:
            self.query_one("#email", Input).focus()
            return
        if not code or not email:
            self.query_one("#problem", Static).update(self.w("Type the code and the email it was made with."))
            return
        run_call(self, lambda: self.client.get_reservation(code, email), self.show, self.trouble, busy=self.query_one("#body"))

    def show(self, reservation: Reservation | None) -> None:
        self.found = reservation
        self.query_one("#problem", Static).update("")
        self.query_one("#pay").display = bool(reservation and reservation.status == "held")
        self.query_one("#cancel").display = bool(reservation and reservation.status in ("held", "confirmed"))
        if reservation is None:
            self.query_one("#found", Static).update("")
            return
        r = reservation
        tickets = " ".join(r.seats) if r.seats else str(r.quantity)
        lines = [
            self.w("{code}: {status}", code=r.code, status=status_word(r.status, self.w)),
            self.w("Customer: {name} <{email}>", name=r.customer, email=r.email),
            self.w("Event {event}, sector {sector}, tickets {tickets}", event=r.event_id, sector=r.sector, tickets=tickets),
            self.w("Total: {total}", total=self.w.money(r.total_cents)),
        ]
        if r.status == "held":
            lines.append(self.w("Held until {time}", time=self.w.when(r.expires_at)))
        self.query_one("#found", Static).update("\n".join(lines))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        found = self.found
        if found is None:
            return
        email = self.typed()[1]
        if event.button.id == "pay":
            self.counter.pay(found, email)
            return
        question = self.w("Cancel {code}? Its tickets go back on sale.", code=found.code)
        self.app.push_screen(Confirm(question, self.w("Cancel it")), lambda yes: self.cancel(found, email) if yes else None)

    def cancel(self, found: Reservation, email: str) -> None:
        run_call(self, lambda: self.client.cancel(found.code, email), self.show, self.trouble, busy=self.query_one("#body"))

    def trouble(self, exc: BoxOfficeError) -> None:
        self.query_one("#problem", Static).update(explain(exc, self.w))
