"""Who gets a connection: the cap on open connections, and what the server knows about whether it can serve.

Every connection costs the server a descriptor and a thread. Before the cap, a thousand idle sockets used up
the descriptors, `accept()` failed with EMFILE, and RPyC took that for a closed listener: the server stopped
accepting for good while it kept registering. Now the cap (half the descriptor limit by default, so the
database, the name servers and the mail keep theirs) refuses a newcomer at once, which costs it nothing but a
failover to another replica; if the descriptors or threads run out all the same, the accept loop waits a
moment and tries again with its listener kept (`AcceptLoop` in service/transport.py). `can_serve` says
whether the server can take a new client now, so the registrar withdraws a server that cannot.
"""

from __future__ import annotations

import logging
import resource
import threading
import time
from collections.abc import Callable

from backoff import Backoff
from service.floods import Floods

DESCRIPTOR_SHARE = 2
"""Connections get 1/DESCRIPTOR_SHARE of the descriptor limit: the rest is for the store (SQLite opens three
descriptors per reader connection, one reader per concurrent read), the name servers, SMTP and the log."""
MAX_CONNECTIONS_CEILING = 4096
"""No default above this however high the descriptor limit: each connection is also a thread."""
MIN_CONNECTIONS = 8
RETRY_ACCEPT = Backoff(base=0.05, ceiling=1.0, low=0.5, high=1.0)
"""The wait after `accept()` or a thread start failed for want of resources: short at first (a descriptor
often frees up at once), never more than a second, so the server is back within a second of the cause."""

log = logging.getLogger("bilheteria.service.admission")


def default_max_connections() -> int:
    """The cap when the operator sets none: a share of this process's descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS_CEILING
    return max(MIN_CONNECTIONS, min(MAX_CONNECTIONS_CEILING, soft // DESCRIPTOR_SHARE))


class Admission:
    """The count of open connections against the cap, and the last failure to accept (until one succeeds)."""

    def __init__(self, max_connections: int, floods: Floods, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_connections = max_connections
        self.floods = floods
        self._clock = clock
        self._lock = threading.Lock()
        self.open = 0
        self._trouble: str | None = None
        self._since = 0.0
        self._failures = 0

    def admit(self, host: str) -> bool:
        """Count a new connection in, or refuse it (False) when the cap is reached; a refusal is one flood line."""
        with self._lock:
            full = self.open >= self.max_connections
            if not full:
                self.open += 1
        if full:
            self.floods.note(f"refused connections: {self.max_connections} open, the cap (--max-connections)", host)
        return not full

    def leave(self) -> None:
        with self._lock:
            self.open -= 1

    def failed(self, reason: str) -> float:
        """Accepting failed for want of resources: remember why, say it once, and answer how long to wait."""
        with self._lock:
            first = self._trouble is None
            if first:
                self._since = self._clock()
            self._trouble = reason
            attempt = self._failures
            self._failures += 1
        if first:
            log.error("cannot serve new clients: %s; the listener stays open and accepting is retried", reason)
        return RETRY_ACCEPT.delay(attempt)

    def accepted(self) -> None:
        """A connection was accepted and its thread started: any trouble is over."""
        with self._lock:
            trouble, since = self._trouble, self._since
            self._trouble, self._failures = None, 0
        if trouble is not None:
            log.warning("accepting clients again after %.1f s (%d connections open)", self._clock() - since, self.open)

    def can_serve(self) -> str | None:
        """None when a new client would be served; else why not (for the registrar, which then withdraws)."""
        with self._lock:
            if self._trouble is not None:
                return f"cannot accept connections ({self._trouble}) for {self._clock() - self._since:.1f} s"
            if self.open >= self.max_connections:
                return f"at its cap of {self.max_connections} connections"
        return None
