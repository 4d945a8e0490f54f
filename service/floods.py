"""Events a client can repeat thousands of times a second, logged for the operator as one line per interval.

A wrong admin token, a guessed reservation code, a connection over the cap: each is worth a line the first
time, and a flood of them is worth one line per peer per interval with a count, never a line per attempt (600
wrong tokens a second once wrote gigabytes of log a day). The first event of a (kind, peer) pair is logged at
once, so an operator sees an attack begin; the rest of that interval is counted and said in one line when the
interval ends (`flush`, run every interval by the server, or on the next event after it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

FLOOD_SECONDS = 10.0
"""How often a repeating event is summed up in the log: the pace an operator reads, as the activity line's."""

log = logging.getLogger("bilheteria.service.floods")


@dataclass
class _Open:
    began: float
    more: int = 0
    detail: str = ""


class Floods:
    """Counts repeating events by (kind, peer) and logs the first of each interval and a count of the rest."""

    def __init__(self, interval: float = FLOOD_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], _Open] = {}

    def note(self, kind: str, peer: str, detail: str = "") -> None:
        """One event: `kind` says what ("forbidden: wrong admin token"), `peer` who, `detail` anything to add."""
        now = self._clock()
        with self._lock:
            entry = self._open.get((kind, peer))
            if entry is None:
                self._open[(kind, peer)] = _Open(now)
                first = True
            else:
                entry.more += 1
                entry.detail = detail
                first = False
        if first:
            log.warning("%s from %s%s", kind, peer, f" ({detail})" if detail else "")
        self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Close every interval that has ended: one line for each that counted more than its first event."""
        now = self._clock() if now is None else now
        with self._lock:
            ended = [(key, entry) for key, entry in self._open.items() if now - entry.began >= self.interval]
            for key, _ in ended:
                del self._open[key]
        for (kind, peer), entry in ended:
            if entry.more:
                log.warning("%s from %s: %d more in the last %.0f s%s", kind, peer, entry.more, now - entry.began,
                            f" ({entry.detail})" if entry.detail else "")

    def run(self, stopping: threading.Event) -> None:
        """Flush every interval until `stopping`, so the count of a flood that ended is still said."""
        while not stopping.wait(self.interval / 2):
            self.flush()
