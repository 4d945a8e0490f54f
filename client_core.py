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
import queue
import random
import socket
import ssl
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import rpyc
from rpyc.core import consts
from rpyc.core.channel import Channel
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_channel

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
from net.registry_protocol import SERVICE_NAME, Address, exchange, parse_address, show
from net.tls import TLSRefused, looks_like_tls, optional_client_context, plain_text_refused
from net.tls import connect as tls_connect
from records import (
    AvailabilityUpdate,
    Event,
    LedgerEntry,
    Record,
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
    "Subscription",
    "TLSRefused",
    "TicketClient",
    "Unavailable",
    "WaitlistEntry",
    "format_money",
    "is_server_failure",
    "parse_address",
]

log = logging.getLogger("bilheteria.client")

DEFAULT_NAME_SERVERS = ("127.0.0.1:18811",)
CLIENT_CONFIG = {
    "allow_public_attrs": False,
    "allow_pickle": False,
    "import_custom_exceptions": False,
    "instantiate_custom_exceptions": False,
    "include_local_traceback": False,
}
T = TypeVar("T")


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
    """An infrastructure failure on one server: try the next; `sent` says the request may have arrived;
    `final` says retrying this server cannot help (the two ends disagree about TLS)."""

    def __init__(self, reason: str, sent: bool, final: bool = False) -> None:
        super().__init__(reason)
        self.sent = sent
        self.final = final


class _Channel(Channel):
    """RPyC's framing, recognising a TLS server's alert where a plain-text answer should start."""

    __slots__ = ()

    def recv(self) -> bytes:
        header = self.stream.read(self.FRAME_HEADER.size)
        if looks_like_tls(header):
            raise plain_text_refused()
        length, compressed = self.FRAME_HEADER.unpack(header)
        data = self.stream.read(length + len(self.FLUSHER))[: -len(self.FLUSHER)]
        return zlib.decompress(data) if compressed else data


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


def _dial(address: Address, deadline: float, tls: ssl.SSLContext | None) -> rpyc.Connection:
    """A new connection (TLS when given a context) whose connect, handshake and root lookup all fit before `deadline`."""
    sock = tls_connect(address, _left(deadline), tls)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    config = dict(CLIENT_CONFIG, sync_request_timeout=_left(deadline))
    connection = connect_channel(_Channel(SocketStream(sock)), rpyc.VoidService, config=config)
    try:
        connection.root  # noqa: B018 - fetched now, inside this attempt's time, and cached by RPyC
    except (OSError, EOFError):
        _close_at_once(connection)
        raise
    return connection


class _Round:
    """One refresh in flight: every name server asked at once, answers merged in the order they arrive."""

    def __init__(self, asked: int) -> None:
        self.pending = asked
        self.found: list[Address] = []
        self.errors: list[str] = []
        self.refused = 0
        self.settled = threading.Event()
        """Some name server listed at least one ticket server, or every name server has had its say."""
        self.done = threading.Event()


