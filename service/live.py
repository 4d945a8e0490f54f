"""The live feed: availability changes and waitlist offers pushed to clients through RPyC callbacks.

Every replica follows the shared ledger on its own (one follower thread reading `Store.ledger` after each
`wait_for_ledger`), so a sale made through any replica reaches the subscribers of every replica, and no
server ever calls another. A sale never touches a subscriber: it only appends to the ledger. The follower
turns the new rows into one `AvailabilityUpdate` per touched sector and drops it into each subscriber's
small queue without waiting; each subscriber has its own delivery thread that calls the client back
asynchronously and waits a bounded time for the answer. A subscriber that is slow, dead or hostile
therefore costs only its own thread, and is dropped: its subscriptions end and its connection is cut, so
an honest client notices and subscribes again (and is sent the current state).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import rpyc

from backoff import Backoff
from database import Store
from errors import BoxOfficeError, InvalidRequest, NotFound, Unavailable
from records import AvailabilityUpdate, Event, LedgerEntry, to_wire
from service.transport import peer

log = logging.getLogger("bilheteria.service.live")

MAX_PER_CONNECTION = 16
"""Subscriptions and watches one connection may hold: a terminal watches a few events and its own entries."""
MAX_PER_PEER = 200
"""...and one remote address, whatever its number of connections: a tenth of MAX_TOTAL, room for a box office's
counters behind one NAT address, while 125 connections of one attacker can no longer take all 2,000."""
MAX_TOTAL = 2000
QUEUE_SIZE = 64
ANSWER_SECONDS = 2.0
BATCH = 1000
HOLE_SECONDS = 1.0
"""How long a missing ledger number is awaited before it is taken for a rolled-back transaction's."""
WAITLIST_DETAIL = "waitlist:"
FINAL_WAITLIST_ACTIONS = ("lapse", "leave")
"""After these the entry will never be offered again, so its watch ends."""
RETRY = Backoff(base=1.0, ceiling=1.0, low=1.0, high=1.0)
"""The wait after a failed read of the ledger: one second, every time, so a database back is noticed within it."""


class Delivery:
    """One subscriber's mailbox: a bounded queue emptied by its own thread, one callback in flight at a time."""

    def __init__(self, feed: LiveFeed, key: str | int, label: str, callback: Any, connection: rpyc.Connection) -> None:
        self.feed = feed
        self.key = key
        """The subscription token, or the waitlist entry id for a watch."""
        self.label = label
        self.connection = connection
        self.host = peer(connection).rpartition(":")[0]
        """The remote address, for MAX_PER_PEER."""
        self.send = rpyc.async_(callback)
        self.queue: queue.Queue[tuple | None] = queue.Queue(QUEUE_SIZE)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"live-{key}", daemon=True)

    def put(self, payload: tuple) -> None:
        """Never blocks: the follower must not wait for any subscriber."""
        try:
            self.queue.put_nowait(payload)
        except queue.Full:
            self.feed.drop(self, f"more than {QUEUE_SIZE} updates waiting")

    def stop(self) -> None:
        """The flag stops a thread stuck in a delivery when it comes back; the None wakes an idle one."""
        self.stopped.set()
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass

    def _run(self) -> None:
        while (payload := self.queue.get()) is not None and not self.stopped.is_set():
            failure = self._deliver(payload)
            if failure:
                self.feed.drop(self, failure)
                return

    def _deliver(self, payload: tuple) -> str:
        """Call the client back and wait up to ANSWER_SECONDS; the reason it failed, or "" when it answered.

        The answer is collected by the connection's own serving thread; this one only waits for it, so it
        never runs anything the client sends."""
        answered = threading.Event()
        try:
            result = self.send(payload)
        except (EOFError, OSError) as exc:
            return f"connection lost ({type(exc).__name__})"
        result.add_callback(lambda _: answered.set())
        answered.wait(ANSWER_SECONDS)
        if not result.ready:
            return f"no answer within {ANSWER_SECONDS:.0f} s"
        if result.error:
            try:
                result.value  # noqa: B018 - raises the client's exception, whose class name is all we keep
            except Exception as exc:  # noqa: BLE001 - a remote exception arrives as a class made up on the spot
                return f"the callback raised {type(exc).__name__[-80:]}"
        return ""


