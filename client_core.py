"""The terminal's side of the box office: find a server, call it, survive its failure.

A `TicketClient` makes the remote box office look like a local object (access transparency): the caller
never names a server (location transparency, through the name servers) and never sees one die (failure
transparency, through a circuit breaker per server, retries with jittered backoff inside one deadline, and
failover to the next live server). What the caller does see is the difference that matters: a
`ReservationError` when the box office said no, `Unavailable` when nobody could answer in time.

Retrying is safe because every write is idempotent: `reserve` carries one request id on every attempt,
and confirm and cancel answer the same way when repeated. This module knows nothing of SQL.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Self

import rpyc
from rpyc.core import brine, consts
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_stream

from circuit_breaker import BreakerListener, CircuitBreaker, CircuitOpenError
from errors import (
    REFUSALS,
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
    "TicketClient",
    "Unavailable",
    "WaitlistEntry",
    "format_money",
    "is_server_failure",
    "parse_address",
]

log = logging.getLogger("bilheteria.client")

SERVICE_NAME = "TICKETS"
DEFAULT_NAME_SERVERS = ("127.0.0.1:18811",)
CLIENT_CONFIG = {
    "allow_public_attrs": False,
    "allow_pickle": False,
    "import_custom_exceptions": False,
    "instantiate_custom_exceptions": False,
    "include_local_traceback": False,
}
Address = tuple[str, int]


def parse_address(text: str) -> Address:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def show(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again and how long to wait: rounds over the known servers, inside the caller's deadline.

    Between rounds the client sleeps a random time between 0 and base * 2**round, capped ("full jitter"),
    so terminals that lost the same server do not come back in lockstep.
    """

    max_rounds: int = 20
    base_delay: float = 0.05
    max_delay: float = 1.0

    def delay(self, round_number: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2**round_number))

    def gives_up(self, round_number: int, remaining: float) -> bool:
        return round_number >= self.max_rounds or remaining <= 0


class _Failed(Exception):
    """An infrastructure failure on one server: try the next; `sent` says the request may have arrived."""

    def __init__(self, reason: str, sent: bool) -> None:
        super().__init__(reason)
        self.sent = sent


def is_server_failure(exc: BaseException) -> bool:
    """What a breaker counts: a server that could not answer, never a refusal it sent."""
    return isinstance(exc, _Failed)


def _left(deadline: float) -> float:
    return max(0.01, deadline - time.monotonic())


def _close_at_once(connection: rpyc.Connection) -> None:
    """Close without RPyC's goodbye, which waits for the peer's answer: a hung server would never send it."""
    try:
        connection._channel.close()
        connection.close()
    except (OSError, EOFError):
        pass


class NameServerClient:
    """Asks every name server for the live ticket servers and merges the answers.

    The last good list is kept, so the terminal keeps selling from it while every name server is down,
    hung, or freshly restarted and still empty (an empty table is not evidence that the servers died:
    their breakers will tell). A query never takes longer than the time it is given.
    """

    MAX_REPLY_BYTES = 65536

    def __init__(self, name_servers: Iterable[str | Address], refresh_seconds: float = 3.0, timeout: float = 1.0) -> None:
        self.name_servers = [parse_address(ns) if isinstance(ns, str) else ns for ns in name_servers]
        self.refresh_seconds = refresh_seconds
        self.timeout = timeout
        self.cached: tuple[Address, ...] = ()
        self.refreshed_at = float("-inf")
        self.last_error = ""

    def servers(self, force: bool = False, budget: float | None = None) -> tuple[Address, ...]:
        """The known servers, asking the name servers again when the list is old (or `force`, at most once a second)."""
        age = time.monotonic() - self.refreshed_at
        if not self.cached or age >= self.refresh_seconds or (force and age >= 1.0):
            self.refresh(budget)
        return self.cached

    def refresh(self, budget: float | None = None) -> None:
        """Ask every name server, sharing `budget` seconds between them (default: `timeout` each)."""
        share = self.timeout if budget is None else min(self.timeout, budget / max(1, len(self.name_servers)))
        found: list[Address] = []
        errors: list[str] = []
        for address in self.name_servers:
            try:
                answer = self.query(address, share)
            except (OSError, ValueError) as exc:
                errors.append(f"{show(address)} ({getattr(exc, 'strerror', None) or exc})")
                continue
            found.extend(server for server in answer if server not in found)
        self.refreshed_at = time.monotonic()
        if found:
            self.cached = tuple(found)
        if len(errors) == len(self.name_servers):
            self.last_error = "name servers unreachable: " + ", ".join(errors)
        else:
            self.last_error = "; ".join(errors)

    @classmethod
    def query(cls, address: Address, timeout: float) -> tuple[Address, ...]:
        """One QUERY in RPyC's registry protocol: send the request, read the reply until the name server
        closes, decode it. Anything late, short or malformed is an error, never an empty list."""
        deadline = time.monotonic() + timeout
        with socket.create_connection(address, timeout=max(0.01, timeout)) as sock:
            sock.sendall(brine.dump(("RPYC", "QUERY", (SERVICE_NAME,))))
            reply = b""
            while len(reply) <= cls.MAX_REPLY_BYTES:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        if not reply:
            raise ValueError("closed without an answer")
        try:
            servers = brine.load(reply)
        except Exception as exc:  # noqa: BLE001 - brine raises whatever its parser hits on bad bytes
            raise ValueError(f"garbled answer ({type(exc).__name__})") from None
        if type(servers) is not tuple or not all(
            type(entry) is tuple and len(entry) == 2 and type(entry[0]) is str and type(entry[1]) is int for entry in servers
        ):
            raise ValueError("answer is not a list of (host, port)")
        return servers


