"""Admin at the counter: the sales report, and pausing, resuming or cancelling an event (cancelling asks first).

The token is asked once per session (the demo hands its own terminal the token, so it is not asked there) and
checked at once with one cheap call, so a wrong one is known before anything is typed; a refusal says where
the token lives, and forgets it so the next visit asks again.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import DataTable, Static

from errors import BoxOfficeError, Forbidden
from records import Event, SectorReport
from terminal.app.base import CounterScreen, Note
from terminal.app.calls import explain, run_call
from terminal.app.dialogs import AskToken, Confirm
from terminal.app.words import status_word


class Admin(CounterScreen):
    """The report, one row per sector; the keys act on the event of the row the cursor is on."""

    BINDINGS: ClassVar[list[BindingType]] = [
        ("escape", "back"), ("p", "pause"), ("u", "resume"), ("c", "cancel_event"), ("d", "delete_event"), ("r", "reload"),
    ]

    def compose(self) -> ComposeResult:
        yield Static(self.w("Admin: sales report"), classes="title")
        table: DataTable[str | Text] = DataTable(id="report", cursor_type="row", zebra_stripes=True)
        w = self.w
        for key, label, width in (("event", w("Event"), 30), ("sector", w("Sector"), 9), ("sold", w("Sold"), 5), ("held", w("Held"), 5),
                                  ("left", w("Left"), 5), ("revenue", w("Revenue"), 14)):
            table.add_column(label, key=key, width=width)
        yield table
        yield Note(id="problem", classes="error")
        yield self.keys(("p", "pause"), ("u", "resume"), ("c", "cancel the event"), ("d", "delete it"), ("r", "reload"),
                        ("Escape", "back"))

    def on_mount(self) -> None:
        if self.counter.admin_token:
            self.action_reload()
        else:
            self.ask_token("")

    def ask_token(self, complaint: str) -> None:
        self.app.push_screen(AskToken(complaint), self.check_token)

    def check_token(self, token: str | None) -> None:
        if token is None:
            self.dismiss()
            return
        run_call(self, lambda: self.client.ledger(token, since=0, limit=1), lambda _: self.accepted(token), self.refused)

    def accepted(self, token: str) -> None:
        self.counter.admin_token = token
        self.action_reload()

    def refused(self, exc: BoxOfficeError) -> None:
        if isinstance(exc, Forbidden):
            self.counter.admin_token = None
            self.ask_token(self.w("Not accepted. The token is the server's --admin-token, or the file beside its database "
                                  "(tickets.db.admin-token; the demo prints where)."))
            return
        self.query_one("#problem", Static).update(explain(exc, self.w))

    @property
    def token(self) -> str:
        return self.counter.admin_token or ""

    def action_reload(self) -> None:
        if self.token:
            run_call(self, lambda: self.client.report(self.token), self.show, self.refused, busy=self.query_one(DataTable))

    def show(self, reports: tuple[SectorReport, ...]) -> None:
        self.query_one("#problem", Static).update("")
        table = self.query_one(DataTable)
        table.clear()
        for index, row in enumerate(reports):
            event = Text.assemble(f"{row.event_id} {row.event_name}"[:30], "\n", (status_word(row.event_status, self.w), "dim"))
            table.add_row(event, Text(row.sector), str(row.sold), str(row.held), str(row.available), self.w.money(row.revenue_cents),
                          key=f"{row.event_id}:{index}", height=2)
        total = sum(row.revenue_cents for row in reports)
        table.add_row(self.w("Total"), "", str(sum(r.sold for r in reports)), str(sum(r.held for r in reports)),
                      str(sum(r.available for r in reports)), self.w.money(total), key="total")

    def chosen_event(self) -> int | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        return None if key == "total" else int(key.partition(":")[0])

    def action_pause(self) -> None:
        self.act(self.client.pause_event)

    def action_resume(self) -> None:
        self.act(self.client.resume_event)

    def act(self, call: object) -> None:
        event_id = self.chosen_event()
        if event_id is not None and self.token:
            run_call(self, lambda: call(self.token, event_id), self.changed, self.refused)  # type: ignore[operator]

    def changed(self, event: Event) -> None:
        self.app.notify(self.w("{name}: {status}", name=event.name, status=status_word(event.status, self.w)))
        self.action_reload()

    def action_cancel_event(self) -> None:
        event_id = self.chosen_event()
        if event_id is None:
            return
        question = self.w("Cancel event {id}? Every held or confirmed reservation in it is cancelled.", id=event_id)
        self.app.push_screen(Confirm(question, self.w("Cancel the event")),
                             lambda yes: run_call(self, lambda: self.client.cancel_event(self.token, event_id)[0], self.changed,
                                                  self.refused) if yes else None)

    def action_delete_event(self) -> None:
        """Asks first, as cancelling does; the server deletes only an event that never took a reservation."""
        event_id = self.chosen_event()
        if event_id is None:
            return
        question = self.w("Delete event {id}? Only an event that never took a reservation can be deleted.", id=event_id)
        self.app.push_screen(Confirm(question, self.w("Delete it")),
                             lambda yes: run_call(self, lambda: self.client.delete_event(self.token, event_id),
                                                  lambda _: self.deleted(event_id), self.refused) if yes else None)

    def deleted(self, event_id: int) -> None:
        self.app.notify(self.w("Event {id} deleted.", id=event_id))
        self.action_reload()
