"""Failover as a clerk relies on it, with no socket and no wall clock: which server is tried, when a call is
repeated, and when the terminal gives up and says so.

Time is a fake clock that attempts and waits move by hand; the rounds' waits go to a recording sleep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from circuit_breaker import BreakerListener, CircuitBreaker
from client.failover import Failed, Failover, RetryPolicy, is_server_failure, request_id
from errors import SoldOut, Unavailable

A, B, C = ("10.0.0.1", 18861), ("10.0.0.2", 18861), ("10.0.0.3", 18861)


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class RecordingSleep:
    """Takes the rounds' waits on the fake clock and remembers them."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.now += seconds


class InOrder(random.Random):
    """A terminal's random order, made predictable: the servers stay in the order they are listed."""

    def shuffle(self, x: list) -> None:  # type: ignore[override]
        pass


class NoNameServers:
    """Discovery for a terminal given fixed servers: never asked."""

    last_error = ""
    refused = False

    def servers(self, force: bool = False, budget: float | None = None) -> tuple:
        raise AssertionError("a terminal with fixed servers asked the name servers")


class Discovered:
    """Name servers that list `found`, remembering how they were asked."""

    def __init__(self, found: tuple = (), last_error: str = "", refused: bool = False) -> None:
        self.found = found
        self.last_error = last_error
        self.refused = refused
        self.asked: list[tuple[bool, float | None]] = []

    def servers(self, force: bool = False, budget: float | None = None) -> tuple:
        self.asked.append((force, budget))
        return self.found


def refused_before_sending(address, timeout) -> None:
    raise Failed("cannot connect (connection refused)", sent=False)


def lost_after_sending(address, timeout) -> None:
    raise Failed("connection lost (reset by peer)", sent=True)


class Servers:
    """Attempts that behave per server as the test says, cost `cost` seconds of the fake clock each, and are logged."""

    def __init__(self, clock: FakeClock, behaviour: dict[tuple, Callable], cost: float = 0.0) -> None:
        self.clock = clock
        self.behaviour = behaviour
        self.cost = cost
        self.tried: list[tuple] = []
        self.timeouts: list[float] = []
        self.seen_ids: list[str] = []

    def attempt(self, address, timeout, *args):
        self.tried.append(address)
        self.timeouts.append(timeout)
        self.clock.now += min(self.cost, timeout)
        return self.behaviour[address](address, timeout)

    def call(self, rid: str) -> Callable:
        """An attempt of a write that carries `rid`, as the client builds it once for every try."""
        arguments = ("reserve", 1, 2, "Ana", "ana@example.com", rid)

        def attempt(address, timeout):
            self.seen_ids.append(arguments[-1])
            return self.attempt(address, timeout)

        return attempt


def answers(value: str) -> Callable:
    return lambda address, timeout: value


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleep(clock: FakeClock) -> RecordingSleep:
    return RecordingSleep(clock)


def failover(clock: FakeClock, sleep: RecordingSleep, servers=(A, B, C), discovery=None, **options) -> Failover:
    options.setdefault("breaker_factory", lambda name: CircuitBreaker(
        name, failure_threshold=2, reset_timeout=2.0, is_failure=is_server_failure, clock=clock))
    options.setdefault("rng", InOrder())
    return Failover(discovery or NoNameServers(), servers, clock=clock, sleep=sleep, **options)


# -- which server ----------------------------------------------------------------------------------------


def test_a_refused_connection_moves_on_to_the_next_server_and_it_is_tried_first_next_time(clock, sleep) -> None:
    servers = Servers(clock, {A: refused_before_sending, B: answers("pong"), C: answers("pong")})
    box = failover(clock, sleep)
    assert box.run(servers.attempt, "ping") == "pong"
    assert servers.tried == [A, B]
    assert box.preferred == B
    assert box.run(servers.attempt, "ping") == "pong"
    assert servers.tried == [A, B, B], "the server that answered last is asked first"
    assert sleep.waits == []


def test_the_line_s_own_server_goes_before_the_preferred_one(clock, sleep) -> None:
    servers = Servers(clock, {A: answers("a"), B: answers("b"), C: answers("c")})
    box = failover(clock, sleep)
    box.preferred = B
    assert box.run(servers.attempt, "subscribe", first=C) == "c"
    assert servers.tried == [C]


