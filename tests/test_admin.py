"""The organiser's side of the box office: every admin operation, behind the admin token, as an operator uses it.

RPC tests start the real system (a name server and two ticket servers on one SQLite file) and drive it through
client_core, or through a stock RPyC connection when the test must know its own address. Store tests run a real
Store on a temporary file, with a fake clock where time matters. What an organiser relies on: the right token
does what it says and the ledger records it; any other token is refused, changes nothing, is counted and logged
with the caller's address and never with a token; capacity and half-price limits never break the accounting;
pausing and cancelling behave as announced (with one notice per cancelled reservation); an event with history
cannot vanish; the report and the clerk's search give exact answers.
"""

from __future__ import annotations

import random
import re
import secrets
import socket
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import rpyc
from conftest import ADMIN_TOKEN, Cluster
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from procs import ROOT, terminals, wait_until
from rpyc.core.stream import SocketStream
from rpyc.core.vinegar import GenericException
from rpyc.utils.factory import connect_stream
from rpyc.utils.registry import TCPRegistryClient

if str(ROOT) not in sys.path:  # plain `pytest tests/` puts only tests/ on the path
    sys.path.insert(0, str(ROOT))

from client_core import EventClosed, Forbidden, InvalidRequest, NotFound, SoldOut, TicketClient
from database import Store
from records import Sector, format_money
from service import letters

LOCAL = "127.0.0.1"
STARTS_AT = "2027-06-01T20:00:00-03:00"
FORBIDDEN = "admin token missing or wrong"
FORBIDDEN_LOG = "forbidden: wrong admin token from"


# -- helpers: the system seen from outside ------------------------------------------------------------------


def discovered_ports(cluster: Cluster) -> set[int]:
    answer = TCPRegistryClient(LOCAL, cluster.name_server_port, timeout=1.0).discover("TICKETS")
    return {port for _host, port in answer}


@pytest.fixture
def cluster(cluster_factory) -> Cluster:
    """conftest's two-server cluster, once the name server lists both servers (terminals find them there)."""
    made = cluster_factory(servers=2)
    wait_until(lambda: discovered_ports(made) == set(made.servers), timeout=5, what="both servers discoverable")
    return made


def terminal(cluster: Cluster, **options) -> TicketClient:
    return TicketClient(name_servers=[cluster.name_server_address], **options)


def pinned(port: int) -> TicketClient:
    return TicketClient(name_servers=[], servers=[f"{LOCAL}:{port}"])


@contextmanager
def audit(db: Path) -> Iterator[Store]:
    """The test's auditor: a Store on the cluster's file (clusters here keep the default 600 s holds, so opening
    it expires nothing)."""
    store = Store(db)
    try:
        yield store
    finally:
        store.close()


def new_event(client: TicketClient, name: str, sectors: list[tuple[str, int, int]]) -> int:
    return client.create_event(ADMIN_TOKEN, name, "Teatro de Testes, Recife", STARTS_AT, sectors).id


def sector_of(client: TicketClient, event_id: int, name: str) -> Sector:
    sector = client.get_event(event_id).sector(name)
    assert sector is not None, f"event {event_id} has no sector {name}"
    return sector


def counters(cluster: Cluster) -> Counter:
    """forbidden, refusals and errors summed over every server of the cluster."""
    total: Counter = Counter()
    for port in cluster.servers:
        with pinned(port) as client:
            status = client.status()
        total.update(forbidden=status.forbidden, refusals=status.refusals, errors=status.errors)
    return total


def log_lines(cluster: Cluster, text: str) -> list[str]:
    return [line for process in cluster.servers.values() for line in list(process.lines) if text in line]


def all_output(cluster: Cluster) -> str:
    return "\n".join(process.output() for process in cluster.servers.values())


