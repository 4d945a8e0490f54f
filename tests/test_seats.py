"""Seated sectors: exact seats all or none, best available block, the seat map, expiry, and many terminals at once."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable

import pytest
from conftest import ADMIN_TOKEN
from procs import terminals
from test_database import FakeClock

import seating
from client_core import TicketClient
from database import Store
from errors import InvalidRequest, SoldOut
from records import SeatMap


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(new_database: Callable[[], str], clock: FakeClock):
    store = Store(new_database(), hold_seconds=60, clock=clock, seed_demo=False)
    yield store
    store.close()


def room(store: Store, rows: int = 3, seats_per_row: int = 6) -> int:
    return store.create_event("Cine Odeon", "Cinelândia", "2027-05-01T19:00:00-03:00", (("Sala", 3000, rows, seats_per_row),)).id


def test_a_seated_sector_is_rows_times_seats_and_starts_all_free(store: Store) -> None:
    event = store.get_event(room(store, 20, 30))
    sector = event.sectors[0]
    assert (sector.rows, sector.seats_per_row, sector.capacity, sector.available) == (20, 30, 600, 600)
    seat_map = store.seat_map(event.id, "Sala")
    assert seat_map.states == SeatMap.FREE * 600 and seat_map.free == 600


def test_named_seats_are_held_then_sold_and_show_on_the_map(store: Store) -> None:
    event_id = room(store)
    hold = store.reserve(event_id, 2, "Ana", "ana@example.com", seats=("b3", "B2"))
    assert hold.seats == ("B2", "B3")
    assert store.get_event(event_id).sectors[0].available == 16
    seat_map = store.seat_map(event_id, "Sala")
    assert (seat_map.state(1, 1), seat_map.state(1, 2), seat_map.state(1, 3)) == ("h", "h", ".")
    store.confirm(hold.code, "ana@example.com", payment_ref="PIX-123")
    assert store.seat_map(event_id, "Sala").state(1, 1) == "s"
    assert store.get_reservation(hold.code, "ana@example.com").seats == ("B2", "B3")
    assert store.check_invariants() == []


def test_a_taken_seat_refuses_the_whole_reservation(store: Store) -> None:
    event_id = room(store)
    store.reserve(event_id, 1, "Ana", "ana@example.com", seats=("A3",))
    with pytest.raises(SoldOut, match="Seat A3 is already taken in Sala"):
        store.reserve(event_id, 3, "Bia", "bia@example.com", seats=("A2", "A3", "A4"))
    assert store.get_event(event_id).sectors[0].available == 17
    assert store.seat_map(event_id, "Sala").states.count("h") == 1
    assert store.check_invariants() == []


@pytest.mark.parametrize(
    ("seats", "message"),
    [
        (("A1", "A1"), "named twice"),
        (("Z1", "A2"), "there is no seat Z1"),
        (("A7", "A2"), "there is no seat A7"),
        (("1A", "A2"), "is not a seat"),
        (("A1",), "1 seats named for 2 tickets"),
    ],
)
def test_bad_seat_names_are_refused_and_change_nothing(store: Store, seats: tuple[str, ...], message: str) -> None:
    event_id = room(store)
    with pytest.raises(InvalidRequest, match=message):
        store.reserve(event_id, 2, "Ana", "ana@example.com", seats=seats)
    assert store.get_event(event_id).sectors[0].available == 18
    assert store.reservations() == ()


def test_seats_in_an_unnumbered_sector_are_refused(store: Store) -> None:
    event_id = store.create_event("Show", "Arena", "2027-05-01T19:00:00-03:00", (("Pista", 1000, 10),)).id
    with pytest.raises(InvalidRequest, match="no numbered seats"):
        store.reserve(event_id, 1, "Ana", "ana@example.com", seats=("A1",))
    with pytest.raises(InvalidRequest, match="no numbered seats"):
        store.seat_map(event_id, "Pista")
    assert store.reserve(event_id, 1, "Ana", "ana@example.com").seats == ()


def test_best_available_is_the_middle_of_the_front_row_that_fits(store: Store) -> None:
    event_id = room(store, rows=3, seats_per_row=6)
    assert store.reserve(event_id, 2, "Ana", "ana@example.com").seats == ("A3", "A4")
    assert store.reserve(event_id, 2, "Bia", "bia@example.com").seats == ("A1", "A2")
    assert store.reserve(event_id, 3, "Caio", "caio@example.com").seats == ("B2", "B3", "B4")
    assert store.reserve(event_id, 2, "Duda", "duda@example.com").seats == ("A5", "A6")
    assert store.check_invariants() == []


def test_best_available_refuses_when_no_block_fits_though_seats_are_left(store: Store) -> None:
    event_id = room(store, rows=2, seats_per_row=4)
    for seats in (("A2",), ("B3",)):
        store.reserve(event_id, 1, "Ana", "ana@example.com", seats=seats)
    with pytest.raises(SoldOut, match="No 3 adjacent seats left in one row of Sala"):
        store.reserve(event_id, 3, "Bia", "bia@example.com")
    assert store.get_event(event_id).sectors[0].available == 6
    assert store.reserve(event_id, 2, "Bia", "bia@example.com").seats == ("A3", "A4")


def test_expiry_and_cancel_return_the_seats(store: Store, clock: FakeClock) -> None:
    event_id = room(store)
    lapsing = store.reserve(event_id, 2, "Ana", "ana@example.com", seats=("A1", "A2"))
    cancelled = store.reserve(event_id, 1, "Bia", "bia@example.com", seats=("C6",))
    store.cancel(cancelled.code, "bia@example.com")
    clock.advance(61)
    assert store.expire_holds() == 1
    assert store.seat_map(event_id, "Sala").states == SeatMap.FREE * 18
    assert store.reserve(event_id, 3, "Caio", "caio@example.com", seats=("A1", "A2", "C6")).seats == ("A1", "A2", "C6")
    actions = [entry.action for entry in store.ledger() if entry.code in (lapsing.code, cancelled.code)]
    assert sorted(actions) == ["cancel", "expire", "hold", "hold"]
    assert store.check_invariants() == []


def test_a_retried_request_returns_the_same_seats_and_another_set_of_seats_is_refused(store: Store) -> None:
    event_id = room(store)
    first = store.reserve(event_id, 2, "Ana", "ana@example.com", seats=("A1", "A2"), request_id="r-1")
    assert store.reserve(event_id, 2, "Ana", "ana@example.com", seats=("A2", "A1"), request_id="r-1") == first
    with pytest.raises(InvalidRequest, match="already used for a different reservation"):
        store.reserve(event_id, 2, "Ana", "ana@example.com", seats=("B1", "B2"), request_id="r-1")
    assert store.get_event(event_id).sectors[0].available == 16


def test_threads_grabbing_overlapping_seats_sell_each_seat_once_all_or_none(store: Store) -> None:
    """Store-level race: the group commit and the primary key, not a lock in the test, keep seats apart."""
    event_id = room(store, rows=2, seats_per_row=10)
    won: list[tuple[str, ...]] = []
    refused = Counter()
    lock = threading.Lock()

    def grab(worker: int) -> None:
        rng = random.Random(worker)
        for attempt in range(15):
            start = rng.randrange(0, 8)
            row = rng.choice("AB")
            wanted = tuple(f"{row}{seat}" for seat in range(start + 1, start + 4))
            try:
                reservation = store.reserve(
                    event_id, 3, f"T{worker}", f"t{worker}@example.com", seats=wanted, request_id=f"{worker}-{attempt}"
                )
            except SoldOut:
                with lock:
                    refused[worker] += 1
                continue
            with lock:
                won.append(reservation.seats)

    with terminals(12, grab, "grabber"):
        pass
    sold = [seat for seats in won for seat in seats]
    assert len(sold) == len(set(sold)), "a seat was sold twice"
    assert all(len(seats) == 3 for seats in won)
    seat_map = store.seat_map(event_id, "Sala")
    assert seat_map.states.count("h") == len(sold) == 20 - store.get_event(event_id).sectors[0].available
    assert sum(refused.values()) > 0
    assert store.check_invariants() == []


def test_terminals_on_two_servers_grab_overlapping_seats(cluster_factory) -> None:
    """The real system: 16 terminals through two server processes on one database, each wanting 2 of the
    same 12 front seats or letting the server choose; every seat is sold at most once, every sale has 2 seats."""
    cluster = cluster_factory(servers=2)
    with TicketClient([cluster.name_server_address]) as admin:
        event_id = admin.create_event(ADMIN_TOKEN, "Cine Rio", "Centro", "2027-05-01T19:00:00-03:00", (("Sala", 2500, 3, 12),)).id
    sales: list[tuple[str, ...]] = []
    refusals: list[str] = []
    lock = threading.Lock()

    def terminal(number: int) -> None:
        rng = random.Random(number)
        with TicketClient([cluster.name_server_address]) as client:
            for _ in range(4):
                first = rng.randrange(1, 12)
                seats = None if rng.random() < 0.3 else (f"A{first}", f"A{first + 1}")
                try:
                    sale = client.reserve(event_id, 2, f"T{number}", f"t{number}@example.com", confirm=True, seats=seats)
                except SoldOut as exc:
                    with lock:
                        refusals.append(str(exc))
                    continue
                with lock:
                    sales.append(sale.seats)

    with terminals(16, terminal):
        pass
    sold = [seat for seats in sales for seat in seats]
    assert len(sold) == len(set(sold)), "a seat was sold twice"
    assert all(len(seats) == 2 and seats[0][0] == seats[1][0] for seats in sales)
    assert all("already taken" in text or "adjacent" in text for text in refusals)
    with TicketClient([cluster.name_server_address]) as client:
        seat_map = client.get_seat_map(event_id, "Sala")
        sector = client.get_event(event_id).sectors[0]
    assert seat_map.states.count(SeatMap.SOLD) == len(sold) == sector.capacity - sector.available
    store = Store(cluster.db, seed_demo=False)
    try:
        assert store.check_invariants() == []
    finally:
        store.close()


def test_parse_selection_reads_what_a_clerk_types() -> None:
    assert seating.parse_selection("a1 A2, c5-c8", 20, 30) == ("A1", "A2", "C5", "C6", "C7", "C8")
    for text, message in (("C5-D8", "one row"), ("A1 a1", "named twice"), ("", "no seats"), ("U1", "no seat U1")):
        with pytest.raises(seating.SeatError, match=message):
            seating.parse_selection(text, 20, 30)
