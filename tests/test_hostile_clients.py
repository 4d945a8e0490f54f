"""Hostile clients at the connection level: idle, silent, garbage, half-sent, oversized and stalling ones.

Argument-level bad input and attribute walking live in test_hostile_input.py. Here the question is the one a
box office on an open network has to answer: can one misbehaving client stall, crash or fool the server (or
the name server) for everybody else? Each test attacks a real server and checks that an honest terminal keeps
selling, promptly, while the attack is under way.
"""

from __future__ import annotations

import re
import secrets
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import rpyc
from conftest import ADMIN_TOKEN, Cluster
from procs import Process, wait_until
from rpyc.core import brine, consts
from rpyc.core.netref import BaseNetref
from rpyc.utils.registry import TCPRegistryClient

from client_core import TicketClient
from errors import Forbidden, InvalidRequest, Unavailable

LOCAL = "127.0.0.1"
PROMPT = 1.0
"""An honest call under attack must still answer within this (they take milliseconds when all is well)."""
RAW_CONFIG = {"allow_pickle": False, "allow_public_attrs": False, "sync_request_timeout": 10}
FRAME_HEADER = struct.Struct("!LB")
"""RPyC's frame header: payload length, compressed flag."""


@dataclass
class Box:
    cluster: Cluster
    port: int
    client: TicketClient
    event_id: int

    @property
    def server(self) -> Process:
        return self.cluster.servers[self.port]

    def sell(self, client: TicketClient | None = None) -> float:
        """One honest sale; returns how long it took."""
        began = time.monotonic()
        reservation = (client or self.client).reserve(self.event_id, 1, "Ana", "ana@example.com", sector="Pista", confirm=True)
        assert reservation.status == "confirmed"
        return time.monotonic() - began


@pytest.fixture
def box(cluster_factory) -> Iterator[Box]:
    """One replica (so every honest call lands on the server under attack) and an event that never sells out."""
    cluster = cluster_factory(servers=1)
    port = next(iter(cluster.servers))
    client = TicketClient(name_servers=[cluster.name_server_address], timeout=5.0, attempt_timeout=2.0)
    event = client.create_event(ADMIN_TOKEN, "Hostil", "Galpão", "2027-05-01T20:00:00-03:00", [("Pista", 5000, 100_000)])
    yield Box(cluster, port, client, event.id)
    client.close()


def connect_raw(port: int) -> socket.socket:
    return socket.create_connection((LOCAL, port), timeout=5)


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1])


# -- (a) idle connections ----------------------------------------------------------------------------------


def test_300_idle_connections_do_not_stop_sales(box: Box) -> None:
    raw: list[socket.socket] = []
    idle: list[rpyc.Connection] = []

    def open_idle() -> None:
        for _ in range(150):
            raw.append(connect_raw(box.port))  # connects and sends nothing
            idle.append(rpyc.connect(LOCAL, box.port, config=RAW_CONFIG))  # a real RPyC client that never calls

    opener = threading.Thread(target=open_idle, name="idle-opener")
    opener.start()
    latencies = []
    try:
        while opener.is_alive():  # sell while the idle connections pile up
            latencies.append(box.sell())
        opener.join()
        wait_until(lambda: box.client.status().connections >= 301, what="the server holding all 300 idle connections")
        latencies += [box.sell() for _ in range(20)]
        fresh = TicketClient(servers=[f"{LOCAL}:{box.port}"], timeout=5.0)
        with fresh:
            latencies.append(box.sell(fresh))  # a newcomer gets in too, not only a terminal already connected
    finally:
        for connection in idle:
            connection.close()
        for sock in raw:
            sock.close()
    assert len(raw) == len(idle) == 150
    assert max(latencies) < PROMPT, f"an honest sale took {max(latencies):.2f} s among idle connections"
    wait_until(lambda: box.client.status().connections == 1, what="the server letting go of the closed idle connections")


# -- (b) silent, garbage and half-sent bytes -------------------------------------------------------------------


