"""Questions asked over a screen: yes or no before anything that cannot be undone, and the admin token."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Static

from terminal.app.base import CounterDialog


class Confirm(CounterDialog):
    """Yes or no; No is focused, so Enter pressed by habit never cancels or quits anything."""

    def __init__(self, question: str, yes: str) -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(self.yes, id="yes", compact=True, variant="error")
                yield Button(self.w("No, go back"), id="no", compact=True, variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


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
