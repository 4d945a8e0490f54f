"""A whole box office on one machine: name servers and ticket servers as child processes, in plain text or TLS,
with signed registrations or (without a registration key) name servers in their explicit insecure mode.

`cli.py demo` (tools/demo.py) and `cli.py tour` start their systems through this, and some tests too. Each
child is started, waited for and stopped by the one harness (harness.py): its output goes to a log file in
`data`, so nothing is lost however the parent ends, and readiness is read from that log.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

from client_core import NameServerClient
from name_server import INSECURE_VARIABLE
from net.registry_protocol import KEY_ENV, KEY_FILE_ENV
from net.tls import TLSFiles, optional_client_context
from tools.harness import READY_SECONDS, Child, LaunchError, free_port, start_child, stop_child

__all__ = ["Child", "LaunchError", "LocalCluster", "stop_child"]

POLL_SECONDS = 0.05
"""How often the name servers are asked while waiting for them to list a server."""


class LocalCluster:
    """Name servers and ticket servers sharing one SQLite file in `data`; every server registers with every
    name server. Given `tls` (certificate, key and CA files), every hop is TLS. Given `registration_key` (a key
    file), the name servers apply only registrations signed with it and the servers sign theirs; without one the
    name servers run with --insecure-open-registration (the tour, and tests of the open protocol)."""

    def __init__(self, data: Path, *, servers: int = 2, name_servers: int = 1, ns_port: int = 0, port_base: int = 0,
                 server_args: Sequence[str] = (), ttl: float | None = None, tls: TLSFiles | None = None, database: str = "",
                 registration_key: Path | None = None) -> None:
        self.data = Path(data).resolve()
        self.data.mkdir(parents=True, exist_ok=True)
        self.db = database or self.data / "tickets.db"
        """The servers' --db: a PostgreSQL URL when given, else tickets.db in `data`."""
        self.server_count = servers
        self.name_server_count = name_servers
        self.server_args = tuple(server_args)
        self.ttl = ttl
        self.tls = tls
        self.registration_key = registration_key
        self.name_servers: list[Child] = []
        self.servers: list[Child] = []
        self.moved: list[str] = []
        """Ports that were busy, as sentences for the user ("the name server uses 40123, 18811 is busy")."""
        taken: set[int] = set()
        self.ns_ports = [self._port(ns_port + i if ns_port else 0, taken, self._ns_name(i)) for i in range(name_servers)]
        self.server_ports = [self._port(port_base + i if port_base else 0, taken, f"ticket server {i + 1}") for i in range(servers)]

    def _port(self, wanted: int, taken: set[int], what: str) -> int:
        port = free_port(wanted, taken)
        if wanted and port != wanted:
            self.moved.append(f"Port {wanted} is busy; the {what} uses port {port} instead.")
        return port

    def _ns_name(self, index: int) -> str:
        return "name server" if self.name_server_count == 1 else f"name server {index + 1}"

    @property
    def ns_port(self) -> int:
        return self.ns_ports[0]

    @property
    def name_server(self) -> Child | None:
        """The first name server (the only one, unless several were asked for)."""
        return next((child for child in self.name_servers if child.port == self.ns_port), None)

    @property
    def name_server_address(self) -> str:
        return f"127.0.0.1:{self.ns_port}"

    @property
    def name_server_addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ns_ports]

    @property
    def cafile(self) -> str | None:
        """What a terminal of this cluster passes as `cafile` (None in plain text)."""
        return self.tls.cafile if self.tls else None

    def start(self, progress: Callable[[str], None] = lambda _: None) -> None:
        """Name servers, then ticket servers one at a time (the first creates the database), then wait until
        every name server lists every one, so the first command finds them all."""
        for index in range(len(self.ns_ports)):
            progress(f"Starting the {self._ns_name(index)}…")
            self.start_name_server(index)
        for number, port in enumerate(self.server_ports, start=1):
            progress(f"Starting ticket server {number} of {self.server_count} on port {port}…")
            self.start_server(port)
        progress("Waiting for the name servers to list every ticket server…")
        self.wait_until_listed(self.server_ports)

    def start_name_server(self, index: int = 0) -> Child:
        """Start (or restart) the name server number `index` (0: the first), on its port; its log keeps growing."""
        port = self.ns_ports[index]
        args = ["name_server.py", "--port", str(port)]
        if self.ttl is not None:
            args += ["--ttl", str(self.ttl)]
        if self.tls is not None:
            args += self.tls.name_server_args()
        args += ["--registration-key-file", str(self.registration_key)] if self.registration_key else ["--insecure-open-registration"]
        log = self.data / ("name-server.log" if index == 0 else f"name-server-{index + 1}.log")
        child = start_child(self._ns_name(index), args, "Name server listening on", log=log, env=self._key_env())
        self.name_servers = [c for c in self.name_servers if c.port != port] + [child]
        self.name_servers.sort(key=lambda c: self.ns_ports.index(c.port))
        return child

    def start_server(self, port: int) -> Child:
        """Start (or restart) the ticket server on `port`, registering with every name server."""
        name_server_args = [arg for address in self.name_server_addresses for arg in ("--name-server", address)]
        tls_args = self.tls.server_args() if self.tls else []
        child = start_child(
            f"ticket server {port}",
            ["server.py", "--port", str(port), "--db", str(self.db), *name_server_args, *tls_args, *self.server_args],
            "Ticket server listening on",
            log=self.data / f"server-{port}.log",
            env=self._key_env(),
        )
        self.servers = [s for s in self.servers if s.port != port] + [child]
        return child

    def _key_env(self) -> dict[str, str]:
        """The key file for every child, in the variable servers and name servers both read (a path: `ps` shows
        where the key is, not what it is). The other variables are emptied, so an inherited key or insecure mode
        never changes what this cluster was asked to be."""
        return {KEY_FILE_ENV: str(self.registration_key) if self.registration_key else "", KEY_ENV: "", INSECURE_VARIABLE: ""}

    def server(self, port: int) -> Child:
        return next(s for s in self.servers if s.port == port)

    def listed(self, address: str | None = None) -> set[int]:
        """Ports of the ticket servers one name server (by default the first) lists right now."""
        discovery = NameServerClient([address or self.name_server_address], timeout=1.0, tls_context=optional_client_context(self.cafile))
        discovery.refresh()
        return {port for _, port in discovery.cached}

    def wait_until_listed(self, ports: Sequence[int], listed: bool = True, timeout: float = READY_SECONDS) -> None:
        """Until every running name server lists (or, with listed=False, no longer lists) each of `ports`."""
        wanted = set(ports)
        deadline = time.monotonic() + timeout
        for child in self.name_servers:
            if not child.alive():
                continue
            while True:
                now = self.listed(child.address)
                if (wanted <= now) if listed else not (wanted & now):
                    break
                if time.monotonic() >= deadline:
                    state = "does not list" if listed else "still lists"
                    raise LaunchError(f"the name server {child.address} {state} ports {sorted(wanted)}")
                time.sleep(POLL_SECONDS)

    def stop(self) -> None:
        """Ticket servers first, so they can unregister while the name servers still listen. A second Ctrl-C
        or SIGTERM must not cut this short and leave orphans behind."""
        in_main = threading.current_thread() is threading.main_thread()
        signals = (signal.SIGINT, signal.SIGTERM) if in_main else ()
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signals}
        try:
            for child in self.servers:
                if child.alive():
                    child.popen.terminate()
            for child in self.servers:
                stop_child(child, signalled=True)
            for child in self.name_servers:
                stop_child(child)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def children(self) -> list[Child]:
        return self.name_servers + self.servers

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