def test_silent_garbage_and_half_sent_clients_do_not_stall_the_server_or_the_name_server(box: Box) -> None:
    at_server = {
        "silent": b"",
        "http garbage": b"GET / HTTP/1.1\r\nHost: bilheteria\r\n\r\n" + bytes(range(256)),
        "half a frame": FRAME_HEADER.pack(200, 0) + b"\x01" * 20,
        "a 4 GB frame header": FRAME_HEADER.pack(0xFFFFFFFF, 0),
        "a malformed frame": FRAME_HEADER.pack(5, 0) + b"\xfe\xfd\xfc\xfb\xfa\n",
        "a frame that is not zlib": FRAME_HEADER.pack(5, 1) + b"\xfe\xfd\xfc\xfb\xfa\n",
    }
    query = brine.dump(("RPYC", "QUERY", ("TICKETS",)))
    at_name_server = {"silent": b"", "garbage": b"\x00\xff" * 64, "half a request": query[: len(query) // 2]}
    hostile = []
    for payload in at_server.values():
        for _ in range(5):
            hostile.append(connect_raw(box.port))
            hostile[-1].sendall(payload)
    for payload in at_name_server.values():
        for _ in range(5):
            hostile.append(connect_raw(box.cluster.name_server_port))
            hostile[-1].sendall(payload)

    registry = TCPRegistryClient(LOCAL, box.cluster.name_server_port, timeout=2.0)
    discovered: list[tuple[float, tuple]] = []

    def discover() -> None:
        for _ in range(20):
            began = time.monotonic()
            answer = registry.discover("TICKETS")
            discovered.append((time.monotonic() - began, answer))

    try:
        discoverer = threading.Thread(target=discover, name="stock-discover")
        discoverer.start()
        with TicketClient(name_servers=[box.cluster.name_server_address], timeout=5.0) as newcomer:
            latencies = [box.sell(newcomer) for _ in range(20)]
        discoverer.join(timeout=60)
        assert not discoverer.is_alive()
    finally:
        for sock in hostile:
            sock.close()
    assert max(latencies) < PROMPT, f"an honest sale took {max(latencies):.2f} s among hostile connections"
    assert [answer for _, answer in discovered] == [((LOCAL, box.port),)] * 20
    assert max(took for took, _ in discovered) < PROMPT
    assert box.server.alive() and box.cluster.name_server.alive()
    assert box.client.ping() == "pong"


def test_a_malformed_frame_costs_the_log_one_line_not_a_traceback(box: Box) -> None:
    """Found by this suite: each 11-byte bad frame used to print two full tracebacks into the server log."""
    with connect_raw(box.port) as sock:
        sock.sendall(FRAME_HEADER.pack(5, 0) + b"\xfe\xfd\xfc\xfb\xfa\n")
        while sock.recv(4096):  # the server hangs up on the bad frame
            pass
    assert box.client.ping() == "pong"
    with pytest.raises(TimeoutError):  # absence can only be waited for with a bound
        wait_until(lambda: "Traceback" in box.server.output(), timeout=2.0, what="a traceback in the server log")


# -- (c) an argument that would stall the server if touched --------------------------------------------------


class Tarpit:
    """A client-side object whose every conversion blocks: a server that touched it would hang on a callback."""

    def __init__(self) -> None:
        self.touched: list[str] = []
        self.release = threading.Event()

    def _stall(self, what: str) -> None:
        self.touched.append(what)
        self.release.wait(60)

    def __int__(self) -> int:
        self._stall("__int__")
        return 1

    def __index__(self) -> int:
        self._stall("__index__")
        return 1

    def __str__(self) -> str:
        self._stall("__str__")
        return "K7Q-2M9"

    def __len__(self) -> int:
        self._stall("__len__")
        return 1

    def __bool__(self) -> bool:
        self._stall("__bool__")
        return True

    def __iter__(self) -> Iterator[str]:
        self._stall("__iter__")
        return iter(())

    def __call__(self, *args: object) -> str:
        self._stall("__call__")
        return "x"


def test_an_argument_that_blocks_when_touched_is_refused_untouched(box: Box) -> None:
    tarpit = Tarpit()
    hostile = TicketClient(servers=[f"{LOCAL}:{box.port}"], timeout=20.0, attempt_timeout=10.0)
    refusals: list[tuple[str, float, BaseException]] = []

    def attack() -> None:
        calls = {
            "reserve(quantity=tarpit)": lambda: hostile.reserve(box.event_id, tarpit, "Eve", "eve@example.com", sector="Pista"),
            "reserve(customer=tarpit)": lambda: hostile.reserve(box.event_id, 1, tarpit, "eve@example.com", sector="Pista"),
            "get_reservation(code=tarpit)": lambda: hostile.get_reservation(tarpit, "eve@example.com"),
            "get_reservation(email=tarpit)": lambda: hostile.get_reservation("K7Q-2M9", tarpit),
            "create_event(token=tarpit)": lambda: hostile.create_event(tarpit, "X", "Y", "2027-01-01T20:00:00", [("A", 1, 1)]),
        }
        for name, call in calls.items():
            began = time.monotonic()
            try:
                call()
            except (InvalidRequest, Forbidden) as exc:
                refusals.append((name, time.monotonic() - began, exc))

    attacker = threading.Thread(target=attack, name="tarpit-attacker")
    try:
        with hostile:
            attacker.start()
            latencies = [box.sell() for _ in range(20)]
            attacker.join(timeout=60)
    finally:
        tarpit.release.set()
    assert [name for name, _, _ in refusals] == [
        "reserve(quantity=tarpit)", "reserve(customer=tarpit)", "get_reservation(code=tarpit)",
        "get_reservation(email=tarpit)", "create_event(token=tarpit)",
    ]
    assert [type(exc) for _, _, exc in refusals] == [InvalidRequest] * 4 + [Forbidden]
    assert "quantity must be an integer" in str(refusals[0][2])
    assert max(took for _, took, _ in refusals) < PROMPT, refusals
    assert tarpit.touched == [], f"the server called back into the client's object: {tarpit.touched}"
    assert max(latencies) < PROMPT


def test_while_a_call_waits_on_a_client_that_never_answers_others_are_served(box: Box) -> None:
    """Passing an object makes RPyC ask the caller about its class; a caller that never answers holds one thread."""
    tarpit = Tarpit()
    hostile = rpyc.connect(LOCAL, box.port, config=RAW_CONFIG)
    try:
        root = hostile.root
        refusals_before = box.client.status().refusals
        # Sent without serving the connection: the server's question about the object goes unanswered.
        pending = hostile.async_request(consts.HANDLE_CALLATTR, root, "get_reservation", (tarpit, "eve@example.com"), ())
        latencies = [box.sell() for _ in range(20)]
        assert box.client.status().refusals == refusals_before, "the hostile call was decided without its caller"
        with pytest.raises(Exception, match="code must be a string") as refused:
            pending.value  # noqa: B018 - now the hostile client serves: the server learns the class and refuses
        assert type(refused.value).__name__ == "errors.InvalidRequest"
    finally:
        tarpit.release.set()
        hostile.close()
    assert tarpit.touched == []
    assert max(latencies) < PROMPT


# -- (d) an oversized message ----------------------------------------------------------------------------------


def test_an_oversized_argument_is_refused_clearly_and_a_20_mb_one_costs_only_its_connection(box: Box) -> None:
    """Within a frame (1 MB) an overlong argument is refused by name; a 20 MB frame is not read at all: the
    sender's connection is cut (it sees a lost connection) and nobody else notices."""
    rss_before = vm_rss_kib(box.server.pid)
    long_text = secrets.token_hex(250_000)  # 500 KB: within a frame, far beyond the 1,000 characters of a name
    huge = secrets.token_hex(10_000_000)  # 20 MB of text that does not compress away
    with TicketClient(servers=[f"{LOCAL}:{box.port}"], timeout=6.0, attempt_timeout=5.0) as sender:
        with pytest.raises(InvalidRequest, match=r"customer is too long \(500000 characters, at most 1000\)") as refused:
            sender.reserve(box.event_id, 1, long_text, "eve@example.com", sector="Pista")
        began = time.monotonic()
        with pytest.raises(Unavailable, match="connection lost"):
            sender.reserve(box.event_id, 1, huge, "eve@example.com", sector="Pista")
        took = time.monotonic() - began
    assert len(str(refused.value)) < 200, "the refusal does not echo the argument back"
    assert box.server.alive()
    assert box.client.ping() == "pong"
    assert box.sell() < PROMPT
    rss_after = vm_rss_kib(box.server.pid)
    print(f"\n20 MB argument cut off in {took:.2f} s; server VmRSS {rss_before} KiB before, {rss_after} KiB after")
    assert huge[:64] not in box.server.output() and long_text[:64] not in box.server.output(), "an argument was logged"
    assert re.search(r"dropped connection from 127\.0\.0\.1:\d+: a frame of \d+ bytes \(at most 1048576\)", box.server.output()), \
        "the cut connection is logged with its reason"


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])


