"""The order form: sector, quantity (or seats from the map), name, email and price category, each checked as
it is typed, so a slip shows under its field at once and nothing is sent until every field is right.

Escape goes back to the catalogue and keeps the form as a `Draft`, so coming back to the same event finds
it as it was left. A pushed update changes what is left and the seat map; it never writes into a field.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Select, Static

from errors import BoxOfficeError, SoldOut
from records import AvailabilityUpdate, Event, Reservation, SeatMap, Sector, WaitlistEntry
from seating import SeatError, parse_selection
from terminal.app.base import CounterScreen, Note
from terminal.app.calls import explain, run_call
from terminal.app.checks import check_email, check_name, check_quantity, check_seats, find_sector
from terminal.app.dialogs import Confirm
from terminal.app.draft import Draft
from terminal.app.seatgrid import SeatGrid

FIELDS = ("sector", "quantity", "seats", "name", "email")


class Order(CounterScreen):
    """One sale being typed for one event."""

    BINDINGS: ClassVar[list[BindingType]] = [("escape", "back"), ("ctrl+s", "hold")]

    def __init__(self, event: Event, draft: Draft) -> None:
        super().__init__()
        self.event = event
        self.draft = draft
        self.maps: dict[str, SeatMap] = {}
        self.sending = False

    def compose(self) -> ComposeResult:
        d = self.draft
        yield Static(f"[b]{self.event.name}[/b]  {self.w.when(self.event.starts_at, local=False)}", classes="title", markup=True)
        with Horizontal():
            with VerticalScroll(id="form"):
                yield from self.field("sector", self.w("Sector"), d.sector)
                yield Note(id="left", classes="hint")
                yield from self.field("quantity", self.w("Quantity"), d.quantity)
                yield from self.field("seats", self.w("Seats"), d.seats, placeholder=self.w("A1 A2 or C5-C8; empty: best seats"))
                yield from self.field("name", self.w("Name"), d.name)
                yield from self.field("email", self.w("Email"), d.email)
                with Horizontal(classes="field"):
                    yield Static(self.w("Price"), classes="label")
                    yield Select([(self.w("full price"), "full"), (self.w("half price"), "half")], value=d.category, allow_blank=False,
                                 id="category", compact=True)
                yield Note(id="problem", classes="error")
                yield Button(self.w("Hold the tickets"), id="hold", compact=True, variant="primary")
            yield Vertical(id="map")
        yield self.keys(("Enter", "next field"), ("Ctrl+S", "hold"), ("Escape", "back, keeping the form"))

    def field(self, key: str, label: str, value: str, placeholder: str = "") -> ComposeResult:
        with Horizontal(classes="field", id=f"row-{key}"):
            yield Static(label, classes="label")
            yield Input(value, id=key, compact=True, placeholder=placeholder)
        yield Note(id=f"{key}-error", classes="error")

    def on_mount(self) -> None:
        self.query_one("#quantity", Input).focus()
        self.show_sector()

    # -- the draft ------------------------------------------------------------------------------------

    def value(self, key: str) -> str:
        return self.query_one(f"#{key}", Input).value

    def current_draft(self) -> Draft:
        category = self.query_one("#category", Select).value
        return Draft(self.value("sector"), self.value("quantity"), self.value("seats"), self.value("name"), self.value("email"),
                     category if isinstance(category, str) else "full")

    def action_back(self) -> None:
        """Back to the catalogue, the form kept; not while a hold is on its way, whose answer the clerk must see."""
        if self.sending:
            return
        self.counter.keep_draft(self.event.id, self.current_draft())
        self.dismiss()

    # -- checks as typed ---------------------------------------------------------------------------------

    @property
    def sector(self) -> Sector | None:
        return find_sector(self.event.sectors, self.value("sector"))

    def problem(self, key: str) -> str | None:
        sector = self.sector
        if key == "sector":
            names = ", ".join(s.name for s in self.event.sectors)
            return None if sector else self.w("Not a sector of this event: {names}.", names=names)
        if sector is None:
            return None
        if key == "quantity":
            return None if self.chosen_seats() else check_quantity(self.value("quantity"), sector.available, self.w)
        if key == "seats":
            return check_seats(self.value("seats"), self.maps.get(sector.name), self.w) if sector.seated else None
        return check_name(self.value("name"), self.w) if key == "name" else check_email(self.value("email"), self.w)

    def show_problem(self, key: str) -> str | None:
        found = self.problem(key)
        self.query_one(f"#{key}-error", Static).update(found or "")
        return found

    def on_input_changed(self, event: Input.Changed) -> None:
        key = event.input.id or ""
        if key == "sector":
            self.show_sector()
        elif key == "seats":
            self.show_problem("quantity")
            grid = self.grid()
            if grid is not None:
                grid.choose(self.chosen_seats())
        if key in FIELDS and (event.value or key in ("quantity", "sector")):
            self.show_problem(key)
        elif key in FIELDS:
            self.query_one(f"#{key}-error", Static).update("")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        order = [key for key in FIELDS if self.query_one(f"#row-{key}").display]
        key = event.input.id or ""
        if key in order and order.index(key) + 1 < len(order):
            self.query_one(f"#{order[order.index(key) + 1]}", Input).focus()
        else:
            self.action_hold()

    def chosen_seats(self) -> tuple[str, ...]:
        sector = self.sector
        if sector is None or not sector.seated or not self.value("seats").strip():
            return ()
        try:
            return parse_selection(self.value("seats"), sector.rows, sector.seats_per_row)
        except SeatError:
            return ()

    # -- the sector, its count and its map ----------------------------------------------------------------

    def show_sector(self) -> None:
        sector = self.sector
        self.query_one("#row-seats").display = bool(sector and sector.seated)
        self.query_one("#seats-error").display = bool(sector and sector.seated)
        self.show_left()
        holder = self.query_one("#map", Vertical)
        holder.remove_children()
        if sector is None or not sector.seated:
            holder.display = False
            return
        holder.display = True
        if sector.name in self.maps:
            self.mount_map(self.maps[sector.name])
            return
        run_call(self, lambda: self.client.get_seat_map(self.event.id, sector.name), self.show_map, self.trouble, busy=holder)

    def show_map(self, seat_map: SeatMap) -> None:
        self.maps[seat_map.sector] = seat_map
        sector = self.sector
        if sector is not None and sector.name == seat_map.sector:
            self.mount_map(seat_map)
            self.show_problem("seats")

    def mount_map(self, seat_map: SeatMap) -> None:
        holder = self.query_one("#map", Vertical)
        holder.remove_children()
        holder.mount(SeatGrid(seat_map, self.chosen_seats()),
                     Static(self.w("· free  h held\nx sold  ■ chosen\nArrows, Space: pick"), classes="hint"))

    def grid(self) -> SeatGrid | None:
        found = self.query(SeatGrid)
        return found.first() if found else None

    def show_left(self) -> None:
        sector = self.sector
        if sector is None:
            self.query_one("#left", Static).update("")
            return
        if not sector.available:
            self.query_one("#left", Static).update(self.w("Sold out: holding offers the waitlist."))
            return
        half = self.w.money(sector.price_cents // 2)
        self.query_one("#left", Static).update(self.w("{left} left · {price} (half {half})", left=sector.available,
                                                      price=self.w.money(sector.price_cents), half=half))

    def on_seat_grid_toggled(self, message: SeatGrid.Toggled) -> None:
        self.query_one("#seats", Input).value = " ".join(message.chosen)

    def update_availability(self, update: AvailabilityUpdate) -> None:
        """Pushed: what is left and the map's states change; the fields do not."""
        if update.event_id != self.event.id:
            return
        self.event = self.counter.catalogue_event(self.event.id) or self.event
        if update.states and update.sector in self.maps:
            self.maps[update.sector] = SeatMap(update.event_id, update.sector, self.maps[update.sector].rows,
                                               self.maps[update.sector].seats_per_row, update.states)
            grid = self.grid()
            if grid is not None and grid.seat_map.sector == update.sector:
                grid.show_states(update.states)
            if self.value("seats").strip():
                self.show_problem("seats")
        self.show_left()

    # -- the sale -----------------------------------------------------------------------------------------------

    def action_hold(self) -> None:
        """Every field checked again; the first wrong one gets the focus and nothing is sent."""
        if self.sending:
            return
        wrong = [key for key in FIELDS if self.show_problem(key) and self.query_one(f"#row-{key}").display]
        if wrong:
            self.query_one(f"#{wrong[0]}", Input).focus()
            return
        sector = self.sector
        assert sector is not None, "a sector is checked before a sale"
        seats = self.chosen_seats()
        quantity = len(seats) or int(self.value("quantity"))
        draft = self.current_draft()
        self.sending = True
        self.query_one("#problem", Static).update(self.w("Holding…"))
        run_call(self, lambda: self.client.reserve(self.event.id, quantity, draft.name.strip(), draft.email.strip(), sector=sector.name,
                                                   category=draft.category, seats=seats or None),
                 self.held, lambda exc: self.refused(exc, sector, quantity, draft), busy=self.query_one("#hold"))

    def held(self, reservation: Reservation) -> None:
        self.sending = False
        self.query_one("#problem", Static).update("")
        self.counter.pay(reservation, self.value("email").strip())

    def refused(self, exc: BoxOfficeError, sector: Sector, quantity: int, draft: Draft) -> None:
        self.sending = False
        self.trouble(exc)
        if isinstance(exc, SoldOut) and not draft.seats.strip():
            question = self.w("Sold out. Join the waitlist for {count} in {sector}? An offer appears here when tickets come back.",
                              count=quantity, sector=sector.name)
            self.app.push_screen(Confirm(question, self.w("Join the waitlist")),
                                 lambda yes: self.join(sector, quantity, draft) if yes else None)
        elif isinstance(exc, SoldOut):
            run_call(self, lambda: self.client.get_seat_map(self.event.id, sector.name), self.show_map, self.trouble,
                     busy=self.query_one("#map"))

    def join(self, sector: Sector, quantity: int, draft: Draft) -> None:
        run_call(self, lambda: self.counter.join_waitlist(self.event.id, quantity, draft.name.strip(), draft.email.strip(), sector.name),
                 self.joined, self.trouble)

    def joined(self, entry: WaitlistEntry) -> None:
        self.query_one("#problem", Static).update(
            self.w("On the waitlist: entry {id}, number {position} in line.", id=entry.id, position=entry.position))

    def trouble(self, exc: BoxOfficeError) -> None:
        self.query_one("#problem", Static).update(explain(exc, self.w))
