"""Which server answers, how it is doing, and how this counter's circuit breakers stand, refreshed every few seconds."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import Static

from errors import BoxOfficeError
from records import ServerStatus
from terminal.app.base import CounterScreen, Note
from terminal.app.calls import explain, run_call
from terminal.app.words import status_word

REFRESH_SECONDS = 3.0


class Status(CounterScreen):
    BINDINGS: ClassVar[list[BindingType]] = [("escape", "back"), ("r", "refresh")]

    def __init__(self) -> None:
        super().__init__()
        self.known: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        yield Static(self.w("Status"), classes="title")
        yield Static("", id="server")
        yield Static("", id="breakers")
        yield Note(id="problem", classes="error")
        yield self.keys(("r", "refresh"), ("Escape", "back"))

    def on_mount(self) -> None:
        self.action_refresh()
        self.set_interval(REFRESH_SECONDS, self.action_refresh)

    def action_refresh(self) -> None:
        run_call(self, lambda: (self.client.status(), self.client.known_servers()), self.show, self.trouble, busy=self.query_one("#server"))

    def show(self, answer: tuple[ServerStatus, tuple[str, ...]]) -> None:
        status, self.known = answer
        self.query_one("#problem", Static).update("")
        self.query_one("#server", Static).update("\n".join((
            self.w("Answering: {server} ({address})", server=status.server_id, address=self.client.current_server or "-"),
            self.w("Version {version}, up {minutes} min, {backend} database", version=status.version,
                   minutes=int(status.uptime_s // 60), backend=status.backend),
            self.w("Calls {calls}, refusals {refusals}, errors {errors}", calls=status.calls, refusals=status.refusals,
                   errors=status.errors),
        )))
        self.show_breakers()

    def show_breakers(self) -> None:
        """Every server the counter knows of, with its breaker's state; one the counter has not called yet says so."""
        states = self.client.breaker_states()
        lines = [self.w("Ticket servers:")]
        for server in sorted(set(states) | set(self.known)):
            state = status_word(states[server], self.w) if server in states else self.w("not called yet")
            lines.append(f"  {server}  {state}")
        self.query_one("#breakers", Static).update("\n".join(lines))

    def trouble(self, exc: BoxOfficeError) -> None:
        self.query_one("#problem", Static).update(explain(exc, self.w))
        self.show_breakers()
