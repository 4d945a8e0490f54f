"""The circuit breaker as the client relies on it: fail fast on a dead server, probe it, come back.

Time is a FakeClock the tests move by hand, so nothing here sleeps.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from circuit_breaker import (
    BreakerListener,
    CircuitBreaker,
    CircuitOpenError,
    is_infrastructure_failure,
)

SERVER = "127.0.0.1:18861"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SoldOut(Exception):
    """A domain refusal: the server is fine, the tickets are gone."""


class Recorder(BreakerListener):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def state_change(self, breaker: CircuitBreaker, old: str, new: str) -> None:
        self.events.append(("state", old, new))

    def failure(self, breaker: CircuitBreaker, exc: BaseException) -> None:
        self.events.append(("failure", type(exc).__name__))

    def success(self, breaker: CircuitBreaker) -> None:
        self.events.append(("success",))

    @property
    def transitions(self) -> list[tuple[str, str]]:
        return [(event[1], event[2]) for event in self.events if event[0] == "state"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, **options) -> CircuitBreaker:
    options.setdefault("failure_threshold", 3)
    options.setdefault("reset_timeout", 2.0)
    return CircuitBreaker(SERVER, clock=clock, **options)


def refuse() -> None:
    raise ConnectionRefusedError("connection refused")


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionRefusedError):
            breaker.call(refuse)


def trip(breaker: CircuitBreaker) -> None:
    fail(breaker, 3)
    assert breaker.state == CircuitBreaker.OPEN


@pytest.fixture
def fine_grained_switching() -> Iterator[None]:
    """Switch threads every microsecond so unguarded read-modify-write sequences really interleave."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


# --- classification ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [ConnectionRefusedError(), ConnectionResetError(), BrokenPipeError(), TimeoutError(), EOFError(), OSError()],
)
def test_network_trouble_counts_as_failure(exc: BaseException) -> None:
    assert is_infrastructure_failure(exc)


@pytest.mark.parametrize("exc", [SoldOut("Only 0 left"), ValueError(), KeyError(), KeyboardInterrupt()])
def test_answers_from_a_working_server_do_not_count(exc: BaseException) -> None:
    assert not is_infrastructure_failure(exc)


# --- closed -----------------------------------------------------------------------------------------


