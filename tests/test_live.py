"""Live updates: availability pushed through RPyC callbacks, across replicas, past hostile and dead subscribers.

Real processes on free ports, as everywhere: a sale made through one replica must reach a subscriber of
another within a second (each replica follows the shared ledger), a subscriber that never answers or dies
costs nobody else anything and is dropped with one log line, and a subscription outlives its server.
"""

from __future__ import annotations

import signal
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import pytest
import rpyc
from conftest import ADMIN_TOKEN, Cluster
from procs import ROOT, start, terminals, wait_until
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_stream

if str(ROOT) not in sys.path:  # plain `pytest tests/` puts only tests/ on the path
    sys.path.insert(0, str(ROOT))

from client_core import AvailabilityUpdate, InvalidRequest, NotFound, TicketClient
from database import Store
from records import LedgerEntry
from service.live import HOLE_SECONDS, MAX_PER_PEER, LedgerCursor

LOCAL = "127.0.0.1"
SECTOR = "Geral"


def pinned(port: int, **options) -> TicketClient:
    """A client that talks to exactly one server."""
    return TicketClient(name_servers=[], servers=[f"{LOCAL}:{port}"], **options)


def new_event(port: int, capacity: int) -> int:
    with pinned(port) as admin:
        event = admin.create_event(ADMIN_TOKEN, "Ensaio ao Vivo", "Teatro de Testes", "2027-06-01T20:00:00-03:00",
                                   [(SECTOR, 4000, capacity)])
    return event.id


class Inbox:
    """What a subscriber was sent, with a way to wait for the update a test expects."""

    def __init__(self) -> None:
        self.updates: list[AvailabilityUpdate] = []
        self.arrived = threading.Condition()

    def __call__(self, update: AvailabilityUpdate) -> None:
        with self.arrived:
            self.updates.append(update)
            self.arrived.notify_all()

    def wait_for(self, predicate: Callable[[AvailabilityUpdate], bool], timeout: float = 5.0) -> AvailabilityUpdate:
        with self.arrived:
            found = self.arrived.wait_for(lambda: next((u for u in self.updates if predicate(u)), None), timeout)
        assert found, f"no matching update in {timeout} s; got {self.updates}"
        return found


def server_lines(cluster: Cluster, port: int, text: str) -> list[str]:
    return [line for line in cluster.servers[port].lines if text in line]


def test_a_sale_on_replica_b_reaches_a_subscriber_of_replica_a_within_a_second(cluster_factory) -> None:
    cluster = cluster_factory(servers=2)
    port_a, port_b = cluster.servers
    event_id = new_event(port_b, capacity=40)
    inbox = Inbox()
    with pinned(port_a) as watcher, pinned(port_b) as seller:
        subscription = watcher.subscribe(event_id, inbox)
        first = inbox.wait_for(lambda u: u.sector == SECTOR)
        assert (first.available, first.capacity, first.states) == (40, 40, "")
        assert subscription.server == f"{LOCAL}:{port_a}"

        started = time.monotonic()
        sale = seller.reserve(event_id, 3, "Ana", "ana@example.com", SECTOR, confirm=True)
        update = inbox.wait_for(lambda u: u.available == 37, timeout=1.0)
        assert time.monotonic() - started < 1.0

        sold = [e for e in seller.ledger(ADMIN_TOKEN, since=first.seq) if e.code == sale.code]
        assert update.seq == sold[-1].seq > first.seq
        assert (update.event_id, update.sector, update.capacity) == (event_id, SECTOR, 40)
        assert update.server_id.endswith(f":{port_a}"), "pushed by A, which read B's sale from the ledger"
        subscription.close()


