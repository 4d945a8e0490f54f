"""Registration with the name servers: how terminals learn that this ticket server is alive.

A registration is soft state: the name server forgets it unless it is refreshed, so a server that dies
silently drops out of the listings by itself, and a restarted name server is complete again after one
heartbeat. A clean shutdown unregisters at once, so terminals stop being sent to a server that is leaving.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time

from net.registry_protocol import SERVICE_NAME, Address, exchange, show

HEARTBEAT_SECONDS = 2.0

log = logging.getLogger("bilheteria.service.registrar")


class Registrar:
    """Keeps this server registered with every name server: soft state refreshed by a heartbeat.

    Each name server has its own heartbeat thread, so a dead or hung one costs only its own attempts, never
    a late registration with the others.
    """

    def __init__(self, name_servers: list[Address], port: int, interval: float = HEARTBEAT_SECONDS, *,
                 timeout: float = 1.0, tls_context: ssl.SSLContext | None = None) -> None:
        self.name_servers = list(name_servers)
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.tls_context = tls_context
        self.stopped = threading.Event()
        self.reachable: dict[str, bool] = {}

    def start(self) -> None:
        """Register with every name server at once, wait for those first attempts (each bounded by `timeout`),
        so a server that says it is ready is also listed, then keep one heartbeat per name server."""
        attempted = []
        for address in self.name_servers:
            first = threading.Event()
            attempted.append(first)
            threading.Thread(target=self._heartbeat, args=(address, first), name=f"registrar-{show(address)}",
                             daemon=True).start()
        deadline = time.monotonic() + self.timeout + 0.5
        for first in attempted:
            first.wait(max(0.0, deadline - time.monotonic()))

    def _heartbeat(self, address: Address, attempted: threading.Event) -> None:
        self.register_once(address)
        attempted.set()
        while not self.stopped.wait(self.interval):
            self.register_once(address)

    def register_once(self, address: Address) -> None:
        where = show(address)
        try:
            ok = exchange(address, ("RPYC", "REGISTER", ((SERVICE_NAME,), self.port)), self.timeout, self.tls_context) == "OK"
            reason = ""
        except (OSError, ValueError) as exc:
            ok, reason = False, f" ({getattr(exc, 'strerror', None) or exc})"
        if ok != self.reachable.get(where):
            if ok:
                log.info("registered %s port %d with name server %s", SERVICE_NAME, self.port, where)
            else:
                log.warning("name server %s unreachable%s; will keep trying every %.0f s", where, reason, self.interval)
            self.reachable[where] = ok

    def stop(self) -> None:
        """Stop the heartbeats and unregister from every name server at once (each bounded by `timeout`)."""
        self.stopped.set()
        leaving = [threading.Thread(target=self._unregister, args=(address,), daemon=True) for address in self.name_servers]
        for thread in leaving:
            thread.start()
        for thread in leaving:
            thread.join(self.timeout + 0.5)

    def _unregister(self, address: Address) -> None:
        try:
            exchange(address, ("RPYC", "UNREGISTER", (self.port,)), self.timeout, self.tls_context)
        except (OSError, ValueError):
            return
        log.info("unregistered port %d from name server %s", self.port, show(address))
