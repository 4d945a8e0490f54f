"""Several name servers: every ticket server registers with all of them, terminals ask all and merge the answers,
and losing one (kill -9) or having one hang (SIGSTOP) changes nothing a terminal or a server can notice."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ADMIN_TOKEN
from procs import free_port, start

from client_core import NameServerClient, TicketClient, parse_address
from tools.launcher import LocalCluster, stop_child


@pytest.fixture
def two_name_servers(tmp_path: Path) -> Iterator[LocalCluster]:
    """Two name servers and two ticket servers, each server registered with both name servers."""
    cluster = LocalCluster(tmp_path, servers=2, name_servers=2, server_args=("--admin-token", ADMIN_TOKEN))
    with cluster:
        cluster.start()
        try:
            yield cluster
        finally:
            for child in cluster.name_servers:
                if child.alive():
                    child.popen.send_signal(signal.SIGCONT)  # a frozen name server would ignore the SIGTERM that stops it


def listed_by(address: str) -> set[int]:
    return {port for _, port in NameServerClient.query(parse_address(address), 2.0)}


def freeze(cluster: LocalCluster, index: int) -> None:
    cluster.name_servers[index].popen.send_signal(signal.SIGSTOP)


def test_every_server_is_on_every_name_server_and_terminals_merge_the_answers(two_name_servers: LocalCluster) -> None:
    """Servers started with both name servers are listed by both; a server registered with the second name server
    only is still found by a terminal that lists both."""
    for address in two_name_servers.name_server_addresses:
        assert listed_by(address) == set(two_name_servers.server_ports)
    first, second = two_name_servers.name_server_addresses
    port = free_port()
    only_second = start("server-second-only", ["server.py", "--port", str(port), "--db", str(two_name_servers.db),
                                               "--name-server", second, "--admin-token", ADMIN_TOKEN], ready="Ticket server listening on")
    try:
        assert port not in listed_by(first)
        with TicketClient([first, second]) as client:
            assert set(client.known_servers()) == {f"127.0.0.1:{p}" for p in [*two_name_servers.server_ports, port]}
    finally:
        only_second.stop()


def test_kill_9_of_one_name_server_a_fresh_terminal_still_finds_every_server(two_name_servers: LocalCluster) -> None:
    stop_child(two_name_servers.name_servers[0], kill=True)
    with TicketClient(two_name_servers.name_server_addresses, timeout=5) as client:
        assert sorted(client.known_servers()) == sorted(f"127.0.0.1:{p}" for p in two_name_servers.server_ports)
        reservation = client.reserve(2, 1, "Bia", "bia@example.com", sector="Plateia", confirm=True)
        assert reservation.status == "confirmed"
        assert "127.0.0.1:" in client.discovery.last_error  # the dead one is named, the live one answered


def test_a_hung_name_server_delays_neither_a_reserve_nor_a_registration(two_name_servers: LocalCluster) -> None:
    freeze(two_name_servers, 0)
    hung, live = two_name_servers.name_server_addresses
    with TicketClient([hung, live], timeout=4.0) as client:
        client.discovery.refresh_seconds = 0  # ask both name servers before every call: each ask meets the hung one
        for number in range(3):
            began = time.monotonic()
            client.reserve(2, 1, "Caio", f"caio{number}@example.com", sector="Plateia", confirm=True)
            # Waiting on the hung one would cost the whole 1 s name-server timeout (a quarter of the 4 s deadline).
            assert time.monotonic() - began < 0.8, "the hung name server held the call up"
        assert len(client.known_servers()) == 2

    # A server started now (hung name server listed first) registers with the live one before the hung one's try
    # has even timed out, and is listed there by the time it says it is ready.
    port = free_port()
    newcomer = start("newcomer", ["server.py", "--port", str(port), "--db", str(two_name_servers.db), "--admin-token", ADMIN_TOKEN,
                                  "--name-server", hung, "--name-server", live], ready="Ticket server listening on")
    try:
        assert port in listed_by(live)
        registered = next(i for i, line in enumerate(newcomer.lines) if f"with name server {live}" in line)
        unreachable = next(i for i, line in enumerate(newcomer.lines) if f"name server {hung} unreachable" in line)
        assert registered < unreachable
    finally:
        newcomer.kill()  # a clean stop would spend its unregister timeout on the hung name server