def test_a_subscriber_that_never_answers_delays_no_sale_and_is_dropped(cluster_factory) -> None:
    cluster = cluster_factory(servers=1)
    (port,) = cluster.servers
    event_id = new_event(port, capacity=40)
    released = threading.Event()
    snapshots: list[tuple] = []

    def never_returns(update: tuple) -> None:
        """Takes the snapshot (RPyC may run it on the subscribing thread, which must come back), then hangs."""
        if snapshots:
            released.wait()
        snapshots.append(update)

    hostile = rpyc.connect(LOCAL, port)
    rpyc.BgServingThread(hostile, callback=released.set)
    token = hostile.root.subscribe(event_id, never_returns)
    inbox = Inbox()
    latencies: list[float] = []
    try:
        with pinned(port) as watcher:
            watcher.subscribe(event_id, inbox)

            def sell(n: int) -> None:
                with pinned(port) as seller:
                    for _ in range(5):
                        started = time.monotonic()
                        seller.reserve(event_id, 1, f"Cliente {n}", f"c{n}@example.com", SECTOR, confirm=True)
                        latencies.append(time.monotonic() - started)

            with terminals(8, sell, timeout=30):
                pass
            assert len(latencies) == 40 and max(latencies) < 1.0, f"slowest sale {max(latencies):.2f} s"
            inbox.wait_for(lambda u: u.available == 0, timeout=2.0)
            for earlier, later in zip(inbox.updates, inbox.updates[1:], strict=False):
                assert later.seq > earlier.seq and later.available <= earlier.available

            dropped = cluster.servers[port].wait_for_line(f"dropped subscriber {token} of event {event_id}", timeout=5)
            assert "no answer within 2 s" in dropped
            assert len(server_lines(cluster, port, f"dropped subscriber {token}")) == 1
    finally:
        released.set()
    store = Store(str(cluster.db))
    try:
        assert store.check_invariants() == []
        assert sum(r.quantity for r in store.reservations(event_id) if r.status == "confirmed") == 40
    finally:
        store.close()


SUBSCRIBER = textwrap.dedent("""
    import sys, threading, rpyc
    connection = rpyc.connect("127.0.0.1", int(sys.argv[1]))
    rpyc.BgServingThread(connection, callback=lambda: None)
    print("subscribed", connection.root.subscribe(int(sys.argv[2]), lambda update: None), flush=True)
    threading.Event().wait()
""")


def test_a_subscriber_killed_with_sigkill_is_dropped_with_one_line(cluster_factory) -> None:
    cluster = cluster_factory(servers=1)
    (port,) = cluster.servers
    event_id = new_event(port, capacity=10)
    subscriber = start("subscriber", ["-c", SUBSCRIBER, str(port), str(event_id)], ready="subscribed")
    token = subscriber.wait_for_line("subscribed").split()[1]
    subscriber.signal(signal.SIGKILL)
    subscriber.popen.wait(timeout=10)
    cluster.servers[port].wait_for_line(f"dropped subscriber {token} of event {event_id}: connection closed", timeout=5)
    inbox = Inbox()
    with pinned(port) as client:
        client.subscribe(event_id, inbox)
        client.reserve(event_id, 2, "Bia", "bia@example.com", SECTOR, confirm=True)
        inbox.wait_for(lambda u: u.available == 8)
    assert len(server_lines(cluster, port, f"dropped subscriber {token}")) == 1


def test_a_subscription_moves_to_another_server_when_its_server_is_killed(cluster_factory) -> None:
    cluster = cluster_factory(servers=2)
    ports = list(cluster.servers)
    event_id = new_event(ports[0], capacity=20)
    inbox = Inbox()
    with TicketClient(name_servers=[], servers=[f"{LOCAL}:{p}" for p in ports], attempt_timeout=1.0) as client:
        subscription = client.subscribe(event_id, inbox)
        before = subscription.server
        assert before is not None
        dead = int(before.rpartition(":")[2])
        cluster.servers[dead].kill()
        wait_until(lambda: subscription.server not in (None, before), timeout=5, what="the subscription on the survivor")
        (survivor,) = (p for p in ports if p != dead)
        assert subscription.server == f"{LOCAL}:{survivor}"
        with pinned(survivor) as seller:
            seller.reserve(event_id, 4, "Caio", "caio@example.com", SECTOR, confirm=True)
        update = inbox.wait_for(lambda u: u.available == 16)
        assert update.server_id.endswith(f":{survivor}")
        subscription.close()


