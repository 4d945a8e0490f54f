"""Which server a call tries next, and when it stops trying: the rounds, the breakers and the idempotency rule.

A call is given one deadline. Within it the `Failover` walks the known servers (the one that answered last
first), each behind its own circuit breaker, and between rounds waits a jittered backoff. A call that may
have reached a server is repeated only when repeating is safe: the call is idempotent, or it carries a
request id the server answers the same way every time. Time comes from an injected clock and waits go to
an injected sleep, so all of this is testable without a socket or a wall clock; dialling and speaking RPyC
are the connection module's job (`client.connection`).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from backoff import Backoff
from circuit_breaker import BreakerListener, CircuitBreaker, CircuitOpenError
from errors import Unavailable
from net.registry_protocol import Address, show

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again and how long to wait: rounds over the known servers, inside the caller's deadline.

    Between rounds the client waits a random time between 0 and base * 2**round, capped ("full jitter"),
    so terminals that lost the same server do not come back in lockstep.
    """

    max_rounds: int = 20
    base_delay: float = 0.05
    max_delay: float = 1.0

    def delay(self, round_number: int, rng: random.Random) -> float:
        return Backoff(self.base_delay, self.max_delay).delay(round_number, rng)

    def gives_up(self, round_number: int, remaining: float) -> bool:
        return round_number >= self.max_rounds or remaining <= 0


class Failed(Exception):
    """An infrastructure failure on one server: try the next; `sent` says the request may have arrived;
    `final` says retrying this server cannot help (the two ends disagree about TLS)."""

    def __init__(self, reason: str, sent: bool, final: bool = False) -> None:
        super().__init__(reason)
        self.sent = sent
        self.final = final


def is_server_failure(exc: BaseException) -> bool:
    """What a breaker counts: a server that could not answer, never a refusal it sent."""
    return isinstance(exc, Failed)


def request_id(given: str | None = None) -> str:
    """The id a write carries on every attempt, so a retry after a lost answer is answered, not applied twice."""
    return given or uuid.uuid4().hex


def default_breaker(name: str) -> CircuitBreaker:
    return CircuitBreaker(name, failure_threshold=2, reset_timeout=2.0, is_failure=is_server_failure)


class Discovery(Protocol):
    """What the rounds need from the name servers (`client.discovery.NameServerClient`)."""

    last_error: str
    refused: bool

    def servers(self, force: bool = False, budget: float | None = None) -> tuple[Address, ...]: ...


Attempt = Callable[[Address, float], T]
"""One try on one server: `attempt(address, timeout)` answers, raises a refusal, or raises `Failed`."""


class Failover:
    """Owns the candidates, one breaker per server, and the rounds; safe to share between threads.

    `timeout` bounds a whole call, retries included; `attempt_timeout` bounds one try on one server. A custom
    `breaker_factory` must build breakers that classify with `is_server_failure`.
    """

    def __init__(
        self,
        discovery: Discovery,
        fixed: Sequence[Address] = (),
        *,
        timeout: float = 5.0,
        attempt_timeout: float = 2.0,
        retry: RetryPolicy | None = None,
        breaker_factory: Callable[[str], CircuitBreaker] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.discovery = discovery
        self.fixed = tuple(fixed)
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.retry = retry or RetryPolicy()
        self._make_breaker = breaker_factory or default_breaker
        self._rng = rng or random.Random()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._breakers: dict[Address, CircuitBreaker] = {}
        self._listeners: list[BreakerListener] = []
        self.preferred: Address | None = None
        """The server that answered last: tried first next time."""

    # -- what a terminal can watch --------------------------------------------------------------------

    def breaker_states(self) -> dict[str, str]:
        with self._lock:
            breakers = dict(self._breakers)
        return {show(address): breaker.state for address, breaker in breakers.items()}

    def add_breaker_listener(self, listener: BreakerListener) -> None:
        with self._lock:
            self._listeners.append(listener)
            for breaker in self._breakers.values():
                breaker.add_listener(listener)

    def reconnect_delay(self, failures: int) -> float:
        """How long a background line waits before its next round after `failures` failed ones."""
        return self.retry.delay(failures, self._rng)

    # -- the rounds -----------------------------------------------------------------------------------

    def run(
        self,
        attempt: Attempt[T],
        method: str,
        *,
        idempotent: bool = True,
        request_id: str | None = None,
        first: Address | None = None,
    ) -> T:
        """Run `attempt(address, timeout)` through the breakers, server after server and round after round, until
        one answers or the deadline passes; `Unavailable` then says what was tried. `first` is tried before the
        others (the callback line's server). After a failure that may have reached the server, the call goes on
        only if it is `idempotent` or carries a `request_id`."""
        repeatable = idempotent or request_id is not None
        deadline = self._clock() + self.timeout
        tried: list[str] = []
        reasons: list[str] = []
        round_number = 0
        while True:
            refused: set[str] = set()
            for address in self.candidates(refresh=round_number > 0, remaining=deadline - self._clock(), first=first):
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                breaker = self.breaker(address)
                name = show(address)
                if name not in tried:
                    tried.append(name)
                try:
                    result = breaker.call(attempt, address, min(remaining, self.attempt_timeout))
                except CircuitOpenError:
                    continue
                except Failed as exc:
                    reasons.append(f"{name}: {exc}")
                    if exc.final:
                        refused.add(name)
                    if exc.sent and not repeatable:
                        raise Unavailable(
                            f"{name} failed after receiving the {method} request ({exc}); it may or may not have been applied"
                        ) from None
                    continue
                self.preferred = address
                return result
            if refused and refused == set(tried):
                raise Unavailable(f"No ticket server can be used with this terminal's settings (tried {', '.join(tried)}); "
                                  f"last error: {reasons[-1]}")
            if not tried and not self.fixed and self.discovery.refused:
                raise Unavailable(f"No ticket server known: {self.discovery.last_error}")
            round_number += 1
            remaining = deadline - self._clock()
            if self.retry.gives_up(round_number, remaining):
                raise Unavailable(self._unavailable_message(tried, reasons))
            self._sleep(min(remaining, self.retry.delay(round_number, self._rng)))

    def _unavailable_message(self, tried: list[str], reasons: list[str]) -> str:
        """Name what was tried and the last real failure (a breaker that stayed open is not a cause)."""
        if not tried:
            why = self.discovery.last_error or "the name servers list no ticket server"
            return f"No ticket server answered within {self.timeout:.1f} s (no server known: {why})"
        last = f"; last error: {reasons[-1]}" if reasons else "; every circuit was open"
        return f"No ticket server answered within {self.timeout:.1f} s (tried {', '.join(tried)}){last}"

    def candidates(self, refresh: bool, remaining: float, first: Address | None = None) -> list[Address]:
        """Known servers, `first` or else the one that answered last first, the rest in this terminal's own random order.

        Asking the name servers may take at most a quarter of the time left, so a hung one cannot eat the deadline.
        """
        servers = list(self.fixed or self.discovery.servers(force=refresh, budget=remaining / 4))
        self._rng.shuffle(servers)
        lead = first or self.preferred
        if lead in servers:
            servers.remove(lead)
            servers.insert(0, lead)
        return servers

    def breaker(self, address: Address) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(address)
            if breaker is None:
                breaker = self._make_breaker(show(address))
                for listener in self._listeners:
                    breaker.add_listener(listener)
                self._breakers[address] = breaker
            return breaker
