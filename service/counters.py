"""What the server counts, and the one line per period that tells an operator the pace.

Every connection thread updates the same counters, so they share one lock; `status()` reads them all at
once under it, and a clean shutdown waits on `idle` until no call is in flight. A line per sale would drown
the log (those are DEBUG), so the activity report says only how many calls, refusals and errors a period had.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

ACTIVITY_SECONDS = 10.0

log = logging.getLogger("bilheteria.service.counters")


class Counters:
    """What `status()` reports; updated from many connection threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.calls = 0
        self.errors = 0
        self.refusals = 0
        self.forbidden = 0
        self.in_flight = 0
        self.idle = threading.Condition(self.lock)

    def wait_idle(self, timeout: float) -> None:
        """Until no call is in flight, or `timeout` seconds."""
        with self.lock:
            self.idle.wait_for(lambda: self.in_flight == 0, timeout=timeout)


@dataclass(frozen=True)
class Tally:
    calls: int = 0
    refusals: int = 0
    errors: int = 0


def report_activity(counters: Counters, stopping: threading.Event, every: float = ACTIVITY_SECONDS) -> None:
    """One INFO line per period with traffic: operators see the pace without a line per sale (those are DEBUG)."""
    last = Tally()
    while not stopping.wait(every):
        with counters.lock:
            now = Tally(counters.calls, counters.refusals, counters.errors)
            connections = counters.connections
        calls, refusals, errors = now.calls - last.calls, now.refusals - last.refusals, now.errors - last.errors
        last = now
        if calls:
            log.info("last %.0f s: %d calls, %d refusals, %d errors; %d connections open", every, calls, refusals, errors, connections)