def test_bad_subscriptions_are_refused_clearly(cluster_factory) -> None:
    cluster = cluster_factory(servers=1)
    (port,) = cluster.servers
    connection = rpyc.connect(LOCAL, port)
    rpyc.BgServingThread(connection, callback=lambda: None)

    def callback(_update: tuple) -> None:
        """Takes the snapshots sent to the subscriptions that are accepted."""

    refusals = [
        ((1, 5), "errors.InvalidRequest", "callback must be a function or method of the caller"),
        ((1, [1, 2]), "errors.InvalidRequest", "callback must be a function or method of the caller"),
        (("x", callback), "errors.InvalidRequest", "event_id must be an integer"),
        ((999_999, callback), "errors.NotFound", "No event with id 999999"),
    ]
    for arguments, kind, text in refusals:
        with pytest.raises(Exception) as raised:  # a remote exception's class is made up on arrival
            connection.root.subscribe(*arguments)
        assert type(raised.value).__name__ == kind and text in str(raised.value)
        assert "Traceback (most recent call last)" not in str(raised.value)
    with pytest.raises(Exception, match="No subscription 'nope' on this connection"):
        connection.root.unsubscribe("nope")
    with pytest.raises(Exception, match="token must be a string"):
        connection.root.unsubscribe(5)

    tokens = [connection.root.subscribe(1, callback) for _ in range(16)]
    with pytest.raises(Exception, match="at most 16 subscriptions per connection"):
        connection.root.subscribe(1, callback)
    assert connection.root.unsubscribe(tokens[0]) is True
    with pytest.raises(Exception, match="No subscription"):
        connection.root.unsubscribe(tokens[0])
    connection.close()

    with pinned(port) as client:
        with pytest.raises(NotFound, match="No event with id 999999"):
            client.subscribe(999_999, print)
        with pytest.raises(InvalidRequest, match="event_id must be an integer"):
            client.subscribe("1", print)  # type: ignore[arg-type]


def connect_from(source: str, port: int) -> rpyc.Connection:
    """A raw RPyC connection from another loopback address, so the server sees another peer than the honest client's."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect((LOCAL, port))
    connection = connect_stream(SocketStream(sock))
    rpyc.BgServingThread(connection, callback=lambda: None)
    return connection


def test_one_address_cannot_take_every_subscription_and_a_committed_waitlist_entry_is_never_unavailable(cluster_factory) -> None:
    """An attacker at 127.0.0.2 opens 13 connections and subscribes as much as it can: it holds 200 (MAX_PER_PEER), an
    honest terminal elsewhere still subscribes, and a join_waitlist whose watch the caps refuse still answers its
    committed entry, saying that the watch was not placed (it was once an error, though the entry was committed)."""
    cluster = cluster_factory(servers=1)
    (port,) = cluster.servers
    event_id = new_event(port, capacity=1)
    attackers = [connect_from("127.0.0.2", port) for _ in range(13)]

    def callback(_payload: tuple) -> None:
        """Takes what the feed sends the attacker's subscriptions."""

    held = 0
    try:
        for connection in attackers:
            for _ in range(16):
                try:
                    connection.root.subscribe(event_id, callback)
                except Exception as exc:  # noqa: BLE001 - a remote exception's class is made up on arrival
                    assert "at most 200 subscriptions from one address (127.0.0.2)" in str(exc), exc
                    break
                held += 1
        assert held == MAX_PER_PEER
        inbox = Inbox()
        with pinned(port) as honest:
            subscription = honest.subscribe(event_id, inbox)
            inbox.wait_for(lambda update: update.event_id == event_id)
            honest.reserve(event_id, 1, "Ana", "ana@example.com", confirm=True)
            inbox.wait_for(lambda update: update.available == 0)
            subscription.close()
        full = attackers[0]
        answer = dict(full.root.join_waitlist(event_id, 1, "Bia", "bia@example.com", None, callback))
        assert answer["status"] == "waiting" and "not placed: at most 16 subscriptions per connection" in answer["watch"]
        assert dict(full.root.get_waitlist_entry(answer["id"], "bia@example.com"))["status"] == "waiting"
    finally:
        for connection in attackers:
            connection.close()
    assert server_lines(cluster, port, f"waitlist {answer['id']}: joined without a watch")


