"""The circuit breaker as the client relies on it: fail fast on a dead server, probe it, come back.

Time is a FakeClock the tests move by hand, so nothing here sleeps. Calls that must stay in flight (probes
holding their half-open slot, slow calls that answer late) run on threads that wait for the test's word.
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

from circuit_breaker import BreakerListener, CircuitBreaker, CircuitOpenError

SERVER = "127.0.0.1:18861"
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SoldOut(Exception):
    """A domain refusal: the server is fine, the tickets are gone."""


def network_trouble(exc: BaseException) -> bool:
    """What the tests' breakers count, as the client counts its own `Failed`: the server could not answer."""
    return isinstance(exc, (OSError, EOFError))


class Recorder(BreakerListener):
    def __init__(self) -> None:
        self.transitions: list[tuple[str, str]] = []

    def state_change(self, breaker: CircuitBreaker, old: str, new: str) -> None:
        self.transitions.append((old, new))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, *listeners: BreakerListener, **options) -> CircuitBreaker:
    options.setdefault("failure_threshold", 3)
    options.setdefault("reset_timeout", 2.0)
    options.setdefault("is_failure", network_trouble)
    breaker = CircuitBreaker(SERVER, clock=clock, **options)
    for listener in listeners:
        breaker.add_listener(listener)
    return breaker


def refuse() -> None:
    raise ConnectionRefusedError("connection refused")


def reset_by_peer() -> None:
    raise ConnectionResetError("reset by peer")


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionRefusedError):
            breaker.call(refuse)


def trip(breaker: CircuitBreaker) -> None:
    fail(breaker, 3)
    assert breaker.state == OPEN


class InFlight:
    """One call held open inside the breaker until `finish`: a slow server's answer, or a probe holding its slot."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.entered = threading.Event()
        self.decided = threading.Event()
        self._release = threading.Event()
        self._outcome: Callable[[], None] = lambda: None
        self.refused = False
        self.raised: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(breaker,), daemon=True)
        self._thread.start()
        assert self.decided.wait(5), "the breaker neither admitted nor refused the call"

    @property
    def admitted(self) -> bool:
        return self.entered.is_set()

    def _run(self, breaker: CircuitBreaker) -> None:
        try:
            breaker.call(self._body)
        except CircuitOpenError:
            self.refused = True
            self.decided.set()
        except BaseException as exc:  # noqa: BLE001 - the outcome the test chose; the breaker has seen it
            self.raised = exc

    def _body(self) -> None:
        self.entered.set()
        self.decided.set()
        self._release.wait(5)
        self._outcome()

    def finish(self, outcome: Callable[[], None] = lambda: None) -> None:
        self._outcome = outcome
        self._release.set()
        self._thread.join(5)
        assert not self._thread.is_alive()


def interrupt() -> None:
    raise KeyboardInterrupt


@pytest.fixture
def fine_grained_switching() -> Iterator[None]:
    """Switch threads every microsecond so unguarded read-modify-write sequences really interleave."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


# --- closed -----------------------------------------------------------------------------------------


def test_consecutive_failures_open_the_circuit_at_the_threshold(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    assert breaker.state == CLOSED
    fail(breaker)
    assert breaker.state == OPEN
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: "not called")