def test_consecutive_failures_open_the_circuit_at_the_threshold(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    assert breaker.state == CircuitBreaker.CLOSED
    assert breaker.allows_call()
    fail(breaker)
    assert breaker.state == CircuitBreaker.OPEN
    assert not breaker.allows_call()


def test_a_success_resets_the_consecutive_count(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    assert breaker.call(lambda: "ticket") == "ticket"
    fail(breaker, 2)
    assert breaker.state == CircuitBreaker.CLOSED
    fail(breaker)
    assert breaker.state == CircuitBreaker.OPEN


def test_call_passes_arguments_and_returns_the_result(clock: FakeClock) -> None:
    breaker = make(clock)
    assert breaker.call(lambda a, *, b: (a, b), 1, b=2) == (1, 2)


def test_sold_out_passes_through_unchanged_and_counts_as_healthy(clock: FakeClock) -> None:
    breaker = make(clock)
    refusal = SoldOut("Only 0 tickets left in Pista")

    def sold_out() -> None:
        raise refusal

    fail(breaker, 2)
    with pytest.raises(SoldOut) as caught:
        breaker.call(sold_out)
    assert caught.value is refusal
    fail(breaker, 2)
    assert breaker.state == CircuitBreaker.CLOSED, "the sold-out answer must have reset the failure count"
    for _ in range(10):
        with pytest.raises(SoldOut):
            breaker.call(sold_out)
    assert breaker.state == CircuitBreaker.CLOSED


def test_custom_classifier_decides_what_counts(clock: FakeClock) -> None:
    breaker = make(clock, is_failure=lambda exc: isinstance(exc, SoldOut))

    def sold_out() -> None:
        raise SoldOut

    for _ in range(3):
        with pytest.raises(SoldOut):
            breaker.call(sold_out)
    assert breaker.state == CircuitBreaker.OPEN


def test_record_failure_counts_without_classifying(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(3):
        breaker.admit()
        breaker.record_failure(SoldOut())
    assert breaker.state == CircuitBreaker.OPEN


# --- open -------------------------------------------------------------------------------------------


def test_open_rejects_without_calling_and_says_when_to_retry(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(0.6)
    calls = []
    with pytest.raises(CircuitOpenError) as caught:
        breaker.call(calls.append, "should not run")
    assert calls == []
    error = caught.value
    assert error.breaker_name == SERVER
    assert error.retry_after == pytest.approx(1.4)
    assert str(error) == f"Circuit for {SERVER} is open; next probe in 1.4 s"
    assert breaker.retry_after() == pytest.approx(1.4)


def test_admit_rejects_while_open(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    with pytest.raises(CircuitOpenError):
        breaker.admit()


def test_late_outcomes_while_open_do_not_move_the_probe(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(1.0)
    breaker.record_failure(ConnectionResetError())
    breaker.record_success()
    assert breaker.state == CircuitBreaker.OPEN
    assert breaker.retry_after() == pytest.approx(1.0)


def test_cool_down_leads_to_half_open(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(1.999)
    assert breaker.state == CircuitBreaker.OPEN
    clock.advance(0.001)
    assert breaker.retry_after() == 0.0
    assert breaker.state == CircuitBreaker.HALF_OPEN
    assert breaker.allows_call()


# --- half-open --------------------------------------------------------------------------------------


def test_half_open_admits_only_the_configured_number_of_probes(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=2)
    trip(breaker)
    clock.advance(2.0)
    breaker.admit()
    assert breaker.allows_call()
    breaker.admit()
    assert not breaker.allows_call()
    with pytest.raises(CircuitOpenError) as caught:
        breaker.admit()
    assert caught.value.retry_after == 0.0
    assert "half-open" in str(caught.value) and SERVER in str(caught.value)
    assert breaker.state == CircuitBreaker.HALF_OPEN


def test_allows_call_reserves_nothing(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=1)
    trip(breaker)
    clock.advance(2.0)
    assert breaker.allows_call()
    assert breaker.allows_call()
    breaker.admit()
    assert not breaker.allows_call()


def test_probe_success_closes_and_clears_the_count(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(2.0)
    assert breaker.call(lambda: "seat 12") == "seat 12"
    assert breaker.state == CircuitBreaker.CLOSED
    fail(breaker, 2)
    assert breaker.state == CircuitBreaker.CLOSED


def test_sold_out_probe_also_closes(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(2.0)

    def sold_out() -> None:
        raise SoldOut

    with pytest.raises(SoldOut):
        breaker.call(sold_out)
    assert breaker.state == CircuitBreaker.CLOSED


def test_probe_failure_reopens_with_a_fresh_timer(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(5.0)  # well past the first cool-down
    fail(breaker)
    assert breaker.state == CircuitBreaker.OPEN
    assert breaker.retry_after() == pytest.approx(2.0)
    clock.advance(1.5)
    assert breaker.state == CircuitBreaker.OPEN
    clock.advance(0.5)
    assert breaker.state == CircuitBreaker.HALF_OPEN


def test_interrupted_probe_frees_its_slot_without_a_verdict(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(2.0)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupted)
    assert breaker.state == CircuitBreaker.HALF_OPEN
    assert breaker.allows_call()


def test_interrupted_call_from_an_earlier_half_open_frees_nothing_in_a_later_one(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(2.0)
    entered = threading.Event()
    release = threading.Event()

    def slow_then_interrupted() -> None:
        entered.set()
        release.wait(5)
        raise KeyboardInterrupt

    def probe() -> None:
        try:
            breaker.call(slow_then_interrupted)
        except KeyboardInterrupt:
            pass

    slow = threading.Thread(target=probe)
    slow.start()
    assert entered.wait(5)
    breaker.record_failure(ConnectionResetError())  # another caller's verdict re-opens
    clock.advance(2.0)
    breaker.admit()  # the only probe slot of the new half-open period
    release.set()
    slow.join(5)
    assert not breaker.allows_call(), "the stale interruption must not free the new probe's slot"


def test_reset_forces_closed(clock: FakeClock) -> None:
    recorder = Recorder()
    breaker = make(clock, listeners=[recorder])
    trip(breaker)
    breaker.reset()
    assert breaker.state == CircuitBreaker.CLOSED
    assert recorder.transitions == [("closed", "open"), ("open", "closed")]
    fail(breaker, 2)
    assert breaker.state == CircuitBreaker.CLOSED


# --- failure-rate window ----------------------------------------------------------------------------


def rate_breaker(clock: FakeClock) -> CircuitBreaker:
    return make(clock, failure_threshold=100, failure_rate_threshold=0.5, window_size=10, min_calls_in_window=10)


def test_failure_rate_waits_for_enough_calls(clock: FakeClock) -> None:
    breaker = rate_breaker(clock)
    for _ in range(4):
        breaker.record_failure(ConnectionResetError())
        breaker.record_success()
    breaker.record_failure(ConnectionResetError())  # 5 of 9 failed, but 9 < min_calls_in_window
    assert breaker.state == CircuitBreaker.CLOSED
    breaker.record_success()
    breaker.record_failure(ConnectionResetError())  # window now 5 of 10 failed
    assert breaker.state == CircuitBreaker.OPEN


def test_failure_rate_only_sees_the_last_window(clock: FakeClock) -> None:
    breaker = rate_breaker(clock)
    for _ in range(10):
        breaker.record_success()
    for _ in range(4):
        breaker.record_failure(ConnectionResetError())
    assert breaker.state == CircuitBreaker.CLOSED  # 4 of the last 10
    breaker.record_failure(ConnectionResetError())
    assert breaker.state == CircuitBreaker.OPEN  # 5 of the last 10, though only 5 of 15 overall


def test_failures_that_slid_out_of_the_window_are_forgotten(clock: FakeClock) -> None:
    breaker = rate_breaker(clock)
    for _ in range(4):
        breaker.record_failure(ConnectionResetError())
    for _ in range(10):
        breaker.record_success()
    for _ in range(4):
        breaker.record_failure(ConnectionResetError())
    assert breaker.state == CircuitBreaker.CLOSED  # 8 of 18 overall, 4 of the last 10


def test_recovery_starts_a_fresh_window(clock: FakeClock) -> None:
    breaker = rate_breaker(clock)
    for _ in range(10):
        breaker.record_failure(ConnectionResetError())
    assert breaker.state == CircuitBreaker.OPEN
    clock.advance(2.0)
    breaker.admit()
    breaker.record_success()
    breaker.record_failure(ConnectionResetError())
    assert breaker.state == CircuitBreaker.CLOSED


@pytest.mark.parametrize(
    "options",
    [
        {"failure_threshold": 0},
        {"reset_timeout": -1.0},
        {"half_open_max_calls": 0},
        {"failure_rate_threshold": 0.0},
        {"failure_rate_threshold": 1.5},
        {"window_size": 0},
        {"window_size": 5, "min_calls_in_window": 6},
        {"min_calls_in_window": 0},
    ],
)
def test_settings_that_cannot_work_are_refused(options: dict) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(SERVER, **options)


# --- listeners --------------------------------------------------------------------------------------


def test_listeners_see_recovery_in_order(clock: FakeClock) -> None:
    recorder = Recorder()
    breaker = make(clock, listeners=[recorder])
    trip(breaker)
    clock.advance(2.0)
    breaker.call(lambda: None)
    assert recorder.transitions == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    assert recorder.events == [
        ("failure", "ConnectionRefusedError"),
        ("failure", "ConnectionRefusedError"),
        ("failure", "ConnectionRefusedError"),
        ("state", "closed", "open"),
        ("state", "open", "half-open"),
        ("success",),
        ("state", "half-open", "closed"),
    ]


def test_listeners_see_a_failed_probe(clock: FakeClock) -> None:
    recorder = Recorder()
    breaker = make(clock)
    breaker.add_listener(recorder)
    trip(breaker)
    clock.advance(2.0)
    fail(breaker)
    assert recorder.transitions == [("closed", "open"), ("open", "half-open"), ("half-open", "open")]


def test_reading_state_after_the_cool_down_announces_half_open(clock: FakeClock) -> None:
    recorder = Recorder()
    breaker = make(clock, listeners=[recorder])
    trip(breaker)
    clock.advance(2.0)
    assert recorder.transitions == [("closed", "open")]
    assert breaker.state == CircuitBreaker.HALF_OPEN
    assert recorder.transitions == [("closed", "open"), ("open", "half-open")]
    assert breaker.state == CircuitBreaker.HALF_OPEN
    assert len(recorder.transitions) == 2


def test_repr_names_the_breaker_and_never_transitions(clock: FakeClock) -> None:
    recorder = Recorder()
    breaker = make(clock, listeners=[recorder])
    assert repr(breaker) == f"<CircuitBreaker '{SERVER}': closed, 0/3 failures in a row>"
    trip(breaker)
    clock.advance(2.0)
    assert repr(breaker) == f"<CircuitBreaker '{SERVER}': open, next probe in 0.0 s>"
    assert recorder.transitions == [("closed", "open")]


def test_a_raising_listener_is_logged_and_harmless(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(BreakerListener):
        def state_change(self, breaker: CircuitBreaker, old: str, new: str) -> None:
            raise RuntimeError("status line crashed")

        def failure(self, breaker: CircuitBreaker, exc: BaseException) -> None:
            raise RuntimeError("metrics crashed")

    recorder = Recorder()
    breaker = make(clock, listeners=[Broken(), recorder])
    with caplog.at_level(logging.ERROR, logger="circuit_breaker"):
        trip(breaker)
        clock.advance(2.0)
        breaker.call(lambda: None)
    assert breaker.state == CircuitBreaker.CLOSED
    assert recorder.transitions == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    assert "status line crashed" in caplog.text and "metrics crashed" in caplog.text
    fail(breaker, 3)  # delivery still works after a listener raised
    assert recorder.transitions[-1] == ("closed", "open")


def test_a_listener_may_call_back_into_the_breaker(clock: FakeClock) -> None:
    seen: list[str] = []

    class Curious(BreakerListener):
        def state_change(self, breaker: CircuitBreaker, old: str, new: str) -> None:
            seen.append(f"{new}:{breaker.state}:{breaker.allows_call()}")

    breaker = make(clock, listeners=[Curious()])
    worker = threading.Thread(target=trip, args=(breaker,), daemon=True)
    worker.start()
    worker.join(2)
    assert not worker.is_alive(), "a listener calling back into the breaker deadlocked it"
    assert seen == ["open:open:False"]


# --- threads ----------------------------------------------------------------------------------------


def run_threads(count: int, target: Callable[[], None]) -> None:
    start = threading.Barrier(count)

    def body() -> None:
        start.wait()
        target()

    threads = [threading.Thread(target=body) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)


def test_no_failure_is_lost_or_invented_under_many_threads(clock: FakeClock, fine_grained_switching: None) -> None:
    threads, per_thread = 16, 500
    recorder = Recorder()
    # One more than all threads report together: opens only if every single failure was counted.
    breaker = make(clock, failure_threshold=threads * per_thread + 1, listeners=[recorder])

    def report_failures() -> None:
        for _ in range(per_thread):
            breaker.record_failure(ConnectionResetError())

    run_threads(threads, report_failures)
    assert breaker.state == CircuitBreaker.CLOSED, "a failure was counted twice"
    assert sum(1 for event in recorder.events if event[0] == "failure") == threads * per_thread
    breaker.record_failure(ConnectionResetError())
    assert breaker.state == CircuitBreaker.OPEN, "a failure was lost"


def test_failure_window_tally_stays_exact_under_many_threads(clock: FakeClock, fine_grained_switching: None) -> None:
    window = 64
    breaker = make(
        clock, failure_threshold=10**9, failure_rate_threshold=0.7, window_size=window, min_calls_in_window=window
    )

    def alternate() -> None:
        for _ in range(800):
            breaker.record_success()
            breaker.record_failure(ConnectionResetError())

    run_threads(16, alternate)
    # Each thread alternates, so any 64 consecutive outcomes hold at most 40 failures (62%): a correct
    # tally never trips at 70%, and once the window is refilled with successes it must read zero.
    assert breaker.state == CircuitBreaker.CLOSED
    for _ in range(window):
        breaker.record_success()
    assert repr(breaker).endswith(f", 0/{window} failed in window>")


def test_half_open_admits_exactly_n_probes_among_many_threads(clock: FakeClock, fine_grained_switching: None) -> None:
    breaker = make(clock, half_open_max_calls=3)
    trip(breaker)
    clock.advance(2.0)
    admitted = []
    rejected = []

    def try_probe() -> None:
        for _ in range(50):
            try:
                breaker.admit()
            except CircuitOpenError:
                rejected.append(1)
            else:
                admitted.append(1)

    run_threads(16, try_probe)
    assert len(admitted) == 3
    assert len(rejected) == 16 * 50 - 3


def test_listeners_see_an_unbroken_chain_of_transitions_under_many_threads(
    clock: FakeClock, fine_grained_switching: None
) -> None:
    class Chain(BreakerListener):
        def __init__(self) -> None:
            self.last = CircuitBreaker.CLOSED
            self.count = 0
            self.breaks: list[tuple[str, str, str]] = []

        def state_change(self, breaker: CircuitBreaker, old: str, new: str) -> None:
            if old != self.last:
                self.breaks.append((self.last, old, new))
            self.last = new
            self.count += 1

    chain = Chain()
    # No cool-down: every failure opens, every look half-opens, so transitions pour out of all threads.
    breaker = make(clock, failure_threshold=1, reset_timeout=0.0, half_open_max_calls=4, listeners=[chain])

    def churn() -> None:
        for i in range(200):
            try:
                breaker.admit()
            except CircuitOpenError:
                continue
            if i % 3:
                breaker.record_failure(ConnectionResetError())
            else:
                breaker.record_success()

    run_threads(16, churn)
    final = breaker.state
    assert chain.count > 100
    assert chain.breaks == []
    assert chain.last == final


# --- properties -------------------------------------------------------------------------------------


class BreakerMachine(RuleBasedStateMachine):
    """Any mix of probes, verdicts and waiting keeps the breaker inside its promises."""

    MAX_PROBES = 2
    RESET_TIMEOUT = 2.0

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.recorder = Recorder()
        self.breaker = CircuitBreaker(
            SERVER,
            failure_threshold=3,
            reset_timeout=self.RESET_TIMEOUT,
            half_open_max_calls=self.MAX_PROBES,
            failure_rate_threshold=0.5,
            window_size=6,
            min_calls_in_window=4,
            clock=self.clock,
            listeners=[self.recorder],
        )
        self.probes_this_half_open = 0
        self.transitions_seen = 0

    def _note_transitions(self) -> None:
        transitions = self.recorder.transitions
        if len(transitions) != self.transitions_seen:
            self.transitions_seen = len(transitions)
            self.probes_this_half_open = 0

    @rule()
    def admit(self) -> None:
        expected = self.breaker.allows_call()
        state = self.breaker.state
        try:
            self.breaker.admit()
        except CircuitOpenError as error:
            assert not expected
            assert error.retry_after >= 0.0
            assert (error.retry_after > 0.0) == (state == CircuitBreaker.OPEN)
        else:
            assert expected
            self._note_transitions()
            if state == CircuitBreaker.HALF_OPEN:
                self.probes_this_half_open += 1

    @rule()
    def succeed(self) -> None:
        self.breaker.record_success()

    @rule()
    def fail(self) -> None:
        self.breaker.record_failure(ConnectionResetError())

    @rule()
    def sold_out(self) -> None:
        def refusal() -> None:
            raise SoldOut

        try:
            self.breaker.call(refusal)
        except (SoldOut, CircuitOpenError):
            pass

    @rule(seconds=st.floats(min_value=0.0, max_value=3.0))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.breaker.state == CircuitBreaker.OPEN)
    @rule()
    def wait_out_the_cool_down(self) -> None:
        self.clock.advance(self.RESET_TIMEOUT)
        assert self.breaker.state == CircuitBreaker.HALF_OPEN

    @invariant()
    def state_is_one_of_three(self) -> None:
        assert self.breaker.state in {CircuitBreaker.CLOSED, CircuitBreaker.OPEN, CircuitBreaker.HALF_OPEN}

    @invariant()
    def never_more_probes_than_allowed(self) -> None:
        self._note_transitions()
        assert self.probes_this_half_open <= self.MAX_PROBES

    @invariant()
    def retry_after_matches_the_state(self) -> None:
        seconds = self.breaker.retry_after()
        assert 0.0 <= seconds <= self.RESET_TIMEOUT + 1e-9
        assert (seconds > 0.0) == (self.breaker.state == CircuitBreaker.OPEN)

    @invariant()
    def transitions_form_a_chain(self) -> None:
        transitions = self.recorder.transitions
        assert all(old != new for old, new in transitions)
        assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(transitions))
        legal = {("closed", "open"), ("open", "half-open"), ("half-open", "closed"), ("half-open", "open")}
        assert set(transitions) <= legal


BreakerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
test_breaker_keeps_its_promises = BreakerMachine.TestCase
