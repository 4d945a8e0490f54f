"""`cli.py watch EVENT`: an event as it sells, redrawn the moment the server pushes a change.

The admin dashboard (dashboard.py) polls the report every second; this view instead subscribes
(`TicketClient.subscribe`) and draws what the server pushes, so a seat sold at another terminal shows here
within a round trip. Presentation only: the updates are drawn as they arrive, and when the server dies the
client subscribes again elsewhere; the frame names the server the subscription lives on, whichever it is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from client_core import TicketClient
from errors import InvalidRequest
from records import AvailabilityUpdate, Event, SeatMap, Sector
from terminal.views import seat_map_view
from terminal.widgets import bar_cells, plural

BAR_WIDTH = 20


def watch_frame(event: Event, sectors: Mapping[str, tuple[int, int]], seat_map: SeatMap | None, server: str | None,
                updates: int, updated_at: datetime | None) -> RenderableType:
    """One frame: the server the subscription lives on, a line per sector (taken and free of its capacity) and
    the map of the watched seated sector."""
    header = Text.assemble((f"Event {event.id} · {event.name}", "bold"), "\nSubscribed at ",
                           (server, "bold cyan") if server else ("no server (subscribing again…)", "bold red"))
    header.append(f" · {plural(updates, 'update')}" + (f", last at {updated_at:%H:%M:%S}" if updated_at else ""), style="dim")
    table = Table(header_style="bold", show_edge=False, pad_edge=False)
    for column, justify in (("Sector", "left"), ("Taken / free", "left"), ("Free", "right"), ("Capacity", "right")):
        table.add_column(column, justify=justify, no_wrap=True)
    for name, (available, capacity) in sectors.items():
        taken, free = bar_cells((capacity - available, available), BAR_WIDTH)
        table.add_row(Text(name), Text.assemble(("█" * taken, "red"), ("░" * free, "green")), str(available), str(capacity))
    parts: list[RenderableType] = [header, table]
    if seat_map is not None:
        parts.append(seat_map_view(seat_map))
    return Group(*parts)


class EventWatch:
    """The event's sectors and one seated sector's map, kept current by pushed `AvailabilityUpdate`s.

    It subscribes first and reads the event afterwards, so nothing sold in between is missed; an update
    replaces its sector unless it is older (by ledger `seq`) than one already applied, and a reading never
    overwrites an update that came before it.
    """

    def __init__(self, client: TicketClient, event_id: int, sector: str | None = None) -> None:
        self.client = client
        self.event_id = event_id
        self.wanted_sector = sector
        self.changed = threading.Event()
        self._lock = threading.Lock()
        self._seq: dict[str, int] = {}
        self.sectors: dict[str, tuple[int, int]] = {}
        self.states: dict[str, str] = {}
        self.event: Event | None = None
        self.seat_map: SeatMap | None = None
        """The watched sector's size as first read; its seats' states are in `states`."""
        self.updates = 0
        self.updated_at: datetime | None = None
        self.subscription: Any = None

    def start(self) -> None:
        """Subscribe, then read the event and the map; refusals (no such event or sector) propagate."""
        self.subscription = self.client.subscribe(self.event_id, self.on_update)
        event = self.client.get_event(self.event_id)
        seated = self._watched_sector(event)
        seat_map = self.client.get_seat_map(event.id, seated.name) if seated else None
        with self._lock:
            self.event = event
            for sector in event.sectors:
                self.sectors.setdefault(sector.name, (sector.available, sector.capacity))
            if seat_map is not None:
                self.seat_map = seat_map
                self.states.setdefault(seat_map.sector, seat_map.states)
        self.changed.set()

    def _watched_sector(self, event: Event) -> Sector | None:
        if self.wanted_sector is None:
            return next((sector for sector in event.sectors if sector.seated), None)
        sector = event.sector(self.wanted_sector)
        if sector is None or not sector.seated:
            raise InvalidRequest(f"{event.name} has no seated sector named {self.wanted_sector!r}")
        return sector

    def on_update(self, update: AvailabilityUpdate) -> None:
        """Runs on the client's background thread: record it and wake the drawing loop, nothing slow."""
        with self._lock:
            if update.event_id != self.event_id or update.seq <= self._seq.get(update.sector, 0):
                return
            self._seq[update.sector] = update.seq
            self.sectors[update.sector] = (update.available, update.capacity)
            if update.states:
                self.states[update.sector] = update.states
            self.updates += 1
            self.updated_at = datetime.now()
        self.changed.set()

    def frame(self) -> RenderableType:
        with self._lock:
            if self.event is None:
                return Text("Subscribing…", style="dim")
            seat_map = self.seat_map and replace(self.seat_map, states=self.states[self.seat_map.sector])
            return watch_frame(self.event, dict(self.sectors), seat_map, self.subscription.server, self.updates, self.updated_at)

    def run(self, console: Console, seconds: float | None = None, redraw_every: float = 0.5) -> None:
        """Draw until `seconds` have passed (forever without it): on each update, and at least every
        `redraw_every` seconds so a change of server shows even while nothing sells."""
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            self.start()
            with Live(self.frame(), console=console, auto_refresh=False) as live:
                while deadline is None or time.monotonic() < deadline:
                    left = redraw_every if deadline is None else deadline - time.monotonic()
                    self.changed.wait(max(0.0, min(redraw_every, left)))
                    self.changed.clear()
                    live.update(self.frame(), refresh=True)
        finally:
            if self.subscription is not None:
                self.subscription.close()
