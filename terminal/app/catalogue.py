"""The counter's first screen: every event's sectors with price and what is left, kept live by the servers.

Availability arrives pushed (the client's `subscribe`), one update per change, and lands in one cell of the
table; the row the clerk is on stays where it is. Enter opens the order form for that sector.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import DataTable, Static

from records import AvailabilityUpdate, Event
from terminal.app.base import CounterScreen, Note
from terminal.app.calls import explain, run_call

COLUMNS = ("event", "sector", "price", "left")


class Catalogue(CounterScreen):
    """The events on sale, one row per sector; Escape here goes nowhere (quitting always asks)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: dict[int, Event] = {}

    def compose(self) -> ComposeResult:
        yield Static(self.w("Box office: choose a sector and press Enter to sell"), classes="title")
        table: DataTable[Text | str] = DataTable(id="catalogue", cursor_type="row", zebra_stripes=True)
        table.add_column(self.w("Event"), key="event", width=38)
        table.add_column(self.w("Sector"), key="sector", width=10)
        table.add_column(self.w("Price"), key="price", width=12)
        table.add_column(self.w("Left"), key="left", width=8)
        yield table
        yield Note(id="problem", classes="error")
        yield self.keys(("Enter", "sell"), ("f", "find a code"), ("w", "waitlist"), ("a", "admin"), ("s", "status"), ("r", "reload"),
                        ("q", "quit"))

    BINDINGS: ClassVar[list[BindingType]] = [
        ("f", "open('find')"), ("w", "open('waitlist')"), ("a", "open('admin')"), ("s", "open('status')"), ("r", "reload"),
        ("q", "app.quit"), ("escape", "nothing"),
    ]

    def on_mount(self) -> None:
        self.action_reload()

    def action_nothing(self) -> None:
        """The first screen has nothing to go back to."""

    def action_open(self, name: str) -> None:
        self.counter.open(name)

    def action_reload(self) -> None:
        run_call(self, self.client.list_events, self.show, self.trouble, busy=self.query_one(DataTable))

    def trouble(self, exc: Exception) -> None:
        self.query_one("#problem", Static).update(explain(exc, self.w))  # type: ignore[arg-type]

    def show(self, events: tuple[Event, ...]) -> None:
        self.query_one("#problem", Static).update("" if events else self.w("No events on sale yet."))
        self.events = {event.id: event for event in events}
        table = self.query_one(DataTable)
        table.clear()
        for event in events:
            for sector in event.sectors:
                table.add_row(self.event_cell(event), Text(sector.name), self.w.money(sector.price_cents), self.left(sector.available),
                              key=f"{event.id}:{sector.name}", height=2)
        self.counter.follow(events)

    def event_cell(self, event: Event) -> Text:
        return Text.assemble((event.name[:38], "bold"), "\n", (self.w.when(event.starts_at, local=False), "dim"))

    def left(self, available: int) -> Text:
        return Text(str(available), style="green") if available else Text(self.w("sold out"), style="bold red")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event_id, _, sector = str(event.row_key.value).partition(":")
        found = self.events.get(int(event_id))
        if found is not None:
            self.counter.sell(found, sector)

    def update_availability(self, update: AvailabilityUpdate) -> None:
        """A pushed change: one cell, and the event's record so the form opens with what is left now."""
        event = self.events.get(update.event_id)
        if event is None:
            return
        sectors = tuple(replace(s, available=update.available) if s.name == update.sector else s for s in event.sectors)
        self.events[event.id] = replace(event, sectors=sectors)
        table = self.query_one(DataTable)
        try:
            table.update_cell(f"{update.event_id}:{update.sector}", "left", self.left(update.available))
        except LookupError:
            return