def test_every_terminal_tries_the_servers_in_an_order_of_its_own(clock, sleep) -> None:
    orders = set()
    for seed in range(20):
        servers = Servers(clock, {A: refused_before_sending, B: refused_before_sending, C: refused_before_sending})
        box = failover(clock, sleep, rng=random.Random(seed), retry=RetryPolicy(max_rounds=1))
        with pytest.raises(Unavailable):
            box.run(servers.attempt, "ping")
        assert sorted(servers.tried) == [A, B, C], "each known server once per round"
        orders.add(tuple(servers.tried))
    assert len(orders) > 1, "terminals that lost the same server do not all move to the same next one"


def test_discovered_servers_are_asked_again_in_later_rounds_within_a_quarter_of_the_time_left(clock, sleep) -> None:
    discovery = Discovered(found=(A,))
    servers = Servers(clock, {A: refused_before_sending})
    box = failover(clock, sleep, servers=(), discovery=discovery, timeout=4.0, retry=RetryPolicy(max_rounds=2))
    with pytest.raises(Unavailable, match=r"tried 10\.0\.0\.1:18861"):
        box.run(servers.attempt, "ping")
    assert [force for force, _ in discovery.asked] == [False, True]
    assert discovery.asked[0][1] == pytest.approx(1.0)
    assert all(budget <= 1.0 for _, budget in discovery.asked)


# -- when a call is repeated ------------------------------------------------------------------------------


def test_a_write_without_a_request_id_is_not_repeated_once_it_may_have_arrived(clock, sleep) -> None:
    servers = Servers(clock, {A: lost_after_sending, B: answers("created")})
    box = failover(clock, sleep, servers=(A, B))
    with pytest.raises(Unavailable) as raised:
        box.run(servers.attempt, "admin_create_event", idempotent=False)
    assert servers.tried == [A], "a second server would create the event twice"
    assert str(raised.value) == (
        "10.0.0.1:18861 failed after receiving the admin_create_event request (connection lost (reset by peer)); "
        "it may or may not have been applied"
    )


def test_a_write_without_a_request_id_still_fails_over_when_it_surely_never_arrived(clock, sleep) -> None:
    servers = Servers(clock, {A: refused_before_sending, B: answers("created")})
    box = failover(clock, sleep, servers=(A, B))
    assert box.run(servers.attempt, "admin_create_event", idempotent=False) == "created"
    assert servers.tried == [A, B]


def test_a_retried_write_keeps_its_request_id(clock, sleep) -> None:
    servers = Servers(clock, {A: lost_after_sending, B: lost_after_sending, C: answers("held")})
    box = failover(clock, sleep)
    rid = request_id()
    assert box.run(servers.call(rid), "reserve", idempotent=False, request_id=rid) == "held"
    assert servers.tried == [A, B, C], "a write with a request id is safe to repeat after a lost answer"
    assert servers.seen_ids == [rid, rid, rid]


def test_a_request_id_is_made_once_and_a_given_one_is_kept() -> None:
    assert request_id("clerk-7-42") == "clerk-7-42"
    made = {request_id() for _ in range(100)}
    assert len(made) == 100 and all(len(rid) == 32 for rid in made)


def test_an_idempotent_read_is_repeated_after_a_lost_answer(clock, sleep) -> None:
    servers = Servers(clock, {A: lost_after_sending, B: answers("events")})
    box = failover(clock, sleep, servers=(A, B))
    assert box.run(servers.attempt, "list_events") == "events"
    assert servers.tried == [A, B]


def test_a_refusal_is_the_answer_not_a_failure(clock, sleep) -> None:
    def sold_out(address, timeout):
        raise SoldOut("Only 0 tickets left in Pista for Show X")

    servers = Servers(clock, {A: sold_out, B: answers("held")})
    box = failover(clock, sleep, servers=(A, B))
    for _ in range(5):
        with pytest.raises(SoldOut, match="Only 0 tickets left"):
            box.run(servers.attempt, "reserve")
    assert servers.tried == [A] * 5, "another server would only say the same"
    assert box.breaker_states() == {"10.0.0.1:18861": "closed"}, "a sold-out answer is a healthy server"
    assert sleep.waits == []


# -- breakers --------------------------------------------------------------------------------------------


