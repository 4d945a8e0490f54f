"""The waitlist in the store: first come first served, offers made in the transaction that frees tickets,
lapses that pass to the next in line, and each expiry exactly once with two stores on one database."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_database import FakeClock

from database import Store
from errors import EventClosed, InvalidRequest, NotFound, SoldOut


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(new_database: Callable[[], str], clock: FakeClock):
    store = Store(new_database(), hold_seconds=60, offer_seconds=30, clock=clock, seed_demo=False)
    yield store
    store.close()


def sold_out_show(store: Store, capacity: int = 4) -> tuple[int, list[str]]:
    """An event whose only sector is sold out to two customers; answers the event id and their codes."""
    event_id = store.create_event("Show", "Teatro", "2027-05-01T19:00:00-03:00", (("Geral", 5000, capacity),)).id
    first = store.reserve(event_id, capacity // 2, "Ana", "ana@example.com", confirm=True)
    second = store.reserve(event_id, capacity - capacity // 2, "Bia", "bia@example.com")
    return event_id, [first.code, second.code]


def test_joining_is_only_for_a_sold_out_sector_and_keeps_order(store: Store) -> None:
    event_id = store.create_event("Show", "Teatro", "2027-05-01T19:00:00-03:00", (("Geral", 5000, 4),)).id
    with pytest.raises(InvalidRequest, match="still has 4 tickets; reserve them instead"):
        store.join_waitlist(event_id, 2, "Caio", "caio@example.com")
    store.reserve(event_id, 4, "Ana", "ana@example.com")
    caio = store.join_waitlist(event_id, 2, "Caio", "caio@example.com")
    duda = store.join_waitlist(event_id, 1, "Duda", "duda@example.com")
    assert (caio.status, caio.position, caio.sector, caio.code) == ("waiting", 1, "Geral", None)
    assert duda.position == 2
    assert store.join_waitlist(event_id, 2, "Caio", "CAIO@example.com") == caio, "a retried join keeps its one place"
    assert store.get_waitlist_entry(duda.id, "duda@example.com").position == 2


def test_a_cancel_offers_the_tickets_to_the_first_in_line_in_the_same_transaction(store: Store) -> None:
    event_id, (_, bia) = sold_out_show(store)
    caio = store.join_waitlist(event_id, 2, "Caio", "caio@example.com")
    duda = store.join_waitlist(event_id, 1, "Duda", "duda@example.com")
    store.cancel(bia, "bia@example.com")
    offered = store.get_waitlist_entry(caio.id, "caio@example.com")
    assert (offered.status, offered.position) == ("offered", 0)
    assert offered.offer_expires_at is not None
    hold = store.get_reservation(offered.code, "caio@example.com")
    assert (hold.status, hold.quantity, hold.customer) == ("held", 2, "Caio")
    assert store.get_event(event_id).sectors[0].available == 0, "nobody else can buy the freed tickets"
    assert store.get_waitlist_entry(duda.id, "duda@example.com").position == 1
    offer = [entry for entry in store.ledger() if entry.action == "offer"]
    assert [(entry.code, entry.detail) for entry in offer] == [(offered.code, f"waitlist:{caio.id}")]
    assert [message.kind for message in store.outbox() if message.code == offered.code] == ["offered"]
    store.confirm(offered.code, "caio@example.com")
    assert store.get_waitlist_entry(caio.id, "caio@example.com").status == "accepted"
    assert store.check_invariants() == []


def test_an_entry_that_does_not_fit_is_passed_over_not_skipped_forever(store: Store) -> None:
    event_id, (ana, bia) = sold_out_show(store, capacity=4)
    big = store.join_waitlist(event_id, 3, "Caio", "caio@example.com")
    small = store.join_waitlist(event_id, 2, "Duda", "duda@example.com")
    store.cancel(bia, "bia@example.com")
    assert store.get_waitlist_entry(big.id, "caio@example.com").status == "waiting"
    assert store.get_waitlist_entry(small.id, "duda@example.com").status == "offered"
    store.cancel(ana, "ana@example.com")
    assert store.get_waitlist_entry(big.id, "caio@example.com").status == "waiting", "2 free, 3 wanted"
    assert store.get_event(event_id).sectors[0].available == 2


def test_a_lapsed_offer_passes_to_the_next_and_an_expired_hold_offers_too(store: Store, clock: FakeClock) -> None:
    event_id, _ = sold_out_show(store)
    caio = store.join_waitlist(event_id, 2, "Caio", "caio@example.com")
    duda = store.join_waitlist(event_id, 2, "Duda", "duda@example.com")
    clock.advance(61)
    assert store.expire_holds() == 1
    assert store.get_waitlist_entry(caio.id, "caio@example.com").status == "offered"
    clock.advance(31)
    assert store.expire_holds() == 1
    assert store.get_waitlist_entry(caio.id, "caio@example.com").status == "lapsed"
    offered = store.get_waitlist_entry(duda.id, "duda@example.com")
    assert offered.status == "offered"
    with pytest.raises(SoldOut):
        store.reserve(event_id, 1, "Eva", "eva@example.com")
    actions = [entry.action for entry in store.ledger() if entry.detail]
    assert actions == ["join", "join", "offer", "lapse", "offer"]
    assert store.check_invariants() == []


def test_leaving_gives_up_an_offer_to_the_next(store: Store) -> None:
    event_id, (_, bia) = sold_out_show(store)
    caio = store.join_waitlist(event_id, 2, "Caio", "caio@example.com")
    duda = store.join_waitlist(event_id, 2, "Duda", "duda@example.com")
    store.cancel(bia, "bia@example.com")
    assert store.leave_waitlist(caio.id, "caio@example.com").status == "left"
    assert store.get_waitlist_entry(duda.id, "duda@example.com").status == "offered"
    assert store.leave_waitlist(duda.id, "duda@example.com").status == "left"
    assert store.get_event(event_id).sectors[0].available == 2
    with pytest.raises(NotFound, match="No waitlist entry"):
        store.leave_waitlist(duda.id, "someone@example.com")
    assert store.check_invariants() == []


def test_more_capacity_and_a_resumed_event_offer_to_the_waitlist(store: Store) -> None:
    event_id, _ = sold_out_show(store)
    caio = store.join_waitlist(event_id, 3, "Caio", "caio@example.com")
    store.set_event_status(event_id, "paused")
    store.update_event(event_id, capacities=(("Geral", 7),))
    assert store.get_waitlist_entry(caio.id, "caio@example.com").status == "waiting", "a paused event makes no offers"
    store.set_event_status(event_id, "on_sale")
    assert store.get_waitlist_entry(caio.id, "caio@example.com").status == "offered"
    store.cancel_event(event_id)
    assert store.get_waitlist_entry(caio.id, "caio@example.com").status == "left"
    with pytest.raises(EventClosed):
        store.join_waitlist(event_id, 1, "Duda", "duda@example.com")


def test_a_seated_sector_offers_adjacent_seats(store: Store) -> None:
    event_id = store.create_event("Cine", "Centro", "2027-05-01T19:00:00-03:00", (("Sala", 3000, 1, 4),)).id
    first = store.reserve(event_id, 2, "Ana", "ana@example.com", seats=("A1", "A2"))
    store.reserve(event_id, 2, "Bia", "bia@example.com", seats=("A3", "A4"))
    caio = store.join_waitlist(event_id, 2, "Caio", "caio@example.com")
    store.cancel(first.code, "ana@example.com")
    offered = store.get_waitlist_entry(caio.id, "caio@example.com")
    assert store.get_reservation(offered.code, "caio@example.com").seats == ("A1", "A2")
    assert store.check_invariants() == []


def test_two_stores_on_one_database_expire_and_offer_once(tmp_path: Path, clock: FakeClock) -> None:
    """Two replicas sweeping the same lapsed holds: each expiry, and each offer it makes, happens once."""
    first = Store(tmp_path / "shared.db", hold_seconds=60, offer_seconds=30, clock=clock, seed_demo=False)
    second = Store(tmp_path / "shared.db", hold_seconds=60, offer_seconds=30, clock=clock, seed_demo=False)
    try:
        event_id = first.create_event("Show", "Teatro", "2027-05-01T19:00:00-03:00", (("Geral", 5000, 10),)).id
        for number in range(10):
            second.reserve(event_id, 1, f"C{number}", f"c{number}@example.com")
        entry = first.join_waitlist(event_id, 1, "Caio", "caio@example.com")
        clock.advance(61)
        with ThreadPoolExecutor(4) as pool:
            expired = list(pool.map(lambda store: store.expire_holds(limit=3), [first, second] * 4))
        assert sum(expired) == 10
        assert first.expire_holds() + second.expire_holds() == 0
        actions = [ledger.action for ledger in second.ledger()]
        assert actions.count("expire") == 10 and actions.count("offer") == 1
        assert second.get_waitlist_entry(entry.id, "caio@example.com").status == "offered"
        assert first.check_invariants() == []
    finally:
        first.close()
        second.close()


def test_no_request_id_a_client_can_send_blocks_a_waitlist_offer(store: Store) -> None:
    """Request ids are global: a client that reserved first with the id an offer would use once blocked that
    offer for good. Offers now use ids outside what any client may send."""
    event_id, (_, bia) = sold_out_show(store)
    caio = store.join_waitlist(event_id, 2, "Caio", "caio@example.com")
    elsewhere = store.create_event("Other", "Teatro", "2027-05-02T19:00:00-03:00", (("Geral", 5000, 50),)).id
    for guess in (f"waitlist-{caio.id}", f"waitlist:{caio.id}", f"offer-{caio.id}", str(caio.id)):
        store.reserve(elsewhere, 1, "Bot", "bot@example.com", request_id=guess)
    with pytest.raises(InvalidRequest, match="control characters"):
        store.reserve(elsewhere, 1, "Bot", "bot@example.com", request_id=f"\x01waitlist:{caio.id}")
    store.cancel(bia, "bia@example.com")
    offered = store.get_waitlist_entry(caio.id, "caio@example.com")
    assert offered.status == "offered"
    assert store.get_reservation(offered.code, "caio@example.com").customer == "Caio"
    assert store.check_invariants() == []
