"""A hold and its payment: the reservation, a clock counting down to its end, the payment step, then the ticket.

The clock is the terminal's own (a second-by-second redraw of one line); when it reaches zero the payment is
no longer offered, because the server would refuse it. Escape goes back with the hold kept, and says how to
confirm it later.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Static

from errors import BoxOfficeError
from records import Reservation
from terminal.app.base import CounterScreen, Note
from terminal.app.calls import explain, run_call


def seconds_left(expires_at: str | None, now: datetime | None = None) -> int | None:
    """Whole seconds until the hold ends by this terminal's clock; None when it has no end (it is not a hold)."""
    if not expires_at:
        return None
    try:
        ends = datetime.fromisoformat(expires_at)
    except ValueError:
        return None
    return int((ends - (now or datetime.now(ends.tzinfo))).total_seconds())


class Hold(CounterScreen):
    """Pay (confirm) a held reservation; after it the same screen shows the ticket."""

    BINDINGS: ClassVar[list[BindingType]] = [("escape", "back")]

    def __init__(self, reservation: Reservation, email: str) -> None:
        super().__init__()
        self.reservation = reservation
        self.email = email
        self.paying = False

    def compose(self) -> ComposeResult:
        yield Static(self.w("Hold {code}", code=self.reservation.code), classes="title")
        with Vertical(id="body"):
            yield Static(self.summary(), id="summary")
            yield Static("", id="clock")
            with Horizontal(classes="field", id="payment"):
                yield Static(self.w("Payment"), classes="label")
                yield Input(f"POS-{secrets.randbelow(10**6):06d}", id="reference", compact=True)
            yield Note(id="problem", classes="error")
            yield Button(self.w("Confirm payment"), id="confirm", compact=True, variant="success")
        yield self.keys(("Enter", "confirm payment"), ("Escape", "back, keeping the hold"))

    def on_mount(self) -> None:
        self.tick()
        self.set_interval(1.0, self.tick)
        self.query_one("#confirm", Button).focus()

    def summary(self) -> str:
        r = self.reservation
        if r.seats:
            tickets = self.w("seats {seats}", seats=" ".join(r.seats))
        else:
            tickets = self.w("1 ticket") if r.quantity == 1 else self.w("{count} tickets", count=r.quantity)
        category = self.w("half price") if r.category == "half" else self.w("full price")
        return "\n".join((
            self.w("Customer: {name} <{email}>", name=r.customer, email=r.email),
            self.w("Sector: {sector}, {tickets}, {category}", sector=r.sector, tickets=tickets, category=category),
            self.w("Total: {total}", total=self.w.money(r.total_cents)),
        ))

    def tick(self) -> None:
        if self.reservation.status != "held":
            return
        left = seconds_left(self.reservation.expires_at)
        clock = self.query_one("#clock", Static)
        if left is not None and left <= 0:
            clock.update(self.w("The hold lapsed at {time}: its tickets are back on sale.", time=self.w.when(self.reservation.expires_at)))
            self.query_one("#confirm", Button).disabled = True
            return
        if left is not None:
            minutes, seconds = divmod(left, 60)
            clock.update(self.w("{clock} left to pay (until {time})", clock=f"{minutes}:{seconds:02d}",
                                time=self.w.when(self.reservation.expires_at)))

    def on_input_submitted(self) -> None:
        self.confirm()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "confirm":
            self.confirm()
        else:
            self.counter.new_sale()

    def confirm(self) -> None:
        if self.paying or self.reservation.status != "held" or self.query_one("#confirm", Button).disabled:
            return
        reference = self.query_one("#reference", Input).value.strip() or None
        self.paying = True
        run_call(self, lambda: self.client.confirm(self.reservation.code, self.email, payment_ref=reference), self.paid, self.trouble,
                 busy=self.query_one("#body"))

    def paid(self, reservation: Reservation) -> None:
        self.paying = False
        self.reservation = reservation
        self.counter.forget_draft(reservation.event_id)
        self.query_one(".title", Static).update(self.w("Ticket {code}", code=reservation.code))
        self.query_one("#summary", Static).update(self.summary())
        self.query_one("#clock", Static).update(self.w("Paid. Code {code}: the customer shows it with their email.", code=reservation.code))
        self.query_one("#payment").display = False
        self.query_one("#problem", Static).update("")
        button = self.query_one("#confirm", Button)
        button.display = False
        self.query_one("#keys", Static).update(self.key_line((("Enter", "new sale"), ("Escape", "back to the catalogue"))))
        done = Button(self.w("New sale"), id="new", compact=True, variant="primary")
        self.query_one("#body").mount(done)
        done.focus()

    def trouble(self, exc: BoxOfficeError) -> None:
        self.paying = False
        self.query_one("#problem", Static).update(explain(exc, self.w))

    def action_back(self) -> None:
        """Not while the payment is on its way: whether it went through is what the clerk must see."""
        if self.paying:
            return
        if self.reservation.status == "held":
            self.app.notify(self.w("Hold {code} kept: confirm it with the email before {time} (f: find a code).",
                                   code=self.reservation.code, time=self.w.when(self.reservation.expires_at)))
            self.dismiss()
        else:
            self.counter.new_sale()