def test_an_open_breaker_skips_its_server_without_calling_it(clock, sleep) -> None:
    box = failover(clock, sleep, servers=(A, B))
    for _ in range(2):
        with pytest.raises(Failed):
            box.breaker(A).call(refused_before_sending, A, 1.0)
    assert box.breaker_states()["10.0.0.1:18861"] == "open"
    servers = Servers(clock, {A: answers("a"), B: answers("b")})
    assert box.run(servers.attempt, "ping") == "b"
    assert servers.tried == [B]


def test_failures_open_the_breaker_and_the_next_call_goes_straight_to_a_live_server(clock, sleep) -> None:
    servers = Servers(clock, {A: refused_before_sending, B: answers("b")})
    box = failover(clock, sleep, servers=(A, B))
    box.run(servers.attempt, "ping")
    box.preferred = None
    box.run(servers.attempt, "ping")
    assert servers.tried == [A, B, A, B]
    assert box.breaker_states() == {"10.0.0.1:18861": "open", "10.0.0.2:18861": "closed"}
    box.preferred = None
    box.run(servers.attempt, "ping")
    assert servers.tried[4:] == [B]


def test_when_every_breaker_stays_open_the_message_says_so(clock, sleep) -> None:
    box = failover(clock, sleep, servers=(A,), timeout=1.0)
    for _ in range(2):
        with pytest.raises(Failed):
            box.breaker(A).call(refused_before_sending, A, 1.0)
    servers = Servers(clock, {A: answers("a")})
    with pytest.raises(Unavailable) as raised:
        box.run(servers.attempt, "ping")
    assert servers.tried == []
    assert str(raised.value) == "No ticket server answered within 1.0 s (tried 10.0.0.1:18861); every circuit was open"


def test_listeners_added_before_a_breaker_exists_still_hear_it(clock, sleep) -> None:
    heard: list[tuple[str, str, str]] = []

    class Listener(BreakerListener):
        def state_change(self, breaker, old, new) -> None:
            heard.append((breaker.name, old, new))

    box = failover(clock, sleep, servers=(A, B))
    box.add_breaker_listener(Listener())
    box.run(Servers(clock, {A: refused_before_sending, B: answers("b")}).attempt, "ping")
    box.preferred = None
    box.run(Servers(clock, {A: refused_before_sending, B: answers("b")}).attempt, "ping")
    assert heard == [("10.0.0.1:18861", "closed", "open")]


# -- giving up -------------------------------------------------------------------------------------------


def test_the_deadline_ends_the_rounds_with_unavailable_naming_what_was_tried(clock, sleep) -> None:
    servers = Servers(clock, {A: refused_before_sending, B: lost_after_sending}, cost=0.25)
    box = failover(clock, sleep, servers=(A, B), timeout=3.0, attempt_timeout=1.0,
                   breaker_factory=lambda name: CircuitBreaker(name, failure_threshold=1000, is_failure=is_server_failure,
                                                                clock=clock))
    started, wall = clock.now, time.monotonic()
    with pytest.raises(Unavailable) as raised:
        box.run(servers.attempt, "ping")
    assert clock.now - started == pytest.approx(3.0), "the rounds go on until the caller's deadline, and not past it"
    assert time.monotonic() - wall < 1.0, "nothing really slept"
    message = str(raised.value)
    assert message.startswith("No ticket server answered within 3.0 s (tried 10.0.0.1:18861, 10.0.0.2:18861); last error: ")
    last = "10.0.0.1:18861: cannot connect (connection refused)" if servers.tried[-1] == A else \
        "10.0.0.2:18861: connection lost (reset by peer)"
    assert message.endswith(last), "the last real failure is named"
    assert len(servers.tried) > 4, "several rounds fit in the deadline"
    assert all(timeout <= 1.0 for timeout in servers.timeouts), "one attempt never takes more than attempt_timeout"


def test_an_attempt_is_never_given_more_than_the_time_left(clock, sleep) -> None:
    def hangs(address, timeout):
        clock.now += timeout
        raise Failed("no answer in time", sent=True)

    servers = Servers(clock, {A: hangs, B: hangs})
    box = failover(clock, sleep, servers=(A, B), timeout=1.5, attempt_timeout=1.0)
    with pytest.raises(Unavailable, match="no answer in time"):
        box.run(servers.attempt, "ping")
    assert servers.timeouts[:2] == [1.0, pytest.approx(0.5)]
    assert clock.now - 500.0 == pytest.approx(1.5)


