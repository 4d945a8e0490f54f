"""Three server processes on one database behave as one box office, on SQLite and on PostgreSQL: no oversell,
a request retried on another replica books once, each lapsed hold expires once, and a subscriber of one
replica sees what the others sold."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from conftest import ADMIN_TOKEN, BACKENDS
from procs import terminals, wait_until

from client_core import AvailabilityUpdate, SoldOut, TicketClient
from database import Store

CAPACITY = 30
HOLD_SECONDS = 2.0


def pinned(port: int) -> TicketClient:
    return TicketClient(name_servers=[], servers=[f"127.0.0.1:{port}"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_replicas_are_one_box_office(cluster_factory) -> None:
    cluster = cluster_factory(servers=3, hold_seconds=HOLD_SECONDS)
    ports = list(cluster.servers)
    with pinned(ports[0]) as admin:
        race = admin.create_event(ADMIN_TOKEN, "Três Réplicas", "Teatro", "2027-06-01T20:00:00-03:00", [("Unico", 5000, CAPACITY)]).id
        lapse = admin.create_event(ADMIN_TOKEN, "Reservas que Caducam", "Teatro", "2027-06-02T20:00:00-03:00", [("Unico", 5000, 6)]).id

    latest: dict[str, AvailabilityUpdate] = {}
    with pinned(ports[0]) as watcher:
        watcher.subscribe(race, lambda update: latest.__setitem__("race", update))
        sold: list[str] = []
        replayed: Counter[bool] = Counter()
        lock = threading.Lock()

        def buyer(number: int) -> None:
            """Buys 2 at a time on one replica and asks again with the same request id on the next one."""
            home, other = ports[number % 3], ports[(number + 1) % 3]
            with pinned(home) as client, pinned(other) as retry:
                for attempt in range(3):
                    request_id = f"buyer-{number}-{attempt}"
                    try:
                        sale = client.reserve(race, 2, f"Fã {number}", f"fa{number}@example.com", confirm=True, request_id=request_id)
                    except SoldOut:
                        return
                    again = retry.reserve(race, 2, f"Fã {number}", f"fa{number}@example.com", confirm=True, request_id=request_id)
                    with lock:
                        sold.append(sale.code)
                        replayed[again.code == sale.code] += 1

        with terminals(24, buyer, "buyer"):
            pass
        wait_until(lambda: "race" in latest and latest["race"].available == 0, timeout=5, what="the subscriber saw the sell-out")

    assert len(sold) == CAPACITY // 2 and len(set(sold)) == len(sold)
    assert replayed == Counter({True: len(sold)}), "a retry on another replica answered with the original sale"

    for index, port in enumerate(ports):
        with pinned(port) as client:
            client.reserve(lapse, 2, f"Quem Esquece {index}", f"esquece{index}@example.com")
    with pinned(ports[1]) as client:
        wait_until(lambda: client.get_event(lapse).sectors[0].available == 6, timeout=15, what="every lapsed hold returned")

    store = Store(cluster.db, seed_demo=False)
    try:
        ledger = store.ledger(0, 10_000)
        expired = Counter(entry.code for entry in ledger if entry.action == "expire" and entry.event_id == lapse)
        assert len(expired) == 3 and set(expired.values()) == {1}, "each lapsed hold expired exactly once"
        reservations = store.reservations(race)
        assert len(reservations) == len(sold) and {r.status for r in reservations} == {"confirmed"}
        assert store.check_invariants() == []
    finally:
        store.close()
