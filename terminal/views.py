"""How the terminal's answers look: tables, panels and JSON for events, reservations, status, reports, the
ledger and seat maps, and the one way a refusal or an outage is shown.

It exists so that every command for scripts in cli.py (and the live dashboard and watch) shows the same answer
the same way; the counter app (app/) draws its own screens with Textual, in the clerk's language. Nothing here
calls the server or decides anything; every function takes
what the server answered and returns something to print. What the user types is read in inputs.py, and the
small pieces every screen shares (styles, times, the breakers line) are in widgets.py.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

import seating
from client_core import TicketClient
from errors import ReservationError, Unavailable
from records import Event, LedgerEntry, Reservation, SeatMap, SectorReport, ServerStatus, WaitlistEntry, format_money
from terminal.widgets import STATUS_STYLES, WideOrStacked, breakers_text, format_time, plural, reais, styled


def events_table(events: Sequence[Event], title: str = "Events") -> WideOrStacked:
    """A row per event where every cell fits on a line, else an event to a few lines (money never wraps or is cut)."""
    table = Table(title=title, header_style="bold", show_lines=True)
    for column in ("Id", "Event", "Venue", "Starts", "Status", "Sectors: left/total · price"):
        table.add_column(column, no_wrap=column in ("Id", "Starts", "Status"))
    for event in events:
        table.add_row(str(event.id), Text(event.name), Text(event.venue), format_time(event.starts_at, local=False),
                      styled(event.status), sectors_text(event))
    return WideOrStacked(table, lambda: Group(Text(title, style="bold"), *(stacked_event(event) for event in events)))


def sectors_text(event: Event, indent: str = "") -> Text:
    return Text("\n").join(
        Text(f"{indent}{sector.name}: {sector.available}/{sector.capacity} · {format_money(sector.price_cents)}",
             style="dim" if sector.available == 0 else "")
        for sector in event.sectors
    )


def stacked_event(event: Event) -> Text:
    return Text.assemble(f"\n{event.id} ", (event.name, "bold"), " ", styled(event.status), "\n",
                         f"  {event.venue}, {format_time(event.starts_at, local=False)}\n", sectors_text(event, indent="  "))


def reservation_view(reservation: Reservation) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("Code", Text(reservation.code, style="bold cyan")),
        ("Status", styled(reservation.status)),
        ("Event", str(reservation.event_id)),
        ("Sector", Text(reservation.sector)),
        ("Tickets", f"{reservation.quantity} x {format_money(reservation.unit_price_cents)} ({reservation.category})"),
        ("Total", Text(format_money(reservation.total_cents), style="bold")),
        ("Customer", Text(f"{reservation.customer} <{reservation.email}>")),
        ("Created", format_time(reservation.created_at)),
    ]
    if reservation.seats:
        rows.append(("Seats", Text(" ".join(reservation.seats), style="bold")))
    if reservation.expires_at:
        rows.append(("Hold expires", format_time(reservation.expires_at)))
    for label, value in rows:
        table.add_row(label, value)
    return table


def status_view(status: ServerStatus, client: TicketClient) -> Group:
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    for label, value in (
        ("Server", status.server_id),
        ("Version", status.version),
        ("Up for", f"{status.uptime_s:.0f} s"),
        ("Connections", str(status.connections)),
        ("Calls", f"{status.calls} ({status.refusals} refused, {status.errors} errors)"),
        ("Backend", f"{status.backend} {status.database}"),
        ("Answered by", client.current_server or "-"),
    ):
        summary.add_row(label, Text(value))
    summary.add_row("Breakers", breakers_text(client.breaker_states()))
    availability = Table(title="Availability", header_style="bold")
    for column in ("Event", "Name", "Sector", "Available"):
        availability.add_column(column)
    for event_id, event_name, sector, available in status.availability:
        availability.add_row(str(event_id), Text(event_name), Text(sector), str(available))
    return Group(summary, availability)


REPORT_COLUMNS = ("Cap.", "Held", "Sold", "Free", "Full", "Half", "Rev. full", "Rev. half", "Revenue")
"""Short headers: the table must stay readable in a 120-column terminal (Full/Half: tickets sold at each price)."""


def report_figures(rows: Sequence[SectorReport]) -> list[str]:
    """Capacity, held, sold, free, sold full, sold half, then revenue full, half and total: of one row or summed."""
    counts = [sum(getattr(r, field) for r in rows) for field in ("capacity", "held", "sold", "available", "sold_full", "sold_half")]
    money = [sum(getattr(r, field) for r in rows) for field in ("revenue_full_cents", "revenue_half_cents", "revenue_cents")]
    return [str(count) for count in counts] + [format_money(cents) for cents in money]


def report_table(reports: Sequence[SectorReport]) -> WideOrStacked:
    """One row per sector when the terminal is wide enough for every column, else a few lines per sector."""
    table = Table(title="Sales report (revenue: confirmed sales)", header_style="bold")
    table.add_column("Event", min_width=18, ratio=1)
    table.add_column("Sector", min_width=8)
    for column in REPORT_COLUMNS:
        table.add_column(column, justify="right", no_wrap=True)
    previous_event = None
    for row in reports:
        event = Text.assemble(f"{row.event_id} ", row.event_name, " ", styled(row.event_status)) if row.event_id != previous_event else ""
        table.add_row(event, Text(row.sector), *report_figures([row]))
        previous_event = row.event_id
    table.add_section()
    table.add_row(Text("Total", style="bold"), "", *(Text(value, style="bold") for value in report_figures(reports)))
    return WideOrStacked(table, lambda: stacked_report(reports))


def stacked_report(reports: Sequence[SectorReport]) -> Group:
    """The report for a narrow terminal: each event's name on a line, each sector's counts and revenue under it."""
    lines: list[RenderableType] = [Text("Sales report (revenue: confirmed sales)", style="bold")]
    previous_event = None
    for row in reports:
        if row.event_id != previous_event:
            lines.append(Text.assemble(("\n" if previous_event is not None else "") + f"{row.event_id} ", (row.event_name, "bold"), " ",
                                       styled(row.event_status)))
            previous_event = row.event_id
        lines.append(stacked_figures(Text(f"  {row.sector}"), report_figures([row])))
    lines.append(stacked_figures(Text("\nTotal", style="bold"), report_figures(reports)))
    return Group(*lines)


def stacked_figures(label: Text, figures: list[str]) -> Text:
    capacity, held, sold, free, full, half, revenue_full, revenue_half, revenue = figures
    return Text.assemble(label, f": capacity {capacity} · held {held} · sold {sold} (full {full}, half {half}) · free {free}\n",
                         "    revenue ", (revenue, "bold"), f" (full {revenue_full}, half {revenue_half})")


def report_document(reports: Sequence[SectorReport]) -> list[dict[str, Any]]:
    return [{**asdict(row), "revenue_cents": row.revenue_cents} for row in reports]


REPORT_CSV_COLUMNS = (
    "event_id", "event_name", "event_status", "sector", "price", "price_cents", "capacity", "held", "sold", "available", "sold_full",
    "sold_half", "revenue_full", "revenue_full_cents", "revenue_half", "revenue_half_cents", "revenue_total", "revenue_total_cents",
    "sold_last_minute", "half_limit",
)


def report_csv(document: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per sector (columns as in REPORT_CSV_COLUMNS); money both as decimal reais and as integer cents."""
    rows = []
    for row in document:
        rows.append({
            "event_id": row["event_id"], "event_name": row["event_name"], "event_status": row["event_status"],
            "sector": row["sector"], "price": reais(row["price_cents"]), "price_cents": row["price_cents"],
            "capacity": row["capacity"], "held": row["held"], "sold": row["sold"], "available": row["available"],
            "sold_full": row["sold_full"], "sold_half": row["sold_half"],
            "revenue_full": reais(row["revenue_full_cents"]), "revenue_full_cents": row["revenue_full_cents"],
            "revenue_half": reais(row["revenue_half_cents"]), "revenue_half_cents": row["revenue_half_cents"],
            "revenue_total": reais(row["revenue_cents"]), "revenue_total_cents": row["revenue_cents"],
            "sold_last_minute": row["sold_last_minute"], "half_limit": row["half_limit"],
        })
    return rows