def test_a_small_compressed_message_cannot_make_the_server_allocate_hundreds_of_mb(box: Box) -> None:
    """The server inflates at most 32 MB of a frame; a client that sends more is cut off, which it sees as a
    lost connection on every attempt. (Found by this suite: this 0.44 MB message once cost a server 382 MiB.)"""
    peak_before = vm_hwm_kib(box.server.pid)
    sender = TicketClient(servers=[f"{LOCAL}:{box.port}"], timeout=6.0, attempt_timeout=5.0)
    with sender, pytest.raises(Unavailable, match="connection lost"):  # 100 MB of text, about 0.44 MB once compressed
        sender.reserve(box.event_id, 1, "x" * 100_000_000, "eve@example.com", sector="Pista")
    assert box.client.ping() == "pong"
    grown_mib = (vm_hwm_kib(box.server.pid) - peak_before) / 1024
    assert grown_mib < 100, f"a 0.44 MB message raised the server's peak memory by {grown_mib:.0f} MiB"


# -- (e) what comes back is a value, not a handle on the server -------------------------------------------------


def plain(value: object) -> bool:
    """True when `value` is made of tuples and scalars only: nothing that could call back into the server."""
    if isinstance(value, BaseNetref):
        return False
    if type(value) is tuple:
        return all(plain(item) for item in value)
    return type(value) in (str, int, float, bool, type(None))


