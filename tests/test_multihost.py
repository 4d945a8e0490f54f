"""The box office across hosts: a database host, a name-server host, two ticket-server hosts and two terminal
hosts, each a Linux network namespace on one bridge, every part a real process started inside its host.

One ticket server is cut off the network while terminals sell. Their breakers open, they fail over to the
other server, and nothing acknowledged is lost or sold twice (audited in the database). The link is healed
and the server comes back through the name server. Needs root and iproute2; skipped with the reason otherwise.
Addresses are our own (10.213.77.0/24) and live only in these namespaces and on the test's own leg of the bridge.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field

import pytest
from conftest import ADMIN_TOKEN, KEYED, postgres_missing
from procs import Process, start, wait_until

from client_core import NameServerClient, TicketClient
from database import Store
from tools.pgcluster import PgCluster, PostgresUnavailable

SUBNET = "10.213.77"
HOSTS = {"db": 2, "ns": 3, "s1": 11, "s2": 12, "c1": 21, "c2": 22}
NAME_SERVER = f"{SUBNET}.3:18811"
SERVERS = {"s1": f"{SUBNET}.11:18861", "s2": f"{SUBNET}.12:18861"}


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class Network:
    """Namespaces `<prefix>-<host>`, each with one veth into a bridge in the namespace `<prefix>-sw`, plus a leg
    for the test itself (SUBNET.1) so it can audit the database. `cut`/`heal` pull and replug a host's cable."""

    prefix: str = field(default_factory=lambda: f"bh{os.getpid() % 100000}")
    namespaces: list[str] = field(default_factory=list)
    root_leg: str = ""

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def cable(self, host: str) -> str:
        """The switch-side end of a host's veth (at most 15 characters, as Linux wants)."""
        return f"{self.prefix}{list(HOSTS).index(host)}s" if host in HOSTS else f"{self.prefix}ts"

    def build(self) -> None:
        switch = self.namespace("sw")
        ip("netns", "add", switch)
        self.namespaces.append(switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        for host, last in HOSTS.items():
            name = self.namespace(host)
            ip("netns", "add", name)
            self.namespaces.append(name)
            inside = f"{self.prefix}{list(HOSTS).index(host)}h"
            ip("link", "add", inside, "type", "veth", "peer", "name", self.cable(host))
            ip("link", "set", inside, "netns", name)
            ip("-n", name, "addr", "add", f"{SUBNET}.{last}/24", "dev", inside)
            ip("-n", name, "link", "set", inside, "up")
            ip("-n", name, "link", "set", "lo", "up")
            self._plug(self.cable(host))
        self.root_leg = f"{self.prefix}th"
        ip("link", "add", self.root_leg, "type", "veth", "peer", "name", self.cable("test"))
        ip("addr", "add", f"{SUBNET}.1/24", "dev", self.root_leg)
        ip("link", "set", self.root_leg, "up")
        self._plug(self.cable("test"))

    def _plug(self, cable: str) -> None:
        switch = self.namespace("sw")
        ip("link", "set", cable, "netns", switch)
        ip("-n", switch, "link", "set", cable, "master", "br0", "up")

    def exec_prefix(self, host: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.namespace(host))

    def cut(self, host: str) -> None:
        ip("-n", self.namespace("sw"), "link", "set", self.cable(host), "down")

    def heal(self, host: str) -> None:
        ip("-n", self.namespace("sw"), "link", "set", self.cable(host), "up")

    def destroy(self) -> None:
        """Kill what still runs inside our namespaces (only processes this test started live there), then delete them."""
        for name in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.root_leg:
            subprocess.run(["ip", "link", "del", self.root_leg], capture_output=True, check=False)
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def multihost_unavailable() -> str | None:
    """Why this machine cannot run the test, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2 (the ip command)"
    probe = f"bhprobe{os.getpid() % 100000}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"cannot create a network namespace: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


@contextmanager
def network() -> Iterator[Network]:
    reason = multihost_unavailable()
    if reason:
        pytest.skip(f"multi-host test: {reason}")
    net = Network()
    try:
        net.build()
        yield net
    finally:
        net.destroy()


def start_on(net: Network, host: str, name: str, args: list[str], ready: str) -> Process:
    """`python <args>` from the project root, as a process of `host`; returns once it printed `ready`."""
    return start(name, args, ready, timeout=20, prefix=net.exec_prefix(host), env=KEYED)


def events(process: Process) -> list[dict]:
    return [json.loads(line) for line in list(process.lines) if line.startswith("{")]


def listed(address: str = NAME_SERVER) -> set[str]:
    discovery = NameServerClient([address], timeout=1.0)
    discovery.refresh()
    return {f"{host}:{port}" for host, port in discovery.cached}


def test_a_partitioned_server_costs_nothing_acknowledged_and_returns_through_the_name_server() -> None:
    with network() as net:
        try:
            database = PgCluster(host=f"{SUBNET}.2", port=5432, prefix=net.exec_prefix("db"),
                                 allow_from=f"{SUBNET}.0/24", durable=False)
        except PostgresUnavailable as exc:
            postgres_missing(str(exc))
        processes: list[Process] = []
        try:
            database.start()
            url = database.create_database("bilheteria")
            with closing(Store(url, seed_demo=False)) as store:
                event_id = store.create_event("Festival em Rede", "Hosts", "2027-06-01T20:00:00-03:00", (("Geral", 5000, 1_000_000),)).id

            processes.append(start_on(net, "ns", "name-server", ["name_server.py", "--host", f"{SUBNET}.3", "--port", "18811",
                                                                 "--ttl", "3"], "Name server listening on"))
            for host, address in SERVERS.items():
                processes.append(start_on(net, host, f"server-{host}", [
                    "server.py", "--host", address.split(":")[0], "--port", "18861", "--db", url, "--name-server", NAME_SERVER,
                    "--admin-token", ADMIN_TOKEN, "--no-demo"], "Ticket server listening on"))
            wait_until(lambda: listed() == set(SERVERS.values()), timeout=10, what="both servers listed")
            terminals = [start_on(net, host, f"terminals-{host}", ["tests/multihost_terminal.py", "--name-server", NAME_SERVER,
                                                                   "--event", str(event_id), "--tag", host], '"ready"')
                         for host in ("c1", "c2")]
            processes += terminals

            def sales() -> list[dict]:
                return [event for terminal in terminals for event in events(terminal) if "sale" in event]

            wait_until(lambda: any(sale["server"] == SERVERS["s1"] for sale in sales()), timeout=10, what="sales through s1")

            net.cut("s1")
            cut_at = len(sales())
            wait_until(
                lambda: any(e.get("breaker") == SERVERS["s1"] and e["new"] == "open" for t in terminals for e in events(t)),
                timeout=10, what="a terminal's breaker for the cut-off server open",
            )
            wait_until(lambda: sum(sale["server"] == SERVERS["s2"] for sale in sales()[cut_at:]) >= 20, timeout=15,
                       what="20 sales through s2 after the cut")
            wait_until(lambda: listed() == {SERVERS["s2"]}, timeout=10, what="the name server dropping the cut-off server")

            net.heal("s1")
            wait_until(lambda: listed() == set(SERVERS.values()), timeout=10, what="the healed server listed again")
            with TicketClient(name_servers=[], servers=[SERVERS["s1"]], timeout=10.0) as fresh:
                assert fresh.get_event(event_id).name == "Festival em Rede"
                assert fresh.current_server == SERVERS["s1"]

            for terminal in terminals:
                terminal.signal(signal.SIGTERM)
            for terminal in terminals:
                terminal.wait_for_line('"done"', timeout=20)

            acknowledged = sales()
            given_up = [event for terminal in terminals for event in events(terminal) if "unavailable" in event]
            assert len(acknowledged) >= 40
            with closing(Store(url, seed_demo=False)) as store:
                assert store.check_invariants() == []
                stored = {r.code: r for r in store.reservations(event_id)}
                for sale in acknowledged:
                    reservation = stored.get(sale["sale"])
                    assert reservation is not None, f"acknowledged sale {sale} is missing"
                    assert (reservation.status, reservation.quantity) == ("confirmed", sale["quantity"])
                with store.engine.reader() as connection:
                    count, distinct, tickets = connection.execute(
                        "SELECT COUNT(*), COUNT(DISTINCT request_id), COALESCE(SUM(quantity), 0) FROM reservations WHERE event_id = ?",
                        (event_id,),
                    ).fetchone()
                assert count == distinct, "a request id was applied twice"
                assert len({sale["request_id"] for sale in acknowledged}) == len(acknowledged)
                assert count <= len(acknowledged) + len(given_up), "a sale nobody asked for"
                assert store.get_event(event_id).sector("Geral").available == 1_000_000 - tickets
                sells = [entry.code for entry in store.ledger(limit=100_000) if entry.action == "sell"]
                assert len(sells) == len(set(sells)) == count, "a code sold twice in the ledger"
        finally:
            for process in processes:
                process.stop(timeout=5)
            database.destroy()
