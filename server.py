"""The ticket server: the RPyC service `TICKETS` in front of the store, and its `main`.

This is the door of the server side. `TicketService` is the RPC surface: each exposed method checks its
arguments by exact type (service/wire.py) before any work, so a proxy of a client-side object is refused
without being touched, and calls the store. Everything sent back is a tuple of plain values, copied in the
one reply message. Refusals travel as the exception classes of errors.py with no traceback; anything
unexpected is logged with an incident id and reported to the client as `Unavailable` (service/remote.py).

`main` reads the configuration once (service/config.py) and `serve` runs the server with it: the transport
(service/transport.py), the registration with the name servers (service/registrar.py), the live feed, the
mailer and the expiry sweep. The server keeps no state a restart would lose: the store holds the inventory,
and the name servers hold only a soft registration refreshed by a heartbeat.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time
from contextlib import AbstractContextManager
from typing import Any

import rpyc
from rpyc.utils.helpers import classpartial

from database import Store
from errors import InvalidRequest, Unavailable
from net import tls
from net.registry_protocol import SERVICE_NAME
from records import ServerStatus, to_wire
from service import wire
from service.admission import Admission, default_max_connections
from service.box_office import BoxOffice, is_database_url, load_admin_token, shown_database
from service.config import ConfigError, ServerConfig, parse_config
from service.counters import report_activity
from service.legacy import LegacyCalls
from service.mailer import Mailer
from service.opaque import Opaque, OpaqueConnection
from service.registrar import Registrar
from service.remote import remote
from service.sweeper import sweep
from service.transport import PROTOCOL_CONFIG, TicketServer, peer

__all__ = ["PROTOCOL_CONFIG", "VERSION", "TicketService", "main", "serve"]

VERSION = "0.1.0"
SHUTDOWN_SECONDS = 10.0
"""How long a stopping server waits for the calls in flight to finish."""

log = logging.getLogger("bilheteria.server")


class TicketService(Opaque, LegacyCalls, rpyc.Service):
    """The RPC surface: one instance per connection (rpyc instantiates the class per client).

    Each exposed method checks its arguments (service/wire.py) and calls the store; `remote` turns what goes
    wrong into a refusal or `Unavailable`, never a traceback. Its repr, str, hash, dir and inspection tell a
    client the service's name and calls, nothing internal (service/opaque.py)."""

    ALIASES = (SERVICE_NAME,)
    PUBLIC_NAME = SERVICE_NAME
    _protocol = OpaqueConnection

    def __init__(self, box: BoxOffice) -> None:
        self.box = box
        self.peer = "?"
        """HOST:PORT of the client, for the log and the per-connection throttles."""
        self.address = "?"
        """Its HOST, for the per-address throttles."""
        self.connection: rpyc.Connection | None = None

    def on_connect(self, conn: rpyc.Connection) -> None:
        self.connection = conn
        self.peer = peer(conn)
        self.address = self.peer.rpartition(":")[0] or self.peer
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
        return to_wire(self.box.store.get_event(wire.integer(event_id, "event_id")))

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
            wire.integer(event_id, "event_id"),
            wire.integer(quantity, "quantity", -wire.MAX_INT),
            wire.text(customer, "customer"),
            wire.text(email, "email"),
            sector=wire.optional_text(sector, "sector"),
            category=wire.text(category, "category"),
            request_id=wire.optional_text(request_id, "request_id"),
            confirm=wire.boolean(confirm, "confirm"),
            seats=wire.seats(seats),
        )
        log.debug("%s %s: event %d %s x%d request %s from %s", reservation.status, reservation.code,
                 reservation.event_id, reservation.sector, reservation.quantity, request_id, self.peer)
        return to_wire(reservation)

    @remote
    def exposed_confirm(self, code: Any, email: Any, payment_ref: Any = None) -> tuple:
        with self._lookup():
            reservation = self.box.store.confirm(
                wire.text(code, "code"), wire.text(email, "email"), wire.optional_text(payment_ref, "payment_ref")
            )
        log.debug("confirmed %s from %s", reservation.code, self.peer)
        return to_wire(reservation)

    @remote
    def exposed_cancel(self, code: Any, email: Any) -> tuple:
        with self._lookup():
            reservation = self.box.store.cancel(wire.text(code, "code"), wire.text(email, "email"))
        log.debug("cancel %s -> %s from %s", reservation.code, reservation.status, self.peer)
        return to_wire(reservation)

    @remote
    def exposed_get_reservation(self, code: Any, email: Any) -> tuple:
        with self._lookup():
            return to_wire(self.box.store.get_reservation(wire.text(code, "code"), wire.text(email, "email")))

    @remote
    def exposed_get_seat_map(self, event_id: Any, sector: Any) -> tuple:
        return to_wire(self.box.store.seat_map(wire.integer(event_id, "event_id"), wire.text(sector, "sector")))

    @remote
    def exposed_join_waitlist(
        self, event_id: Any, quantity: Any, customer: Any, email: Any, sector: Any = None, callback: Any = None
    ) -> tuple:
        """Queue for a sold-out sector; `callback(entry)` is called when the entry is offered tickets.

        The entry is committed before its watch is placed, so a watch this server cannot take (over a cap, or
        shutting down) does not turn the answer into a refusal: the entry comes back with a ("watch", reason)
        pair, and the caller may watch it again (`watch_waitlist`, here or on another server)."""
        callback = wire.callback(callback, optional=True)
        self.box.joins.admit(self.peer, self.address)
        entry = self.box.store.join_waitlist(
            wire.integer(event_id, "event_id"), wire.integer(quantity, "quantity", -wire.MAX_INT), wire.text(customer, "customer"),
            wire.text(email, "email"), wire.optional_text(sector, "sector"),
        )
        log.info("waitlist %d: event %d %s x%d joined from %s", entry.id, entry.event_id, entry.sector, entry.quantity, self.peer)
        if callback is None:
            return to_wire(entry)
        try:
            self.box.live.watch_waitlist(entry.id, callback, self.connection)
        except (InvalidRequest, Unavailable) as exc:
            log.info("waitlist %d: joined without a watch from %s: %s", entry.id, self.peer, exc)
            return (*to_wire(entry), ("watch", f"not placed: {exc}; the entry is kept, watch it with watch_waitlist"))
        return to_wire(entry)

    @remote
    def exposed_watch_waitlist(self, entry_id: Any, email: Any, callback: Any) -> tuple:
        """Watch an entry joined earlier (a terminal whose server died moves its watch here); answers the entry
        as it stands now, so an offer made while nobody watched is not missed."""
        entry_id, callback = wire.integer(entry_id, "entry_id"), wire.callback(callback)
        with self._lookup():
            self.box.store.get_waitlist_entry(entry_id, wire.text(email, "email"))
        self.box.live.watch_waitlist(entry_id, callback, self.connection)
        # Read again after the watch is in place: an offer made between the two reads is in this answer.
        return to_wire(self.box.store.waitlist_entry(entry_id))

    @remote
    def exposed_leave_waitlist(self, entry_id: Any, email: Any) -> tuple:
        with self._lookup():
            entry = self.box.store.leave_waitlist(wire.integer(entry_id, "entry_id"), wire.text(email, "email"))
        log.info("waitlist %d: left (%s) from %s", entry.id, entry.status, self.peer)
        return to_wire(entry)

    @remote
    def exposed_get_waitlist_entry(self, entry_id: Any, email: Any) -> tuple:
        with self._lookup():
            return to_wire(self.box.store.get_waitlist_entry(wire.integer(entry_id, "entry_id"), wire.text(email, "email")))

    def _lookup(self) -> AbstractContextManager[None]:
        """Around a call that finds something by code (or entry id) and email: failures are throttled."""
        return self.box.lookups.failures(self.peer, self.address)

    @remote
    def exposed_admin_create_event(self, token: Any, name: Any, venue: Any, starts_at: Any, sectors: Any) -> tuple:
        self.box.check_token(token, self.peer)
        event = self.box.store.create_event(
            wire.text(name, "name"), wire.text(venue, "venue"), wire.text(starts_at, "starts_at"), wire.sectors(sectors)
        )
        log.info("created event %d %r with %d sectors from %s", event.id, event.name, len(event.sectors), self.peer)
        return to_wire(event)

    @remote
    def exposed_admin_update_event(
        self, token: Any, event_id: Any, name: Any = None, venue: Any = None, starts_at: Any = None,
        capacities: Any = (), half_limits: Any = (),
    ) -> tuple:
        self.box.check_token(token, self.peer)
        event = self.box.store.update_event(
            wire.integer(event_id, "event_id"), wire.optional_text(name, "name"), wire.optional_text(venue, "venue"),
            wire.optional_text(starts_at, "starts_at"),
            wire.pairs(capacities, "capacities", lambda v: wire.integer(v, "capacity")),
            wire.pairs(half_limits, "half_limits", lambda v: wire.optional_integer(v, "half_limit")),
        )
        log.info("updated event %d from %s", event.id, self.peer)
        return to_wire(event)

    @remote
    def exposed_admin_add_sector(
        self, token: Any, event_id: Any, name: Any, price_cents: Any, capacity: Any, half_limit: Any = None
    ) -> tuple:
        self.box.check_token(token, self.peer)
        event = self.box.store.add_sector(
            wire.integer(event_id, "event_id"), wire.text(name, "name"), wire.integer(price_cents, "price_cents"),
            wire.integer(capacity, "capacity"), wire.optional_integer(half_limit, "half_limit"),
        )
        log.info("added sector %r to event %d from %s", name, event.id, self.peer)
        return to_wire(event)

    @remote
    def exposed_admin_pause_event(self, token: Any, event_id: Any) -> tuple:
        return self._set_status(token, event_id, "paused", "paused")

    @remote
    def exposed_admin_resume_event(self, token: Any, event_id: Any) -> tuple:
        return self._set_status(token, event_id, "on_sale", "resumed")

    def _set_status(self, token: Any, event_id: Any, status: str, done: str) -> tuple:
        self.box.check_token(token, self.peer)
        event = self.box.store.set_event_status(wire.integer(event_id, "event_id"), status)
        log.info("%s event %d from %s", done, event.id, self.peer)
        return to_wire(event)

    @remote
    def exposed_admin_cancel_event(self, token: Any, event_id: Any) -> tuple:
        """Answers (("event", event record), ("cancelled_reservations", n))."""
        self.box.check_token(token, self.peer)
        event, cancelled = self.box.store.cancel_event(wire.integer(event_id, "event_id"))
        log.info("cancelled event %d and %d reservations from %s", event.id, cancelled, self.peer)
        return (("event", to_wire(event)), ("cancelled_reservations", cancelled))

    @remote
    def exposed_admin_delete_event(self, token: Any, event_id: Any) -> int:
        self.box.check_token(token, self.peer)
        self.box.store.delete_event(wire.integer(event_id, "event_id"))
        log.info("deleted event %d from %s", event_id, self.peer)
        return event_id

    @remote
    def exposed_admin_list_reservations(self, token: Any, event_id: Any = None, email: Any = None, status: Any = None) -> tuple:
        self.box.check_token(token, self.peer)
        found = self.box.store.list_reservations(
            wire.optional_integer(event_id, "event_id"), wire.optional_text(email, "email"), wire.optional_text(status, "status")
        )
        return tuple(to_wire(reservation) for reservation in found)

    @remote
    def exposed_admin_report(self, token: Any) -> tuple:
        self.box.check_token(token, self.peer)
        return tuple(to_wire(row) for row in self.box.store.report())

    @remote
    def exposed_admin_ledger(self, token: Any, since: Any = 0, limit: Any = 1000) -> tuple:
        self.box.check_token(token, self.peer)
        entries = self.box.store.ledger(wire.integer(since, "since"), wire.integer(limit, "limit", 1, 10_000))
        return tuple(to_wire(entry) for entry in entries)

    @remote
    def exposed_subscribe(self, event_id: Any, callback: Any) -> str:
        """Push `callback(update)` (an AvailabilityUpdate on the wire) for every change of the event, starting
        with its current state; answers the token for `unsubscribe`. See service/live.py."""
        event = self.box.store.get_event(wire.integer(event_id, "event_id"))
        return self.box.live.subscribe(event, wire.callback(callback), self.connection)

    @remote
    def exposed_unsubscribe(self, token: Any) -> bool:
        self.box.live.unsubscribe(wire.text(token, "token", 100), self.connection)
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
                database=shown_database(box.store.path),
                availability=availability,
            )
        return to_wire(status)


