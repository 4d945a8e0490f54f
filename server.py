"""The ticket server: the RPyC service `TICKETS` in front of the store.

This is the wire boundary. Everything a client sends is checked here by exact type before any work, so
a proxy of a client-side object is refused without being touched (touching it would call back into the
client). Everything sent back is a tuple of plain values, copied in the one reply message. Refusals
travel as the exception classes of errors.py with no traceback; anything unexpected is logged with an
incident id and reported to the client as `Unavailable`, never as a stack trace.

The server keeps no state a restart would lose: the store holds the inventory, and the name servers hold
only a soft registration refreshed by a heartbeat.
"""

from __future__ import annotations

import argparse
import functools
import hmac
import inspect
import logging
import os
import secrets
import signal
import socket
import sqlite3
import ssl
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rpyc
from rpyc.core.channel import Channel
from rpyc.core.netref import BaseNetref
from rpyc.core.stream import SocketStream
from rpyc.utils.helpers import classpartial
from rpyc.utils.server import ThreadedServer

from database import DEFAULT_HOLD_SECONDS, DEFAULT_MAX_PER_ORDER, DEFAULT_OFFER_SECONDS, SectorSpec, Store
from errors import BoxOfficeError, Forbidden, InvalidRequest, NotFound, ReservationError, SoldOut, Unavailable
from net import tls
from net.registry_protocol import SERVICE_NAME, exchange, parse_address
from records import ServerStatus, to_wire
from service.live import LiveFeed
from service.mailer import Mailer, SmtpSettings, add_mail_arguments

VERSION = "0.1.0"
HEARTBEAT_SECONDS = 2.0
ACTIVITY_SECONDS = 10.0
MAX_WIRE_TEXT = 1000
MAX_WIRE_INT = 2**53
MAX_FRAME_BYTES = 32 * 1024 * 1024

log = logging.getLogger("bilheteria.server")

PROTOCOL_CONFIG = {
    "allow_public_attrs": False,
    "allow_all_attrs": False,
    "allow_setattr": False,
    "allow_delattr": False,
    "allow_pickle": False,
    "import_custom_exceptions": False,
    "instantiate_custom_exceptions": False,
    "include_local_traceback": False,
    "include_local_version": False,
    "sync_request_timeout": 5,
    "log_exceptions": False,
}
"""Only `exposed_` names are reachable, nothing is pickled, no traceback leaves the process."""


# -- argument checks at the wire -------------------------------------------------------------------------


def _int(value: Any, name: str, low: int = 0, high: int = MAX_WIRE_INT) -> int:
    if type(value) is not int:
        raise InvalidRequest(f"{name} must be an integer")
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}")
    return value


def _str(value: Any, name: str, limit: int = MAX_WIRE_TEXT) -> str:
    if type(value) is not str:
        raise InvalidRequest(f"{name} must be a string")
    if len(value) > limit:
        raise InvalidRequest(f"{name} is too long ({len(value)} characters, at most {limit})")
    return value


def _optional_str(value: Any, name: str) -> str | None:
    return None if value is None else _str(value, name)


def _bool(value: Any, name: str) -> bool:
    if type(value) is not bool:
        raise InvalidRequest(f"{name} must be True or False")
    return value


CALLBACK_TYPES = frozenset({"builtins.function", "builtins.method", "builtins.builtin_function_or_method", "functools.partial"})
"""What a client may pass as a callback. A proxy answers `callable()` with True whatever it stands for, so the
remote type's name, which the proxy carries locally, is what tells a function from a list."""


def _callback(value: Any, optional: bool = False) -> Any:
    """A client-side function, passed by reference (or None when `optional`). Only what the proxy holds locally is
    looked at: `isinstance` or any attribute would be a request to the client, which could make it block or lie."""
    if value is None and optional:
        return None
    if not issubclass(type(value), BaseNetref) or object.__getattribute__(value, "____id_pack__")[0] not in CALLBACK_TYPES:
        raise InvalidRequest("callback must be a function or method of the caller, passed by reference (an RPyC callback)"
                             + (", or None" if optional else ""))
    return value