def test_records_arrive_as_plain_tuples_not_netrefs(box: Box) -> None:
    connection = rpyc.connect(LOCAL, box.port, config=RAW_CONFIG)
    try:
        root = connection.root
        event = root.admin_create_event(ADMIN_TOKEN, "Valor", "Sala", "2027-01-01T20:00:00", (("Geral", 1000, 10),))
        event_id = dict(event)["id"]
        held = root.reserve(event_id, 2, "Ana", "ana@example.com", None, "full", uuid.uuid4().hex, False)
        code = dict(held)["code"]
        results = {
            "admin_create_event": event,
            "list_events": root.list_events(),
            "get_event": root.get_event(event_id),
            "reserve": held,
            "get_reservation": root.get_reservation(code, "ana@example.com"),
            "confirm": root.confirm(code, "ana@example.com"),
            "cancel": root.cancel(code, "ana@example.com"),
            "status": root.status(),
        }
        for name, result in results.items():
            assert type(result) is tuple, f"{name} returned {type(result)}"
            assert plain(result), f"{name} returned something that is not a plain value: {result!r}"
            assert result.__class__ is tuple  # walking its attributes stays on this side
        assert dict(results["cancel"])["status"] == "cancelled"
        assert dict(dict(results["get_event"])["sectors"][0])["available"] == 8  # read while the 2 were held
    finally:
        connection.close()


def test_nothing_a_client_holds_writes_into_the_server(box: Box) -> None:
    """The seed's status answer still reads like its dict, but a client cannot write into it (it once could: 1.3 GB
    of a client's data sat in server memory), nor change what the next caller reads."""
    connection = rpyc.connect(LOCAL, box.port, config=RAW_CONFIG)
    try:
        status = connection.root.status_servidor()
        assert type(status["horario"]) is str and type(status["ingressos_restantes"]) is int
        assert "horario" in status and len(status) == 2
        for write in (lambda: status.__setitem__("horario", "x" * 1000), lambda: status.__setitem__("junk", "y"),
                      lambda: status.__delitem__("horario"), lambda: setattr(status, "junk", 1)):
            with pytest.raises(Exception, match=r"setitem|delitem|cannot access|attribute") as refused:
                write()
            assert 'File "' not in str(refused.value)
        assert status["horario"] != "x" * 1000 and "junk" not in status
        again = connection.root.status_servidor()
        assert again["ingressos_restantes"] == status["ingressos_restantes"] and "junk" not in again
        for value in (status, again):
            with pytest.raises(KeyError):
                value["junk"]
    finally:
        connection.close()