def cut(connection: rpyc.Connection) -> None:
    """Close a client's connection without RPyC's goodbye (which would wait for an answer a hung client never sends)."""
    try:
        connection._channel.close()
    except (OSError, EOFError):
        pass


class LedgerCursor:
    """Where the follower stands in the ledger.

    A row's number is drawn when the row is written but the row shows when its transaction commits, so with
    PostgreSQL row 7 may show after row 8 (SQLite's writers take turns, so there it never does). The cursor
    re-reads from the first number it has not seen (`floor`), hands out only rows it has not handled, and
    gives up on a missing number after HOLE_SECONDS: a rolled-back transaction's number never shows.
    `top` only grows: the highest number handled, which labels every update.
    """

    def __init__(self, start: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.floor = self.top = start
        self._clock = clock
        self._seen: set[int] = set()
        self._holes: dict[int, float] = {}

    def fresh(self, entries: Sequence[LedgerEntry]) -> list[LedgerEntry]:
        """The rows of a read from `floor` not handled before; moves the floor past every number settled."""
        new = [entry for entry in entries if entry.seq > self.floor and entry.seq not in self._seen]
        self._seen.update(entry.seq for entry in new)
        if entries:
            self.top = max(self.top, entries[-1].seq)
        now = self._clock()
        for seq in range(self.floor + 1, self.top):
            if seq not in self._seen:
                self._holes.setdefault(seq, now)
        while True:
            following = self.floor + 1
            if following in self._seen:
                self._seen.discard(following)
            elif now - self._holes.get(following, now) < HOLE_SECONDS or following not in self._holes:
                break
            self._holes.pop(following, None)
            self.floor = following
        return new

    @property
    def waiting(self) -> bool:
        """A hole is open: read again soon, a late row may show."""
        return bool(self._holes)


class LiveFeed:
    """Subscriptions and waitlist watches of this server, and the one thread that follows the ledger for them."""

    def __init__(self, store: Store, server_id: str) -> None:
        self.store = store
        self.server_id = server_id
        self._lock = threading.Condition()
        self._subscribers: dict[str, tuple[int, Delivery]] = {}
        """token -> (event id, delivery)"""
        self._watchers: dict[int, Delivery] = {}
        """waitlist entry id -> delivery"""
        self._cursor = LedgerCursor(0)
        self._epoch = 0
        """Grows whenever the feed wakes from idle and jumps to the ledger's end, so a read begun before is thrown away."""
        self._stopping = threading.Event()
        """Set once by `stop`; the follower's waits after a failure are taken on it, so a stop cuts them short."""
        self._failures = 0
        """Failed reads in a row: the attempt number of the next wait."""
        self._thread = threading.Thread(target=self._follow, name="live-feed", daemon=True)

    # -- what the service calls ------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            deliveries = [delivery for _, delivery in self._subscribers.values()] + list(self._watchers.values())
            self._subscribers.clear()
            self._watchers.clear()
            self._lock.notify_all()
        for delivery in deliveries:
            delivery.stop()
        self._thread.join(5)

    def subscribe(self, event: Event, callback: Any, connection: rpyc.Connection) -> str:
        """Register, then queue the current state of every sector: the subscriber draws at once, and misses
        nothing committed after that read because the follower already counts it."""
        token = uuid.uuid4().hex[:16]
        delivery = Delivery(self, token, f"subscriber {token} of event {event.id}", callback, connection)
        with self._lock:
            self._admit(connection)
            self._subscribers[token] = (event.id, delivery)
            seq = self._cursor.top
        try:
            current = self._updates(event.id, {None}, seq)
        except BoxOfficeError:
            self._remove(delivery, "its first read failed", cut_connection=False)
            raise
        delivery.thread.start()
        for update in current:
            delivery.put(to_wire(update))
        log.info("%s subscribed from %s", delivery.label, peer(connection))
        return token

    def unsubscribe(self, token: str, connection: rpyc.Connection) -> None:
        """Only the connection that subscribed may end a subscription; any other token is unknown to it."""
        with self._lock:
            found = self._subscribers.get(token)
            if found is None or found[1].connection is not connection:
                raise NotFound(f"No subscription {token[:40]!r} on this connection")
            del self._subscribers[token]
        found[1].stop()
        log.info("%s unsubscribed", found[1].label)

    def watch_waitlist(self, entry_id: int, callback: Any, connection: rpyc.Connection) -> None:
        """Call `callback(entry)` when the entry gets an offer, whichever replica made it."""
        delivery = Delivery(self, entry_id, f"waitlist watcher of entry {entry_id}", callback, connection)
        with self._lock:
            self._admit(connection)
            previous = self._watchers.pop(entry_id, None)
            self._watchers[entry_id] = delivery
        if previous is not None:
            previous.stop()
        delivery.thread.start()
        log.info("%s registered from %s", delivery.label, peer(connection))

    def disconnect(self, connection: rpyc.Connection) -> None:
        """The connection closed: everything it subscribed ends, one log line each."""
        with self._lock:
            gone = [delivery for _, delivery in self._subscribers.values() if delivery.connection is connection]
            gone += [delivery for delivery in self._watchers.values() if delivery.connection is connection]
        for delivery in gone:
            self._remove(delivery, "connection closed", cut_connection=False)

    def drop(self, delivery: Delivery, reason: str) -> None:
        """A subscriber failed a delivery: it goes, and so does its connection."""
        self._remove(delivery, reason, cut_connection=True)

    # -- bookkeeping ------------------------------------------------------------------------------

    def _admit(self, connection: rpyc.Connection) -> None:
        """Called with the lock held: refuse beyond the caps, clearly; else wake the follower if it was idle."""
        if self._stopping.is_set():
            raise Unavailable("the server is shutting down")
        everyone = [delivery for _, delivery in self._subscribers.values()] + list(self._watchers.values())
        if len(everyone) >= MAX_TOTAL:
            raise Unavailable(f"this server already feeds {MAX_TOTAL} subscriptions; try another server")
        if sum(delivery.connection is connection for delivery in everyone) >= MAX_PER_CONNECTION:
            raise InvalidRequest(f"at most {MAX_PER_CONNECTION} subscriptions per connection; unsubscribe one first")
        host = peer(connection).rpartition(":")[0]
        if sum(delivery.host == host for delivery in everyone) >= MAX_PER_PEER:
            raise InvalidRequest(f"at most {MAX_PER_PEER} subscriptions from one address ({host}); unsubscribe one first")
        self._activate()

    def _activate(self) -> None:
        """Called with the lock held: waking from idle, start at the ledger's end (no replay of history)."""
        if not self._subscribers and not self._watchers:
            self._cursor = LedgerCursor(self.store.ledger_end())
            self._epoch += 1
            self._lock.notify_all()

    def _remove(self, delivery: Delivery, reason: str, cut_connection: bool) -> None:
        with self._lock:
            if type(delivery.key) is str and self._subscribers.get(delivery.key, (0, None))[1] is delivery:
                del self._subscribers[delivery.key]
            elif type(delivery.key) is int and self._watchers.get(delivery.key) is delivery:
                del self._watchers[delivery.key]
            else:
                return
        log.log(logging.WARNING if cut_connection else logging.INFO, "dropped %s: %s", delivery.label, reason)
        delivery.stop()
        if cut_connection:
            cut(delivery.connection)

    # -- following the ledger ---------------------------------------------------------------------

    def _follow(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._stopping.is_set() or self._subscribers or self._watchers)
                if self._stopping.is_set():
                    return
                cursor, epoch = self._cursor, self._epoch
                since = cursor.floor
            try:
                entries = self.store.ledger(since, BATCH)
            except BoxOfficeError as exc:
                if not self._failures:
                    log.warning("live feed cannot read the ledger after seq %d: %s; retrying every second", since, exc)
                self._retry_later(self._failures)
                self._failures += 1
                continue
            if self._failures:
                log.info("live feed reads the ledger again")
                self._failures = 0
            with self._lock:
                if epoch != self._epoch:
                    continue
                new = cursor.fresh(entries)
            if not new:
                self.store.wait_for_ledger(0.1 if cursor.waiting else 0.5)
                continue
            try:
                self._publish(new, cursor.top)
            except BoxOfficeError as exc:
                log.warning("live feed could not read what rows %d to %d changed: %s; trying them again", since + 1, entries[-1].seq, exc)
                with self._lock:
                    if epoch == self._epoch:
                        self._cursor = LedgerCursor(since)
                self._retry_later(0)
            except Exception:  # the follower serves every subscriber, so it outlives a failure on some rows
                log.exception("live feed failed on the ledger rows %d to %d; skipping them", since + 1, entries[-1].seq)

    def _retry_later(self, attempt: int) -> None:
        """Wait before reading again after a failure; `stop` interrupts the wait."""
        self._stopping.wait(RETRY.delay(attempt))

    def _publish(self, entries: Iterable[LedgerEntry], label: int) -> None:
        """One update per touched sector for the event's subscribers, and the offers for their watchers."""
        touched: dict[int, set[str | None]] = {}
        offers: list[int] = []
        finished: list[int] = []
        for entry in entries:
            if entry.event_id is not None:
                touched.setdefault(entry.event_id, set()).add(entry.sector)
            entry_id = _waitlist_id(entry.detail)
            if entry_id is not None and entry.action == "offer":
                offers.append(entry_id)
            elif entry_id is not None and entry.action in FINAL_WAITLIST_ACTIONS:
                finished.append(entry_id)
        with self._lock:
            by_event: dict[int, list[Delivery]] = {}
            for event_id, delivery in self._subscribers.values():
                by_event.setdefault(event_id, []).append(delivery)
            watched = {entry_id: self._watchers[entry_id] for entry_id in offers + finished if entry_id in self._watchers}
        for event_id, sectors in touched.items():
            if event_id in by_event:
                payloads = [to_wire(update) for update in self._updates(event_id, sectors, label)]
                for delivery in by_event[event_id]:
                    for payload in payloads:
                        delivery.put(payload)
        for entry_id in offers:
            if entry_id in watched:
                watched[entry_id].put(to_wire(self.store.waitlist_entry(entry_id)))
        for entry_id in finished:
            if entry_id in watched:
                self._end_watch(watched[entry_id])

    def _end_watch(self, delivery: Delivery) -> None:
        with self._lock:
            if self._watchers.get(delivery.key) is not delivery:
                return
            del self._watchers[delivery.key]
        delivery.stop()
        log.info("%s ended: the entry is no longer waiting", delivery.label)

    def _updates(self, event_id: int, sectors: set[str | None], label: int) -> list[AvailabilityUpdate]:
        """Where each touched sector stands now (a row without a sector touches them all), labelled with the
        highest ledger number handled: the state was read after every row up to it that had committed."""
        try:
            event = self.store.get_event(event_id)
        except NotFound:
            return []
        updates = []
        for sector in event.sectors:
            if sector.name not in sectors and None not in sectors:
                continue
            states = self.store.seat_map(event_id, sector.name).states if sector.seated else ""
            updates.append(AvailabilityUpdate(label, event_id, sector.name, sector.available, sector.capacity, states, self.server_id))
        return updates


def _waitlist_id(detail: str | None) -> int | None:
    if detail and detail.startswith(WAITLIST_DETAIL) and detail[len(WAITLIST_DETAIL):].isdigit():
        return int(detail[len(WAITLIST_DETAIL):])
    return None
