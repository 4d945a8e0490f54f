"""The name server as its users rely on it: stock RPyC discovery works, registrations fade without heartbeats,
and no misbehaving client can make anyone else wait."""

from __future__ import annotations

import signal
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from procs import free_port, start, wait_until
from rpyc.core import brine
from rpyc.utils.registry import TCPRegistryClient

from name_server import NameServer, Registry
from net.registry_protocol import KEY_ENV, KEY_FILE_ENV, BadRequest, RegistrationKey, decode_request

READY = "Name server listening on"
LOCAL = "127.0.0.1"


def launch(*flags: str, env: dict[str, str] | None = None, port: int | None = None):
    """Start name_server.py as a real process, in the insecure mode stock RPyC clients need to register (the
    signed registrations are tests/test_identity.py's), and wait for its readiness line."""
    args = ["name_server.py", "--insecure-open-registration", *flags]
    if port is not None:
        args += ["--port", str(port)]
    return start("name-server", args, ready=READY, env={KEY_ENV: "", KEY_FILE_ENV: "", **(env or {})})  # no inherited key


@pytest.fixture(scope="module")
def ns():
    """One shared name server; each test uses its own service names and ports, so tests do not see each other."""
    port = free_port()
    proc = launch(port=port)
    assert f"{READY} {LOCAL}:{port}" in proc.lines
    yield proc, TCPRegistryClient(LOCAL, port)
    assert proc.stop() == 0


def request(cmd: str, *args: object) -> bytes:
    return brine.dump(("RPYC", cmd, args))


def connect(port: int) -> socket.socket:
    return socket.create_connection((LOCAL, port), timeout=5)


# --- the protocol, through the stock client -------------------------------------------------------------------


def test_stock_client_register_discover_list_unregister(ns):
    proc, client = ns
    assert client.register(("ROUNDTRIP",), 18861) is True
    assert client.discover("ROUNDTRIP") == ((LOCAL, 18861),)
    assert "ROUNDTRIP" in client.list()
    assert "ROUNDTRIP" in client.list(LOCAL)
    assert "ROUNDTRIP" not in client.list("10.9.8.7")
    wait_until(lambda: "registered ROUNDTRIP at 127.0.0.1:18861" in proc.output(), what="registration logged")

    client.unregister(18861)  # the stock client does not wait for the answer
    wait_until(lambda: client.discover("ROUNDTRIP") == (), what="unregistered server gone")
    assert "ROUNDTRIP" not in client.list()
    wait_until(lambda: "unregistered ROUNDTRIP at 127.0.0.1:18861" in proc.output(), what="unregistration logged")


def test_names_are_case_insensitive(ns):
    _, client = ns
    client.register(("Mixed_Case",), 18870)
    assert client.discover("mixed_case") == ((LOCAL, 18870),)
    assert client.discover("MIXED_CASE") == ((LOCAL, 18870),)
    assert "MIXED_CASE" in client.list()


def test_two_servers_listed_oldest_first_and_heartbeats_keep_the_order(ns):
    _, client = ns
    client.register(("PAIR",), 18881)
    client.register(("PAIR",), 18882)
    assert client.discover("PAIR") == ((LOCAL, 18881), (LOCAL, 18882))
    client.register(("PAIR",), 18882)
    client.register(("PAIR",), 18881)
    assert client.discover("PAIR") == ((LOCAL, 18881), (LOCAL, 18882))


def test_registration_expires_after_ttl_without_heartbeat():
    proc = launch("--ttl", "1", port=free_port())
    try:
        client = TCPRegistryClient(LOCAL, proc_port(proc))
        client.register(("FADING",), 18890)
        registered = time.monotonic()
        assert client.discover("FADING") == ((LOCAL, 18890),)
        wait_until(lambda: client.discover("FADING") == (), timeout=5, what="registration expired")
        assert time.monotonic() - registered >= 0.9
        wait_until(lambda: "pruned FADING at 127.0.0.1:18890" in proc.output(), what="prune logged")
    finally:
        assert proc.stop() == 0


def proc_port(proc) -> int:
    line = next(line for line in proc.lines if line.startswith(READY))
    return int(line.rsplit(":", 1)[1])


# --- nobody can stall anybody ------------------------------------------------------------------------------------


