"""A whole box office on one machine: a name server and ticket servers as child processes.

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

HERE = Path(__file__).resolve().parent
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


def stop_child(child: Child, kill: bool = False, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM (or, with kill, SIGKILL at once), then SIGKILL whatever is still running after the grace period."""
    if child.alive():
        child.popen.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        child.popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        child.popen.kill()
        child.popen.wait()


class LocalCluster:
    """A name server and ticket servers sharing one SQLite file in `data`."""

    def __init__(
        self,
        data: Path,
        *,
        servers: int = 2,
        ns_port: int = 0,
        port_base: int = 0,
        server_args: Sequence[str] = (),
        ttl: float | None = None,
        database: str = "",
    ) -> None:
        self.data = Path(data).resolve()
        self.data.mkdir(parents=True, exist_ok=True)
        self.db = database or self.data / "tickets.db"
        """The servers' --db: a PostgreSQL URL when given, else tickets.db in `data`."""
        self.server_count = servers
        self.server_args = tuple(server_args)
        self.ttl = ttl
        self.name_server: Child | None = None
        self.servers: list[Child] = []
        self.moved: list[str] = []
        """Ports that were busy, as sentences for the user ("the name server uses 40123, 18811 is busy")."""
        taken: set[int] = set()
        self.ns_port = self._port(ns_port, taken, "name server")
        self.server_ports = [self._port(port_base + i if port_base else 0, taken, f"ticket server {i + 1}") for i in range(servers)]

    def _port(self, wanted: int, taken: set[int], what: str) -> int:
        port = choose_port(wanted, taken)
        if wanted and port != wanted:
            self.moved.append(f"Port {wanted} is busy; the {what} uses port {port} instead.")
        return port

    @property
    def name_server_address(self) -> str:
        return f"127.0.0.1:{self.ns_port}"

    def start(self, progress: Callable[[str], None] = lambda _: None) -> None:
        """Name server, then ticket servers one at a time (the first creates the database), then wait until
        the name server lists every one, so the first command finds them all."""
        progress("Starting the name server…")
        self.start_name_server()
        for number, port in enumerate(self.server_ports, start=1):
            progress(f"Starting ticket server {number} of {self.server_count} on port {port}…")
            self.start_server(port)
        progress("Waiting for the name server to list every ticket server…")
        self.wait_until_listed(self.server_ports)

    def start_name_server(self) -> Child:
        args = ["name_server.py", "--port", str(self.ns_port)]
        if self.ttl is not None:
            args += ["--ttl", str(self.ttl)]
        self.name_server = start_child("name server", args, self.data / "name-server.log", "Name server listening on")
        return self.name_server

    def start_server(self, port: int) -> Child:
        """Start (or restart) the ticket server on `port`."""
        child = start_child(
            f"ticket server {port}",
            ["server.py", "--port", str(port), "--db", str(self.db), "--name-server", self.name_server_address, *self.server_args],
            self.data / f"server-{port}.log",
            "Ticket server listening on",
        )
        self.servers = [s for s in self.servers if s.port != port] + [child]
        return child

    def server(self, port: int) -> Child:
        return next(s for s in self.servers if s.port == port)

    def listed(self) -> set[int]:
        """Ports of the ticket servers the name server lists right now."""
        discovery = NameServerClient([self.name_server_address], timeout=1.0)
        discovery.refresh()
        return {port for _, port in discovery.cached}

    def wait_until_listed(self, ports: Sequence[int], listed: bool = True, timeout: float = READY_SECONDS) -> None:
        """Until the name server lists (or, with listed=False, no longer lists) each of `ports`."""
        wanted = set(ports)
        deadline = time.monotonic() + timeout
        while True:
            now = self.listed()
            if (wanted <= now) if listed else not (wanted & now):
                return
            if time.monotonic() >= deadline:
                state = "does not list" if listed else "still lists"
                raise LaunchError(f"the name server {self.name_server_address} {state} ports {sorted(wanted)}")
            time.sleep(POLL_SECONDS)

    def stop(self) -> None:
        """Ticket servers first, so they can unregister while the name server still listens. A second Ctrl-C
        or SIGTERM must not cut this short and leave orphans behind."""
        in_main = threading.current_thread() is threading.main_thread()
        signals = (signal.SIGINT, signal.SIGTERM) if in_main else ()
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signals}
        try:
            for child in self.servers:
                if child.alive():
                    child.popen.terminate()
            for child in self.servers:
                stop_child(child)
            if self.name_server is not None:
                stop_child(self.name_server)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def children(self) -> list[Child]:
        return ([self.name_server] if self.name_server else []) + self.servers

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
