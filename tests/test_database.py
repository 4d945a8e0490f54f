"""The store on its own: invariants under any sequence of operations, expiry, idempotency, migrations.

Every test that takes `store` or `new_database` runs twice, on SQLite and on PostgreSQL (conftest.py): the
store's contract is the same on both engines.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test
from procs import terminals, wait_until

import database
from database import Store
from errors import EventClosed, HoldExpired, InvalidRequest, NotFound, SoldOut, Unavailable
from storage.sales import new_code


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(new_database: Callable[[], str], clock: FakeClock):
    store = Store(new_database(), hold_seconds=60, clock=clock)
    yield store
    store.close()


@contextmanager
def raw_database(location: str) -> Iterator[Any]:
    """A plain driver connection to the store's database, behind its back, committed on leaving."""
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location) as connection:
            yield connection
    else:
        with closing(sqlite3.connect(location)) as connection, connection:
            yield connection


def set_schema_version(connection: Any, location: str, version: int) -> None:
    if location.startswith("postgresql://"):
        connection.execute("CREATE TABLE schema_version (version BIGINT NOT NULL)")
        connection.execute("INSERT INTO schema_version VALUES (%s)", (version,))
    else:
        connection.execute(f"PRAGMA user_version = {version}")


def schema_version(location: str) -> int:
    with raw_database(location) as connection:
        query = "SELECT version FROM schema_version" if location.startswith("postgresql://") else "PRAGMA user_version"
        return connection.execute(query).fetchone()[0]


def small_event(store: Store, capacity: int = 5) -> int:
    return store.create_event("Show X", "Teatro", "2027-01-01T20:00:00-03:00", (("Pista", 10000, capacity),)).id


def available(store: Store, event_id: int, sector: str = "Pista") -> int:
    return store.get_event(event_id).sector(sector).available


def test_new_database_has_the_demo_catalogue_and_is_consistent(store: Store) -> None:
    events = store.list_events()
    assert [len(e.sectors) for e in events] == [2, 2, 1]
    assert sum(s.capacity for e in events for s in e.sectors) == 580
    assert all(s.available == s.capacity for e in events for s in e.sectors)
    assert store.check_invariants() == []


def test_no_demo_starts_empty(new_database: Callable[[], str]) -> None:
    store = Store(new_database(), seed_demo=False)
    try:
        assert store.list_events() == ()
    finally:
        store.close()


def test_sold_out_names_what_is_left(store: Store) -> None:
    event_id = small_event(store, capacity=3)
    store.reserve(event_id, 2, "Ana", "ana@example.com", confirm=True)
    with pytest.raises(SoldOut, match="Only 1 tickets left in Pista for Show X"):
        store.reserve(event_id, 2, "Bia", "bia@example.com")
    store.reserve(event_id, 1, "Bia", "bia@example.com")
    with pytest.raises(SoldOut, match="Pista for Show X is sold out"):
        store.reserve(event_id, 1, "Caio", "caio@example.com")
    assert available(store, event_id) == 0
    assert store.check_invariants() == []


def test_half_price_is_half_rounded_up_to_the_cent(store: Store) -> None:
    event_id = store.create_event("Odd", "Sala", "2027-01-01T20:00:00", (("A", 1001, 10),)).id
    half = store.reserve(event_id, 3, "Ana", "ana@example.com", category="half")
    assert (half.unit_price_cents, half.total_cents) == (501, 1503)
    full = store.reserve(event_id, 1, "Ana", "ana@example.com")
    assert (full.unit_price_cents, full.total_cents) == (1001, 1001)


def test_same_request_id_returns_the_original_and_books_once(store: Store) -> None:
    event_id = small_event(store, capacity=10)
    first = store.reserve(event_id, 2, "Ana", "ana@example.com", request_id="req-1", confirm=True)
    again = store.reserve(event_id, 2, "Ana", "ana@example.com", request_id="req-1", confirm=True)
    assert again == first
    assert available(store, event_id) == 8
    assert len(store.reservations(event_id)) == 1


def test_same_request_id_with_other_arguments_is_refused(store: Store) -> None:
    event_id = small_event(store, capacity=10)
    store.reserve(event_id, 2, "Ana", "ana@example.com", request_id="req-1")
    with pytest.raises(InvalidRequest, match="already used for a different reservation"):
        store.reserve(event_id, 3, "Ana", "ana@example.com", request_id="req-1")
    assert available(store, event_id) == 8