def test_hostile_clients_do_not_delay_a_stock_discover(ns):
    proc, client = ns
    port = client.port
    client.register(("HOSTILE",), 18900)
    query = request("QUERY", "HOSTILE")
    silent, half, garbage, blob = (connect(port) for _ in range(4))
    try:
        half.sendall(query[: len(query) // 2])
        garbage.sendall(b"GET / HTTP/1.1\r\n\r\n\xff\x00\x13")
        blob.setblocking(False)
        blob.send(query[:-10] + b"x" * 100_000)  # a plausible start, then far too much
        for _ in range(5):
            began = time.monotonic()
            assert client.discover("HOSTILE") == ((LOCAL, 18900),)
            assert time.monotonic() - began < 1.0
        for sock in (garbage, blob):  # dropped at once, without an answer
            sock.setblocking(True)
            sock.settimeout(1)
            try:
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass
        assert proc.alive()
        wait_until(lambda: "not an RPyC registry request" in proc.output(), what="garbage logged")
        wait_until(lambda: "larger than 4096 bytes" in proc.output(), what="blob logged")
    finally:
        for sock in (silent, half, garbage, blob):
            sock.close()


def test_silent_and_half_sent_connections_are_closed_by_the_deadline(ns):
    _, client = ns
    query = request("QUERY", "ANYTHING")
    silent, half = connect(client.port), connect(client.port)
    try:
        half.sendall(query[:-1])
        began = time.monotonic()
        assert silent.recv(100) == b""  # closed by the server, not timed out here (5 s)
        assert half.recv(100) == b""  # and no answer to a request that never completed
        assert 1.5 <= time.monotonic() - began < 4.0
    finally:
        silent.close()
        half.close()


def test_300_idle_connections_do_not_block_discovery(ns):
    _, client = ns
    client.register(("CROWDED",), 18910)
    idle = [connect(client.port) for _ in range(300)]
    try:
        began = time.monotonic()
        assert client.discover("CROWDED") == ((LOCAL, 18910),)
        assert time.monotonic() - began < 1.0
    finally:
        for sock in idle:
            sock.close()


def test_connection_cap_drops_the_oldest_and_keeps_answering():
    with NameServer(port=0, max_connections=8) as server:
        client = TCPRegistryClient(LOCAL, server.port)
        client.register(("CAPPED",), 18920)
        idle = [connect(server.port) for _ in range(20)]
        try:
            assert client.discover("CAPPED") == ((LOCAL, 18920),)
            idle[0].settimeout(1)
            assert idle[0].recv(10) == b""  # the oldest was closed long before its 2 s deadline
        finally:
            for sock in idle:
                sock.close()


# --- configuration and lifecycle -----------------------------------------------------------------------------


def test_environment_configures_host_port_and_ttl_and_flags_win():
    port = free_port()
    env = {"BILHETERIA_NS_HOST": LOCAL, "BILHETERIA_NS_PORT": str(port), "BILHETERIA_NS_TTL": "0.5"}
    proc = launch(env=env)
    try:
        assert f"{READY} {LOCAL}:{port}" in proc.lines
        client = TCPRegistryClient(LOCAL, port)
        client.register(("ENVTTL",), 18930)
        assert client.discover("ENVTTL") == ((LOCAL, 18930),)
        wait_until(lambda: client.discover("ENVTTL") == (), timeout=3, what="ttl from the environment")
    finally:
        assert proc.stop() == 0

    flag_port = free_port()
    proc = launch(env={"BILHETERIA_NS_PORT": str(port)}, port=flag_port)
    try:
        assert f"{READY} {LOCAL}:{flag_port}" in proc.lines
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_exit_0(signum):
    proc = launch(port=free_port())
    client = TCPRegistryClient(LOCAL, proc_port(proc))
    client.register(("BYE",), 18940)
    assert client.discover("BYE") == ((LOCAL, 18940),)
    proc.signal(signum)
    assert proc.popen.wait(timeout=5) == 0
    assert "Traceback" not in proc.output()
    assert [line for line in proc.lines if line.startswith(READY)] == [f"{READY} {LOCAL}:{client.port}"]


def test_in_process_server_serves_and_releases_its_port():
    with NameServer(port=0, ttl=5) as server:
        assert server.port > 0
        client = TCPRegistryClient(LOCAL, server.port)
        client.register(("INPROC",), 18950)
        assert client.discover("inproc") == ((LOCAL, 18950),)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOCAL, server.port))  # free again after close()
    NameServer(port=0).close()  # closing a server that never served releases it too


# --- the registry, with a fake clock --------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


A, B = ("10.0.0.1", 18861), ("10.0.0.2", 18861)


def test_registry_prunes_exactly_at_the_ttl_boundary():
    clock = FakeClock()
    registry = Registry(ttl=6, clock=clock)
    registry.register(["tickets"], A)
    clock.now += 5.999
    assert registry.query("TICKETS") == (A,)
    clock.now += 0.001
    assert registry.query("TICKETS") == ()
    assert registry.names() == ()


def test_registry_heartbeat_refreshes_without_reordering():
    clock = FakeClock()
    registry = Registry(ttl=6, clock=clock)
    registry.register(["TICKETS"], A)
    clock.now += 1
    registry.register(["TICKETS"], B)
    clock.now += 4
    registry.register(["TICKETS"], A)
    clock.now += 1.5  # A heard 1.5 s ago, B 5.5 s ago
    assert registry.query("tickets") == (A, B)
    clock.now += 0.5
    assert registry.query("tickets") == (A,)
    registry.register(["TICKETS"], B)  # back after expiring: now the newest
    assert registry.query("tickets") == (A, B)


