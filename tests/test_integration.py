"""The whole box office as a user meets it: real name server, real ticket servers, one database.

Every test starts the system as separate processes on free ports, does what a terminal (or the seed project's
client) does, and checks what a user relies on: the counts, the codes, the refusal texts and the database
invariants. Faults are real: kill -9, SIGTERM, a name server that disappears. Waiting is always on a condition
(a printed line, a discover answer, a status), never on a fixed sleep. The tests of concurrency, faults, expiry
and durability run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime

import pytest
import rpyc
from conftest import ADMIN_TOKEN, BACKENDS, Cluster
from procs import ROOT, terminals, wait_until
from rpyc.utils.registry import TCPRegistryClient

if str(ROOT) not in sys.path:  # plain `pytest tests/` puts only tests/ on the path
    sys.path.insert(0, str(ROOT))

from client_core import HoldExpired, InvalidRequest, NotFound, SoldOut, TicketClient, Unavailable
from database import Store

LOCAL = "127.0.0.1"
STARTS_AT = "2027-06-01T20:00:00-03:00"


# -- helpers: how a test looks at the system from outside --------------------------------------------------


def discovered_ports(cluster: Cluster) -> set[int]:
    """What a stock RPyC client learns from the name server right now."""
    answer = TCPRegistryClient(LOCAL, cluster.name_server_port, timeout=1.0).discover("TICKETS")
    return {port for _host, port in answer}


def discoverable(cluster: Cluster) -> Cluster:
    """Wait until the name server lists every live server: a server prints its "listening" line a moment
    before its first registration, and terminals find servers only through the name server."""
    live = {port for port, process in cluster.servers.items() if process.alive()}
    wait_until(lambda: discovered_ports(cluster) == live, timeout=5, what=f"name server listing {sorted(live)}")
    return cluster


@pytest.fixture
def cluster(cluster_factory: Callable[..., Cluster]) -> Cluster:
    """conftest's two-server cluster, once both servers are discoverable."""
    return discoverable(cluster_factory(servers=2))


def terminal(cluster: Cluster, **options) -> TicketClient:
    return TicketClient(name_servers=[cluster.name_server_address], **options)


def pinned(port: int, **options) -> TicketClient:
    """A client that talks to exactly one server (no discovery)."""
    return TicketClient(name_servers=[], servers=[f"{LOCAL}:{port}"], **options)


def new_event(cluster: Cluster, capacity: int, name: str = "Ensaio Aberto") -> int:
    """A one-sector event created through the admin API, as an operator would."""
    with terminal(cluster) as admin:
        event = admin.create_event(ADMIN_TOKEN, name, "Teatro de Testes, Recife", STARTS_AT, [("Unico", 5000, capacity)])
    assert [(s.name, s.capacity, s.available) for s in event.sectors] == [("Unico", capacity, capacity)]
    return event.id


def available(client: TicketClient, event_id: int, sector: str | None = None) -> int:
    event = client.get_event(event_id)
    chosen = event.sector(sector) if sector else event.sectors[0]
    assert chosen is not None
    return chosen.available


@contextmanager
def audit(db: str) -> Iterator[Store]:
    """The test's auditor: a Store on the same file (only for clusters with the default 600 s holds,
    because opening a Store expires lapsed holds itself)."""
    store = Store(db)
    try:
        yield store
    finally:
        store.close()


def query(db: str, sql: str, parameters: tuple = ()) -> list[tuple]:
    """A plain read-only look at the database, for tests where even opening a Store would change it."""
    if db.startswith("postgresql://"):
        import psycopg

        from storage.postgres import translate

        with psycopg.connect(db) as connection:
            connection.read_only = True
            return connection.execute(translate(sql), parameters).fetchall()
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        return connection.execute(sql, parameters).fetchall()


def ledger_actions(db: str, code: str) -> list[str]:
    return [row[0] for row in query(db, "SELECT action FROM ledger WHERE code = ? ORDER BY seq", (code,))]