def _sectors(value: Any) -> tuple[SectorSpec, ...]:
    if type(value) is not tuple or not 1 <= len(value) <= 50:
        raise InvalidRequest("sectors must be a tuple of 1 to 50 (name, price_cents, capacity) tuples")
    sectors: list[SectorSpec] = []
    for sector in value:
        if type(sector) is not tuple or len(sector) not in (3, 4):
            raise InvalidRequest("each sector must be a (name, price_cents, capacity) or (name, price_cents, rows, seats_per_row) tuple")
        size = tuple(_int(number, "capacity, rows or seats_per_row") for number in sector[2:])
        sectors.append((_str(sector[0], "sector name"), _int(sector[1], "price_cents"), *size))
    return tuple(sectors)


def _seats(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if type(value) is not tuple or not 1 <= len(value) <= 50:
        raise InvalidRequest("seats must be a tuple of seat labels such as ('A1', 'A2')")
    return tuple(_str(seat, "seat label in seats", 10) for seat in value)


def _pairs(value: Any, name: str, check: Callable[[Any], Any]) -> tuple[tuple[str, Any], ...]:
    """A tuple of (sector name, value) pairs, each value passed through `check`."""
    if type(value) is not tuple or len(value) > 50:
        raise InvalidRequest(f"{name} must be a tuple of at most 50 (sector, value) pairs")
    pairs = []
    for pair in value:
        if type(pair) is not tuple or len(pair) != 2:
            raise InvalidRequest(f"each entry of {name} must be a (sector, value) pair")
        pairs.append((_str(pair[0], "sector"), check(pair[1])))
    return tuple(pairs)


# -- the service -------------------------------------------------------------------------------------


class Counters:
    """What `status()` reports; updated from many connection threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.calls = 0
        self.errors = 0
        self.refusals = 0
        self.forbidden = 0
        self.in_flight = 0
        self.idle = threading.Condition(self.lock)


def remote(method: Callable) -> Callable:
    """Count the call, log refusals as refusals, and turn anything unexpected into `Unavailable`."""
    name = method.__name__.removeprefix("exposed_")
    parameters = list(inspect.signature(method).parameters.values())[1:]
    expected = f"{name}({', '.join(parameter.name for parameter in parameters)})"

    @functools.wraps(method)
    def wrapper(self: TicketService, *args: Any, **kwargs: Any) -> Any:
        counters = self.box.counters
        with counters.lock:
            counters.calls += 1
            counters.in_flight += 1
        try:
            try:
                return method(self, *args, **kwargs)
            except TypeError as exc:
                if exc.__traceback__ is None or exc.__traceback__.tb_next is not None:
                    raise  # raised inside the method: a bug, reported as an incident below
                raise InvalidRequest(f"wrong arguments: the call is {expected}") from None
        except ReservationError as exc:
            with counters.lock:
                counters.refusals += 1
            log.debug("refused %s from %s: %s: %s", name, self.peer, type(exc).__name__, exc)
            raise
        except Unavailable as exc:
            with counters.lock:
                counters.errors += 1
            log.warning("unavailable %s from %s: %s", name, self.peer, exc)
            raise
        except Exception:
            incident = uuid.uuid4().hex[:8]
            with counters.lock:
                counters.errors += 1
            log.exception("incident %s in %s from %s", incident, name, self.peer)
            raise Unavailable(f"the server failed on this request (incident {incident}); try again") from None
        finally:
            with counters.lock:
                counters.in_flight -= 1
                if counters.in_flight == 0:
                    counters.idle.notify_all()

    return wrapper


class BoxOffice:
    """What every connection shares: the store, the admin token, the counters, the live feed."""

    def __init__(self, store: Store, admin_token: str, server_id: str) -> None:
        self.store = store
        self.admin_token = admin_token.encode()
        self.server_id = server_id
        self.started = time.monotonic()
        self.counters = Counters()
        self.live = LiveFeed(store, server_id)

    def check_token(self, token: Any, peer: str) -> None:
        """Constant time whatever the token looks like, so a refusal leaks nothing about the real one."""
        candidate = token.encode("utf-8", "replace") if type(token) is str else b""
        valid = hmac.compare_digest(candidate, self.admin_token)
        if not valid or type(token) is not str:
            with self.counters.lock:
                self.counters.forbidden += 1
            log.warning("forbidden: wrong admin token from %s", peer)
            raise Forbidden("admin token missing or wrong")


class TicketService(rpyc.Service):
    """One instance per connection (rpyc instantiates the class per client)."""

    ALIASES = (SERVICE_NAME,)

    def __init__(self, box: BoxOffice) -> None:
        self.box = box
        self.peer = "?"
        self.connection: rpyc.Connection | None = None

    def on_connect(self, conn: rpyc.Connection) -> None:
        self.connection = conn
        try:
            host, port = conn._config["endpoints"][1][:2]
            self.peer = f"{host}:{port}"
        except (KeyError, TypeError, ValueError, IndexError):
            self.peer = "?"
        with self.box.counters.lock:
            self.box.counters.connections += 1

    def on_disconnect(self, conn: rpyc.Connection) -> None:
        self.box.live.disconnect(conn)
        with self.box.counters.lock:
            self.box.counters.connections -= 1

    @remote
    def exposed_ping(self) -> str:
        return "pong"

    @remote
    def exposed_list_events(self) -> tuple:
        return tuple(to_wire(event) for event in self.box.store.list_events())

    @remote
    def exposed_get_event(self, event_id: Any) -> tuple:
        return to_wire(self.box.store.get_event(_int(event_id, "event_id")))

    @remote
    def exposed_reserve(
        self,
        event_id: Any,
        quantity: Any,
        customer: Any,
        email: Any,
        sector: Any = None,
        category: Any = "full",
        request_id: Any = None,
        confirm: Any = False,
        seats: Any = None,
    ) -> tuple:
        reservation = self.box.store.reserve(
            _int(event_id, "event_id"),
            _int(quantity, "quantity", -MAX_WIRE_INT),
            _str(customer, "customer"),
            _str(email, "email"),
            sector=_optional_str(sector, "sector"),
            category=_str(category, "category"),
            request_id=_optional_str(request_id, "request_id"),
            confirm=_bool(confirm, "confirm"),
            seats=_seats(seats),
        )
        log.debug("%s %s: event %d %s x%d request %s from %s", reservation.status, reservation.code,
                 reservation.event_id, reservation.sector, reservation.quantity, request_id, self.peer)
        return to_wire(reservation)

    @remote
    def exposed_confirm(self, code: Any, email: Any, payment_ref: Any = None) -> tuple:
        reservation = self.box.store.confirm(_str(code, "code"), _str(email, "email"), _optional_str(payment_ref, "payment_ref"))
        log.debug("confirmed %s from %s", reservation.code, self.peer)
        return to_wire(reservation)

    @remote
    def exposed_cancel(self, code: Any, email: Any) -> tuple:
        reservation = self.box.store.cancel(_str(code, "code"), _str(email, "email"))
        log.debug("cancel %s -> %s from %s", reservation.code, reservation.status, self.peer)
        return to_wire(reservation)

    @remote
    def exposed_get_reservation(self, code: Any, email: Any) -> tuple:
        return to_wire(self.box.store.get_reservation(_str(code, "code"), _str(email, "email")))

    @remote
    def exposed_get_seat_map(self, event_id: Any, sector: Any) -> tuple:
        return to_wire(self.box.store.seat_map(_int(event_id, "event_id"), _str(sector, "sector")))

    @remote
    def exposed_join_waitlist(
        self, event_id: Any, quantity: Any, customer: Any, email: Any, sector: Any = None, callback: Any = None
    ) -> tuple:
        """Queue for a sold-out sector; `callback(entry)` is called when the entry is offered tickets."""
        callback = _callback(callback, optional=True)
        entry = self.box.store.join_waitlist(
            _int(event_id, "event_id"), _int(quantity, "quantity", -MAX_WIRE_INT), _str(customer, "customer"),
            _str(email, "email"), _optional_str(sector, "sector"),
        )
        if callback is not None:
            self.box.live.watch_waitlist(entry.id, callback, self.connection)
        log.info("waitlist %d: event %d %s x%d joined from %s", entry.id, entry.event_id, entry.sector, entry.quantity, self.peer)
        return to_wire(entry)

    @remote
    def exposed_watch_waitlist(self, entry_id: Any, email: Any, callback: Any) -> tuple:
        """Watch an entry joined earlier (a terminal whose server died moves its watch here); answers the entry
        as it stands now, so an offer made while nobody watched is not missed."""
        entry_id, callback = _int(entry_id, "entry_id"), _callback(callback)
        self.box.store.get_waitlist_entry(entry_id, _str(email, "email"))
        self.box.live.watch_waitlist(entry_id, callback, self.connection)
        # Read again after the watch is in place: an offer made between the two reads is in this answer.
        return to_wire(self.box.store.waitlist_entry(entry_id))

    @remote
    def exposed_leave_waitlist(self, entry_id: Any, email: Any) -> tuple:
        entry = self.box.store.leave_waitlist(_int(entry_id, "entry_id"), _str(email, "email"))
        log.info("waitlist %d: left (%s) from %s", entry.id, entry.status, self.peer)
        return to_wire(entry)

    @remote
    def exposed_get_waitlist_entry(self, entry_id: Any, email: Any) -> tuple:
        return to_wire(self.box.store.get_waitlist_entry(_int(entry_id, "entry_id"), _str(email, "email")))

    @remote
    def exposed_admin_create_event(self, token: Any, name: Any, venue: Any, starts_at: Any, sectors: Any) -> tuple:
        self.box.check_token(token, self.peer)
        event = self.box.store.create_event(_str(name, "name"), _str(venue, "venue"), _str(starts_at, "starts_at"), _sectors(sectors))
        log.info("created event %d %r with %d sectors from %s", event.id, event.name, len(event.sectors), self.peer)
        return to_wire(event)

    @remote
    def exposed_admin_update_event(
        self, token: Any, event_id: Any, name: Any = None, venue: Any = None, starts_at: Any = None,
        capacities: Any = (), half_limits: Any = (),
    ) -> tuple:
        self.box.check_token(token, self.peer)
        event = self.box.store.update_event(
            _int(event_id, "event_id"), _optional_str(name, "name"), _optional_str(venue, "venue"),
            _optional_str(starts_at, "starts_at"),
            _pairs(capacities, "capacities", lambda v: _int(v, "capacity")),
            _pairs(half_limits, "half_limits", lambda v: None if v is None else _int(v, "half_limit")),
        )
        log.info("updated event %d from %s", event.id, self.peer)
        return to_wire(event)

    @remote
    def exposed_admin_add_sector(
        self, token: Any, event_id: Any, name: Any, price_cents: Any, capacity: Any, half_limit: Any = None
    ) -> tuple:
        self.box.check_token(token, self.peer)
        event = self.box.store.add_sector(
            _int(event_id, "event_id"), _str(name, "name"), _int(price_cents, "price_cents"), _int(capacity, "capacity"),
            None if half_limit is None else _int(half_limit, "half_limit"),
        )
        log.info("added sector %r to event %d from %s", name, event.id, self.peer)
        return to_wire(event)

    @remote
    def exposed_admin_pause_event(self, token: Any, event_id: Any) -> tuple:
        self.box.check_token(token, self.peer)
        event = self.box.store.set_event_status(_int(event_id, "event_id"), "paused")
        log.info("paused event %d from %s", event.id, self.peer)
        return to_wire(event)

    @remote
    def exposed_admin_resume_event(self, token: Any, event_id: Any) -> tuple:
        self.box.check_token(token, self.peer)
        event = self.box.store.set_event_status(_int(event_id, "event_id"), "on_sale")
        log.info("resumed event %d from %s", event.id, self.peer)
        return to_wire(event)

    @remote
    def exposed_admin_cancel_event(self, token: Any, event_id: Any) -> tuple:
        """Answers (("event", event record), ("cancelled_reservations", n))."""
        self.box.check_token(token, self.peer)
        event, cancelled = self.box.store.cancel_event(_int(event_id, "event_id"))
        log.info("cancelled event %d and %d reservations from %s", event.id, cancelled, self.peer)
        return (("event", to_wire(event)), ("cancelled_reservations", cancelled))

    @remote
    def exposed_admin_delete_event(self, token: Any, event_id: Any) -> int:
        self.box.check_token(token, self.peer)
        self.box.store.delete_event(_int(event_id, "event_id"))
        log.info("deleted event %d from %s", event_id, self.peer)
        return event_id

    @remote
    def exposed_admin_list_reservations(self, token: Any, event_id: Any = None, email: Any = None, status: Any = None) -> tuple:
        self.box.check_token(token, self.peer)
        found = self.box.store.list_reservations(
            None if event_id is None else _int(event_id, "event_id"), _optional_str(email, "email"), _optional_str(status, "status")
        )
        return tuple(to_wire(reservation) for reservation in found)

    @remote
    def exposed_admin_report(self, token: Any) -> tuple:
        self.box.check_token(token, self.peer)
        return tuple(to_wire(row) for row in self.box.store.report())

    @remote
    def exposed_admin_ledger(self, token: Any, since: Any = 0, limit: Any = 1000) -> tuple:
        self.box.check_token(token, self.peer)
        entries = self.box.store.ledger(_int(since, "since"), _int(limit, "limit", 1, 10_000))
        return tuple(to_wire(entry) for entry in entries)

    @remote
    def exposed_subscribe(self, event_id: Any, callback: Any) -> str:
        """Push `callback(update)` (an AvailabilityUpdate on the wire) for every change of the event, starting
        with its current state; answers the token for `unsubscribe`. See live.py."""
        event = self.box.store.get_event(_int(event_id, "event_id"))
        return self.box.live.subscribe(event, _callback(callback), self.connection)

    @remote
    def exposed_unsubscribe(self, token: Any) -> bool:
        self.box.live.unsubscribe(_str(token, "token", 100), self.connection)
        return True

    @remote
    def exposed_status(self) -> tuple:
        box = self.box
        availability = tuple(
            (event.id, event.name, sector.name, sector.available) for event in box.store.list_events() for sector in event.sectors
        )
        with box.counters.lock:
            status = ServerStatus(
                server_id=box.server_id,
                version=VERSION,
                uptime_s=round(time.monotonic() - box.started, 3),
                connections=box.counters.connections,
                calls=box.counters.calls,
                errors=box.counters.errors,
                refusals=box.counters.refusals,
                forbidden=box.counters.forbidden,
                backend=box.store.backend,
                database=box.store.path,
                availability=availability,
            )
        return to_wire(status)

    # The original single-counter server's API, so its clients keep working (see the seed project).

    def _first_sector(self) -> tuple[int, str, int]:
        for event in self.box.store.list_events():
            if event.status == "on_sale" and event.sectors:
                return event.id, event.sectors[0].name, event.sectors[0].available
        raise NotFound("No event is on sale")

    @remote
    def exposed_consultar_ingressos(self) -> int:
        return self._first_sector()[2]

    @remote
    def exposed_reservar_ingresso(self, nome: Any, quantidade: Any) -> str:
        event_id, sector, _ = self._first_sector()
        try:
            reservation = self.box.store.reserve(
                event_id, _int(quantidade, "quantidade", -MAX_WIRE_INT), _str(nome, "nome"),
                "balcao@bilheteria.local", sector=sector, confirm=True,
            )
        except SoldOut as exc:
            return f"Reserva recusada: ingressos insuficientes. {exc}"
        except ReservationError as exc:
            return f"Reserva recusada: {exc}"
        return f"Reserva confirmada para {reservation.customer}: {reservation.quantity} ingresso(s), código {reservation.code}"

    @remote
    def exposed_status_servidor(self) -> dict:
        return {"horario": time.strftime("%Y-%m-%d %H:%M:%S"), "ingressos_restantes": self._first_sector()[2]}


# -- the transport ---------------------------------------------------------------------------------------


class FrameTooLarge(ValueError):
    """A client sent, or would have us inflate, a message beyond MAX_FRAME_BYTES."""


class TLSClient(ValueError):
    """A TLS client reached this plain-text server."""


class BoundedChannel(Channel):
    """RPyC's framing with a ceiling: a frame may neither claim nor inflate to more than MAX_FRAME_BYTES.

    Stock RPyC inflates a compressed frame with no limit, so half a megabyte on the wire could make the
    server allocate gigabytes before any argument check runs.
    """

    __slots__ = ()

    def recv(self) -> bytes:
        header = self.stream.read(self.FRAME_HEADER.size)
        if tls.looks_like_tls(header):
            raise TLSClient("a TLS handshake, but this server speaks plain text (TLS needs --certfile and --keyfile)")
        length, compressed = self.FRAME_HEADER.unpack(header)
        if length > MAX_FRAME_BYTES:
            raise FrameTooLarge(f"a frame of {length} bytes")
        data = self.stream.read(length + len(self.FLUSHER))[: -len(self.FLUSHER)]
        if not compressed:
            return data
        inflater = zlib.decompressobj()
        data = inflater.decompress(data, MAX_FRAME_BYTES)
        if inflater.unconsumed_tail:
            raise FrameTooLarge(f"a compressed frame inflating past {MAX_FRAME_BYTES} bytes")
        return data


class TicketServer(ThreadedServer):
    """RPyC's threaded server with bounded frames, optional TLS, and one log line (not two tracebacks) per
    broken connection. The TLS handshake runs on the connection's own thread, bounded by a deadline, so a slow
    or silent client never holds up the accept loop."""

    tls_context: ssl.SSLContext | None = None

    def _serve_client(self, sock: socket.socket, credentials: Any) -> None:
        """Serve until the peer leaves; a peer that breaks the protocol is cut off at once, without the polite
        goodbye (RPyC's close waits for the peer's answer, which a broken peer never sends)."""
        peer = sock.getpeername()
        if self.tls_context is None:
            return self._serve_connection(sock, peer, credentials)
        secured = self._handshake(sock, peer)
        if secured is None:
            return None
        self.clients.add(secured)  # so that close() reaches it: `sock` itself was detached by the wrapping
        try:
            return self._serve_connection(secured, peer, credentials)
        finally:
            self.clients.discard(secured)

    def _handshake(self, sock: socket.socket, peer: tuple) -> ssl.SSLSocket | None:
        """The TLS socket, or None after one log line: a plain-text client is told with a TLS alert."""
        assert self.tls_context is not None
        sock.settimeout(tls.HANDSHAKE_SECONDS)
        try:
            first = sock.recv(1, socket.MSG_PEEK)
            if not first:
                return None
            if not tls.starts_handshake(first):
                log.warning("refused %s:%s: a plain-text client, but this server speaks TLS", peer[0], peer[1])
                tls.refuse_plain_text(sock)
                return None
            secured = self.tls_context.wrap_socket(sock, server_side=True)
        except OSError as exc:
            reason = exc.reason if isinstance(exc, ssl.SSLError) else (exc.strerror or str(exc) or type(exc).__name__)
            log.warning("refused %s:%s: TLS handshake failed (%s)", peer[0], peer[1], reason)
            return None
        secured.settimeout(None)
        return secured

    def _serve_connection(self, sock: socket.socket, peer: tuple, credentials: Any) -> None:
        config = dict(self.protocol_config, credentials=credentials, endpoints=(sock.getsockname(), peer), logger=self.logger)
        channel = BoundedChannel(SocketStream(sock))
        connection = self.service._connect(channel, config)
        try:
            while not connection.closed:
                connection.serve(None)
        except EOFError:
            pass
        except Exception as exc:  # noqa: BLE001 - whatever a client sent, it costs its own connection and one line
            channel.close()
            log.warning("dropped connection from %s:%s: %s: %s", peer[0], peer[1], type(exc).__name__, exc)
        finally:
            connection.close()


# -- registration with the name servers ----------------------------------------------------------------


class Registrar:
    """Keeps this server registered with every name server: soft state refreshed by a heartbeat.

    Each name server has its own heartbeat thread, so a dead or hung one costs only its own attempts, never
    a late registration with the others.
    """

    def __init__(self, name_servers: list[tuple[str, int]], port: int, interval: float = HEARTBEAT_SECONDS, *,
                 timeout: float = 1.0, tls_context: ssl.SSLContext | None = None) -> None:
        self.name_servers = list(name_servers)
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.tls_context = tls_context
        self.stopped = threading.Event()
        self.reachable: dict[str, bool] = {}

    def start(self) -> None:
        """Register with every name server at once, wait for those first attempts (each bounded by `timeout`),
        so a server that says it is ready is also listed, then keep one heartbeat per name server."""
        attempted = []
        for address in self.name_servers:
            first = threading.Event()
            attempted.append(first)
            threading.Thread(target=self._heartbeat, args=(address, first), name=f"registrar-{address[0]}:{address[1]}",
                             daemon=True).start()
        deadline = time.monotonic() + self.timeout + 0.5
        for first in attempted:
            first.wait(max(0.0, deadline - time.monotonic()))

    def _heartbeat(self, address: tuple[str, int], attempted: threading.Event) -> None:
        self.register_once(address)
        attempted.set()
        while not self.stopped.wait(self.interval):
            self.register_once(address)

    def register_once(self, address: tuple[str, int]) -> None:
        where = f"{address[0]}:{address[1]}"
        try:
            ok = exchange(address, ("RPYC", "REGISTER", ((SERVICE_NAME,), self.port)), self.timeout, self.tls_context) == "OK"
            reason = ""
        except (OSError, ValueError) as exc:
            ok, reason = False, f" ({getattr(exc, 'strerror', None) or exc})"
        if ok != self.reachable.get(where):
            if ok:
                log.info("registered %s port %d with name server %s", SERVICE_NAME, self.port, where)
            else:
                log.warning("name server %s unreachable%s; will keep trying every %.0f s", where, reason, self.interval)
            self.reachable[where] = ok

    def stop(self) -> None:
        """Stop the heartbeats and unregister from every name server at once (each bounded by `timeout`)."""
        self.stopped.set()
        leaving = [threading.Thread(target=self._unregister, args=(address,), daemon=True) for address in self.name_servers]
        for thread in leaving:
            thread.start()
        for thread in leaving:
            thread.join(self.timeout + 0.5)

    def _unregister(self, address: tuple[str, int]) -> None:
        try:
            exchange(address, ("RPYC", "UNREGISTER", (self.port,)), self.timeout, self.tls_context)
        except (OSError, ValueError):
            return
        log.info("unregistered port %d from name server %s:%d", self.port, *address)


# -- configuration and main --------------------------------------------------------------------------


def host_port(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def host_ports(text: str) -> list[tuple[str, int]]:
    """One HOST:PORT, or several separated by commas (as in BILHETERIA_NAME_SERVERS)."""
    return [host_port(item.strip()) for item in text.split(",") if item.strip()]


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"BILHETERIA_{name}", default)


def is_database_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def load_admin_token(explicit: str | None, db_path: str) -> tuple[str, str]:
    """The admin token and where it came from; generated once and kept beside the database (mode 0600).

    Replicas started together on a new database race to create the file: each writes a candidate to a
    private temporary file and links it into place, which succeeds for exactly one; everyone then reads
    the winner, which is complete because it was written before it was linked.
    """
    if explicit:
        return explicit, "the command line or environment"
    if is_database_url(db_path):
        raise ValueError("a PostgreSQL --db needs --admin-token (or BILHETERIA_ADMIN_TOKEN): every replica, on any host, must share it")
    token_file = Path(f"{db_path}.admin-token")
    if not token_file.exists():
        descriptor, candidate = tempfile.mkstemp(dir=token_file.parent, prefix=".admin-token-")
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(24) + "\n")
            os.link(candidate, token_file)
        except FileExistsError:
            pass
        finally:
            os.unlink(candidate)
    return token_file.read_text().strip(), str(token_file)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="bilheteria ticket server (RPyC service TICKETS)")
    parser.add_argument("--host", default=env("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("PORT", "18861")))
    parser.add_argument("--db", default=env("DB", "tickets.db"),
                        help="SQLite file (created on first start) or postgresql://user:pass@host:5432/dbname")
    parser.add_argument("--name-server", action="extend", type=host_ports, dest="name_servers",
                        help="HOST:PORT of a name server; repeat or separate with commas for several "
                             "(env BILHETERIA_NAME_SERVERS, comma-separated)")
    parser.add_argument("--hold-seconds", type=float, default=float(env("HOLD_SECONDS", str(DEFAULT_HOLD_SECONDS))))
    parser.add_argument("--max-per-order", type=int, default=int(env("MAX_PER_ORDER", str(DEFAULT_MAX_PER_ORDER))))
    parser.add_argument("--offer-seconds", type=float, default=float(env("OFFER_SECONDS", str(DEFAULT_OFFER_SECONDS))),
                        help="how long a waitlist offer holds its tickets")
    parser.add_argument("--admin-token", default=env("ADMIN_TOKEN"))
    parser.add_argument("--no-demo", action="store_true", default=env("NO_DEMO", "") not in ("", "0"),
                        help="start a new database empty instead of with the demo catalogue")
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))
    parser.add_argument("--certfile", default=env("CERTFILE"),
                        help="PEM certificate: accept only TLS connections (with --keyfile; env BILHETERIA_CERTFILE)")
    parser.add_argument("--keyfile", default=env("KEYFILE"), help="PEM private key of --certfile (env BILHETERIA_KEYFILE)")
    parser.add_argument("--cafile", default=env("CAFILE"),
                        help="PEM CA: talk TLS to the name servers, trusting only certificates it signed (env BILHETERIA_CAFILE)")
    add_mail_arguments(parser, env)
    args = parser.parse_args(argv)
    if bool(args.certfile) != bool(args.keyfile):
        parser.error("--certfile and --keyfile go together (or BILHETERIA_CERTFILE and BILHETERIA_KEYFILE)")
    if args.name_servers is None:
        listed = env("NAME_SERVERS", "127.0.0.1:18811") or ""
        args.name_servers = host_ports(listed)
    return args


def serve(args: argparse.Namespace) -> int:
    try:
        listen_tls = tls.server_context(args.certfile, args.keyfile) if args.certfile else None
        name_server_tls = tls.optional_client_context(args.cafile)
    except tls.TLSConfigError as exc:
        log.error("%s", exc)
        return 2
    try:
        store = Store(
            args.db, hold_seconds=args.hold_seconds, max_per_order=args.max_per_order, offer_seconds=args.offer_seconds,
            seed_demo=not args.no_demo,
        )
    except (OSError, RuntimeError, sqlite3.Error, Unavailable) as exc:
        if is_database_url(args.db):
            log.error("%s", exc)  # it names the database, never its password
            return 2
        log.error("cannot open the database %s: %s", args.db, exc)
        return 1
    try:
        token, token_source = load_admin_token(args.admin_token, args.db)
    except ValueError as exc:
        log.error("%s", exc)
        store.close()
        return 2
    log.info("admin token from %s", token_source)
    box = BoxOffice(store, token, server_id=f"{socket.gethostname()}:{args.port}")
    quiet = logging.getLogger("bilheteria.rpyc")
    quiet.setLevel(logging.WARNING)
    try:
        server = TicketServer(
            classpartial(TicketService, box),
            hostname=args.host,
            port=args.port,
            protocol_config=PROTOCOL_CONFIG,
            logger=quiet,
            auto_register=False,
        )
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        store.close()
        return 1
    server.tls_context = listen_tls
    box.server_id = box.live.server_id = f"{socket.gethostname()}:{server.port}"
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: _stop_once(stopping))
    server.listener.listen(socket.SOMAXCONN)  # before the readiness line: a client may connect the moment it is printed
    threading.Thread(target=server.start, name="rpyc-accept", daemon=True).start()
    threading.Thread(target=_sweep, args=(store, stopping), name="expiry-sweeper", daemon=True).start()
    threading.Thread(target=_report_activity, args=(box.counters, stopping), name="activity", daemon=True).start()
    mailer = Mailer(store, SmtpSettings.from_args(args), worker=box.server_id, mail_from=args.mail_from)
    mailer.start()
    box.live.start()
    registrar = Registrar(args.name_servers, server.port, tls_context=name_server_tls)
    registrar.start()
    log.info("clients connect with %s; name servers are reached with %s",
             "TLS only" if listen_tls else "plain text", "TLS" if name_server_tls else "plain text")
    print(f"Ticket server listening on {args.host}:{server.port}", flush=True)
    stopping.wait()
    log.info("shutting down: unregistering, finishing in-flight calls")
    registrar.stop()
    server.active = False
    server.listener.close()
    with box.counters.lock:
        box.counters.idle.wait_for(lambda: box.counters.in_flight == 0, timeout=10)
    box.live.stop()
    server.close()
    mailer.stop()
    store.close()
    log.info("stopped cleanly")
    return 0


def _report_activity(counters: Counters, stopping: threading.Event, every: float = ACTIVITY_SECONDS) -> None:
    """One INFO line per period with traffic: operators see the pace without a line per sale (those are DEBUG)."""
    last = (0, 0, 0)
    while not stopping.wait(every):
        with counters.lock:
            now = (counters.calls, counters.refusals, counters.errors)
            connections = counters.connections
        calls, refusals, errors = (a - b for a, b in zip(now, last, strict=True))
        last = now
        if calls:
            log.info("last %.0f s: %d calls, %d refusals, %d errors; %d connections open", every, calls, refusals, errors, connections)


def _stop_once(stopping: threading.Event) -> None:
    """The signal handler: stop listening for the signals first, so a second SIGTERM cannot interrupt this one while
    it holds the event's lock (a handler runs on the main thread, and the lock is not reentrant)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    stopping.set()


def _sweep(store: Store, stopping: threading.Event) -> None:
    """Expire lapsed holds and waitlist offers about four times per period (at most every 5 s)."""
    interval = min(5.0, store.hold_seconds / 4, store.offer_seconds / 4)
    while not stopping.wait(interval):
        try:
            expired = store.expire_holds()
        except BoxOfficeError as exc:
            log.warning("expiry sweep failed: %s", exc)
            continue
        if expired:
            log.info("expired %d lapsed holds", expired)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s tickets@{args.port} %(message)s")
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
