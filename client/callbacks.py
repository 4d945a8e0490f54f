"""The callback line: servers push live availability and waitlist offers to the terminal, through failover.

A terminal that subscribes keeps one extra connection on which servers call it back, served by a background
thread; a supervisor pings that server, notices its death, and makes every subscription and waitlist watch
again on another one, through the same `Failover` as any call. Users' callbacks run on a dispatcher thread of
their own, so a slow or raising callback never stalls the line.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
from collections.abc import Callable
from typing import Any, Self

import rpyc

from client.connection import callattr, close_at_once, dial, invoke
from client.failover import Failover
from errors import ReservationError, Unavailable
from net.registry_protocol import Address, show
from records import AvailabilityUpdate, Record, WaitlistEntry, from_wire

log = logging.getLogger("bilheteria.client.callbacks")

KEEPALIVE_SECONDS = 2.0
"""How often the callback line asks its server for a sign of life: a hung server is noticed within about this plus
one attempt timeout, a dead one at once (its socket closes)."""



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
    death and makes every subscription again on another server (the client's own `Failover`: same discovery,
    breakers and rounds as any call, with jittered backoff between rounds), until the subscriptions are closed.
    Empty, the line hangs up.
    """

    def __init__(self, failover: Failover, tls: ssl.SSLContext | None) -> None:
        self._failover = failover
        self._tls = tls
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
        _, connection, answer = self._call("join_waitlist", *arguments)
        fields = dict(answer)
        # A server whose watch caps were full committed the entry but placed no watch ("watch" says why): the
        # watch starts as a stray, so the supervisor places it again, here or on another server.
        watch.connection, watch.entry_id = (None if fields.get("watch") else connection), fields["id"]
        with self._lock:
            if not connection.closed or watch.connection is None:
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
                connection._config["sync_request_timeout"] = self._failover.attempt_timeout
                callattr(connection, "unsubscribe", token)
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
        address, connection, token = self._call("subscribe", subscription.event_id, subscription.receive)
        with self._lock:
            subscription.token = token
            if not connection.closed and not subscription.closed:
                subscription.connection, subscription.address = connection, address

    def _call(self, method: str, *args: Any) -> tuple[Address, rpyc.Connection, Any]:
        """`method` through the failover on this line (its server first): where it went and what it answered."""
        with self._calls:
            return self._failover.run(
                lambda address, timeout: (address, *invoke(self, address, timeout, method, *args)), method, first=self._address
            )

    def open(self, address: Address, deadline: float) -> rpyc.Connection:
        """The line to `address`, dialled there (and served) if it is elsewhere or down: `invoke` calls this."""
        with self._lock:
            connection = self._connection if self._address == address else None
        if connection is None or connection.closed:
            connection = dial(address, deadline, self._tls)
            self._install(connection, address)
        return connection

    def lost(self, address: Address, connection: rpyc.Connection) -> None:
        self._hang_up(connection)

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
        close_at_once(connection)
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
            delay = KEEPALIVE_SECONDS if failures == 0 else self._failover.reconnect_delay(failures)
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
            connection._config["sync_request_timeout"] = self._failover.attempt_timeout
            return callattr(connection, "ping") == "pong"
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
                _, connection, answer = self._call("watch_waitlist", watch.entry_id, watch.email, watch.receive)
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