def test_a_waitlist_offer_made_on_b_reaches_its_owner_on_a_and_seated_sectors_carry_their_seats(cluster_factory) -> None:
    cluster = cluster_factory(servers=2)
    port_a, port_b = cluster.servers
    with pinned(port_b) as admin:
        event = admin.create_event(ADMIN_TOKEN, "Sala Numerada", "Teatro de Testes", "2027-06-01T20:00:00-03:00",
                                   [("Plateia", 6000, 1, 2)])
    offers: list = []
    arrived = threading.Event()
    inbox = Inbox()
    with pinned(port_a) as owner, pinned(port_b) as seller:
        owner.subscribe(event.id, inbox)
        assert inbox.wait_for(lambda u: u.sector == "Plateia").states == ".."
        hold = seller.reserve(event.id, 2, "Ana", "ana@example.com", "Plateia")
        assert inbox.wait_for(lambda u: u.available == 0).states == "hh"
        entry = owner.join_waitlist(event.id, 2, "Bia", "bia@example.com", "Plateia",
                                    on_offer=lambda offered: (offers.append(offered), arrived.set()))
        assert entry.status == "waiting"
        seller.cancel(hold.code, "ana@example.com")
        assert arrived.wait(2.0), "the offer made in B's cancel reached the owner through A"
        (offered,) = offers
        assert (offered.id, offered.status, offered.code is not None) == (entry.id, "offered", True)
        assert owner.confirm(offered.code, "bia@example.com").status == "confirmed"
        assert inbox.wait_for(lambda u: u.states == "ss").available == 0


def test_a_waitlist_watch_moves_when_its_server_dies_and_an_offer_made_meanwhile_still_arrives(cluster_factory) -> None:
    """The owner's line server is killed; the offer is made on the other server while nobody watches the entry.
    The line moves, watches the entry again, and the answer (already offered) reaches on_offer once."""
    cluster = cluster_factory(servers=2)
    with TicketClient([cluster.name_server_address]) as seller:
        event = seller.create_event(ADMIN_TOKEN, "Última Sessão", "Cine Teste", "2027-06-01T20:00:00-03:00", [("Geral", 3000, 1)])
        hold = seller.reserve(event.id, 1, "Ana", "ana@example.com")
    offers: list = []
    arrived = threading.Event()
    with TicketClient([cluster.name_server_address]) as owner:
        entry = owner.join_waitlist(event.id, 1, "Bia", "bia@example.com", on_offer=lambda offered: (offers.append(offered), arrived.set()))
        line_port = int(owner._line.server.rsplit(":", 1)[1])
        cluster.servers[line_port].kill()
        (survivor,) = (port for port in cluster.servers if port != line_port)
        with pinned(survivor) as clerk:
            clerk.cancel(hold.code, "ana@example.com")
        assert arrived.wait(15.0), "the watch moved to the surviving server and found the offer"
    (offered,) = offers
    assert (offered.id, offered.status, offered.quantity) == (entry.id, "offered", 1)


def entry(seq: int) -> LedgerEntry:
    return LedgerEntry(seq, "2027-01-01T00:00:00Z", "sell", "X", 1, SECTOR, 1)


def test_the_cursor_hands_out_a_row_that_commits_late_once_and_gives_up_a_hole_after_a_while() -> None:
    """PostgreSQL draws row numbers at insert and shows rows at commit: 7 may show after 8, and a rolled-back
    transaction's number never shows. The cursor must hand out 7 when it comes and stop waiting for a hole."""
    now = [100.0]
    cursor = LedgerCursor(5, clock=lambda: now[0])
    assert [e.seq for e in cursor.fresh([entry(6), entry(8), entry(10)])] == [6, 8, 10]
    assert (cursor.floor, cursor.top, cursor.waiting) == (6, 10, True)
    assert [e.seq for e in cursor.fresh([entry(7), entry(8), entry(10)])] == [7], "the late row, and nothing twice"
    assert cursor.floor == 8
    now[0] += HOLE_SECONDS + 0.1
    assert [e.seq for e in cursor.fresh([entry(10), entry(11)])] == [11]
    assert (cursor.floor, cursor.top, cursor.waiting) == (11, 11, False), "hole 9 given up, the floor caught up"
