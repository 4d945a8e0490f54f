"""What only the PostgreSQL engine does: live ledger wake-ups, one migration among servers starting together,
a database that goes away and comes back under a running server, a bad --db URL at start-up, the demo on
a throwaway PostgreSQL, and sales lined up per event."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from conftest import ADMIN_TOKEN, Cluster, started_postgres
from procs import ROOT, free_port, start, terminals, wait_until

from client_core import TicketClient, Unavailable
from database import SALE_LANES, Store
from tools.pgcluster import PgCluster


@pytest.fixture
def new_url(postgres: PgCluster) -> Callable[[], str]:
    names = iter(range(1, 1000))
    return lambda: postgres.create_schema(f"pgonly{time.monotonic_ns()}_{next(names)}")


@pytest.fixture
def own_postgres() -> Iterator[PgCluster]:
    """A PostgreSQL server of this test's own, which it may stop and start."""
    server = started_postgres()
    yield server
    server.destroy()


def test_a_commit_in_another_store_wakes_a_ledger_follower_at_once(new_url: Callable[[], str]) -> None:
    url = new_url()
    follower, seller = Store(url), Store(url, seed_demo=False)
    try:
        follower.wait_for_ledger(0.5)  # starts listening; returns on its first wake-up or the timeout
        woke = threading.Event()

        def follow() -> None:
            follower.wait_for_ledger(10.0)
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


def test_demo_on_postgres_sells_and_deletes_its_database_when_stopped(postgres: PgCluster, tmp_path) -> None:
    data = tmp_path / "data"
    demo = start("demo", ["cli.py", "demo", "--postgres", "--no-interactive", "--data", str(data), "--ns-port", str(free_port()),
                          "--port-base", str(free_port()), "--servers", "2"], ready="Demo ready", env={"COLUMNS": "300"}, timeout=60)
    try:
        output = demo.output()
        directory = Path(re.search(r"PostgreSQL: postgresql://\S+, in (\S+) until the demo stops", output).group(1))
        assert directory.is_dir()
        name_server = re.search(r"Demo ready: name server (127\.0\.0\.1:\d+)", output).group(1)
        token = (data / "postgres.admin-token").read_text().strip()
        with TicketClient([name_server], timeout=5, cafile=str(data / "pki" / "ca.pem")) as client:
            assert len(client.known_servers()) == 2
            sold = client.reserve(1, 2, "Ana", "ana@example.com", sector="VIP", confirm=True)
            assert client.get_reservation(sold.code, "ana@example.com").status == "confirmed"
            assert client.create_event(token, "Extra", "Sala", "2027-05-01T20:00:00-03:00", (("Geral", 1000, 10),)).id == 4
    finally:
        code = demo.stop(timeout=30)
    assert code == 0, demo.output()
    assert "Demo stopped" in demo.output() and "Traceback" not in demo.output()
    assert not directory.exists(), "the throwaway PostgreSQL was left behind"


def test_a_sale_stuck_on_one_event_holds_up_no_sale_of_another_event(new_url: Callable[[], str]) -> None:
    """A server lines up its own sales of one event (lock striping); while another server sits in the middle of
    a sale of event A, this server's sales of A wait, and its sales of event B still go through."""
    import psycopg

    url = new_url()
    with closing(Store(url, seed_demo=False)) as store:
        stuck, free = (store.create_event(name, "Hall", "2030-01-01T20:00:00-03:00", (("Pista", 100, 10),)) for name in ("A", "B"))
        assert stuck.id % SALE_LANES != free.id % SALE_LANES
        sold: list = []

        def buy_stuck(n: int) -> None:
            sold.append(store.reserve(stuck.id, 1, f"Buyer {n}", f"buyer{n}@example.com", "Pista", confirm=True))

        def waiting_on_a_row_lock(watcher: psycopg.Connection) -> bool:
            return watcher.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchone()[0] >= 1

        with psycopg.connect(url) as elsewhere, psycopg.connect(url, autocommit=True) as watcher:
            elsewhere.execute("UPDATE sectors SET available = available WHERE event_id = %s", (stuck.id,))
            with terminals(2, buy_stuck, name="buyer"):
                wait_until(lambda: waiting_on_a_row_lock(watcher), timeout=10, what="a sale of A waiting on the row lock")
                other = store.reserve(free.id, 1, "Other", "other@example.com", "Pista", confirm=True)
                assert other.status == "confirmed"
                assert sold == [], "the sales of A went through while another server held its sector"
                elsewhere.commit()
        assert sorted(reservation.customer for reservation in sold) == ["Buyer 0", "Buyer 1"]
        assert store.get_event(stuck.id).sector("Pista").available == 8
        assert store.check_invariants() == []