class TicketClient:
    """One terminal's handle on the box office; safe to share between threads.

    `timeout` bounds a whole call, retries and failover included; `attempt_timeout` bounds one try on one
    server, so a hung server costs that much before the next is tried. A custom `breaker_factory` must
    build breakers that classify with `is_server_failure`.
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
    ) -> None:
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.retry = retry or RetryPolicy()
        self._fixed = tuple(parse_address(s) for s in servers)
        self.discovery = NameServerClient(name_servers)
        self._rng = rng or random.Random()
        self._make_breaker = breaker_factory or (
            lambda name: CircuitBreaker(name, failure_threshold=2, reset_timeout=2.0, is_failure=is_server_failure)
        )
        self._lock = threading.Lock()
        self._connections: dict[Address, rpyc.Connection] = {}
        self._breakers: dict[Address, CircuitBreaker] = {}
        self._listeners: list[BreakerListener] = []
        self._preferred: Address | None = None

    # -- what a terminal can watch ----------------------------------------------------------------

    @property
    def current_server(self) -> str | None:
        return show(self._preferred) if self._preferred else None

    def breaker_states(self) -> dict[str, str]:
        with self._lock:
            return {show(address): breaker.state for address, breaker in self._breakers.items()}

    def add_breaker_listener(self, listener: BreakerListener) -> None:
        with self._lock:
            self._listeners.append(listener)
            for breaker in self._breakers.values():
                breaker.add_listener(listener)

    def known_servers(self) -> tuple[str, ...]:
        """The servers this terminal would try; asks a name server only when it knows none yet."""
        return tuple(show(a) for a in (self._fixed or self.discovery.cached or self.discovery.servers()))

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
        confirm: bool = False,
        request_id: str | None = None,
        seats: Sequence[str] | None = None,
    ) -> Reservation:
        """Hold (or buy, with confirm) tickets; every retry and failover repeats the same request id.
        In a seated sector, `seats` names the seats (all or none); without it the server picks the best block."""
        request_id = request_id or uuid.uuid4().hex
        arguments = (event_id, quantity, customer, email, sector, category, request_id, confirm)
        if seats is not None:
            arguments += (tuple(seats),)
        return from_wire(Reservation, self._call("reserve", *arguments))

    def confirm(self, code: str, email: str, payment_ref: str | None = None) -> Reservation:
        return from_wire(Reservation, self._call("confirm", code, email, payment_ref))

    def get_seat_map(self, event_id: int, sector: str) -> SeatMap:
        return from_wire(SeatMap, self._call("get_seat_map", event_id, sector))

    def join_waitlist(self, event_id: int, quantity: int, customer: str, email: str, sector: str | None = None) -> WaitlistEntry:
        """Queue for a sold-out sector. Safe to retry: while waiting, the same email keeps its one place."""
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

    def close(self) -> None:
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for connection in connections:
            _close_at_once(connection)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- failover -----------------------------------------------------------------------------------

    def _call(self, method: str, *args: Any, idempotent: bool = True) -> Any:
        """Call `method` on some live server before the deadline, or raise `Unavailable` saying what was tried."""
        deadline = time.monotonic() + self.timeout
        tried: list[str] = []
        reasons: list[str] = []
        round_number = 0
        while True:
            for address in self._candidates(refresh=round_number > 0, remaining=deadline - time.monotonic()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                breaker = self._breaker(address)
                name = show(address)
                if name not in tried:
                    tried.append(name)
                try:
                    result = breaker.call(self._invoke, address, method, args, min(remaining, self.attempt_timeout))
                except CircuitOpenError:
                    continue
                except _Failed as exc:
                    reasons.append(f"{name}: {exc}")
                    if exc.sent and not idempotent:
                        raise Unavailable(
                            f"{name} failed after receiving the {method} request ({exc}); it may or may not have been applied"
                        ) from None
                    continue
                self._preferred = address
                return result
            round_number += 1
            remaining = deadline - time.monotonic()
            if self.retry.gives_up(round_number, remaining):
                raise Unavailable(self._unavailable_message(tried, reasons))
            time.sleep(min(remaining, self.retry.delay(round_number, self._rng)))

    def _unavailable_message(self, tried: list[str], reasons: list[str]) -> str:
        """Name what was tried and the last real failure (a breaker that stayed open is not a cause)."""
        if not tried:
            why = self.discovery.last_error or "the name servers list no ticket server"
            return f"No ticket server answered within {self.timeout:.1f} s (no server known: {why})"
        last = f"; last error: {reasons[-1]}" if reasons else "; every circuit was open"
        return f"No ticket server answered within {self.timeout:.1f} s (tried {', '.join(tried)}){last}"

    def _candidates(self, refresh: bool, remaining: float) -> list[Address]:
        """Known servers, the one that answered last first, the rest in this terminal's own random order.

        Asking the name servers may take at most a quarter of the time left, so a hung one cannot eat the deadline.
        """
        servers = list(self._fixed or self.discovery.servers(force=refresh, budget=remaining / 4))
        self._rng.shuffle(servers)
        if self._preferred in servers:
            servers.remove(self._preferred)
            servers.insert(0, self._preferred)
        return servers

    def _breaker(self, address: Address) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(address)
            if breaker is None:
                breaker = self._make_breaker(show(address))
                for listener in self._listeners:
                    breaker.add_listener(listener)
                self._breakers[address] = breaker
            return breaker

    def _connection(self, address: Address, deadline: float) -> rpyc.Connection:
        """The open connection to `address`, or a new one whose connect and root lookup both fit before `deadline`."""
        with self._lock:
            connection = self._connections.get(address)
        if connection is not None and not connection.closed:
            return connection
        stream = SocketStream.connect(address[0], address[1], timeout=_left(deadline), attempts=1, nodelay=True)
        connection = connect_stream(stream, rpyc.VoidService, dict(CLIENT_CONFIG, sync_request_timeout=_left(deadline)))
        try:
            connection.root  # noqa: B018 - fetched now, inside this attempt's time, and cached by RPyC
        except (OSError, EOFError):
            _close_at_once(connection)
            raise
        with self._lock:
            previous = self._connections.get(address)
            if previous is not None and not previous.closed:
                _close_at_once(connection)
                return previous
            self._connections[address] = connection
        return connection

    def _drop(self, address: Address, connection: rpyc.Connection) -> None:
        with self._lock:
            if self._connections.get(address) is connection:
                del self._connections[address]
        _close_at_once(connection)

    def _invoke(self, address: Address, method: str, args: tuple, timeout: float) -> Any:
        """One attempt on one server within `timeout`: a refusal is raised as such, anything else becomes `_Failed`."""
        deadline = time.monotonic() + timeout
        try:
            connection = self._connection(address, deadline)
        except (OSError, EOFError) as exc:
            raise _Failed(f"cannot connect ({exc or type(exc).__name__})", sent=False) from None
        connection._config["sync_request_timeout"] = _left(deadline)
        try:
            # CALLATTR looks the method up and calls it in one message; `root.method(...)` would cost two.
            return connection.sync_request(consts.HANDLE_CALLATTR, connection.root, method, args, ())
        except (OSError, EOFError) as exc:
            self._drop(address, connection)
            reason = "no answer in time" if isinstance(exc, TimeoutError) else f"connection lost ({exc or type(exc).__name__})"
            raise _Failed(reason, sent=True) from None
        except Exception as exc:  # noqa: BLE001 - a remote exception arrives as a class made up on the spot
            raise self._translate(exc) from None

    @staticmethod
    def _translate(exc: Exception) -> Exception:
        """A remote exception as ours: refusals by name, the server's own `Unavailable` as a failure to route around."""
        remote_name = type(exc).__name__.rpartition(".")[2]
        message = str(exc.args[0]) if exc.args else remote_name
        if type(exc).__name__.startswith("errors.") and remote_name in REFUSALS:
            return REFUSALS[remote_name](message)
        if remote_name == "Unavailable":
            return _Failed(f"server unavailable ({message})", sent=True)
        return InvalidRequest(f"the server rejected the call: {message.splitlines()[0] if message else remote_name}")
