"""What only the PostgreSQL engine does: live ledger wake-ups, one migration among servers starting together,
a database that goes away and comes back under a running server, and a bad --db URL at start-up."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing

import pytest
from conftest import ADMIN_TOKEN, Cluster, postgres_missing
from procs import ROOT, wait_until

from client_core import TicketClient, Unavailable
from database import Store
from pgcluster import PgCluster, PostgresUnavailable


@pytest.fixture
def new_url(postgres: PgCluster) -> Callable[[], str]:
    names = iter(range(1, 1000))
    return lambda: postgres.create_schema(f"pgonly{time.monotonic_ns()}_{next(names)}")


@pytest.fixture
def own_postgres() -> Iterator[PgCluster]:
    """A PostgreSQL server of this test's own, which it may stop and start."""
    try:
        server = PgCluster(durable=False).start()
    except PostgresUnavailable as exc:
        postgres_missing(str(exc))
    yield server
    server.destroy()


def test_a_commit_in_another_store_wakes_a_ledger_follower_at_once(new_url: Callable[[], str]) -> None:
    url = new_url()
    follower, seller = Store(url), Store(url, seed_demo=False)
    try:
        follower.engine.wait_for_ledger(0.5)  # starts listening; returns on its first wake-up or the timeout
        woke = threading.Event()

        def follow() -> None:
            follower.engine.wait_for_ledger(10.0)
            woke.set()

        waiter = threading.Thread(target=follow)
        waiter.start()
        started = time.monotonic()
        seller.reserve(1, 1, "Ana", "ana@example.com", sector="VIP", confirm=True)
        assert woke.wait(5.0), "the follower slept through a ledger insert"
        assert time.monotonic() - started < 2.0
        waiter.join()
        assert [entry.action for entry in follower.ledger()][-1] == "sell"
    finally:
        follower.close()
        seller.close()


def test_servers_starting_together_migrate_and_seed_once(new_url: Callable[[], str]) -> None:
    url = new_url()
    stores: list[Store] = []
    lock = threading.Lock()

    def open_store() -> None:
        store = Store(url)
        with lock:
            stores.append(store)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(stores) == 4
        assert [event.id for event in stores[0].list_events()] == [1, 2, 3], "the demo catalogue was seeded once"
        assert stores[3].check_invariants() == []
    finally:
        for store in stores:
            store.close()


def test_a_database_that_goes_away_costs_answers_and_comes_back_without_a_restart(own_postgres: PgCluster, tmp_path) -> None:
    cluster = Cluster(tmp_path, database=own_postgres.create_database("tickets"))
    try:
        cluster.start_name_server()
        process = cluster.start_server()
        address = cluster.server_addresses()[0]
        with TicketClient(name_servers=[], servers=[address], timeout=2.0) as client:
            sold = client.reserve(1, 2, "Ana", "ana@example.com", sector="Pista", confirm=True)

            own_postgres.stop(mode="immediate")
            with pytest.raises(Unavailable):
                client.reserve(1, 1, "Bia", "bia@example.com", sector="Pista", confirm=True)
            with pytest.raises(Unavailable):
                client.list_events()
            assert process.alive(), "the server died with its database"

            own_postgres.start()
            again = wait_until(
                lambda: client.reserve(1, 1, "Caio", "caio@example.com", sector="Pista", confirm=True, request_id="after"),
                timeout=15, what="a sale after the database came back",
            )
            assert client.get_reservation(sold.code, "ana@example.com").status == "confirmed"
            assert again.status == "confirmed"
        assert "Traceback" not in process.output()
        with closing(Store(cluster.db)) as store:
            assert store.check_invariants() == []
            assert store.get_event(1).sector("Pista").available == 300 - 3
    finally:
        cluster.stop()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://bilheteria:s3cret@127.0.0.1:1/tickets", "cannot connect to postgresql://bilheteria:***@127.0.0.1:1/tickets"),
        ("postgresql://[::1/tickets", "is not a usable PostgreSQL URL"),
    ],
)
def test_a_bad_database_url_stops_the_server_with_one_line(url: str, expected: str) -> None:
    result = subprocess.run(
        [sys.executable, "server.py", "--port", "0", "--db", url, "--admin-token", ADMIN_TOKEN],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2
    assert len(output.splitlines()) == 1, output
    assert expected in output
    assert "s3cret" not in output
