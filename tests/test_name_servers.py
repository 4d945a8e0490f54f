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
from launcher import LocalCluster, stop_child


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
    timeout = 3.0
    with TicketClient(two_name_servers.name_server_addresses, timeout=timeout) as client:
        client.discovery.refresh_seconds = 0  # ask both name servers before every call: each ask meets the hung one
        for number in range(3):
            began = time.monotonic()
            client.reserve(2, 1, "Caio", f"caio{number}@example.com", sector="Plateia", confirm=True)
            assert time.monotonic() - began < 0.5, "the hung name server held the call up"
        assert len(client.known_servers()) == 2

    # A server started now registers with the live name server at once; the hung one costs it at most its 1 s try.
    port = free_port()
    began = time.monotonic()
    newcomer = start("newcomer", ["server.py", "--port", str(port), "--db", str(two_name_servers.db), "--admin-token", ADMIN_TOKEN,
                                  *(arg for address in two_name_servers.name_server_addresses for arg in ("--name-server", address))],
                     ready="Ticket server listening on")
    try:
        assert time.monotonic() - began < timeout
        assert port in listed_by(two_name_servers.name_server_addresses[1])
        assert "unreachable" in newcomer.output()
    finally:
        newcomer.kill()  # a clean stop would spend its unregister timeout on the hung name server
