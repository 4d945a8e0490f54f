"""A whole box office on one machine: name servers and ticket servers as child processes, in plain text or TLS.

`cli.py demo` and `cli.py tour` start their systems through this; tests start theirs the same way by
hand. Each child writes its output to a log file, so nothing is lost however the parent ends, and
readiness is read from that log (the "listening on" line), never guessed with a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from client_core import NameServerClient, parse_address
from net.tls import TLSFiles, optional_client_context

HERE = Path(__file__).resolve().parent.parent
READY_SECONDS = 20.0
STOP_GRACE_SECONDS = 10.0
POLL_SECONDS = 0.05


class LaunchError(Exception):
    """A process did not come up; the message says which and where its log is."""


@dataclass
class Child:
    """A process the launcher started; its output goes to `log`."""

    name: str
    popen: subprocess.Popen
    log: Path
    address: str = ""

    @property
    def port(self) -> int:
        return parse_address(self.address)[1]

    def alive(self) -> bool:
        return self.popen.poll() is None


def port_is_free(port: int) -> bool:
    """Bind the way our servers do (create_server sets SO_REUSEADDR), so lingering TIME_WAIT is not 'busy'."""
    try:
        with socket.create_server(("127.0.0.1", port)):
            return True
    except OSError:
        return False


def choose_port(wanted: int, taken: set[int]) -> int:
    """`wanted` if nobody listens there (0 means any); otherwise a port the kernel hands out."""
    port = wanted
    while port == 0 or port in taken or not port_is_free(port):
        with socket.create_server(("127.0.0.1", 0)) as probe:
            port = probe.getsockname()[1]
    taken.add(port)
    return port


def start_child(name: str, args: Sequence[str], log: Path, ready: str) -> Child:
    """Start `python <args>` beside this file and wait (polling its log, with a deadline) for its readiness line."""
    with log.open("ab") as handle:
        offset = handle.tell()
        popen = subprocess.Popen([sys.executable, *args], cwd=HERE, stdin=subprocess.DEVNULL, stdout=handle,
                                 stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    child = Child(name, popen, log)
    deadline = time.monotonic() + READY_SECONDS
    while True:
        with log.open("rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode(errors="replace").splitlines()
        line = next((line for line in lines if ready in line), None)
        if line is not None:
            child.address = line.rsplit(maxsplit=1)[-1]
            return child
        if popen.poll() is not None:
            raise LaunchError(f"the {name} exited (code {popen.returncode}) before it was ready; see {log}")
        if time.monotonic() >= deadline:
            popen.kill()
            raise LaunchError(f"the {name} was not ready within {READY_SECONDS:.0f} s; see {log}")
        time.sleep(POLL_SECONDS)


def stop_child(child: Child, kill: bool = False, grace: float = STOP_GRACE_SECONDS, signalled: bool = False) -> None:
    """SIGTERM (or, with kill, SIGKILL at once; or nothing when `signalled` says it was sent already), then SIGKILL
    whatever is still running after the grace period. One SIGTERM only: a second one landing inside the first's
    handler can deadlock a child whose handler sets a threading.Event."""
    if child.alive() and not signalled:
        child.popen.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        child.popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        child.popen.kill()
        child.popen.wait()


class LocalCluster:
    """Name servers and ticket servers sharing one SQLite file in `data`; every server registers with every
    name server. Given `tls` (certificate, key and CA files), every hop is TLS."""

    def __init__(
        self,
        data: Path,
        *,
        servers: int = 2,
        name_servers: int = 1,
        ns_port: int = 0,
        port_base: int = 0,
        server_args: Sequence[str] = (),
        ttl: float | None = None,
        tls: TLSFiles | None = None,
        database: str = "",
    ) -> None:
        self.data = Path(data).resolve()
        self.data.mkdir(parents=True, exist_ok=True)
        self.db = database or self.data / "tickets.db"
        """The servers' --db: a PostgreSQL URL when given, else tickets.db in `data`."""
        self.server_count = servers
        self.name_server_count = name_servers
        self.server_args = tuple(server_args)
        self.ttl = ttl
        self.tls = tls
        self.name_servers: list[Child] = []
        self.servers: list[Child] = []
        self.moved: list[str] = []
        """Ports that were busy, as sentences for the user ("the name server uses 40123, 18811 is busy")."""
        taken: set[int] = set()
        self.ns_ports = [self._port(ns_port + i if ns_port else 0, taken, self._ns_name(i)) for i in range(name_servers)]
        self.server_ports = [self._port(port_base + i if port_base else 0, taken, f"ticket server {i + 1}") for i in range(servers)]

    def _port(self, wanted: int, taken: set[int], what: str) -> int:
        port = choose_port(wanted, taken)
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
        log = self.data / ("name-server.log" if index == 0 else f"name-server-{index + 1}.log")
        child = start_child(self._ns_name(index), args, log, "Name server listening on")
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
            self.data / f"server-{port}.log",
            "Ticket server listening on",
        )
        self.servers = [s for s in self.servers if s.port != port] + [child]
        return child

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
