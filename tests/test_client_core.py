"""The client's failure handling: deadlines, retry bounds, breakers and failover, against real sockets."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import ADMIN_TOKEN
from procs import free_port

from client_core import RetryPolicy, TicketClient, Unavailable
from errors import SoldOut


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers: a hung (SIGSTOPped) server as the client sees it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for sock in accepted:
        sock.close()
    listener.close()


def test_full_jitter_stays_within_its_cap() -> None:
    policy = RetryPolicy(max_rounds=5, base_delay=0.1, max_delay=0.5)
    rng = random.Random(7)
    for round_number in range(10):
        cap = min(0.5, 0.1 * 2**round_number)
        delays = [policy.delay(round_number, rng) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8, "the whole range is used, not just its bottom"
    assert not policy.gives_up(4, remaining=1.0)
    assert policy.gives_up(5, remaining=1.0)
    assert policy.gives_up(1, remaining=0.0)


def test_nothing_listening_gives_unavailable_within_the_deadline() -> None:
    port = free_port()
    client = TicketClient(servers=[f"127.0.0.1:{port}"], timeout=1.0)
    started = time.monotonic()
    with pytest.raises(Unavailable) as raised:
        client.list_events()
    assert time.monotonic() - started < 2.0
    message = str(raised.value)
    assert message.startswith("No ticket server answered within 1.0 s (tried 127.0.0.1:")
    assert str(port) in message
    assert client.breaker_states() == {f"127.0.0.1:{port}": "open"}


def test_a_server_that_never_answers_costs_one_attempt_timeout(silent_server: str) -> None:
    client = TicketClient(servers=[silent_server], timeout=1.5, attempt_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"no answer in time|cannot connect|is open"):
        client.ping()
    assert time.monotonic() - started < 2.5


def test_no_server_known_says_why() -> None:
    client = TicketClient(name_servers=[f"127.0.0.1:{free_port()}"], timeout=0.5)
    with pytest.raises(Unavailable, match=r"no server known: name servers unreachable: 127\.0\.0\.1:\d+"):
        client.ping()


def test_fails_over_past_dead_and_hung_servers(cluster, silent_server: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    live = cluster.server_addresses()[0]
    client = TicketClient(servers=[dead, silent_server, live], timeout=5.0, attempt_timeout=0.5)
    for _ in range(5):
        assert client.ping() == "pong"
    assert client.current_server == live
    states = client.breaker_states()
    assert states[live] == "closed"


def test_a_refusal_is_a_healthy_answer_for_the_breaker(cluster) -> None:
    address = cluster.server_addresses()[0]
    with TicketClient(servers=[address]) as client:
        event = client.create_event(ADMIN_TOKEN, "Tiny", "Sala", "2027-01-01T20:00:00", [("Geral", 1000, 1)])
        client.reserve(event.id, 1, "Ana", "ana@example.com", confirm=True)
        for _ in range(5):
            with pytest.raises(SoldOut):
                client.reserve(event.id, 1, "Ana", "ana@example.com")
        assert client.breaker_states() == {address: "closed"}


def test_discovery_cache_survives_the_name_server(cluster) -> None:
    with TicketClient(name_servers=[cluster.name_server_address]) as client:
        assert sorted(client.known_servers()) == sorted(cluster.server_addresses())
        cluster.name_server.kill()
        client.discovery.refresh()
        assert "name servers unreachable" in client.discovery.last_error
        assert sorted(client.known_servers()) == sorted(cluster.server_addresses())
        assert client.list_events()