def test_status_names_the_database_without_its_password(postgres, tmp_path) -> None:
    """status() needs no token, so it must show nothing secret: the PostgreSQL URL loses its user and password."""
    url = postgres.create_schema(f"status{uuid.uuid4().hex[:8]}").replace("://postgres@", "://postgres:s3cret-pw@", 1)
    assert "s3cret-pw" in url
    cluster = Cluster(tmp_path, database=url)
    cluster.start_name_server()
    server = cluster.start_server()
    try:
        connection = rpyc.connect(LOCAL, next(iter(cluster.servers)), config=RAW_CONFIG)
        try:
            status = dict(connection.root.status())
        finally:
            connection.close()
        assert "s3cret-pw" not in repr(status) and "postgres:" not in status["database"]
        assert status["database"].startswith("postgresql://127.0.0.1:") and status["backend"] == "postgresql"
        assert "s3cret-pw" not in server.output()
    finally:
        cluster.stop()


def test_the_service_root_answers_introspection_with_nothing_internal(box: Box) -> None:
    connection = rpyc.connect(LOCAL, box.port, config=RAW_CONFIG)
    try:
        root = connection.root
        answers = {"repr": repr(root), "str": str(root), "hash": str(hash(root)), "dir": " ".join(dir(root)),
                   "reference": repr(object.__getattribute__(root, "____id_pack__")),
                   "inspection": " ".join(type(root).__dict__)}
        status = root.status_servidor()
        answers |= {"status repr": repr(status), "status dir": " ".join(dir(status)),
                    "status reference": repr(object.__getattribute__(status, "____id_pack__"))}
        internal = ("0x", "TicketService", "server.", "service.", "box", "_set_status", "_first_sector", "on_connect", "peer",
                    "LegacyCalls", "SeedStatus")
        for what, answer in answers.items():
            for word in internal:
                assert word not in answer, f"the root's {what} names {word!r}: {answer[:200]}"
        assert repr(root) == "<TICKETS>" and "reserve" in dir(root) and "status_servidor" in dir(root)
        assert root.ping() == "pong" and status["ingressos_restantes"] >= 0, "the calls still work"
    finally:
        connection.close()


# -- (f) admin tokens ---------------------------------------------------------------------------------------------


def test_wrong_admin_tokens_are_refused_logged_with_the_caller_and_never_echoed(box: Box) -> None:
    """Each wrong token is refused as Forbidden without echoing it; past a few the refusal says to wait (the
    throttle, tests/test_abuse.py); the log names the caller once for the burst, not once per attempt."""
    wrong_tokens = [f"wrong-{uuid.uuid4().hex}", ADMIN_TOKEN + "-x", ADMIN_TOKEN[:-1], ADMIN_TOKEN.upper(), ""]
    connection = rpyc.connect(LOCAL, box.port, config=RAW_CONFIG)
    try:
        caller = "{}:{}".format(*connection._channel.stream.sock.getsockname()[:2])
        events_before = len(connection.root.list_events())
        for token in [*wrong_tokens, None, 12345, b"test-admin-token"]:
            with pytest.raises(Exception, match=r"admin token missing or wrong|too many wrong admin tokens") as refused:
                connection.root.admin_create_event(token, "Pirata", "Sala", "2027-01-01T20:00:00", (("Geral", 1, 1),))
            assert type(refused.value).__name__ == "errors.Forbidden"
            assert 'File "' not in str(refused.value), "the refusal carries the server's stack trace"
        assert len(connection.root.list_events()) == events_before, "a refused token created an event"
    finally:
        connection.close()

    log = box.server.output
    wait_until(lambda: f"forbidden: wrong admin token from 127.0.0.1 (last from {caller})" in log(), what="the first refusal logged")
    assert log().count("forbidden: wrong admin token from") == 1, "a burst of wrong tokens is one line, not one per attempt"
    for token in [*wrong_tokens[:4], ADMIN_TOKEN]:
        assert token not in log(), f"the server log shows an admin token: {token!r}"
