"""Abuse: guessing reservation codes, guessing the admin token, filling a waitlist with bots.

Each is throttled per connection and per remote address (service/throttle.py) and logged in aggregate; an
honest caller elsewhere is not slowed, and the throttled one is told how long to wait. The attackers connect
from 127.0.0.2 where an honest caller must be told apart, since every loopback address reaches the server."""

from __future__ import annotations

import re
import secrets
import socket
import time
from collections.abc import Iterator

import pytest
import rpyc
from conftest import ADMIN_TOKEN, Cluster
from procs import wait_until
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_stream

from client_core import TicketClient

LOCAL = "127.0.0.1"
OTHER = "127.0.0.2"
EMAIL = "ana@example.com"


def connect_from(source: str, port: int) -> rpyc.Connection:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect((LOCAL, port))
    return connect_stream(SocketStream(sock), config={"allow_pickle": False, "sync_request_timeout": 10})


def remote_name(exc: BaseException) -> str:
    return type(exc).__name__


@pytest.fixture
def office(cluster_factory) -> Iterator[tuple[Cluster, int, str, int]]:
    """One server, a held reservation (its code) and a sold-out event (for waitlists)."""
    cluster = cluster_factory(servers=1)
    (port,) = cluster.servers
    with TicketClient(servers=[f"{LOCAL}:{port}"]) as client:
        event = client.create_event(ADMIN_TOKEN, "Abuso", "Sala", "2027-01-01T20:00:00", [("Geral", 1000, 1)])
        code = client.reserve(event.id, 1, "Ana", EMAIL, confirm=True).code
    yield cluster, port, code, event.id


def test_guessing_reservation_codes_is_throttled_told_to_wait_and_logged_once(office) -> None:
    cluster, port, code, _ = office
    guesser = connect_from(OTHER, port)
    answered = throttled = 0
    began = time.monotonic()
    try:
        for _ in range(300):
            guess = f"{secrets.token_hex(2).upper()[:3]}-{secrets.token_hex(2).upper()[:3]}"
            try:
                guesser.root.get_reservation(guess, EMAIL)
            except Exception as exc:  # noqa: BLE001 - a remote exception's class is made up on arrival
                if "too many failed lookups" in str(exc):
                    assert remote_name(exc) == "errors.InvalidRequest"
                    assert re.search(r"from 127\.0\.0\.2; wait \d+\.\d s and try again", str(exc))
                    throttled += 1
                else:
                    assert remote_name(exc) == "errors.NotFound"
                    answered += 1
        took = time.monotonic() - began
        with pytest.raises(Exception, match="too many failed lookups"):
            guesser.root.get_reservation(code, EMAIL)  # even the right code, while the guesser waits
        with TicketClient(servers=[f"{LOCAL}:{port}"]) as honest:
            began_honest = time.monotonic()
            assert honest.get_reservation(code, EMAIL).code == code  # another address is not slowed
            honest_ms = (time.monotonic() - began_honest) * 1000
    finally:
        guesser.close()
    print(f"\n300 guesses in {took:.2f} s: {answered} looked up, {throttled} throttled; an honest lookup meanwhile {honest_ms:.0f} ms")
    assert answered <= 10 + took * 1.0 + 1, f"{answered} guesses were looked up in {took:.1f} s"
    log = cluster.servers[port].output()
    assert log.count("throttled failed lookups (wrong code, entry or email) from 127.0.0.2") == 1


def test_a_throttled_caller_that_waits_as_told_is_served(office) -> None:
    _, port, code, _ = office
    connection = connect_from(OTHER, port)
    try:
        for _ in range(11):
            try:
                connection.root.get_reservation("AAA-AAA", EMAIL)
            except Exception as exc:  # noqa: BLE001 - a remote exception's class is made up on arrival
                last = str(exc)
        wait = float(re.search(r"wait (\d+\.\d) s", last).group(1))
        time.sleep(wait)  # the wait the server asked for, which is what this test is about
        assert dict(connection.root.get_reservation(code, EMAIL))["code"] == code
    finally:
        connection.close()


def test_wrong_admin_tokens_are_throttled_and_summed_up_in_one_line_per_interval(office) -> None:
    cluster, port, _, _ = office
    connection = connect_from(OTHER, port)
    refused = throttled = 0
    began = time.monotonic()
    try:
        for _ in range(100):
            try:
                connection.root.admin_report(f"guess-{secrets.token_hex(8)}")
            except Exception as exc:  # noqa: BLE001 - a remote exception's class is made up on arrival
                assert remote_name(exc) == "errors.Forbidden"
                throttled += "too many wrong admin tokens" in str(exc)
                refused += "admin token missing or wrong" in str(exc)
        took = time.monotonic() - began
        with pytest.raises(Exception, match="too many wrong admin tokens"):
            connection.root.admin_report(ADMIN_TOKEN)  # the right token is not even compared while it waits
    finally:
        connection.close()
    with TicketClient(servers=[f"{LOCAL}:{port}"]) as honest:
        assert honest.report(ADMIN_TOKEN), "the operator at another address is not held up"
    assert refused + throttled == 100 and refused <= 5 + took * 0.5 + 1
    server = cluster.servers[port]
    assert server.output().count("forbidden: wrong admin token from 127.0.0.2") == 1
    summary = server.wait_for_line("forbidden: wrong admin token from 127.0.0.2:", 15)
    print(f"\n100 wrong tokens in {took:.2f} s: {refused} compared, {throttled} throttled; log: {summary.split(' ', 4)[-1]}")
    assert re.search(rf"{refused - 1} more in the last 1\d s", summary), summary


def test_bots_cannot_fill_a_waitlist_and_an_honest_customer_still_joins(office) -> None:
    cluster, port, _, event_id = office
    bots = [connect_from(OTHER, port) for _ in range(10)]
    joined = 0
    began = time.monotonic()
    try:
        for number in range(200):
            try:
                bots[number % len(bots)].root.join_waitlist(event_id, 1, "Bot", f"bot{number}@example.com", None, None)
                joined += 1
            except Exception as exc:  # noqa: BLE001 - a remote exception's class is made up on arrival
                assert "too many waitlist joins from 127.0.0.2" in str(exc), exc
        took = time.monotonic() - began
    finally:
        for bot in bots:
            bot.close()
    with TicketClient(servers=[f"{LOCAL}:{port}"]) as honest:
        entry = honest.join_waitlist(event_id, 1, "Bia", "bia@example.com")
    print(f"\n200 bot joins from 10 connections in {took:.2f} s: {joined} joined; the honest customer is number {entry.position}")
    assert joined <= 20 + took * 0.5 + 1
    assert entry.status == "waiting"
    wait_until(lambda: "throttled waitlist joins from 127.0.0.2" in cluster.servers[port].output(), what="the throttle logged")