def ledger_table(entries: Sequence[LedgerEntry], title: str = "Ledger") -> Table:
    table = Table(title=title, header_style="bold")
    for column in ("Seq", "At", "Action", "Code", "Event", "Sector", "Quantity"):
        table.add_column(column, justify="right" if column in ("Seq", "Event", "Quantity") else "left", no_wrap=column != "Sector")
    for entry in entries:
        table.add_row(str(entry.seq), format_time(entry.at), entry.action, entry.code or "", _blank(entry.event_id),
                      Text(entry.sector or ""), _blank(entry.quantity))
    return table


def _blank(value: int | None) -> str:
    return "" if value is None else str(value)


def reservations_table(reservations: Sequence[Reservation]) -> WideOrStacked:
    """A row per reservation where every cell fits on a line, else a reservation to two lines."""
    title = f"Reservations ({len(reservations)})"
    table = Table(title=title, header_style="bold")
    for column in ("Code", "Event", "Sector", "Tickets", "Total", "Status", "Customer", "Created", "Hold expires"):
        table.add_column(column, justify="right" if column in ("Event", "Tickets", "Total") else "left",
                         no_wrap=column not in ("Sector", "Customer"))
    for r in reservations:
        table.add_row(Text(r.code, style="cyan"), str(r.event_id), Text(r.sector), f"{r.quantity} {r.category}",
                      format_money(r.total_cents), styled(r.status), Text(f"{r.customer} <{r.email}>"), format_time(r.created_at),
                      format_time(r.expires_at))
    return WideOrStacked(table, lambda: Group(Text(title, style="bold"), *(stacked_reservation(r) for r in reservations)))


