"""Two replicas writing one PostgreSQL database at the same moment keep the books as SQLite's single writer would.

A hypothesis state machine drives two `Store`s on one database; each step runs a random batch of operations
on two threads at once, one per store (sales full and half-price, seated and unseated, cancels, confirms,
capacity up and down, half-limit changes, a clock that expires holds, waitlist joins that get offers), then
checks the audit: capacity == available + held + sold per sector, half-price within its limit, no seat twice,
every seated reservation holding one seat per ticket. A refusal is a fine answer; `Unavailable` (a crash or a
check constraint reaching the clerk) and any other exception are failures.
"""

from __future__ import annotations

import threading
from contextlib import closing
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from database import Store
from errors import ReservationError
from tools.pgcluster import PgCluster

EMAIL = "fan@example.com"
HOLD_SECONDS = 60.0
STEP_TIMEOUT_SECONDS = 30.0
"""A step is a handful of writes; one that takes this long is stuck (a deadlock between the replicas)."""


class SharedClock:
    """One clock for both replicas, moved forward by a step so that holds lapse while the other thread sells."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


operations = st.one_of(
    st.tuples(st.just("reserve"), st.sampled_from(["Pista", "Plateia"]), st.integers(1, 3), st.sampled_from(["full", "half"]),
              st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("confirm"), st.integers(0, 50)),
    st.tuples(st.just("capacity"), st.integers(0, 10)),
    st.tuples(st.just("half_limit"), st.one_of(st.none(), st.integers(0, 5))),
    st.tuples(st.just("expire"), st.sampled_from([0.0, HOLD_SECONDS + 1])),
    st.tuples(st.just("join"), st.sampled_from(["Pista", "Plateia"]), st.integers(1, 3)),
)
batches = st.lists(operations, min_size=2, max_size=6)


class Replicas(RuleBasedStateMachine):
    """Two stores on one database, acting at once; the audit must be clean after every step."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.clock = SharedClock()
        self.stores = (Store(url, hold_seconds=HOLD_SECONDS, clock=self.clock, seed_demo=False),
                       Store(url, hold_seconds=HOLD_SECONDS, clock=self.clock, seed_demo=False))
        self.codes: list[str] = []
        self.lock = threading.Lock()
        self.failures: list[str] = []

    @initialize()
    def open_event(self) -> None:
        event = self.stores[0].create_event("Corrida", "Arena", "2030-01-01T20:00:00-03:00", (("Pista", 10000, 6), ("Plateia", 8000, 2, 3)))
        self.event_id = event.id
        self.stores[0].update_event(self.event_id, half_limits=(("Pista", 3),))

    def act(self, store: Store, operation: tuple[Any, ...]) -> None:
        kind, *args = operation
        with self.lock:
            codes = list(self.codes)
        if kind == "reserve":
            sector, quantity, category, confirm = args
            made = store.reserve(self.event_id, quantity, "Fan", EMAIL, sector, category, confirm=confirm)
            with self.lock:
                self.codes.append(made.code)
        elif kind in ("cancel", "confirm") and codes:
            code = codes[args[0] % len(codes)]
            store.cancel(code, EMAIL) if kind == "cancel" else store.confirm(code, EMAIL)
        elif kind == "capacity":
            store.update_event(self.event_id, capacities=(("Pista", args[0]),))
        elif kind == "half_limit":
            store.update_event(self.event_id, half_limits=(("Pista", args[0]),))
        elif kind == "expire":
            self.clock.now += args[0]
            store.expire_holds()
        elif kind == "join":
            entry = store.join_waitlist(self.event_id, args[1], "Waiter", EMAIL, args[0])
            if entry.code is not None:
                with self.lock:
                    self.codes.append(entry.code)

    def run_batch(self, store: Store, batch: list[tuple[Any, ...]], start: threading.Barrier) -> None:
        start.wait()
        for operation in batch:
            try:
                self.act(store, operation)
            except ReservationError:
                pass  # a refusal is an answer: sold out, over the limit, below what is taken, expired...
            except Exception as exc:  # noqa: BLE001 - anything else is what this test looks for
                with self.lock:
                    self.failures.append(f"{operation}: {type(exc).__name__}: {exc}")

    @rule(first=batches, second=batches)
    def step(self, first: list[tuple[Any, ...]], second: list[tuple[Any, ...]]) -> None:
        start = threading.Barrier(2)
        threads = [threading.Thread(target=self.run_batch, args=(store, batch, start))
                   for store, batch in zip(self.stores, (first, second), strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(STEP_TIMEOUT_SECONDS)
        assert not any(thread.is_alive() for thread in threads), "a step did not finish: the replicas are stuck"
        assert self.failures == [], self.failures

    @invariant()
    def books_balance(self) -> None:
        assert self.stores[1].check_invariants() == []

    def teardown(self) -> None:
        for store in self.stores:
            store.close()


def test_two_replicas_acting_at_once_keep_every_invariant(postgres: PgCluster) -> None:
    url = postgres.create_schema("races")
    Store(url, seed_demo=False).close()  # migrate once, before the examples
    run_state_machine_as_test(
        lambda: Replicas(url),
        settings=settings(max_examples=25, stateful_step_count=10, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]),
    )



def test_two_replicas_claiming_mail_at_once_never_claim_the_same_message(postgres: PgCluster) -> None:
    """A claim is an UPDATE of the rows a subquery picked; under READ COMMITTED the second claimer, once the
    first commits, must re-check the lease on the row it waited for, or both replicas send the same mail."""
    url = postgres.create_schema("mailrace")
    with closing(Store(url, seed_demo=False)) as first, closing(Store(url, seed_demo=False)) as second:
        event = first.create_event("Cartas", "Arena", "2030-01-01T20:00:00-03:00", (("Pista", 100, 1000),))
        for n in range(200):
            first.reserve(event.id, 1, "Fan", f"fan{n}@example.com", "Pista", confirm=True)
        claimed: dict[str, list[int]] = {"first": [], "second": []}
        start = threading.Barrier(2)

        def claim(name: str, store: Store) -> None:
            start.wait()
            while batch := store.claim_messages(name, limit=5):
                claimed[name].extend(message.id for message in batch)

        threads = [threading.Thread(target=claim, args=(name, store)) for name, store in (("first", first), ("second", second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(STEP_TIMEOUT_SECONDS)
        both = set(claimed["first"]) & set(claimed["second"])
        assert not both, f"{len(both)} messages claimed by both replicas"
        assert len(claimed["first"]) + len(claimed["second"]) == 200