class Clock:
    """A clock the test moves by hand, so Store tests about time never sleep."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def wrong_tokens() -> dict[str, str | None]:
    """Every kind of wrong token a careless or hostile operator could send (random, so no log could hold them by chance)."""
    return {
        "wrong": f"wrong-{secrets.token_hex(8)}",
        "none": None,
        "empty": "",
        "10 KB": secrets.token_hex(5120),
    }


def admin_calls(on_sale_id: int, paused_id: int, fresh_id: int) -> list[tuple[str, tuple]]:
    """Every admin operation, as (client_core method, arguments after the token); the wire name is `admin_` + it.

    Each write would visibly change something if the token were not checked: the event takes a new name, venue,
    date, capacity, half-price limit, sector or status; the paused one would reopen; the fresh one would vanish.
    """
    return [
        ("update_event", (on_sale_id, "Nome Trocado", None, None, (), ())),
        ("update_event", (on_sale_id, None, "Outro Lugar", None, (), ())),
        ("update_event", (on_sale_id, None, None, "2028-01-01T20:00:00-03:00", (), ())),
        ("update_event", (on_sale_id, None, None, None, (("Pista", 999),), ())),
        ("update_event", (on_sale_id, None, None, None, (), (("Pista", 0),))),
        ("add_sector", (on_sale_id, "Intrusa", 100, 5, None)),
        ("pause_event", (on_sale_id,)),
        ("resume_event", (paused_id,)),
        ("cancel_event", (on_sale_id,)),
        ("delete_event", (fresh_id,)),
        ("list_reservations", (on_sale_id, None, None)),
        ("report", ()),
        ("ledger", (0, 1000)),
    ]


def three_events(client: TicketClient) -> tuple[int, int, int]:
    """An event on sale with a hold, a paused one, and a fresh one nobody ever reserved."""
    on_sale = new_event(client, "Alvo do Teste", [("Pista", 5000, 20), ("VIP", 9000, 5)])
    client.reserve(on_sale, 2, "Ana", "ana@example.com", sector="Pista")
    paused = new_event(client, "Pausado", [("Unico", 3000, 10)])
    client.pause_event(ADMIN_TOKEN, paused)
    fresh = new_event(client, "Recem Criado", [("Unico", 3000, 10)])
    return on_sale, paused, fresh


def everything(client: TicketClient) -> tuple:
    """What any admin write could have changed."""
    return client.list_events(), client.ledger(ADMIN_TOKEN, 0, 10_000), client.list_reservations(ADMIN_TOKEN)


# -- 1. the token -----------------------------------------------------------------------------------------


def test_every_admin_operation_works_with_the_right_token_and_is_on_the_ledger(cluster):
    with terminal(cluster) as admin:
        event_id = new_event(admin, "Festival de Inverno", [("Pista", 1001, 50), ("Camarote", 20000, 10)])
        held = admin.reserve(event_id, 2, "Ana", "ana@example.com", sector="Pista")

        assert admin.update_event(ADMIN_TOKEN, event_id, name="Festival de Primavera").name == "Festival de Primavera"
        assert admin.update_event(ADMIN_TOKEN, event_id, venue="Marco Zero, Recife").venue == "Marco Zero, Recife"
        moved = admin.update_event(ADMIN_TOKEN, event_id, starts_at="2027-09-21T19:30:00-03:00")
        assert (moved.name, moved.venue, moved.starts_at) == ("Festival de Primavera", "Marco Zero, Recife", "2027-09-21T19:30:00-03:00")
        grown = admin.update_event(ADMIN_TOKEN, event_id, capacities=[("Pista", 80)]).sector("Pista")
        assert (grown.capacity, grown.available) == (80, 78)
        assert admin.update_event(ADMIN_TOKEN, event_id, half_limits=[("Pista", 5)]).sector("Pista").half_limit == 5
        assert admin.update_event(ADMIN_TOKEN, event_id, half_limits=[("Pista", None)]).sector("Pista").half_limit is None

        added = admin.add_sector(ADMIN_TOKEN, event_id, "Mezanino", 3000, 20, half_limit=4)
        assert [s.name for s in added.sectors] == ["Pista", "Camarote", "Mezanino"]
        mezanino = added.sector("Mezanino")
        assert (mezanino.price_cents, mezanino.capacity, mezanino.available, mezanino.half_limit) == (3000, 20, 20, 4)

        assert admin.pause_event(ADMIN_TOKEN, event_id).status == "paused"
        assert admin.get_event(event_id).status == "paused"
        assert admin.resume_event(ADMIN_TOKEN, event_id).status == "on_sale"

        assert [r.code for r in admin.list_reservations(ADMIN_TOKEN, event_id)] == [held.code]
        rows = [row for row in admin.report(ADMIN_TOKEN) if row.event_id == event_id]
        assert [(row.sector, row.capacity, row.held) for row in rows] == [("Pista", 80, 2), ("Camarote", 10, 0), ("Mezanino", 20, 0)]

        cancelled, count = admin.cancel_event(ADMIN_TOKEN, event_id)
        assert (cancelled.status, count) == ("cancelled", 1)

        fresh_id = new_event(admin, "Sem Historia", [("Unico", 1000, 5)])
        admin.delete_event(ADMIN_TOKEN, fresh_id)
        with pytest.raises(NotFound, match=f"No event with id {fresh_id}"):
            admin.get_event(fresh_id)

        ledger = admin.ledger(ADMIN_TOKEN)
    actions = [(entry.action, entry.sector, entry.quantity) for entry in ledger if entry.event_id == event_id]
    assert actions == [
        ("open", "Pista", 50), ("open", "Camarote", 10), ("hold", "Pista", 2),
        ("update", None, None), ("update", None, None), ("update", None, None),
        ("capacity", "Pista", 80), ("half_limit", "Pista", 5), ("half_limit", "Pista", None),
        ("open", "Mezanino", 20), ("pause", None, None), ("resume", None, None),
        ("cancel", "Pista", 2), ("cancel_event", None, 1),
    ]
    assert [entry.action for entry in ledger if entry.event_id == fresh_id] == ["open", "delete_event"]
    assert ADMIN_TOKEN not in all_output(cluster)


def test_wrong_tokens_are_forbidden_change_nothing_and_are_counted(cluster_factory):
    """Every wrong token is refused and counted; the log says so once per caller and interval, not once per try
    (the throttle is loosened here: what it adds is tests/test_abuse.py's)."""
    cluster = cluster_factory(servers=2, extra=("--throttle-scale", "100"))
    with terminal(cluster) as client:
        calls = admin_calls(*three_events(client))
        tokens = wrong_tokens()
        before, counted = everything(client), counters(cluster)
        logged = len(log_lines(cluster, FORBIDDEN_LOG))

        refused = 0
        for label, token in tokens.items():
            for method, args in calls:
                with pytest.raises(Forbidden) as info:
                    getattr(client, method)(token, *args)
                assert str(info.value) == FORBIDDEN, f"{method} with the {label} token"
                refused += 1

        assert everything(client) == before
    assert refused == len(tokens) * len(calls) == 52
    after = counters(cluster)
    assert after["forbidden"] - counted["forbidden"] == refused
    assert after["refusals"] - counted["refusals"] == refused  # a forbidden call is also a refusal, counted once
    assert after["errors"] == counted["errors"]
    wait_until(lambda: len(log_lines(cluster, FORBIDDEN_LOG)) > logged, timeout=5, what="a forbidden log line")
    assert len(log_lines(cluster, FORBIDDEN_LOG)) - logged <= 2 * len(cluster.servers), "one line per server and interval"
    output = all_output(cluster)
    assert ADMIN_TOKEN not in output
    for label, token in tokens.items():
        if token:
            assert token not in output and token[:16] not in output, f"the {label} token is in the server log"


def test_refusals_are_logged_with_the_callers_address(cluster_factory):
    """A stock RPyC connection from a socket the test opened itself, so the test knows the address the server sees;
    the flood of refusals is one line naming the caller (the throttle is loosened: tests/test_abuse.py tests it)."""
    cluster = cluster_factory(servers=2, extra=("--throttle-scale", "100"))
    port = min(cluster.servers)
    with terminal(cluster) as client:
        calls = admin_calls(*three_events(client))
    tokens = wrong_tokens()
    sock = socket.create_connection((LOCAL, port), timeout=10)
    caller = "{}:{}".format(*sock.getsockname()[:2])
    connection = connect_stream(SocketStream(sock), rpyc.VoidService, {"allow_pickle": False, "sync_request_timeout": 10})
    try:
        for token in tokens.values():
            for method, args in calls:
                with pytest.raises(GenericException) as info:
                    getattr(connection.root, f"admin_{method}")(token, *args)
                assert type(info.value).__name__ == "errors.Forbidden"
                assert info.value.args[0] == FORBIDDEN
    finally:
        connection.close()

    server = cluster.servers[port]
    wait_until(lambda: log_lines(cluster, FORBIDDEN_LOG), timeout=5, what="a forbidden log line")
    assert [line for line in list(server.lines) if FORBIDDEN_LOG in line] == [
        line for line in list(server.lines) if f"{FORBIDDEN_LOG} {LOCAL} (last from {caller})" in line
    ]
    assert len([line for line in list(server.lines) if FORBIDDEN_LOG in line]) == 1
    output = all_output(cluster)
    assert ADMIN_TOKEN not in output
    assert not [token for token in tokens.values() if token and token[:16] in output]


# -- 2. capacity ------------------------------------------------------------------------------------------


def test_capacity_grows_shrinks_to_what_is_taken_and_never_below(cluster):
    with terminal(cluster) as admin:
        event_id = new_event(admin, "Lotacao Variavel", [("Pista", 5000, 20), ("VIP", 9000, 5)])
        hold = admin.reserve(event_id, 3, "Ana", "ana@example.com", sector="Pista")
        admin.reserve(event_id, 4, "Bia", "bia@example.com", sector="Pista", category="half", confirm=True)
        admin.reserve(event_id, 2, "Caio", "caio@example.com", sector="VIP", confirm=True)

        pista = admin.update_event(ADMIN_TOKEN, event_id, capacities=[("Pista", 30)]).sector("Pista")
        assert (pista.capacity, pista.available) == (30, 23)

        pista = admin.update_event(ADMIN_TOKEN, event_id, capacities=[("Pista", 7)]).sector("Pista")
        assert (pista.capacity, pista.available) == (7, 0)
        with pytest.raises(SoldOut, match="Pista for Lotacao Variavel is sold out"):
            admin.reserve(event_id, 1, "Duda", "duda@example.com", sector="Pista")

        with pytest.raises(InvalidRequest, match="Pista has 7 tickets held or sold; its capacity cannot go below that"):
            admin.update_event(ADMIN_TOKEN, event_id, capacities=[("Pista", 6)])
        # All or nothing: a refused part undoes the rest of the same update.
        with pytest.raises(InvalidRequest, match="VIP has 2 tickets held or sold"):
            admin.update_event(ADMIN_TOKEN, event_id, name="Nome Novo", capacities=[("Pista", 40), ("VIP", 1)])
        with pytest.raises(InvalidRequest, match="Pista has 4 half-price tickets held or sold; the limit cannot go below that"):
            admin.update_event(ADMIN_TOKEN, event_id, half_limits=[("Pista", 3)])
        event = admin.get_event(event_id)
        assert event.name == "Lotacao Variavel"
        assert [(s.name, s.capacity, s.available, s.half_limit) for s in event.sectors] == [("Pista", 7, 0, None), ("VIP", 5, 3, None)]

        admin.cancel(hold.code, "ana@example.com")
        assert sector_of(admin, event_id, "Pista").available == 3
    with audit(cluster.db) as store:
        assert store.check_invariants() == []


def test_capacity_and_half_limit_changes_during_a_rush_never_oversell(cluster):
    """An organiser resizing a sector and moving its half-price limit while 16 terminals on two servers buy:
    every change is applied whole or refused naming what is taken, and the books balance at the end."""
    with terminal(cluster) as admin:
        event_id = new_event(admin, "Lotacao ao Vivo", [("Pista", 2000, 40)])
        admin.update_event(ADMIN_TOKEN, event_id, half_limits=[("Pista", 8)])
    done = threading.Event()
    bought: list[tuple[str, int]] = []
    lock = threading.Lock()

    def buyer(n: int) -> None:
        rng = random.Random(n)
        mine: list[str] = []
        with terminal(cluster, timeout=20) as client:
            while not done.is_set():
                if mine and rng.random() < 0.4:  # some give tickets back, so what is taken goes down as well as up
                    assert client.cancel(mine.pop(rng.randrange(len(mine))), f"fa{n}@example.com").status == "cancelled"
                    continue
                category = rng.choice(["full", "half"])
                try:
                    reservation = client.reserve(event_id, rng.choice([1, 2]), f"Fa {n}", f"fa{n}@example.com",
                                                 category=category, confirm=rng.random() < 0.5)
                except SoldOut:
                    continue
                mine.append(reservation.code)
                with lock:
                    bought.append((reservation.code, reservation.quantity))

    applied = refused = 0
    rng = random.Random(2027)
    with terminals(16, buyer, "fan"):
        try:
            with terminal(cluster, timeout=20) as admin:
                current = 40
                for turn in range(40):
                    # Grow on even turns (always possible: nothing taken can exceed the current capacity), try to shrink on odd ones.
                    capacity = current + rng.randint(1, 5) if turn % 2 == 0 else rng.randint(5, current)
                    limit = rng.choice([None, *range(10)])
                    try:
                        sector = admin.update_event(ADMIN_TOKEN, event_id, capacities=[("Pista", capacity)]).sector("Pista")
                        assert sector.capacity == capacity and 0 <= sector.available <= capacity
                        current = capacity
                        applied += 1
                    except InvalidRequest as exc:
                        taken = re.fullmatch(r"Pista has (\d+) tickets held or sold; its capacity cannot go below that", str(exc))
                        assert taken and int(taken[1]) > capacity, str(exc)
                        refused += 1
                    try:
                        assert admin.update_event(ADMIN_TOKEN, event_id, half_limits=[("Pista", limit)]).sector("Pista").half_limit == limit
                    except InvalidRequest as exc:
                        taken = re.fullmatch(r"Pista has (\d+) half-price tickets held or sold; the limit cannot go below that", str(exc))
                        assert taken and limit is not None and int(taken[1]) > limit, str(exc)
                        refused += 1
        finally:
            done.set()
    assert applied >= 20 and refused > 0 and bought

    with audit(cluster.db) as store:
        assert store.check_invariants() == []
        rows = store.reservations(event_id)
        assert sorted(code for code, _ in bought) == sorted(r.code for r in rows)
        taken = sum(r.quantity for r in rows if r.status in ("held", "confirmed"))
        (sector,) = store.get_event(event_id).sectors
        assert sector.capacity == current
        assert sector.available == sector.capacity - taken


class CapacityMachine(RuleBasedStateMachine):
    """Any sequence of reserve (full or half, hold or sale) / confirm / cancel / expiry / pause / capacity changes /
    half-price limit changes keeps the accounting exact: check_invariants() is empty, available is capacity minus
    held minus sold, and the store agrees with a model about what must be accepted and what refused."""

    SECTORS = ("A", "B")
    HOLD = 30

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.clock = Clock()
        self.store = Store(Path(self.directory.name) / "t.db", hold_seconds=self.HOLD, max_per_order=4, seed_demo=False, clock=self.clock)
        self.capacity = {"A": 8, "B": 3}
        self.half_limit: dict[str, int | None] = {"A": None, "B": None}
        self.paused = False
        self.event_id = self.store.create_event("Modelo", "Aqui", STARTS_AT, (("A", 1001, 8), ("B", 4000, 3))).id
        self.active: dict[str, tuple[str, int, str, str, float]] = {}
        """code -> (sector, quantity, category, status, expires_at) of held and confirmed reservations."""

    def teardown(self) -> None:
        self.store.close()
        self.directory.cleanup()

    def taken(self, sector: str, category: str | None = None) -> int:
        return sum(q for s, q, c, _, _ in self.active.values() if s == sector and category in (None, c))

    def pick(self, data: st.DataObject) -> str:
        return list(self.active)[data.draw(st.integers(0, len(self.active) - 1))]

    @initialize()
    def consistent_from_the_start(self) -> None:
        assert self.store.check_invariants() == []

    @rule(sector=st.sampled_from(SECTORS), quantity=st.integers(1, 4), category=st.sampled_from(["full", "half"]), confirm=st.booleans())
    def reserve(self, sector: str, quantity: int, category: str, confirm: bool) -> None:
        limit = self.half_limit[sector]
        fits = quantity <= self.capacity[sector] - self.taken(sector)
        half_fits = category == "full" or limit is None or self.taken(sector, "half") + quantity <= limit
        try:
            reservation = self.store.reserve(self.event_id, quantity, "Ana", "ana@example.com", sector=sector,
                                             category=category, confirm=confirm)
        except EventClosed:
            assert self.paused
            return
        except SoldOut as exc:
            assert not self.paused
            assert not (fits and half_fits), f"refused although it fits: {exc}"
            if fits:
                assert "half-price" in str(exc)
            return
        assert not self.paused and fits and half_fits
        self.active[reservation.code] = (sector, quantity, category, reservation.status, self.clock.now + self.HOLD)

    @precondition(lambda self: self.active)
    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        code = self.pick(data)
        sector, quantity, category, _, expires_at = self.active[code]
        assert self.store.confirm(code, "ana@example.com").status == "confirmed"  # pause does not stop a confirmation
        self.active[code] = (sector, quantity, category, "confirmed", expires_at)

    @precondition(lambda self: self.active)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        code = self.pick(data)
        assert self.store.cancel(code, "ana@example.com").status == "cancelled"
        del self.active[code]

    @rule(seconds=st.sampled_from([10, 31]))
    def time_passes_and_holds_expire(self, seconds: int) -> None:
        self.clock.now += seconds
        lapsed = [code for code, (_, _, _, status, expires_at) in self.active.items() if status == "held" and expires_at <= self.clock.now]
        assert self.store.expire_holds() == len(lapsed)
        for code in lapsed:
            del self.active[code]

    @rule(sector=st.sampled_from(SECTORS), extra=st.integers(0, 4))
    def change_capacity(self, sector: str, extra: int) -> None:
        """Just below what is taken is refused, naming the number; exactly that or more is applied."""
        taken = self.taken(sector)
        if taken > 1:
            with pytest.raises(InvalidRequest, match=f"^{sector} has {taken} tickets held or sold; its capacity cannot go below that$"):
                self.store.update_event(self.event_id, capacities=((sector, taken - 1),))
        capacity = max(1, taken + extra)
        assert self.store.update_event(self.event_id, capacities=((sector, capacity),)).sector(sector).capacity == capacity
        self.capacity[sector] = capacity

    @rule(sector=st.sampled_from(SECTORS), extra=st.none() | st.integers(0, 3))
    def change_half_limit(self, sector: str, extra: int | None) -> None:
        """Just below what is taken at half price is refused; that or more, or no limit (None), is applied."""
        half_taken = self.taken(sector, "half")
        if half_taken > 0:
            with pytest.raises(InvalidRequest, match=f"^{sector} has {half_taken} half-price tickets held or sold; the limit cannot"):
                self.store.update_event(self.event_id, half_limits=((sector, half_taken - 1),))
        limit = None if extra is None else half_taken + extra
        assert self.store.update_event(self.event_id, half_limits=((sector, limit),)).sector(sector).half_limit == limit
        self.half_limit[sector] = limit

    @rule()
    def pause_or_resume(self) -> None:
        self.paused = not self.paused
        wanted = "paused" if self.paused else "on_sale"
        assert self.store.set_event_status(self.event_id, wanted).status == wanted

    @invariant()
    def accounting_is_exact(self) -> None:
        assert self.store.check_invariants() == []
        event = self.store.get_event(self.event_id)
        for sector in event.sectors:
            assert (sector.capacity, sector.half_limit) == (self.capacity[sector.name], self.half_limit[sector.name])
            assert sector.available == sector.capacity - self.taken(sector.name)
        for row in self.store.report():
            held = sum(q for s, q, _, status, _ in self.active.values() if s == row.sector and status == "held")
            sold = {c: sum(q for s, q, cat, status, _ in self.active.values() if s == row.sector and cat == c and status == "confirmed")
                    for c in ("full", "half")}
            assert (row.held, row.sold, row.sold_full, row.sold_half) == (held, sold["full"] + sold["half"], sold["full"], sold["half"])
            assert row.available == row.capacity - held - row.sold
            half_price = -(-row.price_cents // 2)  # half rounds up to the cent: 1001 -> 501
            assert (row.revenue_full_cents, row.revenue_half_cents) == (sold["full"] * row.price_cents, sold["half"] * half_price)


TestCapacityMachine = CapacityMachine.TestCase
TestCapacityMachine.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)


# -- 3. pause and resume ----------------------------------------------------------------------------------


def test_pause_stops_new_reservations_but_not_confirmations_and_resume_reopens(cluster):
    with terminal(cluster) as admin:
        event_id = new_event(admin, "Show Pausado", [("Unico", 4000, 10)])
        hold = admin.reserve(event_id, 2, "Ana", "ana@example.com")

        assert admin.pause_event(ADMIN_TOKEN, event_id).status == "paused"
        for port in cluster.servers:  # every replica sees it: the status lives in the shared database
            with pinned(port) as replica:
                assert replica.get_event(event_id).status == "paused"
                with pytest.raises(EventClosed, match="Show Pausado is paused; it takes no new reservations"):
                    replica.reserve(event_id, 1, "Bia", "bia@example.com")
                with pytest.raises(EventClosed, match="is paused"):
                    replica.reserve(event_id, 1, "Bia", "bia@example.com", confirm=True)
        assert admin.confirm(hold.code, "ana@example.com").status == "confirmed"
        assert sector_of(admin, event_id, "Unico").available == 8

        assert admin.resume_event(ADMIN_TOKEN, event_id).status == "on_sale"
        assert admin.reserve(event_id, 3, "Bia", "bia@example.com", confirm=True).status == "confirmed"
        assert sector_of(admin, event_id, "Unico").available == 5

        admin.cancel_event(ADMIN_TOKEN, event_id)
        with pytest.raises(EventClosed, match="Show Pausado was cancelled; it cannot be paused or resumed"):
            admin.pause_event(ADMIN_TOKEN, event_id)
        with pytest.raises(EventClosed, match="it cannot be paused or resumed"):
            admin.resume_event(ADMIN_TOKEN, event_id)
        assert admin.get_event(event_id).status == "cancelled"
        with pytest.raises(EventClosed, match="is cancelled"):
            admin.reserve(event_id, 1, "Caio", "caio@example.com")


# -- 4. cancelling an event -------------------------------------------------------------------------------


def test_cancel_event_cancels_every_active_reservation_and_mails_each_customer_once(cluster):
    with terminal(cluster) as admin:
        event_id = new_event(admin, "Festival Cancelado", [("Pista", 1001, 50), ("VIP", 30000, 10)])
        active = [
            admin.reserve(event_id, 2, "Ana", "ana@example.com", sector="Pista"),
            admin.reserve(event_id, 3, "Bia", "bia@example.com", sector="Pista", category="half", confirm=True),
            admin.reserve(event_id, 1, "Caio", "caio@example.com", sector="VIP", confirm=True),
            admin.reserve(event_id, 1, "Ana", "ana@example.com", sector="VIP", category="half"),
        ]
        earlier = admin.reserve(event_id, 1, "Duda", "duda@example.com", sector="Pista")
        admin.cancel(earlier.code, "duda@example.com")
        elsewhere = admin.reserve(1, 1, "Edu", "edu@example.com", sector="Pista")
        with audit(cluster.db) as store:
            mailed_before = {message.id for message in store.outbox()}

        event, count = admin.cancel_event(ADMIN_TOKEN, event_id)
        assert (event.status, count) == ("cancelled", 4)
        assert [(s.name, s.available) for s in event.sectors] == [("Pista", 50), ("VIP", 10)]
        statuses = {r.code: r.status for r in admin.list_reservations(ADMIN_TOKEN, event_id)}
        assert statuses == {**{r.code: "cancelled" for r in active}, earlier.code: "cancelled"}
        assert admin.get_reservation(elsewhere.code, "edu@example.com").status == "held"
        with pytest.raises(InvalidRequest, match="was cancelled"):
            admin.confirm(active[0].code, "ana@example.com")

        with audit(cluster.db) as store:
            notices = [m for m in store.outbox() if m.id not in mailed_before and m.kind == "event_cancelled"]
            assert sorted(m.code for m in notices) == sorted(r.code for r in active)
            for reservation in active:
                (notice,) = [m for m in notices if m.code == reservation.code]
                assert notice.recipient == reservation.email
                assert reservation.code in letters.compose(notice).subject and "Festival Cancelado" in letters.compose(notice).subject
                assert reservation.code in letters.compose(notice).body
                assert f"Total: {format_money(reservation.total_cents)}" in letters.compose(notice).body
            assert [m.kind for m in store.outbox() if m.code == earlier.code] == ["cancelled"]
            assert store.check_invariants() == []
            mailed = len(store.outbox())

        again, count = admin.cancel_event(ADMIN_TOKEN, event_id)
        assert (again.status, count) == ("cancelled", 0)
        with audit(cluster.db) as store:
            assert len(store.outbox()) == mailed
    assert {r.total_cents for r in active} == {2002, 1503, 30000, 15000}  # the totals the notices quote


# -- 5. deleting an event ---------------------------------------------------------------------------------


def test_delete_removes_a_fresh_event_and_refuses_one_with_history(cluster):
    with terminal(cluster) as admin:
        fresh = new_event(admin, "Nunca Vendido", [("Unico", 1000, 5)])
        admin.delete_event(ADMIN_TOKEN, fresh)
        with pytest.raises(NotFound, match=f"No event with id {fresh}"):
            admin.get_event(fresh)
        assert fresh not in [event.id for event in admin.list_events()]
        with pytest.raises(NotFound):
            admin.delete_event(ADMIN_TOKEN, fresh)

        used = new_event(admin, "Ja Teve Reserva", [("Unico", 1000, 5)])
        hold = admin.reserve(used, 1, "Ana", "ana@example.com")
        admin.cancel(hold.code, "ana@example.com")
        with pytest.raises(InvalidRequest, match="Ja Teve Reserva has reservations on record; cancel it instead of deleting it"):
            admin.delete_event(ADMIN_TOKEN, used)
        admin.cancel_event(ADMIN_TOKEN, used)
        with pytest.raises(InvalidRequest, match="cancel it instead"):
            admin.delete_event(ADMIN_TOKEN, used)
        assert admin.get_event(used).status == "cancelled"
        assert [r.code for r in admin.list_reservations(ADMIN_TOKEN, used)] == [hold.code]


def test_delete_is_refused_for_an_event_whose_only_hold_expired(tmp_path: Path) -> None:
    clock = Clock()
    store = Store(tmp_path / "t.db", hold_seconds=30, seed_demo=False, clock=clock)
    try:
        event_id = store.create_event("Reserva Vencida", "Aqui", STARTS_AT, (("Unico", 1000, 5),)).id
        store.reserve(event_id, 2, "Ana", "ana@example.com")
        clock.now += 31
        assert store.expire_holds() == 1
        assert store.get_event(event_id).sectors[0].available == 5
        with pytest.raises(InvalidRequest, match="cancel it instead"):
            store.delete_event(event_id)
        assert store.get_event(event_id).name == "Reserva Vencida"
    finally:
        store.close()


def test_a_deleted_events_id_is_never_given_to_another_event(cluster):
    """The ledger still speaks of a deleted event's id, and a terminal that listed it must get NotFound, not sell
    tickets for whatever event was created next."""
    with terminal(cluster) as admin:
        gone = new_event(admin, "Apagado", [("Unico", 1000, 5)])
        admin.delete_event(ADMIN_TOKEN, gone)
        newer = new_event(admin, "Outro Show", [("Unico", 9000, 5)])
        assert newer != gone, f"the deleted event's id {gone} now names {admin.get_event(gone).name!r}"
        with pytest.raises(NotFound):
            admin.reserve(gone, 1, "Ana", "ana@example.com")  # a terminal that listed the deleted event
        assert [entry.action for entry in admin.ledger(ADMIN_TOKEN) if entry.event_id == newer] == ["open"]


# -- 6. half-price limits under concurrency ---------------------------------------------------------------


def test_32_terminals_buying_half_price_sell_exactly_the_limit(cluster):
    with terminal(cluster) as admin:
        event_id = new_event(admin, "Meia Entrada Limitada", [("Pista", 8000, 100)])
        assert admin.update_event(ADMIN_TOKEN, event_id, half_limits=[("Pista", 10)]).sector("Pista").half_limit == 10
    start = threading.Barrier(32)
    bought: list[tuple[str, int]] = []
    refusals: list[str] = []
    lock = threading.Lock()

    def buyer(n: int) -> None:
        rng = random.Random(n)
        with terminal(cluster, timeout=20) as client:
            start.wait(timeout=30)
            while True:
                quantity = rng.choice([1, 2])
                try:
                    reservation = client.reserve(event_id, quantity, f"Aluna {n}", f"a{n}@example.com", category="half", confirm=True)
                except SoldOut as exc:
                    with lock:
                        refusals.append(str(exc))
                    if quantity == 1:
                        return  # not even one left: done (a refused pair tries a single next)
                    continue
                with lock:
                    bought.append((reservation.code, reservation.quantity))

    with terminals(32, buyer, "student"):
        pass

    assert sum(quantity for _, quantity in bought) == 10
    assert len({code for code, _ in bought}) == len(bought)
    assert len(refusals) >= 32
    assert all("half-price" in text for text in refusals), [text for text in refusals if "half-price" not in text]
    assert "No half-price tickets left in Pista for Meia Entrada Limitada; full price still available" in refusals
    with terminal(cluster) as client:
        assert client.reserve(event_id, 5, "Fulano", "fulano@example.com", confirm=True).category == "full"
        assert sector_of(client, event_id, "Pista").available == 85
    with audit(cluster.db) as store:
        assert store.check_invariants() == []
        rows = store.reservations(event_id)
        assert sum(r.quantity for r in rows if r.category == "half" and r.status == "confirmed") == 10


# -- 7. the report ----------------------------------------------------------------------------------------


def test_report_gives_exact_numbers_for_a_known_sales_mix(cluster):
    with terminal(cluster) as client:
        event_id = new_event(client, "Noite do Relatorio", [("Pista", 1001, 100), ("Camarote", 5000, 10)])
        client.reserve(event_id, 2, "Ana", "ana@example.com", sector="Pista", confirm=True)  # full sale: 2 x 1001
        client.reserve(event_id, 3, "Bia", "bia@example.com", sector="Pista", category="half", confirm=True)  # half: 3 x 501
        later = client.reserve(event_id, 4, "Caio", "caio@example.com", sector="Pista")
        client.confirm(later.code, "caio@example.com")  # a hold confirmed: one sale of 4, not two
        client.reserve(event_id, 1, "Duda", "duda@example.com", sector="Pista", category="half")  # still held
        dropped = client.reserve(event_id, 5, "Edu", "edu@example.com", sector="Pista")
        client.cancel(dropped.code, "edu@example.com")  # a cancelled hold: counts nowhere
        refunded = client.reserve(event_id, 2, "Fabi", "fabi@example.com", sector="Pista", category="half", confirm=True)
        client.cancel(refunded.code, "fabi@example.com")  # a cancelled sale: no longer sold, no revenue
        client.reserve(event_id, 1, "Gil", "gil@example.com", sector="Camarote")

        rows = {row.sector: row for row in client.report(ADMIN_TOKEN) if row.event_id == event_id}
    assert list(rows) == ["Pista", "Camarote"]
    pista, camarote = rows["Pista"], rows["Camarote"]
    assert (pista.event_name, pista.event_status, pista.price_cents, pista.capacity) == ("Noite do Relatorio", "on_sale", 1001, 100)
    assert (pista.held, pista.sold, pista.sold_full, pista.sold_half) == (1, 9, 6, 3)
    assert (pista.revenue_full_cents, pista.revenue_half_cents, pista.revenue_cents) == (6006, 1503, 7509)
    assert pista.available == 100 - 1 - 9
    assert pista.sold_last_minute == 2 + 3 + 4 + 2  # every sale and confirmation of the last minute, the refunded one too
    assert (camarote.held, camarote.sold, camarote.revenue_cents, camarote.sold_last_minute, camarote.available) == (1, 0, 0, 0, 9)


def test_sold_last_minute_counts_only_sales_of_the_last_minute(tmp_path: Path) -> None:
    clock = Clock()
    store = Store(tmp_path / "t.db", hold_seconds=600, seed_demo=False, clock=clock)

    def last_minute() -> tuple[int, int]:
        (row,) = store.report()
        return row.sold_last_minute, row.sold

    try:
        event_id = store.create_event("Ritmo", "Aqui", STARTS_AT, (("Unico", 1000, 50),)).id
        store.reserve(event_id, 2, "Ana", "ana@example.com", confirm=True)
        hold = store.reserve(event_id, 3, "Bia", "bia@example.com")
        assert last_minute() == (2, 2)  # a hold is not a sale
        clock.now += 30
        store.confirm(hold.code, "bia@example.com")
        store.reserve(event_id, 4, "Caio", "caio@example.com")
        assert last_minute() == (5, 5)
        clock.now += 31  # Ana's sale is 61 s old, Bia's confirmation 31 s
        assert last_minute() == (3, 5)
        clock.now += 30
        assert last_minute() == (0, 5)
    finally:
        store.close()


# -- 8. the clerk's search --------------------------------------------------------------------------------


def test_list_reservations_filters_by_event_email_and_status(cluster):
    with terminal(cluster) as clerk:
        show = new_event(clerk, "Show A", [("Unico", 1000, 50)])
        other = new_event(clerk, "Show B", [("Unico", 2000, 50)])
        ana_a = clerk.reserve(show, 1, "Ana", "ana@example.com")
        ana_b = clerk.reserve(other, 2, "Ana", "Ana@Example.COM", confirm=True)
        bia = clerk.reserve(show, 1, "Bia", "bia@example.com")
        clerk.cancel(bia.code, "bia@example.com")
        caio = clerk.reserve(show, 3, "Caio", "caio@example.com", confirm=True)

        def codes(**filters) -> list[str]:
            return [r.code for r in clerk.list_reservations(ADMIN_TOKEN, **filters)]

        assert codes(event_id=show) == [caio.code, bia.code, ana_a.code]  # newest first
        assert codes(event_id=other) == [ana_b.code]
        assert codes(email="ANA@example.com") == [ana_b.code, ana_a.code]
        assert codes(email=" ana@EXAMPLE.com ") == [ana_b.code, ana_a.code]
        assert codes(email="ana@example.com", event_id=other) == [ana_b.code]
        assert codes(event_id=show, status="held") == [ana_a.code]
        assert codes(event_id=show, status="cancelled") == [bia.code]
        assert codes(status="confirmed") == [caio.code, ana_b.code]
        assert codes(event_id=show, status="expired") == []
        assert codes(email="nobody@example.com") == []
        found = clerk.list_reservations(ADMIN_TOKEN, email="caio@example.com")
        assert [(r.event_id, r.quantity, r.customer, r.status, r.total_cents) for r in found] == [(show, 3, "Caio", "confirmed", 3000)]

        for bad in ("pending", "HELD", ""):
            with pytest.raises(InvalidRequest, match="status must be held, confirmed, cancelled or expired"):
                clerk.list_reservations(ADMIN_TOKEN, status=bad)
