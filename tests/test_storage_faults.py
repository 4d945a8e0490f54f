"""A SQLite database taken away under a running store: deleted with its directory, replaced by another file, or
its WAL cut short. The store must stop acknowledging writes into a file nobody will read again, say why in
`health()`, and refuse with `Unavailable` naming the path and the reason."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cluster
from procs import wait_until

from client_core import NameServerClient, TicketClient
from database import Store
from errors import Unavailable


@pytest.fixture
def location(tmp_path: Path) -> Path:
    return tmp_path / "data" / "tickets.db"


@pytest.fixture
def store(location: Path) -> Iterator[Store]:
    location.parent.mkdir()
    store = Store(location)
    yield store
    store.close()


def sell(store: Store, name: str = "Ana") -> str:
    return store.reserve(1, 1, name, f"{name.lower()}@example.com", sector="Pista", confirm=True).code


def refuses_with(store: Store, reason: str) -> None:
    assert reason in (store.health() or ""), store.health()
    with pytest.raises(Unavailable, match=reason) as refused:
        sell(store, "Late")
    assert store.path in str(refused.value)
    with pytest.raises(Unavailable, match=reason):
        store.list_events()


def test_a_healthy_store_says_nothing_while_another_store_shares_its_file(store: Store, location: Path) -> None:
    assert store.health() is None
    sell(store)
    other = Store(location)
    try:
        for n in range(20):
            sell(other, f"Bia{n}")
            sell(store, f"Caio{n}")
    finally:
        other.close()
    sell(store, "Duda")
    assert store.health() is None
    assert store.check_invariants() == []


def test_deleting_the_directory_under_a_running_store_stops_its_writes(store: Store, location: Path) -> None:
    sell(store)
    shutil.rmtree(location.parent)
    refuses_with(store, "was deleted under the running store")


def test_the_store_notices_the_deletion_at_its_next_write_without_being_asked(store: Store, location: Path) -> None:
    sell(store)
    shutil.rmtree(location.parent)
    with pytest.raises(Unavailable, match="was deleted under the running store"):
        sell(store, "Bia")
    assert "was deleted" in (store.health() or "")


def test_a_file_put_in_its_place_is_not_the_store_s_database(store: Store, location: Path) -> None:
    sell(store)
    copy = location.with_name("copy.db")
    shutil.copy(location, copy)
    os.replace(copy, location)
    refuses_with(store, "was replaced by another file")


def test_a_directory_made_again_with_a_new_database_is_not_the_store_s_database(store: Store, location: Path) -> None:
    sell(store)
    shutil.rmtree(location.parent)
    location.parent.mkdir()
    Store(location).close()
    refuses_with(store, "was replaced by another file")


def test_a_truncated_wal_stops_the_writes_that_would_be_lost_with_it(store: Store, location: Path) -> None:
    """Sales committed since the last checkpoint live only in the WAL; cutting it loses them (nothing can bring
    them back), and every sale acknowledged after the cut would go into a log SQLite can no longer replay."""
    for n in range(3):
        sell(store, f"Ana{n}")
    wal = Path(f"{location}-wal")
    assert wal.stat().st_size > 0
    os.truncate(wal, 0)
    refuses_with(store, "-wal was truncated under the running store")


def test_a_server_whose_database_is_taken_away_stops_selling_unregisters_and_says_why(tmp_path: Path) -> None:
    """The whole chain with real processes: the file renamed under a running server, then one sale attempt; the
    server refuses it, leaves the name server's list at its next heartbeat and logs why once."""
    cluster = Cluster(tmp_path / "cluster", hold_seconds=600.0)
    cluster.directory.mkdir()
    try:
        cluster.start_name_server()
        server = cluster.start_server()
        discovery = NameServerClient([cluster.name_server_address], timeout=1.0)
        with TicketClient([cluster.name_server_address], timeout=3) as client:
            assert client.reserve(1, 1, "Ana", "ana@example.com", sector="Pista", confirm=True).status == "confirmed"
            os.rename(cluster.db, f"{cluster.db}.moved")
            with pytest.raises(Unavailable):
                client.reserve(1, 1, "Bia", "bia@example.com", sector="Pista", confirm=True)

        def listed() -> tuple:
            discovery.refresh()
            return discovery.cached

        wait_until(lambda: listed() == (), timeout=10, what="the server unlisted")
        said = [line for line in list(server.lines) if "cannot serve (" in line]
        assert len(said) == 1 and str(cluster.db) in said[0], said
        assert server.alive(), "it stays up to say why, and serves again when its database is back"
    finally:
        cluster.stop()