def test_registry_unregister_removes_one_address_under_every_name():
    registry = Registry(ttl=6, clock=FakeClock())
    registry.register(["TICKETS", "ADMIN"], A)
    registry.register(["TICKETS"], B)
    registry.unregister(A)
    assert registry.query("TICKETS") == (B,)
    assert registry.query("ADMIN") == ()
    assert registry.names() == ("TICKETS",)
    assert registry.names("10.0.0.1") == ()
    assert registry.names("10.0.0.2") == ("TICKETS",)


# --- request decoding ----------------------------------------------------------------------------------------

names = st.text(min_size=1, max_size=64)  # strict prefixes are checked one by one: keep requests modest
ports = st.integers(1, 65535)
valid_requests = st.one_of(
    names.map(lambda n: ("QUERY", (n,))),
    st.tuples(st.lists(names, min_size=1, max_size=4).map(tuple), ports).map(lambda a: ("REGISTER", a)),
    ports.map(lambda p: ("UNREGISTER", (p,))),
    st.one_of(st.none(), st.text(max_size=40)).map(lambda h: ("LIST", ((h,),))),
)


@settings(max_examples=100, deadline=None)
@given(valid_requests)
def test_a_request_is_answered_only_once_complete(req):
    data = request(req[0], *req[1])
    assert decode_request(data).command == req[0]
    for cut in range(1, len(data)):  # brine short-reads: a prefix must never pass for a (different) request
        assert decode_request(data[:cut]) is None
    with pytest.raises(BadRequest):
        decode_request(data + b"\x00")


SIGNER = RegistrationKey.from_text("s" * 40, "the test")


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.tuples(st.lists(names, min_size=1, max_size=4).map(tuple), ports).map(lambda a: ("REGISTER", a)),
                 ports.map(lambda p: ("UNREGISTER", (p,)))))
def test_a_signed_request_is_as_strict_as_a_stock_one(req):
    data = brine.dump(SIGNER.sign(*req, host="::ffff:10.0.0.7"))
    decoded = decode_request(data)
    assert (decoded.command, decoded.args) == req and decoded.proof is not None
    assert SIGNER.check(decoded.command, decoded.args, decoded.proof, "10.0.0.7", time.time()) is None
    for cut in range(1, len(data)):
        assert decode_request(data[:cut]) is None
    with pytest.raises(BadRequest):
        decode_request(data + b"\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoder(data):
    try:
        decode_request(data)
    except BadRequest:
        pass


def test_decoded_requests_are_normalised():
    assert decode_request(request("QUERY", "tickets")) == ("QUERY", ("TICKETS",), None)
    assert decode_request(request("REGISTER", ("a", "B"), 7)) == ("REGISTER", (("a", "B"), 7), None)  # as signed
    assert decode_request(request("LIST", ("",))) == ("LIST", (None,), None)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe garbage",
        brine.dump(("RPYX", "QUERY", ("T",))),
        request("DELETE", "T"),
        request("QUERY", "x" * 65),
        request("QUERY", ""),
        request("QUERY", 5),
        request("QUERY", "A", "B"),
        request("REGISTER", ("T",), 0),
        request("REGISTER", ("T",), 65536),
        request("REGISTER", ("T",), True),
        request("REGISTER", (), 18861),
        request("REGISTER", tuple("ABCDEFGHIJKLMNOPQ"), 18861),
        request("REGISTER", "T", 18861),
        request("UNREGISTER", "18861"),
        request("UNREGISTER", 18861, (1, b"n" * 16, "h", b"m" * 32), "more"),
        request("UNREGISTER", 18861, (1, b"n" * 15, "h", b"m" * 32)),
        request("UNREGISTER", 18861, (1, b"n" * 16, b"m" * 32)),
        request("REGISTER", ("T",), 18861, (1, b"n" * 16, "h", "m" * 32)),
        request("REGISTER", ("T",), 18861, (-1, b"n" * 16, "h", b"m" * 32)),
        request("REGISTER", ("T",), 18861, (1.5, b"n" * 16, "h", b"m" * 32)),
        request("REGISTER", ("T",), 18861, (1, b"n" * 16, "", b"m" * 32)),
        request("REGISTER", ("T",), 18861, (1, b"n" * 16, "h" * 256, b"m" * 32)),
        request("REGISTER", ("T",), 18861, None),
        request("LIST", (5,)),
        request("LIST", None),
    ],
)
def test_invalid_requests_are_rejected(data):
    with pytest.raises(BadRequest):
        decode_request(data)