def test_concurrent_duplicates_of_one_request_book_once(store: Store) -> None:
    event_id = small_event(store, capacity=10)
    results = []

    def buy() -> None:
        results.append(store.reserve(event_id, 1, "Ana", "ana@example.com", request_id="same", confirm=True))

    threads = [threading.Thread(target=buy) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {r.code for r in results} == {results[0].code}
    assert available(store, event_id) == 9


def test_holds_expire_and_return_their_tickets_once(store: Store, clock: FakeClock) -> None:
    event_id = small_event(store, capacity=5)
    hold = store.reserve(event_id, 3, "Ana", "ana@example.com")
    clock.advance(59)
    assert store.expire_holds() == 0
    clock.advance(1)
    assert store.expire_holds() == 1
    assert store.expire_holds() == 0
    assert available(store, event_id) == 5
    assert store.get_reservation(hold.code, "ana@example.com").status == "expired"
    assert [e.action for e in store.ledger() if e.code == hold.code] == ["hold", "expire"]
    with pytest.raises(HoldExpired):
        store.confirm(hold.code, "ana@example.com")


def test_a_lapsed_hold_cannot_be_confirmed_even_before_the_sweep(store: Store, clock: FakeClock) -> None:
    event_id = small_event(store)
    hold = store.reserve(event_id, 1, "Ana", "ana@example.com")
    clock.advance(61)
    with pytest.raises(HoldExpired, match=f"Reservation {hold.code} expired"):
        store.confirm(hold.code, "ana@example.com")
    assert store.check_invariants() == []


def test_expiry_runs_at_start_up(new_database: Callable[[], str], clock: FakeClock) -> None:
    path = new_database()
    store = Store(path, hold_seconds=60, clock=clock)
    event_id = small_event(store, capacity=4)
    store.reserve(event_id, 4, "Ana", "ana@example.com")
    store.close()
    clock.advance(3600)
    reopened = Store(path, hold_seconds=60, clock=clock)
    try:
        assert available(reopened, event_id) == 4
    finally:
        reopened.close()


def test_confirm_and_cancel_are_idempotent(store: Store) -> None:
    event_id = small_event(store, capacity=5)
    hold = store.reserve(event_id, 2, "Ana", "ana@example.com")
    assert store.confirm(hold.code, "ana@example.com").status == "confirmed"
    assert store.confirm(hold.code, "ANA@example.com").status == "confirmed"
    assert store.cancel(hold.code, "ana@example.com").status == "cancelled"
    assert store.cancel(hold.code, "ana@example.com").status == "cancelled"
    assert available(store, event_id) == 5
    with pytest.raises(InvalidRequest, match="was cancelled"):
        store.confirm(hold.code, "ana@example.com")
    assert [e.action for e in store.ledger() if e.code == hold.code] == ["hold", "confirm", "cancel"]


def test_wrong_email_looks_like_wrong_code(store: Store) -> None:
    event_id = small_event(store)
    hold = store.reserve(event_id, 1, "Ana", "ana@example.com")
    with pytest.raises(NotFound) as wrong_email:
        store.get_reservation(hold.code, "eve@example.com")
    with pytest.raises(NotFound) as wrong_code:
        store.get_reservation("ZZZ-ZZZ", "ana@example.com")
    assert str(wrong_email.value).replace(hold.code, "X") == str(wrong_code.value).replace("ZZZ-ZZZ", "X")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantity": 0}, "quantity must be between 1 and 10"),
        ({"quantity": 11}, "quantity must be between 1 and 10"),
        ({"quantity": -3}, "quantity must be between 1 and 10"),
        ({"customer": "   "}, "customer name must not be empty"),
        ({"customer": "x" * 201}, "customer name is too long"),
        ({"customer": "bad\x00name"}, "control characters"),
        ({"email": "not-an-email"}, "does not look like an email"),
        ({"category": "vip"}, "category must be 'full' or 'half'"),
        ({"sector": "Nowhere"}, "has no sector 'Nowhere'"),
        ({"event_id": 999}, "No event with id 999"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(store: Store, kwargs: dict, message: str) -> None:
    event_id = small_event(store)
    before = (store.list_events(), store.ledger())
    arguments = {"event_id": event_id, "quantity": 1, "customer": "Ana", "email": "ana@example.com", **kwargs}
    with pytest.raises((InvalidRequest, NotFound), match=message):
        store.reserve(**arguments)
    assert (store.list_events(), store.ledger()) == before


def test_several_sectors_need_a_sector_name(store: Store) -> None:
    with pytest.raises(InvalidRequest, match="several sectors"):
        store.reserve(1, 1, "Ana", "ana@example.com")


def test_closed_events_take_no_reservations(store: Store) -> None:
    event_id = small_event(store)
    store.engine.submit(lambda connection: connection.execute("UPDATE events SET status = 'paused' WHERE id = ?", (event_id,)), (event_id,))
    with pytest.raises(EventClosed, match="Show X is paused"):
        store.reserve(event_id, 1, "Ana", "ana@example.com")


def test_two_stores_on_one_file_never_oversell(new_database: Callable[[], str]) -> None:
    """Two processes' worth of stores (two writer threads, two connections) race for the last tickets."""
    path = new_database()
    first, second = Store(path), Store(path)
    try:
        event_id = small_event(first, capacity=30)
        sold: list[str] = []

        def buy(store: Store) -> None:
            for _ in range(40):
                try:
                    sold.append(store.reserve(event_id, 1, "Ana", "ana@example.com", confirm=True).code)
                except SoldOut:
                    return

        threads = [threading.Thread(target=buy, args=(s,)) for s in (first, second) * 4]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(sold) == len(set(sold)) == 30
        assert available(second, event_id) == 0
        assert first.check_invariants() == []
    finally:
        first.close()
        second.close()


def test_no_sale_outlives_a_cancel_of_its_event_that_raced_it(new_database: Callable[[], str]) -> None:
    """Sales on two stores while a third cancels the event: every sale either happened before the cancel (and
    was cancelled by it) or was refused; none stays active on a cancelled event."""
    path = new_database()
    stores = [Store(path) for _ in range(3)]
    try:
        event_id = small_event(stores[0], capacity=10_000)
        started = threading.Barrier(9)
        refused: list[str] = []

        def buy(number: int) -> None:
            started.wait()
            for _ in range(60):
                try:
                    stores[number % 2].reserve(event_id, 1, "Ana", "ana@example.com", confirm=True)
                except EventClosed as exc:
                    refused.append(str(exc))
                    return

        with terminals(8, buy, "buyer"):
            started.wait()
            wait_until(lambda: available(stores[2], event_id) <= 10_000 - 40, timeout=10, what="sales under way")
            _, cancelled = stores[2].cancel_event(event_id)
        active = [r for r in stores[2].reservations(event_id) if r.status in ("held", "confirmed")]
        assert active == [], f"{len(active)} sales stayed active on a cancelled event"
        assert cancelled >= 40 and len(refused) == 8
        assert stores[2].check_invariants() == []
    finally:
        for store in stores:
            store.close()


def test_the_database_itself_refuses_a_negative_availability(store: Store) -> None:
    event_id = small_event(store, capacity=2)
    with pytest.raises(Unavailable, match=r"(?i)check constraint"):
        store.engine.submit(
            lambda connection: connection.execute("UPDATE sectors SET available = available - 3 WHERE event_id = ?", (event_id,)),
            (event_id,),
        )
    assert available(store, event_id) == 2


def test_migrates_a_version_1_database(new_database: Callable[[], str]) -> None:
    path = new_database()
    with raw_database(path) as old:
        schema = database.MIGRATIONS[0]
        if path.startswith("postgresql://"):
            from storage.postgres import translate_ddl

            schema = translate_ddl(schema)
        for statement in schema.split(";"):
            if statement.strip():
                old.execute(statement)
        old.execute(
            "INSERT INTO events (id, name, venue, starts_at, status, created_at) VALUES (7, 'Old', 'Hall', '2027-01-01', 'on_sale', 0)"
        )
        old.execute("INSERT INTO sectors VALUES (7, 'Geral', 0, 5000, 10, 5)")
        old.execute(
            "INSERT INTO reservations VALUES ('AAA-BBB', 'r1', 7, 'Geral', 2, 'Ana', 'ana@example.com', 'full', 5000, 10000,"
            " 'confirmed', 0, NULL)"
        )
        old.execute(
            "INSERT INTO reservations VALUES ('CCC-DDD', 'r2', 7, 'Geral', 3, 'Caio', 'caio@example.com', 'half', 2500, 7500,"
            " 'confirmed', 0, NULL)"
        )
        set_schema_version(old, path, 1)
    store = Store(path)
    try:
        assert schema_version(path) == len(database.MIGRATIONS)
        with raw_database(path) as check:
            assert check.execute("SELECT currency FROM events WHERE id = 7").fetchone()[0] == "BRL"
        assert [e.id for e in store.list_events()] == [7], "an old database is not re-seeded"
        assert store.get_reservation("AAA-BBB", "ana@example.com").total_cents == 10000
        assert store.check_invariants() == [], "the half-price counter is rebuilt from the old reservations"
        assert store.outbox() == ()
        store.reserve(7, 5, "Bia", "bia@example.com", confirm=True)
        assert store.get_event(7).sectors[0].available == 0
        assert [m.kind for m in store.outbox()] == ["confirmed"]
    finally:
        store.close()


def test_refuses_a_database_from_the_future(new_database: Callable[[], str]) -> None:
    path = new_database()
    with raw_database(path) as future:
        set_schema_version(future, path, len(database.MIGRATIONS) + 1)
    with pytest.raises(RuntimeError, match="newer than this program"):
        Store(path)


def test_codes_are_readable_aloud() -> None:
    codes = {new_code() for _ in range(2000)}
    assert len(codes) > 1990
    for code in codes:
        assert len(code) == 7 and code[3] == "-"
        assert not set(code) & set("01IO")


class StoreMachine(RuleBasedStateMachine):
    """Any sequence of reserve / confirm / cancel / expire keeps capacity == available + held + sold,
    and the store agrees with a simple model of what should be available."""

    def __init__(self, new_database: Callable[[], str]) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = Store(new_database(), hold_seconds=30, max_per_order=4, seed_demo=False, clock=self.clock)
        self.capacity = {"A": 6, "B": 3}
        self.event_id = self.store.create_event("Model", "Here", "2027-01-01T00:00:00", tuple(
            (name, 1000, capacity) for name, capacity in self.capacity.items()
        )).id
        self.active: dict[str, tuple[str, int, str, float]] = {}
        """code -> (sector, quantity, status, expires_at) for held and confirmed reservations."""

    def teardown(self) -> None:
        self.store.close()

    @initialize()
    def nothing_sold_yet(self) -> None:
        assert self.store.check_invariants() == []

    @rule(sector=st.sampled_from(["A", "B"]), quantity=st.integers(1, 4), confirm=st.booleans())
    def reserve(self, sector: str, quantity: int, confirm: bool) -> None:
        free = self.capacity[sector] - sum(q for s, q, _, _ in self.active.values() if s == sector)
        try:
            reservation = self.store.reserve(self.event_id, quantity, "Ana", "ana@example.com", sector=sector, confirm=confirm)
        except SoldOut:
            assert quantity > free
            return
        assert quantity <= free
        status = "confirmed" if confirm else "held"
        self.active[reservation.code] = (sector, quantity, status, self.clock.now + 30)

    def pick(self, data: st.DataObject) -> str:
        """Draw by position, not by code: codes are random, and hypothesis must replay the same draws."""
        return list(self.active)[data.draw(st.integers(0, len(self.active) - 1))]

    @precondition(lambda self: self.active)
    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        code = self.pick(data)
        sector, quantity, status, expires_at = self.active[code]
        if status == "held" and expires_at <= self.clock.now:
            with pytest.raises(HoldExpired):
                self.store.confirm(code, "ana@example.com")
            return
        assert self.store.confirm(code, "ana@example.com").status == "confirmed"
        self.active[code] = (sector, quantity, "confirmed", expires_at)

    @precondition(lambda self: self.active)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        code = self.pick(data)
        assert self.store.cancel(code, "ana@example.com").status == "cancelled"
        del self.active[code]

    @rule(seconds=st.sampled_from([1, 10, 29, 31]))
    def time_passes_and_holds_expire(self, seconds: int) -> None:
        self.clock.advance(seconds)
        lapsed = [
            code for code, (_, _, status, expires_at) in self.active.items() if status == "held" and expires_at <= self.clock.now
        ]
        assert self.store.expire_holds() == len(lapsed)
        for code in lapsed:
            del self.active[code]

    @invariant()
    def capacity_is_accounted_for(self) -> None:
        assert self.store.check_invariants() == []
        event = self.store.get_event(self.event_id)
        for sector in event.sectors:
            taken = sum(q for s, q, _, _ in self.active.values() if s == sector.name)
            assert sector.available == self.capacity[sector.name] - taken


def test_store_machine(new_database: Callable[[], str]) -> None:
    examples = 40 if new_database().endswith(".db") else 10  # the rules are the engine's; PostgreSQL's DDL is slower to set up
    run_state_machine_as_test(
        lambda: StoreMachine(new_database), settings=settings(max_examples=examples, stateful_step_count=25, deadline=None)
    )


def test_confirm_cancel_and_expiry_racing_on_one_hold_settle_it_once(new_database: Callable[[], str]) -> None:
    """Two replicas (two stores on one database, clocks a second apart) confirm, cancel and expire the same
    holds at the same moment: each hold ends exactly one way, and the counts stay exact."""
    location = new_database()
    clock, late_clock = FakeClock(), FakeClock()
    first = Store(location, hold_seconds=30, seed_demo=False, clock=clock)
    second = Store(location, hold_seconds=30, seed_demo=False, clock=late_clock)
    try:
        event_id = small_event(first, capacity=400)
        holds = [first.reserve(event_id, 2, "Ana", "ana@example.com").code for _ in range(60)]
        clock.advance(29.5)  # not lapsed for the first store's clock
        late_clock.advance(31)  # lapsed for the second's

        def race(action: Callable[[str], object]) -> None:
            for code in holds:
                try:
                    action(code)
                except (HoldExpired, InvalidRequest):
                    pass  # the hold was already settled another way: the honest answer

        actions: list[Callable[[str], object]] = [
            lambda code: first.confirm(code, "ana@example.com"),
            lambda code: second.cancel(code, "ana@example.com"),
            lambda code: second.expire_holds(),
        ]
        with terminals(len(actions), lambda number: race(actions[number]), "racer"):
            pass
        assert first.check_invariants() == []
        final = {r.code: r.status for r in first.reservations(event_id)}
        ledger = first.ledger(limit=10_000)
        for code in holds:
            history = [entry.action for entry in ledger if entry.code == code and entry.action != "hold"]
            assert history in (["confirm"], ["cancel"], ["expire"], ["confirm", "cancel"]), f"{code}: {history}"
            assert final[code] == {"confirm": "confirmed", "cancel": "cancelled", "expire": "expired"}[history[-1]]
        assert available(first, event_id) == 400 - 2 * sum(status == "confirmed" for status in final.values())
    finally:
        first.close()
        second.close()


def test_group_commit_answers_every_caller_even_when_closed_under_load(new_database: Callable[[], str]) -> None:
    """Writers queue for the database; closing mid-stream must answer every one of them."""
    path = new_database()
    store = Store(path, seed_demo=False)
    event_id = small_event(store, capacity=1_000_000)
    sold: list[str] = []
    endings: list[str] = []
    lock = threading.Lock()
    started = threading.Barrier(33)

    def writer() -> None:
        started.wait()
        while True:
            try:
                code = store.reserve(event_id, 1, "Ana", "ana@example.com", sector="Pista", confirm=True).code
            except Unavailable as exc:
                with lock:
                    endings.append(str(exc))
                return
            with lock:
                sold.append(code)

    threads = [threading.Thread(target=writer) for _ in range(32)]
    for thread in threads:
        thread.start()
    started.wait()
    wait_until(lambda: len(sold) >= 500, what="500 sales")
    store.close()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads), "a writer was never woken"
    assert endings == ["the store is closed"] * 32
    reopened = Store(path, seed_demo=False)
    try:
        assert reopened.check_invariants() == []
        assert sorted(r.code for r in reopened.reservations(event_id)) == sorted(sold)
    finally:
        reopened.close()



@pytest.mark.parametrize("where", ["missing-directory/tickets.db", "not-a-database.db"])
def test_a_database_that_cannot_be_opened_is_unavailable(tmp_path, where: str) -> None:
    (tmp_path / "not-a-database.db").write_bytes(b"this is no SQLite file, only text long enough to be read as a header" * 4)
    with pytest.raises(Unavailable, match="database error"):
        Store(tmp_path / where)


EMAIL_LOOKUPS = (
    ("reservations_by_email", "SELECT code FROM reservations WHERE lower(email) = lower(?) ORDER BY created_at DESC LIMIT 10"),
    ("waitlist_by_email", "SELECT id FROM waitlist WHERE event_id = ? AND sector = ? AND lower(email) = lower(?) AND status = 'waiting'"),
)


@pytest.mark.parametrize(("index", "query"), EMAIL_LOOKUPS)
def test_lookups_by_email_read_an_index_not_the_table(store: Store, index: str, query: str) -> None:
    """The clerk's search by email and a retried waitlist join ask the index on lower(email) (migration 6)."""
    arguments = ("ana@example.com",) if query.count("?") == 1 else (1, "Pista", "ana@example.com")
    with raw_database(store.path) as connection:
        if store.backend == "postgresql":
            connection.execute("SET enable_seqscan = off")  # a tiny table would be scanned anyway; is the index usable?
            plan = "\n".join(row[0] for row in connection.execute("EXPLAIN " + query.replace("?", "%s"), arguments))
        else:
            plan = "\n".join(str(row[-1]) for row in connection.execute("EXPLAIN QUERY PLAN " + query, arguments))
    assert index in plan, plan