class NameServerClient:
    """Asks every name server at once for the live ticket servers and merges the answers.

    The last good list is kept, so the terminal keeps selling from it while every name server is down,
    hung, or freshly restarted and still empty (an empty table is not evidence that the servers died:
    their breakers will tell). A hung name server never holds up the others: once one has answered, the
    rest get `GRACE_SECONDS` more, and whatever they answer later is still merged into the list. A refresh
    never makes its caller wait longer than the time it is given.
    """

    GRACE_SECONDS = 0.1

    def __init__(self, name_servers: Iterable[str | Address], refresh_seconds: float = 3.0, timeout: float = 1.0,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.name_servers = [parse_address(ns) if isinstance(ns, str) else ns for ns in name_servers]
        self.refresh_seconds = refresh_seconds
        self.timeout = timeout
        self.tls_context = tls_context
        self.cached: tuple[Address, ...] = ()
        self.refreshed_at = float("-inf")
        self.last_error = ""
        self.refused = False
        """Every name server failed in a way retrying cannot fix (TLS against plain text, an untrusted certificate)."""
        self._lock = threading.Lock()
        self._round: _Round | None = None

    def servers(self, force: bool = False, budget: float | None = None) -> tuple[Address, ...]:
        """The known servers, asking the name servers again when the list is old (or `force`, at most once a second)."""
        age = time.monotonic() - self.refreshed_at
        if not self.cached or age >= self.refresh_seconds or (force and age >= 1.0):
            self.refresh(budget)
        return self.cached

    def refresh(self, budget: float | None = None) -> None:
        """Ask every name server in parallel and wait at most `budget` seconds (default: `timeout`).

        Returns early when all have answered, or `GRACE_SECONDS` after the first useful answer when a list is
        known (cached or just heard); stragglers finish in the background within `timeout` and are merged then.
        """
        wait = self.timeout if budget is None else max(0.0, min(self.timeout, budget))
        deadline = time.monotonic() + wait
        current = self._start_round()
        if not self.cached:
            current.settled.wait(wait)
        current.done.wait(max(0.0, min(self.GRACE_SECONDS, deadline - time.monotonic())))

    def _start_round(self) -> _Round:
        """The round in flight, or a new one asking every name server on its own thread."""
        with self._lock:
            if self._round is not None and not self._round.done.is_set():
                return self._round
            current = self._round = _Round(len(self.name_servers))
            self.refreshed_at = time.monotonic()
        for address in self.name_servers:
            threading.Thread(target=self._ask, args=(current, address), name=f"ask-{show(address)}", daemon=True).start()
        if not self.name_servers:
            current.settled.set()
            current.done.set()
        return current

    def _ask(self, current: _Round, address: Address) -> None:
        answer: tuple[Address, ...] | None = None
        try:
            answer = self.query(address, self.timeout, self.tls_context)
        except (OSError, ValueError) as exc:
            error, refused = f"{show(address)} ({getattr(exc, 'strerror', None) or exc})", isinstance(exc, TLSRefused)
        with self._lock:
            if answer is None:
                current.errors.append(error)
                current.refused += refused
            else:
                current.found.extend(server for server in answer if server not in current.found)
                if current.found:
                    self.cached = tuple(current.found)  # the first answer replaces the old list; later ones add to it
                    current.settled.set()
            current.pending -= 1
            if current.pending == 0:
                self._finish(current)

    def _finish(self, current: _Round) -> None:
        errors = current.errors
        if len(errors) == len(self.name_servers):
            self.last_error = "name servers unreachable: " + ", ".join(errors)
        else:
            self.last_error = "; ".join(errors)
        self.refused = bool(self.name_servers) and current.refused == len(self.name_servers)
        current.settled.set()
        current.done.set()

    @classmethod
    def query(cls, address: Address, timeout: float, tls_context: ssl.SSLContext | None = None) -> tuple[Address, ...]:
        """One QUERY in RPyC's registry protocol (net.registry_protocol.exchange); anything but a list of (host, port) is an error."""
        servers = exchange(address, ("RPYC", "QUERY", (SERVICE_NAME,)), timeout, tls_context)
        if type(servers) is not tuple or not all(
            type(entry) is tuple and len(entry) == 2 and type(entry[0]) is str and type(entry[1]) is int for entry in servers
        ):
            raise ValueError("answer is not a list of (host, port)")
        return servers


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
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.retry = retry or RetryPolicy()
        self._fixed = tuple(parse_address(s) for s in servers)
        self._tls = optional_client_context(cafile)
        self.discovery = NameServerClient(name_servers, tls_context=self._tls)
        self._rng = rng or random.Random()
        self._make_breaker = breaker_factory or (
            lambda name: CircuitBreaker(name, failure_threshold=2, reset_timeout=2.0, is_failure=is_server_failure)
        )
        self._lock = threading.Lock()
        self._connections: dict[Address, rpyc.Connection] = {}
        self._breakers: dict[Address, CircuitBreaker] = {}
        self._listeners: list[BreakerListener] = []
        self._preferred: Address | None = None
        self._line: CallbackLine | None = None

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
                self._line = CallbackLine(self)
            return self._line

    def close(self) -> None:
        with self._lock:
            line, self._line = self._line, None
        if line is not None:
            line.close()
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
        return self._failover(lambda address, timeout: self._invoke(address, method, args, timeout), method, idempotent)

    def _failover(
        self, attempt: Callable[[Address, float], T], method: str, idempotent: bool = True, first: Address | None = None
    ) -> T:
        """Run `attempt(address, timeout)` through the breakers, server after server and round after round, until
        one answers or the deadline passes. `first` is tried before the others (the callback line's server)."""
        deadline = time.monotonic() + self.timeout
        tried: list[str] = []
        reasons: list[str] = []
        round_number = 0
        while True:
            refused: set[str] = set()
            for address in self._candidates(refresh=round_number > 0, remaining=deadline - time.monotonic(), first=first):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                breaker = self._breaker(address)
                name = show(address)
                if name not in tried:
                    tried.append(name)
                try:
                    result = breaker.call(attempt, address, min(remaining, self.attempt_timeout))
                except CircuitOpenError:
                    continue
                except _Failed as exc:
                    reasons.append(f"{name}: {exc}")
                    if exc.final:
                        refused.add(name)
                    if exc.sent and not idempotent:
                        raise Unavailable(
                            f"{name} failed after receiving the {method} request ({exc}); it may or may not have been applied"
                        ) from None
                    continue
                self._preferred = address
                return result
            if refused and refused == set(tried):
                raise Unavailable(f"No ticket server can be used with this terminal's settings (tried {', '.join(tried)}); "
                                  f"last error: {reasons[-1]}")
            if not tried and not self._fixed and self.discovery.refused:
                raise Unavailable(f"No ticket server known: {self.discovery.last_error}")
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

    def _candidates(self, refresh: bool, remaining: float, first: Address | None = None) -> list[Address]:
        """Known servers, `first` or else the one that answered last first, the rest in this terminal's own random order.

        Asking the name servers may take at most a quarter of the time left, so a hung one cannot eat the deadline.
        """
        servers = list(self._fixed or self.discovery.servers(force=refresh, budget=remaining / 4))
        self._rng.shuffle(servers)
        lead = first or self._preferred
        if lead in servers:
            servers.remove(lead)
            servers.insert(0, lead)
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
        connection = _dial(address, deadline, self._tls)
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
        except TLSRefused as exc:
            raise _Failed(str(exc), sent=False, final=True) from None
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


# -- live updates: the callback line ---------------------------------------------------------------------

KEEPALIVE_SECONDS = 2.0
"""How often the callback line asks its server for a sign of life: a hung server is noticed within about this plus
one attempt timeout, a dead one at once (its socket closes)."""


def _callattr(connection: rpyc.Connection, method: str, *args: Any) -> Any:
    """One CALLATTR message: look `method` up on the server's root and call it."""
    return connection.sync_request(consts.HANDLE_CALLATTR, connection.root, method, args, ())


class _Dispatcher:
    """Runs the user's callbacks on one thread of their own, so the line's serving thread answers the server at once
    (a slow answer would get the subscription dropped) and a callback that raises costs one log line, never the line."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="live-callbacks", daemon=True).start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - the user's code; whatever it raises, the next update still comes
                log.warning("a live-update callback raised %s: %s", type(exc).__name__, exc)


class Subscription:
    """The live availability of one event, pushed by a server and kept going when that server dies.

    Updates reach `on_update` on a background thread, oldest first, never one older than what was already
    delivered for its sector: after a re-subscription the new server's first updates (the current state)
    replace what was missed in between. `server` says where the subscription lives now (None while it moves).
    """

    def __init__(self, line: CallbackLine, event_id: int, on_update: Callable[[AvailabilityUpdate], None]) -> None:
        self.event_id = event_id
        self.token: str | None = None
        self.connection: rpyc.Connection | None = None
        self.address: Address | None = None
        self.closed = False
        self._line = line
        self._on_update = on_update
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}
        """sector -> newest seq accepted: anything not newer is stale."""
        self._pending: dict[str, AvailabilityUpdate] = {}
        self._flushing = False

    @property
    def server(self) -> str | None:
        address = self.address
        return show(address) if address else None

    def close(self) -> None:
        """Unsubscribe (best effort: a server that is gone forgets it anyway) and stop delivering."""
        self._line.cancel(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def receive(self, pairs: Any) -> None:
        """What the server calls, on the line's serving thread: keep the newest update per sector and return at once."""
        update = _pushed(AvailabilityUpdate, pairs, f"live update for event {self.event_id}")
        if update is None:
            return
        with self._lock:
            if self.closed or update.event_id != self.event_id or update.seq < self._seen.get(update.sector, -1):
                return
            self._seen[update.sector] = update.seq
            self._pending[update.sector] = update
            if self._flushing:
                return
            self._flushing = True
        self._line.dispatcher.submit(self._flush)

    def _flush(self) -> None:
        with self._lock:
            updates = sorted(self._pending.values(), key=lambda update: update.seq)
            self._pending.clear()
            self._flushing = False
        for update in updates:
            if self.closed:
                return
            self._on_update(update)


def _pushed(cls: type[Record], pairs: Any, what: str) -> Record | None:
    """A record a server pushed to a callback, or None (one log line) when it is malformed: bytes from the
    network are skipped, never fatal to the line that serves every callback."""
    try:
        return from_wire(cls, pairs)
    except Exception as exc:  # noqa: BLE001 - whatever the bytes were, only this push is lost
        log.warning("ignored a malformed %s (%s)", what, type(exc).__name__)
        return None


class _WaitlistWatch:
    """Hands one waitlist offer to the owner's `on_offer`, once; when its server dies the line watches the entry
    again on another one (`watch_waitlist`, which also answers an offer made while nobody watched)."""

    def __init__(self, line: CallbackLine, email: str, on_offer: Callable[[WaitlistEntry], None]) -> None:
        self.line = line
        self.email = email
        self.on_offer = on_offer
        self.connection: rpyc.Connection | None = None
        self.entry_id = 0
        self._handed = threading.Lock()

    def receive(self, pairs: Any) -> None:
        entry = _pushed(WaitlistEntry, pairs, f"waitlist offer for entry {self.entry_id}")
        if entry is None or not self._handed.acquire(blocking=False):
            return  # malformed, or the offer already came by the other path (pushed, or answered by watch_waitlist)
        self.line.forget(self)
        self.line.dispatcher.submit(lambda: self.on_offer(entry))


class CallbackLine:
    """One dedicated connection per TicketClient on which servers call the client back, served by a background
    thread. Calls that hand the server a callback go on it; a supervisor thread pings its server, notices its
    death and makes every subscription again on another server (same discovery, breakers and failover as any
    call, with jittered backoff between rounds), until the subscriptions are closed. Empty, the line hangs up.
    """

    def __init__(self, client: TicketClient) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._calls = threading.Lock()
        """One registration at a time, so two of them never open two lines."""
        self._connection: rpyc.Connection | None = None
        self._address: Address | None = None
        self._subscriptions: list[Subscription] = []
        self._watches: list[_WaitlistWatch] = []
        self._wake = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._closed = False
        self.dispatcher = _Dispatcher()

    @property
    def server(self) -> str | None:
        address = self._address
        return show(address) if address else None

    def subscribe(self, event_id: int, on_update: Callable[[AvailabilityUpdate], None]) -> Subscription:
        subscription = Subscription(self, event_id, on_update)
        self._register(subscription)
        with self._lock:
            self._subscriptions.append(subscription)
            self._supervise()
        return subscription

    def join_waitlist(
        self, event_id: int, quantity: int, customer: str, email: str, sector: str | None, on_offer: Callable[[WaitlistEntry], None]
    ) -> Any:
        """The server's `join_waitlist` with a callback for the offer; answers the entry's wire pairs. Retried like
        any call: the same email keeps its one place while waiting."""
        watch = _WaitlistWatch(self, email, on_offer)
        arguments = (event_id, quantity, customer, email, sector, watch.receive)
        with self._calls:
            connection, _, answer = self._client._failover(
                lambda address, timeout: self._on(address, timeout, "join_waitlist", *arguments),
                "join_waitlist", first=self._address,
            )
        watch.connection, watch.entry_id = connection, dict(answer)["id"]
        with self._lock:
            if not connection.closed:
                self._watches.append(watch)
                self._supervise()
        return answer

    def cancel(self, subscription: Subscription) -> None:
        """Unsubscribe while the subscription still counts, so the supervisor does not hang up the line under the call."""
        with self._lock:
            subscription.closed = True
            connection, token = subscription.connection, subscription.token
        if connection is not None and token is not None and not connection.closed:
            try:
                connection._config["sync_request_timeout"] = self._client.attempt_timeout
                _callattr(connection, "unsubscribe", token)
            except Exception as exc:  # noqa: BLE001 - best effort: the server forgets it anyway when the line closes
                log.debug("unsubscribe %s: %s", token, type(exc).__name__)
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
            subscription.connection = subscription.address = None
        self._wake.set()

    def forget(self, watch: _WaitlistWatch) -> None:
        with self._lock:
            if watch in self._watches:
                self._watches.remove(watch)
        self._wake.set()

    def close(self) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()
        with self._lock:
            self._closed = True
            connection = self._connection
        if connection is not None:
            self._hang_up(connection)
        self.dispatcher.stop()
        self._wake.set()

    # -- the connection -----------------------------------------------------------------------------

    def _register(self, subscription: Subscription) -> None:
        with self._calls:
            connection, address, token = self._client._failover(
                lambda address, timeout: self._on(address, timeout, "subscribe", subscription.event_id, subscription.receive),
                "subscribe", first=self._address,
            )
        with self._lock:
            subscription.token = token
            if not connection.closed and not subscription.closed:
                subscription.connection, subscription.address = connection, address

    def _on(self, address: Address, timeout: float, method: str, *args: Any) -> tuple[rpyc.Connection, Address, Any]:
        """One attempt of `method` on the line to `address` (opening the line there if it is elsewhere or down)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            connection = self._connection if self._address == address else None
        if connection is None or connection.closed:
            try:
                connection = _dial(address, deadline, self._client._tls)
            except TLSRefused as exc:
                raise _Failed(str(exc), sent=False, final=True) from None
            except (OSError, EOFError) as exc:
                raise _Failed(f"cannot connect ({exc or type(exc).__name__})", sent=False) from None
            self._install(connection, address)
        connection._config["sync_request_timeout"] = _left(deadline)
        try:
            return connection, address, _callattr(connection, method, *args)
        except (OSError, EOFError) as exc:
            self._hang_up(connection)
            reason = "no answer in time" if isinstance(exc, TimeoutError) else f"connection lost ({exc or type(exc).__name__})"
            raise _Failed(reason, sent=True) from None
        except Exception as exc:  # noqa: BLE001 - a remote exception arrives as a class made up on the spot
            raise TicketClient._translate(exc) from None

    def _install(self, connection: rpyc.Connection, address: Address) -> None:
        with self._lock:
            previous = self._connection
            self._connection, self._address = connection, address
        rpyc.BgServingThread(connection, callback=self._wake.set, serve_interval=0.5, sleep_interval=0.0)
        if previous is not None:
            self._hang_up(previous)

    def _hang_up(self, connection: rpyc.Connection) -> None:
        """Close a line that died or is being replaced; what lived on it is made again by the supervisor."""
        with self._lock:
            if self._connection is connection:
                self._connection = self._address = None
            for subscription in self._subscriptions:
                if subscription.connection is connection:
                    subscription.connection = subscription.address = None
            for watch in self._watches:
                if watch.connection is connection:
                    watch.connection = None
        _close_at_once(connection)
        self._wake.set()

    # -- the supervisor -----------------------------------------------------------------------------

    def _supervise(self) -> None:
        """Called with the lock held: make sure the supervisor runs."""
        if self._supervisor is None:
            self._supervisor = threading.Thread(target=self._watch, name="live-line", daemon=True)
            self._supervisor.start()

    def _watch(self) -> None:
        failures = 0
        while True:
            delay = KEEPALIVE_SECONDS if failures == 0 else self._client.retry.delay(failures, self._client._rng)
            self._wake.wait(delay)
            self._wake.clear()
            with self._lock:
                if self._closed or not (self._subscriptions or self._watches):
                    self._supervisor = None
                    connection = self._connection
                    break
                connection = self._connection
                orphans = [s for s in self._subscriptions if s.connection is None or s.connection is not connection]
                strays = [w for w in self._watches if w.connection is None or w.connection is not connection]
            if connection is not None and (connection.closed or (not orphans and not strays and not self._answers(connection))):
                self._hang_up(connection)
                continue
            failures = 0 if self._adopt(orphans) and self._rewatch(strays) else failures + 1
        if connection is not None:
            self._hang_up(connection)

    def _answers(self, connection: rpyc.Connection) -> bool:
        try:
            connection._config["sync_request_timeout"] = self._client.attempt_timeout
            return _callattr(connection, "ping") == "pong"
        except Exception:  # noqa: BLE001 - whatever went wrong, this server is no line to keep
            return False

    def _adopt(self, orphans: list[Subscription]) -> bool:
        """Subscribe the orphans again; False when no server would take them this round."""
        for subscription in orphans:
            if subscription.closed:
                continue
            try:
                self._register(subscription)
            except Unavailable as exc:
                log.warning("subscription to event %d waits for a server: %s", subscription.event_id, exc)
                return False
            except ReservationError as exc:
                log.warning("subscription to event %d ended: %s", subscription.event_id, exc)
                with self._lock:
                    if subscription in self._subscriptions:
                        self._subscriptions.remove(subscription)
                    subscription.closed = True
                continue
            log.info("subscription to event %d moved to %s", subscription.event_id, subscription.server)
        return True

    def _rewatch(self, strays: list[_WaitlistWatch]) -> bool:
        """Watch the strays' entries again; an entry offered meanwhile is handed over now, one no longer waiting is let go.
        False when no server would take them this round."""
        for watch in strays:
            try:
                with self._calls:
                    connection, _, answer = self._client._failover(
                        lambda address, timeout, watch=watch: self._on(
                            address, timeout, "watch_waitlist", watch.entry_id, watch.email, watch.receive),
                        "watch_waitlist", first=self._address,
                    )
            except Unavailable as exc:
                log.warning("waitlist entry %d waits for a server: %s", watch.entry_id, exc)
                return False
            except ReservationError as exc:
                log.warning("waitlist entry %d is no longer watched: %s", watch.entry_id, exc)
                self.forget(watch)
                continue
            status = dict(answer)["status"]
            with self._lock:
                if not connection.closed:
                    watch.connection = connection
            if status == "offered":
                watch.receive(answer)
            elif status != "waiting":
                self.forget(watch)
            log.info("waitlist entry %d watched on %s", watch.entry_id, self.server)
        return True
