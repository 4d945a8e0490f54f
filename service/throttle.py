"""Throttles: how often one connection, and one remote address, may fail a lookup, miss the admin token or join
a waitlist.

A reservation is found by its code and email, so guessing codes is a search; it once ran at 3,000 to 4,000
lookups a second with nothing logged, and wrong admin tokens at 600 a second. Bots filled a waitlist with 200
entries in 0.4 s, each freed ticket then sitting on a bot for the whole offer window. Each of these draws
on two token buckets, the caller's connection's and its address's: a bucket holds `burst` attempts and refills
at `per_second`, so a clerk who mistypes a code a few times never notices, and a search is slowed to the
refill rate. An empty bucket is a refusal that says how long to wait (a refusal, so the terminal does not
retry it on another server), and it is logged in aggregate (service/floods.py).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from errors import Forbidden, InvalidRequest, NotFound, ReservationError
from service.floods import Floods

MAX_BUCKETS = 10_000
"""Buckets kept before the full ones are forgotten (a full bucket is the same as none), so a scan from many
addresses costs bounded memory."""


@dataclass(frozen=True)
class Rate:
    burst: float
    """Attempts allowed at once."""
    per_second: float
    """Attempts given back each second."""

    def scaled(self, factor: float) -> Rate:
        return Rate(self.burst * factor, self.per_second * factor)


@dataclass(frozen=True)
class Policy:
    """What is throttled, its limits per connection and per address, and how its refusal is worded."""

    what: str
    """What is counted, as the log and the refusal say it ("failed lookups")."""
    per_connection: Rate
    per_address: Rate
    refusal: type[ReservationError]

    def scaled(self, factor: float) -> Policy:
        """The same policy with `factor` times the attempts (--throttle-scale: many clients behind one address)."""
        return Policy(self.what, self.per_connection.scaled(factor), self.per_address.scaled(factor), self.refusal)


FAILED_LOOKUPS = Policy("failed lookups (wrong code, entry or email)", Rate(10, 1.0), Rate(30, 3.0), InvalidRequest)
"""A clerk mistypes a code a few times; a search for codes is held to 3 a second per address (a code and its
email together are a 1-in-10^8 guess at best, so that is no search at all)."""
WRONG_TOKENS = Policy("wrong admin tokens", Rate(5, 0.5), Rate(10, 1.0), Forbidden)
"""An operator retypes a token once or twice; a search gets one try a second per address."""
WAITLIST_JOINS = Policy("waitlist joins", Rate(5, 0.2), Rate(20, 0.5), InvalidRequest)
"""A clerk queues a customer now and then; a bot gets a join every two seconds per address, not 500 a second."""


class Buckets:
    """Token buckets by key, on an injectable clock."""

    def __init__(self, rate: Rate, clock: Callable[[], float]) -> None:
        self.rate = rate
        self._clock = clock
        self._levels: dict[str, tuple[float, float]] = {}
        """key -> (attempts left, when that was so)"""

    def _level(self, key: str, now: float) -> float:
        left, then = self._levels.get(key, (self.rate.burst, now))
        return min(float(self.rate.burst), left + (now - then) * self.rate.per_second)

    def wait(self, key: str) -> float:
        """Seconds until `key` may try again; 0 when it may now. Called with the throttle's lock held."""
        level = self._level(key, self._clock())
        return 0.0 if level >= 1 else (1 - level) / self.rate.per_second

    def take(self, key: str) -> None:
        now = self._clock()
        self._levels[key] = (self._level(key, now) - 1, now)
        if len(self._levels) > MAX_BUCKETS:
            self._levels = {k: v for k, v in self._levels.items() if self._level(k, now) < self.rate.burst}


class Throttle:
    """One policy's buckets for every connection and address of this server."""

    def __init__(self, policy: Policy, floods: Floods, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.floods = floods
        self._lock = threading.Lock()
        self._connections = Buckets(policy.per_connection, clock)
        self._addresses = Buckets(policy.per_address, clock)

    def check(self, connection: str, address: str) -> None:
        """Refuse, saying how long to wait, when the connection's or the address's bucket is empty."""
        with self._lock:
            wait = max(self._connections.wait(connection), self._addresses.wait(address))
        if wait > 0:
            self.floods.note(f"throttled {self.policy.what}", address)
            raise self.policy.refusal(f"too many {self.policy.what} from {address}; wait {math.ceil(wait * 10) / 10:.1f} s and try again")

    def charge(self, connection: str, address: str) -> None:
        with self._lock:
            self._connections.take(connection)
            self._addresses.take(address)

    def admit(self, connection: str, address: str) -> None:
        """Check, then count the attempt whatever its outcome (for what is limited however it ends: joins)."""
        self.check(connection, address)
        self.charge(connection, address)

    @contextmanager
    def failures(self, connection: str, address: str) -> Iterator[None]:
        """Check before the attempt; count it only when it fails with NotFound (for lookups: a hit costs nothing)."""
        self.check(connection, address)
        try:
            yield
        except NotFound:
            self.charge(connection, address)
            raise