def test_a_success_resets_the_consecutive_count(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    assert breaker.call(lambda: "ticket") == "ticket"
    fail(breaker, 2)
    assert breaker.state == CLOSED
    fail(breaker)
    assert breaker.state == OPEN


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
    assert breaker.state == CLOSED, "the sold-out answer must have reset the failure count"
    for _ in range(10):
        with pytest.raises(SoldOut):
            breaker.call(sold_out)
    assert breaker.state == CLOSED


def test_custom_classifier_decides_what_counts(clock: FakeClock) -> None:
    breaker = make(clock, is_failure=lambda exc: isinstance(exc, SoldOut))

    def sold_out() -> None:
        raise SoldOut

    for _ in range(3):
        with pytest.raises(SoldOut):
            breaker.call(sold_out)
    assert breaker.state == OPEN


# --- open -------------------------------------------------------------------------------------------


def test_open_rejects_without_calling_and_says_when_to_retry(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(0.6)
    calls = []
    with pytest.raises(CircuitOpenError) as caught:
        breaker.call(calls.append, "should not run")
    assert calls == []
    assert str(caught.value) == f"Circuit for {SERVER} is open; next probe in 1.4 s"


def test_late_outcomes_while_open_do_not_move_the_probe(clock: FakeClock) -> None:
    breaker = make(clock)
    slow_failure, slow_success = InFlight(breaker), InFlight(breaker)  # admitted while closed
    trip(breaker)
    clock.advance(1.0)
    slow_failure.finish(reset_by_peer)
    slow_success.finish()
    assert breaker.state == OPEN
    clock.advance(0.999)
    assert breaker.state == OPEN
    clock.advance(0.001)
    assert breaker.state == HALF_OPEN, "the probe is due when it was first due"


def test_cool_down_leads_to_half_open(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(1.999)
    assert breaker.state == OPEN
    clock.advance(0.001)
    assert breaker.state == HALF_OPEN
    assert breaker.call(lambda: "probe") == "probe"


# --- half-open --------------------------------------------------------------------------------------


def test_half_open_admits_only_the_configured_number_of_probes(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=2)
    trip(breaker)
    clock.advance(2.0)
    probes = [InFlight(breaker), InFlight(breaker)]
    assert all(probe.admitted for probe in probes)
    with pytest.raises(CircuitOpenError) as caught:
        breaker.call(lambda: "a third probe")
    assert "half-open" in str(caught.value) and SERVER in str(caught.value)
    assert breaker.state == HALF_OPEN
    for probe in probes:
        probe.finish()
    assert breaker.state == CLOSED


def test_probe_success_closes_and_clears_the_count(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(2.0)
    assert breaker.call(lambda: "seat 12") == "seat 12"
    assert breaker.state == CLOSED
    fail(breaker, 2)
    assert breaker.state == CLOSED


def test_sold_out_probe_also_closes(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(2.0)

    def sold_out() -> None:
        raise SoldOut

    with pytest.raises(SoldOut):
        breaker.call(sold_out)
    assert breaker.state == CLOSED


def test_probe_failure_reopens_with_a_fresh_timer(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(5.0)  # well past the first cool-down
    fail(breaker)
    assert breaker.state == OPEN
    clock.advance(1.5)
    assert breaker.state == OPEN
    clock.advance(0.5)
    assert breaker.state == HALF_OPEN


def test_interrupted_probe_frees_its_slot_without_a_verdict(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(2.0)
    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupt)
    assert breaker.state == HALF_OPEN
    probe = InFlight(breaker)
    assert probe.admitted, "the interrupted probe's slot is free again"
    probe.finish()


def test_interrupted_call_from_an_earlier_half_open_frees_nothing_in_a_later_one(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=2)
    trip(breaker)
    clock.advance(2.0)
    slow = InFlight(breaker)  # a probe of the first half-open period, interrupted later
    fail(breaker)  # another probe's verdict re-opens
    clock.advance(2.0)
    probes = [InFlight(breaker), InFlight(breaker)]  # both probe slots of the new half-open period
    assert all(probe.admitted for probe in probes)
    slow.finish(interrupt)
    assert InFlight(breaker).refused, "the stale interruption must not free a new probe's slot"
    for probe in probes:
        probe.finish()


@pytest.mark.parametrize(
    "options",
    [
        {"failure_threshold": 0},
        {"reset_timeout": -1.0},
        {"half_open_max_calls": 0},
    ],
)
def test_settings_that_cannot_work_are_refused(options: dict) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(SERVER, is_failure=network_trouble, **options)


# --- listeners --------------------------------------------------------------------------------------


def test_listeners_see_recovery_in_order(clock: FakeClock) -> None:
    recorder = Recorder()
    breaker = make(clock, recorder)
    trip(breaker)
    clock.advance(2.0)
    breaker.call(lambda: None)
    assert recorder.transitions == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]


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
    breaker = make(clock, recorder)
    trip(breaker)
    clock.advance(2.0)
    assert recorder.transitions == [("closed", "open")]
    assert breaker.state == HALF_OPEN
    assert recorder.transitions == [("closed", "open"), ("open", "half-open")]
    assert breaker.state == HALF_OPEN
    assert len(recorder.transitions) == 2


def test_repr_names_the_breaker_and_never_transitions(clock: FakeClock) -> None:
    recorder = Recorder()
    breaker = make(clock, recorder)
    assert repr(breaker) == f"<CircuitBreaker '{SERVER}': closed, 0/3 failures in a row>"
    trip(breaker)
    clock.advance(2.0)
    assert repr(breaker) == f"<CircuitBreaker '{SERVER}': open, next probe in 0.0 s>"
    assert recorder.transitions == [("closed", "open")]


def test_a_raising_listener_is_logged_and_harmless(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(BreakerListener):
        def state_change(self, breaker: CircuitBreaker, old: str, new: str) -> None:
            raise RuntimeError("status line crashed")

    recorder = Recorder()
    breaker = make(clock, Broken(), recorder)
    with caplog.at_level(logging.ERROR, logger="bilheteria.client.breaker"):
        trip(breaker)
        clock.advance(2.0)
        breaker.call(lambda: None)
    assert breaker.state == CLOSED
    assert recorder.transitions == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    assert "status line crashed" in caplog.text
    fail(breaker, 3)  # delivery still works after a listener raised
    assert recorder.transitions[-1] == ("closed", "open")


def test_a_listener_may_call_back_into_the_breaker(clock: FakeClock) -> None:
    seen: list[str] = []

    class Curious(BreakerListener):
        def state_change(self, breaker: CircuitBreaker, old: str, new: str) -> None:
            try:
                breaker.call(lambda: None)
            except CircuitOpenError:
                seen.append(f"{new}:{breaker.state}:refused")

    breaker = make(clock, Curious())
    worker = threading.Thread(target=trip, args=(breaker,), daemon=True)
    worker.start()
    worker.join(2)
    assert not worker.is_alive(), "a listener calling back into the breaker deadlocked it"
    assert seen == ["open:open:refused"]


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
    # One more than all threads report together: opens only if every single failure was counted.
    breaker = make(clock, failure_threshold=threads * per_thread + 1)

    def report_failures() -> None:
        for _ in range(per_thread):
            with pytest.raises(ConnectionResetError):
                breaker.call(reset_by_peer)

    run_threads(threads, report_failures)
    assert breaker.state == CLOSED, "a failure was counted twice"
    with pytest.raises(ConnectionResetError):
        breaker.call(reset_by_peer)
    assert breaker.state == OPEN, "a failure was lost"


def test_half_open_admits_exactly_n_probes_among_many_threads(clock: FakeClock, fine_grained_switching: None) -> None:
    breaker = make(clock, half_open_max_calls=3)
    trip(breaker)
    clock.advance(2.0)
    release = threading.Event()
    lock = threading.Condition()
    admitted: list[int] = []
    rejected: list[int] = []
    settled = [0]
    """Threads that have either been admitted (and now wait inside the call) or used all their tries."""

    def settle() -> None:
        with lock:
            settled[0] += 1
            lock.notify_all()

    def probe() -> None:
        admitted.append(1)
        settle()
        release.wait(10)

    def try_probe() -> None:
        for _ in range(50):
            try:
                breaker.call(probe)
            except CircuitOpenError:
                rejected.append(1)
            else:
                return
        settle()

    threads = [threading.Thread(target=try_probe) for _ in range(16)]
    for thread in threads:
        thread.start()
    with lock:
        assert lock.wait_for(lambda: settled[0] == 16, timeout=10)
    assert len(admitted) == 3
    assert len(rejected) == 13 * 50, "every other try was refused while the probes held their slots"
    release.set()
    for thread in threads:
        thread.join(10)
    assert breaker.state == CLOSED


def test_listeners_see_an_unbroken_chain_of_transitions_under_many_threads(
    clock: FakeClock, fine_grained_switching: None
) -> None:
    class Chain(BreakerListener):
        def __init__(self) -> None:
            self.last = CLOSED
            self.count = 0
            self.breaks: list[tuple[str, str, str]] = []

        def state_change(self, breaker: CircuitBreaker, old: str, new: str) -> None:
            if old != self.last:
                self.breaks.append((self.last, old, new))
            self.last = new
            self.count += 1

    chain = Chain()
    # No cool-down: every failure opens, every look half-opens, so transitions pour out of all threads.
    breaker = make(clock, chain, failure_threshold=1, reset_timeout=0.0, half_open_max_calls=4)

    def churn() -> None:
        for i in range(200):
            try:
                breaker.call(reset_by_peer if i % 3 else (lambda: None))
            except (CircuitOpenError, ConnectionResetError):
                continue

    run_threads(16, churn)
    final = breaker.state
    assert chain.count > 100
    assert chain.breaks == []
    assert chain.last == final


# --- properties -------------------------------------------------------------------------------------


class BreakerMachine(RuleBasedStateMachine):
    """Any mix of probes held open, verdicts and waiting keeps the breaker inside its promises."""

    MAX_PROBES = 2
    RESET_TIMEOUT = 2.0

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.recorder = Recorder()
        self.breaker = make(self.clock, self.recorder, failure_threshold=3, reset_timeout=self.RESET_TIMEOUT,
                            half_open_max_calls=self.MAX_PROBES)
        self.in_flight: list[InFlight] = []
        self.probes_this_half_open = 0
        self.transitions_seen = 0

    def _note_transitions(self) -> None:
        transitions = self.recorder.transitions
        if len(transitions) != self.transitions_seen:
            self.transitions_seen = len(transitions)
            self.probes_this_half_open = 0

    @rule()
    def hold_a_call_open(self) -> None:
        state = self.breaker.state
        self._note_transitions()
        call = InFlight(self.breaker)
        if call.refused:
            assert state in (OPEN, HALF_OPEN)
            return
        assert state != OPEN, "an open breaker admitted a call"
        self.in_flight.append(call)
        if state == HALF_OPEN:
            self.probes_this_half_open += 1

    @precondition(lambda self: self.in_flight)
    @rule(failed=st.booleans())
    def answer_the_oldest_call(self, failed: bool) -> None:
        self.in_flight.pop(0).finish(reset_by_peer if failed else (lambda: None))

    @rule()
    def succeed(self) -> None:
        try:
            self.breaker.call(lambda: None)
        except CircuitOpenError:
            pass

    @rule()
    def fail(self) -> None:
        try:
            self.breaker.call(reset_by_peer)
        except (ConnectionResetError, CircuitOpenError):
            pass

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

    @precondition(lambda self: self.breaker.state == OPEN)
    @rule()
    def wait_out_the_cool_down(self) -> None:
        self.clock.advance(self.RESET_TIMEOUT)
        assert self.breaker.state == HALF_OPEN

    @invariant()
    def state_is_one_of_three(self) -> None:
        assert self.breaker.state in {CLOSED, OPEN, HALF_OPEN}

    @invariant()
    def never_more_probes_than_allowed(self) -> None:
        self._note_transitions()
        assert self.probes_this_half_open <= self.MAX_PROBES

    @invariant()
    def transitions_form_a_chain(self) -> None:
        transitions = self.recorder.transitions
        assert all(old != new for old, new in transitions)
        assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(transitions))
        legal = {("closed", "open"), ("open", "half-open"), ("half-open", "closed"), ("half-open", "open")}
        assert set(transitions) <= legal

    def teardown(self) -> None:
        for call in self.in_flight:
            call.finish()


BreakerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
test_breaker_keeps_its_promises = BreakerMachine.TestCase
