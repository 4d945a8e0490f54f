"""The admin dashboard: every sector's capacity, takings and pace, redrawn about once a second.

Presentation only, like the rest of the terminal: the numbers are the server's `SectorReport`s as they arrive, drawn as they
are. `render_dashboard` turns one reading into a rich renderable (so a test or `--once` can print a single
frame); `Dashboard` reads, remembers the last good reading and drives `rich.live.Live`. A server that dies
is the client's business (TicketClient fails over); the dashboard only says when nobody answered, keeps
the last figures on screen marked with their time, and tries again on the next tick. A refusal (a wrong
token) is not retried: it leaves the loop for the caller to report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from client_core import TicketClient
from errors import Unavailable
from records import SectorReport, format_money
from terminal.widgets import bar_cells, breakers_text

BAR_WIDTH = 30
BAR_SEGMENTS = (("sold", "█", "green"), ("held", "▒", "yellow"), ("free", "░", "grey50"))
"""Each segment has its own character as well as its colour, so the bar also reads without colour."""
EVENT_STATUS_STYLES = {"on_sale": "green", "paused": "yellow", "cancelled": "red"}


def capacity_bar(sold: int, held: int, free: int, width: int = BAR_WIDTH) -> Text:
    """A fixed-width bar: sold, then held, then free."""
    cells = bar_cells((sold, held, free), width)
    if not any(cells):
        return Text("·" * width, style="dim")
    bar = Text()
    for (_, char, style), n in zip(BAR_SEGMENTS, cells, strict=True):
        bar.append(char * n, style=style)
    return bar


def legend() -> Text:
    return Text("  ").join(Text.assemble((char * 2, style), f" {name}") for name, char, style in BAR_SEGMENTS)


def render_dashboard(
    reports: Sequence[SectorReport],
    server: str | None,
    breakers: Mapping[str, str],
    *,
    read_at: datetime | None = None,
    error: str | None = None,
    width: int = BAR_WIDTH,
) -> RenderableType:
    """One frame: a header naming the server read from and the breakers, a row per event and sector, totals,
    and (when the latest read failed) a red line saying so under figures marked with the time they were read."""
    header = Text.assemble(
        ("bilheteria dashboard", "bold"), "   Last answer from " if error else "   Reading from ", (server or "no server yet", "bold cyan"),
        "   Breakers: ", breakers_text(breakers),
    )
    if read_at is not None:
        header.append(f"   figures of {read_at:%H:%M:%S}", style="dim")
    table = Table(header_style="bold", show_edge=False, pad_edge=False)
    for column, justify in (("Event", "left"), ("Sector", "left"), ("Capacity", "left"), ("Sold", "right"), ("Held", "right"),
                            ("Free", "right"), ("Revenue", "right"), ("Last min", "right")):
        table.add_column(column, justify=justify, no_wrap=column != "Event")
    previous_event = None
    for row in reports:
        event = Text.assemble(f"{row.event_id} ", row.event_name, " ", (row.event_status, EVENT_STATUS_STYLES.get(row.event_status, "")))
        table.add_row(event if row.event_id != previous_event else "", Text(row.sector),
                      capacity_bar(row.sold, row.held, row.available, width), str(row.sold), str(row.held), str(row.available),
                      format_money(row.revenue_cents), str(row.sold_last_minute))
        previous_event = row.event_id
    if reports:
        table.add_section()
        table.add_row(Text("Total", style="bold"), "", "", *(
            Text(value, style="bold") for value in (
                str(sum(r.sold for r in reports)), str(sum(r.held for r in reports)), str(sum(r.available for r in reports)),
                format_money(sum(r.revenue_cents for r in reports)), str(sum(r.sold_last_minute for r in reports)),
            )
        ))
    empty = Text("No figures yet." if read_at is None else "No events.", style="dim")
    parts: list[RenderableType] = [header, table if reports else empty, legend()]
    if error is not None:
        parts.append(Text(f"Unavailable: {error} (trying again every second)", style="bold red"))
    return Group(*parts)


class Dashboard:
    """Reads the report with one client and remembers the last good reading, so an outage shows old figures
    under a red line instead of an empty screen."""

    def __init__(self, client: TicketClient, admin_token: str, now: Callable[[], datetime] = datetime.now) -> None:
        self.client = client
        self.admin_token = admin_token
        self.now = now
        self.reports: tuple[SectorReport, ...] = ()
        self.read_at: datetime | None = None
        self.error: str | None = None

    def read(self) -> None:
        """One reading; `Unavailable` and refusals propagate (for `--once`)."""
        self.reports = self.client.report(self.admin_token)
        self.read_at = self.now()
        self.error = None

    def tick(self) -> None:
        """One reading that survives an outage: `Unavailable` is remembered for the frame, refusals propagate."""
        try:
            self.read()
        except Unavailable as exc:
            self.error = str(exc)

    @property
    def healthy(self) -> bool:
        """The latest reading succeeded."""
        return self.read_at is not None and self.error is None

    def frame(self) -> RenderableType:
        return render_dashboard(self.reports, self.client.current_server, self.client.breaker_states(), read_at=self.read_at,
                                error=self.error)

    def run(self, console: Console, seconds: float | None = None, interval: float = 1.0) -> None:
        """Redraw every `interval` seconds until `seconds` have passed (forever without it); a call in flight
        when time is up is allowed to finish, so the last frame is a complete one."""
        started = time.monotonic()
        with Live(Text("Reading the report…", style="dim"), console=console, auto_refresh=False) as live:
            while True:
                tick_started = time.monotonic()
                self.tick()
                live.update(self.frame(), refresh=True)
                now = time.monotonic()
                if seconds is not None and now - started >= seconds:
                    return
                pause = interval - (now - tick_started)
                if seconds is not None:
                    pause = min(pause, started + seconds - now)
                if pause > 0:
                    time.sleep(pause)
