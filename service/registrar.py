"""Registration with the name servers: how terminals learn that this ticket server is alive.

A registration is soft state: the name server forgets it unless it is refreshed, so a server that dies
silently drops out of the listings by itself, and a restarted name server is complete again after one
heartbeat. A clean shutdown unregisters at once, so terminals stop being sent to a server that is leaving.

With the shared registration key (net.registry_protocol.RegistrationKey) every REGISTER and UNREGISTER is
signed, with a fresh timestamp and nonce each time, because a name server that is not insecure applies nothing
else; without one they go unsigned, which only a name server started insecure accepts.
A server that is alive but cannot serve (`can_serve` answers why) must not be listed: it unregisters, stops
heartbeating until it can serve again, and says so once, not once per heartbeat.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable

from net.registry_protocol import SERVICE_NAME, Address, RegistrationKey, exchange, show

HEARTBEAT_SECONDS = 2.0

log = logging.getLogger("bilheteria.service.registrar")


def always_fine() -> str | None:
    """The default `can_serve`: a server that cannot tell is assumed able to serve."""
    return None


class Registrar:
    """Keeps this server registered with every name server: soft state refreshed by a heartbeat.

    Each name server has its own heartbeat thread, so a dead or hung one costs only its own attempts, never
    a late registration with the others. `key` signs every registration; None takes the key from
    $BILHETERIA_REGISTRATION_KEY_FILE or $BILHETERIA_REGISTRATION_KEY when one is set (the variables the name
    servers read too), else registrations go unsigned, which only an insecure name server applies.
    `can_serve` is asked before each heartbeat: None to stay listed, else one line saying why not.
    """

    def __init__(self, name_servers: list[Address], port: int, interval: float = HEARTBEAT_SECONDS, *,
                 timeout: float = 1.0, tls_context: ssl.SSLContext | None = None, key: RegistrationKey | None = None,
                 can_serve: Callable[[], str | None] = always_fine) -> None:
        self.name_servers = list(name_servers)
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.tls_context = tls_context
        self.key = key
        self.can_serve = can_serve
        self.stopped = threading.Event()
        self.reachable: dict[str, bool] = {}
        self.withdrawn: str | None = None
        """Why this server took itself off the listings (None while it is listed or trying to be)."""
        self._lock = threading.Lock()

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
        listed = False
        while True:
            if self._may_serve():
                self.register_once(address)
                listed = True
            elif listed:
                self._unregister(address)
                listed = False
            attempted.set()
            if self.stopped.wait(self.interval):
                return

    def _may_serve(self) -> bool:
        """Ask `can_serve`; log a change of answer once for all the heartbeat threads."""
        try:
            reason = self.can_serve()
        except Exception as exc:  # noqa: BLE001 - a broken check must not end the heartbeats; it says the server cannot serve
            reason = f"the serving check failed ({type(exc).__name__}: {exc})"
        with self._lock:
            if reason != self.withdrawn:
                if reason is None:
                    log.info("can serve again; registering with the name servers")
                else:
                    log.error("cannot serve (%s); unregistering from the name servers until it can", reason)
                self.withdrawn = reason
        return reason is None

    def _request(self, command: str, args: tuple) -> Callable[[str], tuple]:
        """The request, made once connected: signed for the host this server sends from, or plain without a key."""
        key = self.key
        return lambda host: key.sign(command, args, host) if key is not None else ("RPYC", command, args)

    def register_once(self, address: Address) -> None:
        where = show(address)
        try:
            answer = exchange(address, self._request("REGISTER", ((SERVICE_NAME,), self.port)), self.timeout, self.tls_context)
            ok = answer == "OK"
            problem = "" if ok else f"refused the registration ({answer}); does it share this server's registration key?"
        except (OSError, ValueError) as exc:
            ok, problem = False, f"unreachable ({getattr(exc, 'strerror', None) or exc})"
        if ok != self.reachable.get(where):
            if ok:
                log.info("registered %s port %d with name server %s", SERVICE_NAME, self.port, where)
            else:
                log.warning("name server %s %s; will keep trying every %.0f s", where, problem, self.interval)
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
            answer = exchange(address, self._request("UNREGISTER", (self.port,)), self.timeout, self.tls_context)
        except (OSError, ValueError):
            return
        if answer == "OK":
            log.info("unregistered port %d from name server %s", self.port, show(address))
        else:
            log.warning("name server %s did not unregister port %d (it answered %r)", show(address), self.port, answer)
        self.reachable.pop(show(address), None)
