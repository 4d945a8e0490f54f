"""How long to wait before trying again, said once for every retry loop in the box office.

The client between failover rounds, the mailer between tries of one message, PostgreSQL between conflicting
writes, the ledger listener and the live feed after losing their database: each doubles a base step up to a
ceiling and spreads it at random, so peers that failed together do not come back together. Waits are meant
to be taken on a `threading.Event` (`stopping.wait(delay)`), never `time.sleep`, so a stop always interrupts
them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """The wait before attempt number `attempt` (0 for the first retry): a random point of
    [low * step, high * step], where step = base * 2**attempt capped at ceiling.

    low=0, high=1 is "full jitter" (the client's rounds, PostgreSQL's conflicts); low=1, high=1.25 waits at
    least the step and up to a quarter more (the mailer, whose step is the promise of the retry schedule).
    """

    base: float
    ceiling: float
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.ceiling) or not (0 <= self.low <= self.high):
            raise ValueError(f"a backoff needs 0 < base <= ceiling and 0 <= low <= high, not {self}")

    def step(self, attempt: int) -> float:
        """The ceiling-capped doubling, before the spread; the exponent is capped so it never overflows."""
        return min(self.ceiling, self.base * 2.0 ** min(max(attempt, 0), 64))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        step = self.step(attempt)
        return (rng or random).uniform(step * self.low, step * self.high)
