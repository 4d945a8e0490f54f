"""Questions asked over a screen: yes or no before anything that cannot be undone, and the admin token."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Static

from terminal.app.base import CounterDialog


class Confirm(CounterDialog):
    """Yes or no; No is focused, so Enter pressed by habit never cancels or quits anything. The language's letter
    for yes (y, s) answers yes and its letter for no answers no, so a clerk need not reach for Tab."""

    def __init__(self, question: str, yes: str) -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} ({self.w('y')})", id="yes", compact=True, variant="error")
                yield Button(f"{self.w('No, go back')} ({self.w('n')})", id="no", compact=True, variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def on_key(self, event: events.Key) -> None:
        letter = (event.character or "").casefold()
        if letter in (self.w("y"), self.w("n")):
            event.stop()
            self.dismiss(letter == self.w("y"))


class AskToken(CounterDialog):
    """The admin token, masked; asked once per session, then checked by the admin screen with one cheap call."""

    def __init__(self, complaint: str = "") -> None:
        super().__init__()
        self.complaint = complaint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.w("Admin token"), classes="question")
            if self.complaint:
                yield Static(self.complaint, classes="error")
            yield Input(password=True, id="token", compact=True)
            yield Static(self.w("Enter: use it   Escape: go back"), classes="keys")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(event.value.strip())