def test_backoff_waits_between_rounds_stay_within_the_policy(clock, sleep) -> None:
    policy = RetryPolicy(max_rounds=6, base_delay=0.1, max_delay=0.4)
    servers = Servers(clock, {A: refused_before_sending})
    box = failover(clock, sleep, servers=(A,), timeout=60.0, retry=policy, rng=random.Random(3),
                   breaker_factory=lambda name: CircuitBreaker(name, failure_threshold=1000, is_failure=is_server_failure,
                                                                clock=clock))
    with pytest.raises(Unavailable):
        box.run(servers.attempt, "ping")
    assert len(servers.tried) == 6, "one try per round, max_rounds rounds"
    assert len(sleep.waits) == 5, "a wait between rounds, none after the last"
    for round_number, wait in enumerate(sleep.waits, start=1):
        assert 0.0 <= wait <= min(0.4, 0.1 * 2**round_number)


def test_backoff_waits_use_their_whole_range(clock, sleep) -> None:
    policy = RetryPolicy(max_rounds=2, base_delay=0.1, max_delay=0.4)
    waits = []
    for seed in range(200):
        recorder = RecordingSleep(clock)
        box = failover(clock, recorder, servers=(A,), retry=policy, rng=random.Random(seed),
                       breaker_factory=lambda name: CircuitBreaker(name, failure_threshold=1000,
                                                                    is_failure=is_server_failure, clock=clock))
        with pytest.raises(Unavailable):
            box.run(Servers(clock, {A: refused_before_sending}).attempt, "ping")
        waits.extend(recorder.waits)
    assert len(waits) == 200 and all(0.0 <= wait <= 0.2 for wait in waits)
    assert min(waits) < 0.04 and max(waits) > 0.16, "full jitter: anywhere from nothing to the cap"


def test_a_wait_never_runs_past_the_deadline(clock, sleep) -> None:
    policy = RetryPolicy(max_rounds=50, base_delay=1.0, max_delay=1.0)
    servers = Servers(clock, {A: refused_before_sending}, cost=0.3)
    box = failover(clock, sleep, servers=(A,), timeout=1.0, retry=policy, rng=random.Random(1),
                   breaker_factory=lambda name: CircuitBreaker(name, failure_threshold=1000, is_failure=is_server_failure,
                                                                clock=clock))
    with pytest.raises(Unavailable):
        box.run(servers.attempt, "ping")
    assert clock.now - 500.0 <= 1.0 + 1e-9


def test_servers_that_all_refuse_this_terminal_s_tls_settings_end_the_call_at_once(clock, sleep) -> None:
    def tls_mismatch(address, timeout):
        raise Failed("the server speaks TLS; give this terminal --cafile", sent=False, final=True)

    servers = Servers(clock, {A: tls_mismatch, B: tls_mismatch})
    box = failover(clock, sleep, servers=(A, B))
    with pytest.raises(Unavailable) as raised:
        box.run(servers.attempt, "ping")
    assert str(raised.value) == (
        "No ticket server can be used with this terminal's settings (tried 10.0.0.1:18861, 10.0.0.2:18861); "
        "last error: 10.0.0.2:18861: the server speaks TLS; give this terminal --cafile"
    )
    assert sleep.waits == [], "retrying cannot fix a settings mismatch"


def test_name_servers_that_refuse_this_terminal_end_the_call_at_once(clock, sleep) -> None:
    discovery = Discovered(last_error="name servers unreachable: 10.0.0.9:18811 (certificate verify failed)", refused=True)
    box = failover(clock, sleep, servers=(), discovery=discovery)
    with pytest.raises(Unavailable) as raised:
        box.run(Servers(clock, {}).attempt, "ping")
    assert str(raised.value) == "No ticket server known: name servers unreachable: 10.0.0.9:18811 (certificate verify failed)"
    assert sleep.waits == []


def test_no_server_known_says_what_the_name_servers_said(clock, sleep) -> None:
    discovery = Discovered(last_error="name servers unreachable: 10.0.0.9:18811 (Connection refused)")
    box = failover(clock, sleep, servers=(), discovery=discovery, timeout=0.5)
    with pytest.raises(Unavailable) as raised:
        box.run(Servers(clock, {}).attempt, "ping")
    assert str(raised.value) == ("No ticket server answered within 0.5 s "
                                 "(no server known: name servers unreachable: 10.0.0.9:18811 (Connection refused))")