def serve(config: ServerConfig) -> int:
    """Run one ticket server until SIGTERM or SIGINT; the exit code (2: bad configuration, 1: cannot start)."""
    try:
        listen_tls = tls.server_context(config.certfile, config.keyfile) if config.certfile else None
        name_server_tls = tls.optional_client_context(config.cafile)
    except tls.TLSConfigError as exc:
        log.error("%s", exc)
        return 2
    try:
        store = Store(
            config.db, hold_seconds=config.hold_seconds, max_per_order=config.max_per_order, offer_seconds=config.offer_seconds,
            seed_demo=config.seed_demo,
        )
    except (OSError, RuntimeError, Unavailable) as exc:
        if is_database_url(config.db):
            log.error("%s", exc)  # it names the database, never its password
            return 2
        log.error("cannot open the database %s: %s", config.db, exc)
        return 1
    try:
        token, token_source = load_admin_token(config.admin_token, config.db)
    except ValueError as exc:
        log.error("%s", exc)
        store.close()
        return 2
    log.info("admin token from %s", token_source)
    box = BoxOffice(store, token, server_id=f"{socket.gethostname()}:{config.port}", throttle_scale=config.throttle_scale)
    quiet = logging.getLogger("bilheteria.rpyc")
    quiet.setLevel(logging.WARNING)
    try:
        server = TicketServer(
            classpartial(TicketService, box),
            hostname=config.host,
            port=config.port,
            protocol_config=PROTOCOL_CONFIG,
            logger=quiet,
            auto_register=False,
            admission=Admission(config.max_connections or default_max_connections(), box.floods),
            idle_seconds=config.idle_seconds,
            tls_context=listen_tls,
        )
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        store.close()
        return 1
    box.server_id = box.live.server_id = f"{socket.gethostname()}:{server.port}"
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: _stop_once(stopping))
    server.listener.listen(socket.SOMAXCONN)  # before the readiness line: a client may connect the moment it is printed
    threading.Thread(target=server.start, name="rpyc-accept", daemon=True).start()
    threading.Thread(target=sweep, args=(store, stopping), name="expiry-sweeper", daemon=True).start()
    threading.Thread(target=report_activity, args=(box.counters, stopping), name="activity", daemon=True).start()
    threading.Thread(target=box.floods.run, args=(stopping,), name="floods", daemon=True).start()
    mailer = Mailer(store, config.smtp, worker=box.server_id, mail_from=config.mail_from)
    mailer.start()
    box.live.start()
    registrar = Registrar(list(config.name_servers), server.port, tls_context=name_server_tls, key=config.registration_key,
                          can_serve=lambda: store.health() or server.admission.can_serve())
    registrar.start()
    log.info("clients connect with %s; name servers are reached with %s; at most %d connections, closed after %.0f s idle",
             "TLS only" if listen_tls else "plain text", "TLS" if name_server_tls else "plain text",
             server.admission.max_connections, server.idle_seconds)
    print(f"Ticket server listening on {config.host}:{server.port}", flush=True)
    stopping.wait()
    log.info("shutting down: unregistering, finishing in-flight calls")
    registrar.stop()
    server.active = False
    server.listener.close()
    box.counters.wait_idle(SHUTDOWN_SECONDS)
    box.live.stop()
    server.close()
    mailer.stop()
    store.close()
    log.info("stopped cleanly")
    return 0


def _stop_once(stopping: threading.Event) -> None:
    """The signal handler: stop listening for the signals first, so a second SIGTERM cannot interrupt this one while
    it holds the event's lock (a handler runs on the main thread, and the lock is not reentrant)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    stopping.set()


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_config(argv)
    except ConfigError as exc:
        print(f"server.py: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s tickets@{config.port} %(message)s")
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
