"""Finding the ticket servers: ask every name server at once, keep the last good list, refresh it in time.

The name servers hold soft state (servers re-register on a timer), so a terminal asks them again every few
seconds and never trusts an empty or failed answer over the list it already had: the breakers, not the name
servers, say when a server died. They speak RPyC's registry protocol (`net.registry_protocol`).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterable

from net.registry_protocol import SERVICE_NAME, Address, exchange, parse_address, show
from net.tls import TLSRefused

DEFAULT_NAME_SERVERS = ("127.0.0.1:18811",)


class _Round:
    """One refresh in flight: every name server asked at once, answers merged in the order they arrive."""

    def __init__(self, asked: int) -> None:
        self.pending = asked
        self.found: list[Address] = []
        self.errors: list[str] = []
        self.refused = 0
        self.settled = threading.Event()
        """Some name server listed at least one ticket server, or every name server has had its say."""
        self.done = threading.Event()


class NameServerClient:
    """Asks every name server at once for the live ticket servers and merges the answers.

    The last good list is kept, so the terminal keeps selling from it while every name server is down,
    hung, or freshly restarted and still empty (an empty table is not evidence that the servers died:
    their breakers will tell). A hung name server never holds up the others: once one has answered, the
    rest get `GRACE_SECONDS` more, and whatever they answer later is still merged into the list. A refresh
    never makes its caller wait longer than the time it is given.
    """

    GRACE_SECONDS = 0.1

    def __init__(self, name_servers: Iterable[str | Address], refresh_seconds: float = 3.0, timeout: float = 1.0,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.name_servers = [parse_address(ns) if isinstance(ns, str) else ns for ns in name_servers]
        self.refresh_seconds = refresh_seconds
        self.timeout = timeout
        self.tls_context = tls_context
        self.cached: tuple[Address, ...] = ()
        self.refreshed_at = float("-inf")
        self.last_error = ""
        self.refused = False
        """Every name server failed in a way retrying cannot fix (TLS against plain text, an untrusted certificate)."""
        self._lock = threading.Lock()
        self._round: _Round | None = None

    def servers(self, force: bool = False, budget: float | None = None) -> tuple[Address, ...]:
        """The known servers, asking the name servers again when the list is old (or `force`, at most once a second)."""
        age = time.monotonic() - self.refreshed_at
        if not self.cached or age >= self.refresh_seconds or (force and age >= 1.0):
            self.refresh(budget)
        return self.cached

    def refresh(self, budget: float | None = None) -> None:
        """Ask every name server in parallel and wait at most `budget` seconds (default: `timeout`).

        Returns early when all have answered, or `GRACE_SECONDS` after the first useful answer when a list is
        known (cached or just heard); stragglers finish in the background within `timeout` and are merged then.
        """
        wait = self.timeout if budget is None else max(0.0, min(self.timeout, budget))
        deadline = time.monotonic() + wait
        current = self._start_round()
        if not self.cached:
            current.settled.wait(wait)
        current.done.wait(max(0.0, min(self.GRACE_SECONDS, deadline - time.monotonic())))

    def _start_round(self) -> _Round:
        """The round in flight, or a new one asking every name server on its own thread."""
        with self._lock:
            if self._round is not None and not self._round.done.is_set():
                return self._round
            current = self._round = _Round(len(self.name_servers))
            self.refreshed_at = time.monotonic()
        for address in self.name_servers:
            threading.Thread(target=self._ask, args=(current, address), name=f"ask-{show(address)}", daemon=True).start()
        if not self.name_servers:
            current.settled.set()
            current.done.set()
        return current

    def _ask(self, current: _Round, address: Address) -> None:
        answer: tuple[Address, ...] | None = None
        try:
            answer = self.query(address, self.timeout, self.tls_context)
        except (OSError, ValueError) as exc:
            error, refused = f"{show(address)} ({getattr(exc, 'strerror', None) or exc})", isinstance(exc, TLSRefused)
        with self._lock:
            if answer is None:
                current.errors.append(error)
                current.refused += refused
            else:
                current.found.extend(server for server in answer if server not in current.found)
                if current.found:
                    self.cached = tuple(current.found)  # the first answer replaces the old list; later ones add to it
                    current.settled.set()
            current.pending -= 1
            if current.pending == 0:
                self._finish(current)

    def _finish(self, current: _Round) -> None:
        errors = current.errors
        if len(errors) == len(self.name_servers):
            self.last_error = "name servers unreachable: " + ", ".join(errors)
        else:
            self.last_error = "; ".join(errors)
        self.refused = bool(self.name_servers) and current.refused == len(self.name_servers)
        current.settled.set()
        current.done.set()

    @classmethod
    def query(cls, address: Address, timeout: float, tls_context: ssl.SSLContext | None = None) -> tuple[Address, ...]:
        """One QUERY in RPyC's registry protocol (net.registry_protocol.exchange); anything but a list of (host, port) is an error."""
        servers = exchange(address, ("RPYC", "QUERY", (SERVICE_NAME,)), timeout, tls_context)
        if type(servers) is not tuple or not all(
            type(entry) is tuple and len(entry) == 2 and type(entry[0]) is str and type(entry[1]) is int for entry in servers
        ):
            raise ValueError("answer is not a list of (host, port)")
        return servers

