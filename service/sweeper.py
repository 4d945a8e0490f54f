"""The expiry sweep: holds and waitlist offers that lapsed give their tickets back while the server runs.

This thread sweeps about four times per period (at most every 5 s), so a lapsed hold's tickets are back on
sale at most about a quarter of its period late, even for an event nobody touches. Every replica sweeps; the
store makes each expiry happen once however many sweep at the same time.
"""

from __future__ import annotations

import logging
import threading

from database import Store
from errors import BoxOfficeError

MAX_SWEEP_SECONDS = 5.0

log = logging.getLogger("bilheteria.service.sweeper")


def sweep_interval(hold_seconds: float, offer_seconds: float) -> float:
    return min(MAX_SWEEP_SECONDS, hold_seconds / 4, offer_seconds / 4)


def sweep(store: Store, stopping: threading.Event) -> None:
    """Expire lapsed holds and waitlist offers about four times per period (at most every 5 s), until `stopping`."""
    interval = sweep_interval(store.hold_seconds, store.offer_seconds)
    while not stopping.wait(interval):
        try:
            expired = store.expire_holds()
        except BoxOfficeError as exc:
            log.warning("expiry sweep failed: %s", exc)
            continue
        if expired:
            log.info("expired %d lapsed holds", expired)