def stacked_reservation(r: Reservation) -> Text:
    expires = f" · hold expires {format_time(r.expires_at)}" if r.expires_at else ""
    return Text.assemble((r.code, "cyan"), f" event {r.event_id} · {r.sector} · {r.quantity} {r.category} · ",
                         (format_money(r.total_cents), "bold"), " · ", styled(r.status), "\n",
                         f"  {r.customer} <{r.email}> · created {format_time(r.created_at)}{expires}")


def show_refusal(console: Console, exc: ReservationError) -> None:
    console.print(Text.assemble(("Refused", "bold red"), f" ({type(exc).__name__}): ", str(exc)))


def show_unavailable(console: Console, exc: Unavailable, client: TicketClient) -> None:
    console.print(Text.assemble(("Unavailable: ", "bold red"), str(exc)))
    console.print(Text.assemble("Breakers: ", breakers_text(client.breaker_states())))


def error_document(exc: Exception, client: TicketClient) -> dict[str, Any]:
    document: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, Unavailable):
        document["breakers"] = client.breaker_states()
    return document


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()


# -- seats, holds and the waitlist ----------------------------------------------------------------------

SEAT_LOOKS = {
    "free": ("○", "green"),
    "held": ("◐", "yellow"),
    "sold": ("●", "red"),
    "yours": ("◉", "bold cyan"),
}
"""Each state has its own glyph as well as its colour, so the map also reads without colour (or colour-blind)."""
SEAT_STATES = {SeatMap.FREE: "free", SeatMap.HELD: "held", SeatMap.SOLD: "sold"}
UNKNOWN_SEAT = ("?", "dim")
"""A state this terminal does not know (a newer server): shown, not guessed at."""
ROW_MARGIN = 2
"""A row letter and a space, on each side of the seats."""


def seat_cell_width(seats_per_row: int, max_width: int) -> int:
    """Columns per seat: 3 numbers every seat, 2 (30 seats in 80 columns) numbers every fifth, 1 every tenth."""
    for width in (3, 2):
        if 2 * ROW_MARGIN + seats_per_row * width - (width - 1) <= max_width:
            return width
    return 1


