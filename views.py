"""How the terminal's answers look: tables, panels and JSON for events, reservations, status, reports, the
ledger and the swarm, and the one way a refusal or an outage is shown.

It exists so that the two faces of the terminal, the commands for scripts in cli.py and the clerk's menu
in menu.py, show the same answer the same way: a reservation looks alike whether it was bought with
`cli.py reserve` or at the counter. Nothing here calls the server or decides anything; every function takes
what the server answered and returns something to print. The few things both faces read from the user
(the admin token's environment variable, a sector typed as Name:price:capacity, a half-price limit) are at
the end, because the menu may not import cli.py (cli.py imports the menu).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from client_core import (
    Event,
    LedgerEntry,
    Reservation,
    ReservationError,
    SectorReport,
    ServerStatus,
    TicketClient,
    Unavailable,
    format_money,
)
from dashboard import breakers_text
from swarm import SwarmReport

STATUS_STYLES = {
    "on_sale": "green",
    "paused": "yellow",
    "cancelled": "red",
    "held": "yellow",
    "confirmed": "bold green",
    "expired": "red",
}


def format_time(text: str | None, local: bool = True) -> str:
    """A server timestamp for a human: holds in the clerk's local time, event starts in the venue's own."""
    if not text:
        return "-"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return (moment.astimezone() if local else moment).strftime("%d/%m/%Y %H:%M:%S" if local else "%d/%m/%Y %H:%M")


def styled(value: str) -> Text:
    return Text(value, style=STATUS_STYLES.get(value, ""))


def events_table(events: Sequence[Event], title: str = "Events") -> Table:
    table = Table(title=title, header_style="bold", show_lines=True)
    for column in ("Id", "Event", "Venue", "Starts", "Status", "Sectors: left/total · price"):
        table.add_column(column, no_wrap=column in ("Id", "Starts", "Status"))
    for event in events:
        sectors = Text("\n").join(
            Text(f"{sector.name}: {sector.available}/{sector.capacity} · {format_money(sector.price_cents)}",
                 style="dim" if sector.available == 0 else "")
            for sector in event.sectors
        )
        table.add_row(str(event.id), Text(event.name), Text(event.venue), format_time(event.starts_at, local=False),
                      styled(event.status), sectors)
    return table


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


def reais(cents: int) -> str:
    """Cents as decimal reais with a dot (`680.00`): what a spreadsheet reads as a number in any locale's import."""
    sign = "-" if cents < 0 else ""
    whole, fraction = divmod(abs(cents), 100)
    return f"{sign}{whole}.{fraction:02d}"


REPORT_COLUMNS = ("Cap.", "Held", "Sold", "Free", "Full", "Half", "Rev. full", "Rev. half", "Revenue")
"""Short headers: the table must stay readable in a 120-column terminal (Full/Half: tickets sold at each price)."""


def report_table(reports: Sequence[SectorReport]) -> Table:
    table = Table(title="Sales report (revenue: confirmed sales)", header_style="bold")
    table.add_column("Event", min_width=18, ratio=1)
    table.add_column("Sector", min_width=8)
    for column in REPORT_COLUMNS:
        table.add_column(column, justify="right", no_wrap=True)

    def figures(rows: Sequence[SectorReport]) -> list[str]:
        counts = [sum(getattr(r, field) for r in rows) for field in ("capacity", "held", "sold", "available", "sold_full", "sold_half")]
        money = [sum(getattr(r, field) for r in rows) for field in ("revenue_full_cents", "revenue_half_cents", "revenue_cents")]
        return [str(count) for count in counts] + [format_money(cents) for cents in money]

    previous_event = None
    for row in reports:
        event = Text.assemble(f"{row.event_id} ", row.event_name, " ", styled(row.event_status)) if row.event_id != previous_event else ""
        table.add_row(event, Text(row.sector), *figures([row]))
        previous_event = row.event_id
    table.add_section()
    table.add_row(Text("Total", style="bold"), "", *(Text(value, style="bold") for value in figures(reports)))
    return table


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


def reservations_table(reservations: Sequence[Reservation]) -> Table:
    table = Table(title=f"Reservations ({len(reservations)})", header_style="bold")
    for column in ("Code", "Event", "Sector", "Tickets", "Total", "Status", "Customer", "Created", "Hold expires"):
        table.add_column(column, justify="right" if column in ("Event", "Tickets", "Total") else "left",
                         no_wrap=column not in ("Sector", "Customer"))
    for r in reservations:
        table.add_row(Text(r.code, style="cyan"), str(r.event_id), Text(r.sector), f"{r.quantity} {r.category}",
                      format_money(r.total_cents), styled(r.status), Text(f"{r.customer} <{r.email}>"), format_time(r.created_at),
                      format_time(r.expires_at))
    return table


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


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


def swarm_view(report: SwarmReport) -> Group:
    table = Table(title=f"Swarm on event {report.event}", header_style="bold")
    table.add_column("Measure")
    table.add_column("Value", justify="right")
    for label, value in (
        ("reservations made", report.reservations),
        ("tickets sold" if report.mode == "confirm" else "tickets held", report.sold),
        ("refused as sold out", report.sold_out),
        ("other refusals", report.other_refusals),
        ("Unavailable errors", report.unavailable),
        ("unanswered purchases settled", report.settled),
        ("calls/s", report.calls_per_s),
        ("elapsed (s)", report.elapsed_s),
    ):
        table.add_row(label, str(value))
    parts: list[RenderableType] = [table]
    if report.last_refusal:
        parts.append(Text(f"Last other refusal: {report.last_refusal}", style="yellow"))
    if report.consistent:
        parts.append(Text(
            f"Consistent: {report.sold} tickets sold = tickets gone from the event; every code unique; "
            f"{report.verified_confirmed} confirmations verified.", style="bold green"))
    else:
        parts.append(Text("INCONSISTENT:", style="bold red"))
        parts.extend(Text(f"  - {violation}", style="red") for violation in report.violations)
    return Group(*parts)


# -- what both faces read from the user -----------------------------------------------------------------

TOKEN_ENV = "BILHETERIA_ADMIN_TOKEN"


def parse_sector(text: str) -> tuple[str, int, int]:
    """`Name:price_cents:capacity`; split from the right so a sector name may itself contain a colon."""
    parts = text.strip().rsplit(":", 2)
    try:
        name, price, capacity = parts[0].strip(), int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        raise ValueError(f"{text.strip()!r} is not NAME:PRICE_CENTS:CAPACITY (e.g. Pista:25000:300)") from None
    return name, price, capacity


def parse_optional_limit(text: str) -> int | None:
    """A half-price limit: a whole number, or `none` for no limit."""
    if text.strip().casefold() == "none":
        return None
    return int(text)
