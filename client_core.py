"""The terminal's side of the box office: find a server, call it, survive its failure.

A `TicketClient` makes the remote box office look like a local object (access transparency): the caller
never names a server (location transparency, through the name servers) and never sees one die (failure
transparency, through a circuit breaker per server, retries with jittered backoff inside one deadline, and
failover to the next live server). What the caller does see is the difference that matters: a
`ReservationError` when the box office said no, `Unavailable` when nobody could answer in time.

Retrying is safe because every write is idempotent: `reserve` carries one request id on every attempt,
and confirm and cancel answer the same way when repeated. This module knows nothing of SQL.

This is the door; the parts are in client/: discovery (the name servers), failover (which server next, the
breakers, the rounds), connection (dialling, one call on one server) and callbacks (the callback line).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from typing import Any, Self

from circuit_breaker import BreakerListener, CircuitBreaker
from client.callbacks import CallbackLine, Subscription
from client.connection import CLIENT_CONFIG, Pool, invoke
from client.discovery import DEFAULT_NAME_SERVERS, NameServerClient
from client.failover import Failover, RetryPolicy, is_server_failure
from client.failover import request_id as new_request_id
from errors import (
    BoxOfficeError,
    EventClosed,
    Forbidden,
    HoldExpired,
    InvalidRequest,
    NotFound,
    ReservationError,
    SoldOut,
    Unavailable,
)
from net.registry_protocol import parse_address, show
from net.tls import TLSRefused, optional_client_context
from records import (
    AvailabilityUpdate,
    Event,
    LedgerEntry,
    Reservation,
    SeatMap,
    Sector,
    SectorReport,
    ServerStatus,
    WaitlistEntry,
    format_money,
    from_wire,
)

__all__ = [
    "CLIENT_CONFIG",
    "AvailabilityUpdate",
    "BoxOfficeError",
    "BreakerListener",
    "Event",
    "EventClosed",
    "Forbidden",
    "HoldExpired",
    "InvalidRequest",
    "LedgerEntry",
    "NameServerClient",
    "NotFound",
    "Reservation",
    "ReservationError",
    "RetryPolicy",
    "SeatMap",
    "Sector",
    "SectorReport",
    "ServerStatus",
    "SoldOut",
    "Subscription",
    "TLSRefused",
    "TicketClient",
    "Unavailable",
    "WaitlistEntry",
    "format_money",
    "is_server_failure",
    "parse_address",
]


class TicketClient:
    """One terminal's handle on the box office; safe to share between threads.

    `timeout` bounds a whole call, retries and failover included; `attempt_timeout` bounds one try on one
    server, so a hung server costs that much before the next is tried. A custom `breaker_factory` must
    build breakers that classify with `is_server_failure`. With `cafile`, every connection (to name servers
    and ticket servers) is TLS and must present a certificate signed by that CA for the host dialled; the
    context is built once here, so a bad file fails at once (`tls.TLSConfigError`).
    """

    def __init__(
        self,
        name_servers: Sequence[str] = DEFAULT_NAME_SERVERS,
        servers: Sequence[str] = (),
        timeout: float = 5.0,
        *,
        attempt_timeout: float = 2.0,
        retry: RetryPolicy | None = None,
        breaker_factory: Callable[[str], CircuitBreaker] | None = None,
        rng: random.Random | None = None,
        cafile: str | None = None,
    ) -> None:
        fixed = tuple(parse_address(s) for s in servers)
        self._tls = optional_client_context(cafile)
        self.discovery = NameServerClient(name_servers, tls_context=self._tls)
        self.failover = Failover(self.discovery, fixed, timeout=timeout, attempt_timeout=attempt_timeout, retry=retry,
                                 breaker_factory=breaker_factory, rng=rng)
        self._pool = Pool(self._tls)
        self._lock = threading.Lock()
        self._line: CallbackLine | None = None

    # -- what a terminal can watch ----------------------------------------------------------------

    @property
    def current_server(self) -> str | None:
        preferred = self.failover.preferred
        return show(preferred) if preferred else None

    def breaker_states(self) -> dict[str, str]:
        return self.failover.breaker_states()

    def add_breaker_listener(self, listener: BreakerListener) -> None:
        self.failover.add_breaker_listener(listener)

    def known_servers(self) -> tuple[str, ...]:
        """The servers this terminal would try; asks a name server only when it knows none yet."""
        return tuple(show(a) for a in (self.failover.fixed or self.discovery.cached or self.discovery.servers()))

    # -- the API ------------------------------------------------------------------------------------

    def ping(self) -> str:
        return self._call("ping")

    def list_events(self) -> tuple[Event, ...]:
        return tuple(from_wire(Event, pairs) for pairs in self._call("list_events"))

    def get_event(self, event_id: int) -> Event:
        return from_wire(Event, self._call("get_event", event_id))

    def reserve(
        self,
        event_id: int,
        quantity: int,
        customer: str,
        email: str,
        sector: str | None = None,
        category: str = "full",
        request_id: str | None = None,
        confirm: bool = False,
        seats: Sequence[str] | None = None,
    ) -> Reservation:
        """Hold (or buy, with confirm) tickets; every retry and failover repeats the same request id.
        In a seated sector, `seats` names the seats (all or none); without it the server picks the best block."""
        request_id = new_request_id(request_id)
        arguments = (event_id, quantity, customer, email, sector, category, request_id, confirm)
        if seats is not None:
            arguments += (tuple(seats),)
        return from_wire(Reservation, self._call("reserve", *arguments, idempotent=False, request_id=request_id))

    def confirm(self, code: str, email: str, payment_ref: str | None = None) -> Reservation:
        return from_wire(Reservation, self._call("confirm", code, email, payment_ref))

    def get_seat_map(self, event_id: int, sector: str) -> SeatMap:
        return from_wire(SeatMap, self._call("get_seat_map", event_id, sector))

    def join_waitlist(
        self, event_id: int, quantity: int, customer: str, email: str, sector: str | None = None,
        on_offer: Callable[[WaitlistEntry], None] | None = None,
    ) -> WaitlistEntry:
        """Queue for a sold-out sector. Safe to retry: while waiting, the same email keeps its one place.
        With `on_offer`, the offer (made by whichever replica freed the tickets) is pushed to it on a background
        thread, through the callback line."""
        if on_offer is not None:
            return from_wire(WaitlistEntry, self._callback_line().join_waitlist(event_id, quantity, customer, email, sector, on_offer))
        return from_wire(WaitlistEntry, self._call("join_waitlist", event_id, quantity, customer, email, sector))

    def leave_waitlist(self, entry_id: int, email: str) -> WaitlistEntry:
        return from_wire(WaitlistEntry, self._call("leave_waitlist", entry_id, email))

    def get_waitlist_entry(self, entry_id: int, email: str) -> WaitlistEntry:
        return from_wire(WaitlistEntry, self._call("get_waitlist_entry", entry_id, email))

    def cancel(self, code: str, email: str) -> Reservation:
        return from_wire(Reservation, self._call("cancel", code, email))

    def get_reservation(self, code: str, email: str) -> Reservation:
        return from_wire(Reservation, self._call("get_reservation", code, email))

    def status(self) -> ServerStatus:
        return from_wire(ServerStatus, self._call("status"))

    def create_event(self, admin_token: str, name: str, venue: str, starts_at: str, sectors: Sequence[tuple[str, int, int]]) -> Event:
        """Not idempotent, so it is retried only when the request surely never reached a server."""
        wire_sectors = tuple(tuple(sector) for sector in sectors)
        pairs = self._call("admin_create_event", admin_token, name, venue, starts_at, wire_sectors, idempotent=False)
        return from_wire(Event, pairs)

    # Administration: every call carries the admin token; the server refuses a wrong one with Forbidden.

    def update_event(
        self, admin_token: str, event_id: int, name: str | None = None, venue: str | None = None, starts_at: str | None = None,
        capacities: Sequence[tuple[str, int]] = (), half_limits: Sequence[tuple[str, int | None]] = (),
    ) -> Event:
        """Absolute values, so a retry sets the same thing again."""
        pairs = self._call("admin_update_event", admin_token, event_id, name, venue, starts_at,
                           tuple(map(tuple, capacities)), tuple(map(tuple, half_limits)))
        return from_wire(Event, pairs)

    def add_sector(
        self, admin_token: str, event_id: int, name: str, price_cents: int, capacity: int, half_limit: int | None = None
    ) -> Event:
        pairs = self._call("admin_add_sector", admin_token, event_id, name, price_cents, capacity, half_limit, idempotent=False)
        return from_wire(Event, pairs)

    def pause_event(self, admin_token: str, event_id: int) -> Event:
        return from_wire(Event, self._call("admin_pause_event", admin_token, event_id))

    def resume_event(self, admin_token: str, event_id: int) -> Event:
        return from_wire(Event, self._call("admin_resume_event", admin_token, event_id))

    def cancel_event(self, admin_token: str, event_id: int) -> tuple[Event, int]:
        """The cancelled event and how many reservations this call cancelled (a retry cancels none more)."""
        answer = dict(self._call("admin_cancel_event", admin_token, event_id))
        return from_wire(Event, answer["event"]), answer["cancelled_reservations"]

    def delete_event(self, admin_token: str, event_id: int) -> None:
        self._call("admin_delete_event", admin_token, event_id, idempotent=False)

    def list_reservations(
        self, admin_token: str, event_id: int | None = None, email: str | None = None, status: str | None = None
    ) -> tuple[Reservation, ...]:
        found = self._call("admin_list_reservations", admin_token, event_id, email, status)
        return tuple(from_wire(Reservation, pairs) for pairs in found)

    def report(self, admin_token: str) -> tuple[SectorReport, ...]:
        return tuple(from_wire(SectorReport, pairs) for pairs in self._call("admin_report", admin_token))

    def ledger(self, admin_token: str, since: int = 0, limit: int = 1000) -> tuple[LedgerEntry, ...]:
        return tuple(from_wire(LedgerEntry, pairs) for pairs in self._call("admin_ledger", admin_token, since, limit))

    # -- live updates ---------------------------------------------------------------------------------

    def subscribe(self, event_id: int, on_update: Callable[[AvailabilityUpdate], None]) -> Subscription:
        """Call `on_update(update)` on a background thread for every change of the event's sectors, starting with
        their current state, until `close()`; it follows the servers through failover. Refusals (unknown
        event, bad arguments) and `Unavailable` are raised here, by the first subscription."""
        return self._callback_line().subscribe(event_id, on_update)

    def _callback_line(self) -> CallbackLine:
        """The one connection on which servers call this client back; opened on first use."""
        with self._lock:
            if self._line is None:
                self._line = CallbackLine(self.failover, self._tls)
            return self._line

    def close(self) -> None:
        with self._lock:
            line, self._line = self._line, None
        if line is not None:
            line.close()
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, method: str, *args: Any, idempotent: bool = True, request_id: str | None = None) -> Any:
        """Call `method` on some live server before the deadline, or raise `Unavailable` saying what was tried."""
        return self.failover.run(lambda address, timeout: invoke(self._pool, address, timeout, method, *args)[1], method,
                                 idempotent=idempotent, request_id=request_id)