@dataclass(frozen=True)
class SeatMapView:
    """A seated sector as the audience sees it: the stage on top, row A nearest it, a glyph per seat.

    It picks its seat spacing from the width it is given, so the same map fits an 80-column terminal for a
    20 x 30 room and uses the room a wider one offers; render it in a Console of any width."""

    seat_map: SeatMap
    yours: frozenset[str] = frozenset()

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        seat_map = self.seat_map
        cell = seat_cell_width(seat_map.seats_per_row, options.max_width)
        span = seat_map.seats_per_row * cell - (cell - 1)
        margin = " " * ROW_MARGIN
        yield Text(f"{seat_map.sector} · event {seat_map.event_id} · {plural(seat_map.rows, 'row')} x "
                   f"{plural(seat_map.seats_per_row, 'seat')}", style="bold")
        yield Text(margin + " STAGE ".center(span, "━"), style="bold")
        yield Text(margin + self._numbers(cell, span), style="dim")
        for row in range(seat_map.rows):
            letter = seating.row_letter(row)
            line = Text.assemble((letter, "bold"), " ")
            for seat in range(seat_map.seats_per_row):
                glyph, style = SEAT_LOOKS.get(self._state(row, seat), UNKNOWN_SEAT)
                line.append(glyph, style=style)
                if seat < seat_map.seats_per_row - 1:
                    line.append(" " * (cell - 1))
            line.append(" ").append(letter, style="bold")
            yield line
        yield self._legend()

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        seats = self.seat_map.seats_per_row
        widest = min(options.max_width, 2 * ROW_MARGIN + seats * 3 - 2)
        return Measurement(2 * ROW_MARGIN + seats, max(widest, 2 * ROW_MARGIN + seats))

    def _state(self, row: int, seat: int) -> str:
        if seating.label(row, seat) in self.yours:
            return "yours"
        return SEAT_STATES.get(self.seat_map.state(row, seat), "?")

    def _numbers(self, cell: int, span: int) -> str:
        """Seat numbers over their seats, each ending at its seat's column; with narrow cells only every fifth
        (or tenth), so two numbers never touch."""
        step = {3: 1, 2: 5}.get(cell, 10)
        line = [" "] * span
        for number in range(1, self.seat_map.seats_per_row + 1):
            if number == 1 or number % step == 0:
                text = str(number)
                end = (number - 1) * cell
                line[end - len(text) + 1:end + 1] = text
        return "".join(line)

    def _legend(self) -> Text:
        counts = {name: self.seat_map.states.count(code) for code, name in SEAT_STATES.items()}
        counts["yours"] = len(self.yours)
        parts = [Text.assemble((SEAT_LOOKS[name][0], SEAT_LOOKS[name][1]), f" {name} {counts[name]}")
                 for name in SEAT_LOOKS if name != "yours" or self.yours]
        return Text("   ").join(parts)


def seat_map_view(seat_map: SeatMap, yours: Iterable[str] = ()) -> RenderableType:
    """The map with `yours` (labels such as "A1") marked as the customer's own."""
    return SeatMapView(seat_map, frozenset(yours))


def seat_map_document(seat_map: SeatMap) -> dict[str, Any]:
    """The map for a script: the record, the counts, and the held and sold seats by label."""
    taken: dict[str, list[str]] = {"held": [], "sold": []}
    for row in range(seat_map.rows):
        for seat in range(seat_map.seats_per_row):
            state = SEAT_STATES.get(seat_map.state(row, seat))
            if state in taken:
                taken[state].append(seating.label(row, seat))
    return {**asdict(seat_map), "free": seat_map.free, "held": len(taken["held"]), "sold": len(taken["sold"]),
            "held_seats": taken["held"], "sold_seats": taken["sold"]}


def ticket_view(reservation: Reservation) -> Panel:
    """What the customer walks away with: the reservation, seats included, framed."""
    title = "Ticket" if reservation.status == "confirmed" else f"Reservation ({reservation.status})"
    return Panel(reservation_view(reservation), title=f"{title} {reservation.code}", border_style=STATUS_STYLES.get(reservation.status, ""),
                 expand=False)


def waitlist_entry_view(entry: WaitlistEntry) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("Waitlist entry", Text(str(entry.id), style="bold cyan")),
        ("Status", styled(entry.status)),
        ("Event", str(entry.event_id)),
        ("Sector", Text(entry.sector)),
        ("Tickets", str(entry.quantity)),
        ("Customer", Text(entry.customer)),
        ("Joined", format_time(entry.created_at)),
    ]
    if entry.position:
        rows.append(("Position", f"{entry.position} in line"))
    if entry.code:
        rows.append(("Offer", Text(entry.code, style="bold cyan")))
    if entry.offer_expires_at:
        rows.append(("Offer ends", format_time(entry.offer_expires_at)))
    for name, value in rows:
        table.add_row(name, value)
    return table