def parse_utc(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def wait_past(expires_at: str) -> None:
    """Wait for the wall clock to pass a hold's expiry (records carry it truncated to the second)."""
    deadline = parse_utc(expires_at) + 1.0
    wait_until(lambda: time.time() > deadline, timeout=10, what=f"wall clock past {expires_at}")


def port_of(address: str | None) -> int:
    assert address is not None
    return int(address.rpartition(":")[2])


# -- 1. discovery and the plain RPyC view ------------------------------------------------------------------


def test_stock_rpyc_discovers_both_servers_and_reads_the_catalogue(cluster):
    assert len(cluster.servers) == 2
    assert discovered_ports(cluster) == set(cluster.servers)

    port = min(cluster.servers)
    conn = rpyc.connect(LOCAL, port)
    try:
        events = conn.root.list_events()
        assert type(events) is tuple  # copied by value, not a proxy
        catalogue = [dict(pairs) for pairs in events]
    finally:
        conn.close()

    assert [event["id"] for event in catalogue] == [1, 2, 3]
    sectors = {event["id"]: [(dict(s)["name"], dict(s)["capacity"], dict(s)["available"]) for s in event["sectors"]] for event in catalogue}
    assert sectors == {
        1: [("Pista", 300, 300), ("VIP", 50, 50)],
        2: [("Plateia", 120, 120), ("Camarote", 30, 30)],
        3: [("Geral", 80, 80)],
    }
    assert all(event["status"] == "on_sale" for event in catalogue)


# -- 2. the seed project's three calls ---------------------------------------------------------------------


def test_seed_client_trio_consultar_reservar_status(cluster):
    conn = rpyc.connect(LOCAL, min(cluster.servers))
    root = conn.root
    try:
        assert root.consultar_ingressos() == 300
        answer = root.reservar_ingresso("Maria", 2)
        assert type(answer) is str
        assert answer.startswith("Reserva confirmada para Maria: 2 ingresso(s), código ")
        code = answer.rpartition(" ")[2]
        assert len(code) == 7 and code[3] == "-"
        assert root.consultar_ingressos() == 298

        status = root.status_servidor()
        assert type(status["horario"]) is str and type(status["ingressos_restantes"]) is int
        assert status["ingressos_restantes"] == 298
        assert abs(time.mktime(time.strptime(status["horario"], "%Y-%m-%d %H:%M:%S")) - time.time()) < 60

        # Buy Pista down to 8 through the full API, then ask the old API for more than is left.
        for _ in range(29):
            dict(root.reserve(1, 10, "Lote", "lote@example.com", "Pista", "full", None, True))
        assert root.consultar_ingressos() == 8
        refusal = root.reservar_ingresso("Joana", 9)
        assert refusal.startswith("Reserva recusada: ingressos insuficientes.")
        assert "Only 8 tickets left in Pista" in refusal
        assert root.consultar_ingressos() == 8

        assert root.reservar_ingresso("Joana", 8).startswith("Reserva confirmada para Joana: 8 ingresso(s)")
        assert root.consultar_ingressos() == 0
        assert "sold out" in root.reservar_ingresso("Pedro", 1)
        assert root.reservar_ingresso("Pedro", 0) == "Reserva recusada: quantity must be between 1 and 10, not 0"
        assert root.status_servidor()["ingressos_restantes"] == 0
    finally:
        conn.close()

    with audit(cluster.db) as store:
        assert store.check_invariants() == []
        sold = [r for r in store.reservations(1) if r.sector == "Pista"]
        assert sum(r.quantity for r in sold) == 300
        assert {r.status for r in sold} == {"confirmed"}
        assert any(r.code == code and r.customer == "Maria" and r.quantity == 2 for r in sold)


# -- 3. many terminals, few tickets ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_64_terminals_racing_for_25_tickets_sell_exactly_25(cluster):
    event_id = new_event(cluster, capacity=25, name="Show Relampago")
    start = threading.Barrier(64)
    codes: list[str] = []
    lock = threading.Lock()

    def buyer(n: int) -> None:
        with terminal(cluster) as client:
            start.wait(timeout=30)
            while True:
                try:
                    # Half the terminals name the sector, half leave it to the server (one-sector event).
                    sector = "Unico" if n % 2 else None
                    reservation = client.reserve(event_id, 1, f"Fã {n}", f"fa{n}@example.com", sector=sector, confirm=True)
                except SoldOut:
                    return
                assert reservation.status == "confirmed"
                with lock:
                    codes.append(reservation.code)

    with terminals(64, buyer, "buyer"):
        pass

    assert len(codes) == 25
    assert len(set(codes)) == 25
    with terminal(cluster) as client:
        assert available(client, event_id) == 0
    with audit(cluster.db) as store:
        assert store.check_invariants() == []
        rows = store.reservations(event_id)
        assert sorted(r.code for r in rows) == sorted(codes)
        assert {r.status for r in rows} == {"confirmed"}


# -- 4. kill -9 in the middle of a rush --------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_one_server_during_a_rush_loses_and_duplicates_nothing(cluster):
    capacity, kill_after = 200, 10
    event_id = new_event(cluster, capacity=capacity, name="Festival da Virada")
    victim_port = min(cluster.servers)
    victim = f"{LOCAL}:{victim_port}"
    killed = threading.Event()
    lock = threading.Lock()
    start = threading.Barrier(32)
    seen: list[tuple[int, str, str, bool]] = []  # (terminal, code, server that answered, recorded after the kill)
    outcomes: Counter[str] = Counter()

    def rush(n: int) -> None:
        email = f"terminal{n}@example.com"
        with terminal(cluster, rng=random.Random(n)) as client:
            start.wait(timeout=30)
            for _attempt in range(capacity * 2):
                try:
                    reservation = client.reserve(event_id, 1, f"Terminal {n}", email, confirm=True)
                except SoldOut:
                    with lock:
                        outcomes["sold out"] += 1
                    return
                except Unavailable:
                    with lock:
                        outcomes["unavailable"] += 1
                    continue
                with lock:
                    seen.append((n, reservation.code, client.current_server or "", killed.is_set()))
                    outcomes["sold"] += 1
                    if not killed.is_set() and sum(server == victim for _n, _c, server, _a in seen) == kill_after:
                        # Killed from here, not from a polling main thread: with 32 busy threads the main
                        # thread may not get the GIL until the rush is over.
                        cluster.servers[victim_port].kill()
                        killed.set()

    with terminals(32, rush):
        pass

    assert killed.is_set() and not cluster.servers[victim_port].alive()
    sold_at_kill = sum(not after for _n, _code, _server, after in seen)
    assert sold_at_kill < capacity / 2, f"the rush was nearly over at the kill ({sold_at_kill} sold); the test proved little"
    # Every terminal ended on "sold out", which after the kill only the other server can say: the terminals
    # that were talking to the killed one (at least one, by construction) failed over.
    assert outcomes["sold out"] == 32, outcomes
    assert outcomes["unavailable"] <= 3, f"failover should hide a dead server: {outcomes}"

    codes = [code for _n, code, _server, _after in seen]
    assert len(codes) == len(set(codes)), "a code was handed out twice"
    with audit(cluster.db) as store:
        assert store.check_invariants() == []
        rows = store.reservations(event_id)
        in_db = Counter(r.code for r in rows)
        assert all(count == 1 for count in in_db.values())
        by_code = {r.code: r for r in rows}
        assert all(by_code[code].status == "confirmed" and by_code[code].quantity == 1 for code in codes)
        left = store.get_event(event_id).sectors[0].available
        assert sum(r.quantity for r in rows if r.status == "confirmed") == capacity - left
        # Only a sale whose answer the terminal never got (Unavailable) may exist without being seen.
        assert len(set(in_db) - set(codes)) <= outcomes["unavailable"]
    assert left == 0


# -- 5. a lost reply, retried elsewhere --------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_retried_request_id_on_another_server_answers_the_same_reservation(cluster):
    first_port, second_port = sorted(cluster.servers)
    with pinned(first_port) as first, pinned(second_port) as second:
        before = available(first, 3)
        original = first.reserve(3, 4, "Rita", "rita@example.com", sector="Geral", request_id="fixed")
        # The reply was lost; the terminal retries the same request elsewhere, with and without naming the sector.
        retried = second.reserve(3, 4, "Rita", "rita@example.com", sector="Geral", request_id="fixed")
        again = first.reserve(3, 4, "Rita", "RITA@example.com", request_id="fixed")
        assert retried == original == again
        assert original.status == "held" and original.quantity == 4
        assert available(second, 3) == before - 4

        with pytest.raises(InvalidRequest, match="already used for a different reservation"):
            second.reserve(3, 5, "Rita", "rita@example.com", sector="Geral", request_id="fixed")
        with pytest.raises(InvalidRequest, match="already used for a different reservation"):
            second.reserve(3, 5, "Rita", "rita@example.com", request_id="fixed")
        with pytest.raises(InvalidRequest, match="already used for a different reservation"):
            first.reserve(3, 4, "Outra Pessoa", "rita@example.com", request_id="fixed")
        assert available(first, 3) == before - 4

    assert ledger_actions(cluster.db, original.code) == ["hold"]
    with audit(cluster.db) as store:
        assert [r.code for r in store.reservations(3)] == [original.code]
        assert store.check_invariants() == []


# -- 6. the name server dies; terminals keep selling --------------------------------------------------------


def test_terminals_sell_from_their_cache_while_the_name_server_is_down(cluster):
    client = terminal(cluster)
    try:
        assert set(client.known_servers()) == {f"{LOCAL}:{port}" for port in cluster.servers}
        cluster.name_server.kill()
        client.discovery.refresh_seconds = 0  # look up the name server on every call: each lookup fails
        codes = [client.reserve(2, 1, "Caio", "caio@example.com", sector="Plateia", confirm=True).code for _ in range(5)]
        assert len(set(codes)) == 5
        assert "unreachable" in client.discovery.last_error
        assert available(client, 2, "Plateia") == 115
    finally:
        client.close()

    # A new name server on the same port knows nothing; the servers' next heartbeat (every 2 s) fills it in.
    cluster.start_name_server()
    wait_until(lambda: discovered_ports(cluster) == set(cluster.servers), timeout=5, what="both servers re-registered")


# -- 7. a clean shutdown -----------------------------------------------------------------------------------


def test_sigterm_exits_0_unregisters_and_clients_fail_over(cluster):
    with terminal(cluster) as client:
        assert client.ping() == "pong"
        leaving = port_of(client.current_server)
        staying = next(port for port in cluster.servers if port != leaving)
        process = cluster.servers[leaving]

        assert process.stop() == 0
        wait_until(lambda: discovered_ports(cluster) == {staying}, timeout=2, what="the stopped server unregistered")
        assert "Traceback" not in process.output()
        assert "stopped cleanly" in process.output()

        reservation = client.reserve(1, 2, "Lia", "lia@example.com", sector="VIP", confirm=True)
        assert reservation.status == "confirmed"
        assert port_of(client.current_server) == staying
        assert client.get_reservation(reservation.code, "lia@example.com") == reservation


# -- 8. holds lapse: across a restart, and while running --------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_hold_that_lapsed_while_the_server_was_down_is_expired_on_restart(cluster_factory):
    cluster = cluster_factory(servers=1, hold_seconds=1)
    (port,) = cluster.servers
    with pinned(port) as client:
        before = available(client, 3)
        hold = client.reserve(3, 3, "Bia", "bia@example.com")
        assert hold.status == "held" and hold.expires_at is not None
    assert cluster.servers[port].stop() == 0
    [(status,)] = query(cluster.db, "SELECT status FROM reservations WHERE code = ?", (hold.code,))
    assert status == "held", "the server did not stop within the hold time; the restart path was not exercised"

    wait_past(hold.expires_at)
    restarted = cluster.start_server()
    restarted.wait_for_line("expired 1 holds that lapsed while the server was down", timeout=5)
    with pinned(port_of(cluster.server_addresses()[0])) as client:
        assert client.get_reservation(hold.code, "bia@example.com").status == "expired"
        assert available(client, 3) == before
        with pytest.raises(HoldExpired, match=f"Reservation {hold.code} expired"):
            client.confirm(hold.code, "bia@example.com")
    assert ledger_actions(cluster.db, hold.code) == ["hold", "expire"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sweepers_expire_lapsed_holds_once_and_confirming_one_is_refused(cluster_factory):
    cluster = discoverable(cluster_factory(servers=2, hold_seconds=1))
    with terminal(cluster) as client:
        before = available(client, 2, "Camarote")
        holds = [client.reserve(2, 2, f"Cliente {n}", f"cliente{n}@example.com", sector="Camarote") for n in range(3)]
        assert available(client, 2, "Camarote") == before - 6

        wait_past(max(hold.expires_at for hold in holds))
        with pytest.raises(HoldExpired, match="its tickets went back on sale"):
            client.confirm(holds[0].code, "cliente0@example.com")

        def all_expired() -> bool:
            return all(client.get_reservation(h.code, f"cliente{n}@example.com").status == "expired" for n, h in enumerate(holds))

        wait_until(all_expired, timeout=5, what="the sweepers expired every lapsed hold")
        assert available(client, 2, "Camarote") == before
        # Cancelling a hold that already lapsed says how it stands and gives nothing back a second time.
        assert client.cancel(holds[1].code, "cliente1@example.com").status == "expired"
        assert available(client, 2, "Camarote") == before
    for hold in holds:
        assert ledger_actions(cluster.db, hold.code) == ["hold", "expire"]  # two sweepers, one expiry each
    assert query(cluster.db, "SELECT COUNT(*) FROM reservations WHERE status = 'held'") == [(0,)]


# -- 9. durability -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_confirmed_sale_survives_kill_9_of_the_server_that_answered(cluster):
    with terminal(cluster) as client:
        reservation = client.reserve(1, 3, "Davi", "davi@example.com", sector="Pista", confirm=True)
        answered = port_of(client.current_server)
    cluster.servers[answered].kill()

    with audit(cluster.db) as store:
        stored = store.get_reservation(reservation.code, "davi@example.com")
        assert stored == reservation
        assert stored.status == "confirmed"
        assert store.get_event(1).sector("Pista").available == 297
        assert store.check_invariants() == []
    assert ledger_actions(cluster.db, reservation.code) == ["sell"]


# -- 10. confirm, cancel and who may see a reservation -----------------------------------------------------


def test_confirm_twice_is_one_sale_and_cancel_gives_the_tickets_back(cluster):
    email = "ana@example.com"
    with terminal(cluster) as client:
        before = available(client, 2, "Plateia")
        hold = client.reserve(2, 3, "Ana", email, sector="Plateia")
        first = client.confirm(hold.code, email)
        second = client.confirm(hold.code, email.upper())
        assert first.status == second.status == "confirmed"
        assert first.code == second.code == hold.code
        assert first.expires_at is None
        assert available(client, 2, "Plateia") == before - 3

        cancelled = client.cancel(hold.code, email)
        assert cancelled.status == "cancelled"
        assert available(client, 2, "Plateia") == before
        assert client.cancel(hold.code, email).status == "cancelled"
        assert available(client, 2, "Plateia") == before
        with pytest.raises(InvalidRequest, match="was cancelled"):
            client.confirm(hold.code, email)
    assert ledger_actions(cluster.db, hold.code) == ["hold", "confirm", "cancel"]


def test_a_wrong_email_is_indistinguishable_from_a_wrong_code(cluster):
    with terminal(cluster) as client:
        real = client.reserve(3, 1, "Beto", "beto@example.com", confirm=True)
        unknown = "ZZZ-ZZZ" if real.code != "ZZZ-ZZZ" else "YYY-YYY"
        for call in (client.get_reservation, client.confirm, client.cancel):
            with pytest.raises(NotFound) as wrong_email:
                call(real.code, "intruso@example.com")
            with pytest.raises(NotFound) as wrong_code:
                call(unknown, "beto@example.com")
            assert str(wrong_email.value) == f"No reservation {real.code!r} for that email"
            assert str(wrong_code.value) == f"No reservation {unknown!r} for that email"
        assert client.get_reservation(real.code, "beto@example.com").status == "confirmed"
