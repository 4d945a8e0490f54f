"""Who may register, and whom a terminal trusts: the attacks of issue 14 on the name server and the terminals.

A rogue ticket server without the registration key is refused and never listed; a captured registration cannot be
played again; a loop of UNREGISTERs from anyone without the key unlists nobody; a terminal with the CA turns away an
impostor on a listed address; the demo runs the secure setup by default; the insecure mode still serves stock RPyC.
Real name servers and ticket servers as processes, real sockets; nothing mocked.
"""

from __future__ import annotations

import itertools
import logging
import re
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ADMIN_TOKEN
from procs import free_port, start, wait_until
from rpyc.core import brine
from rpyc.utils.registry import TCPRegistryClient

from client_core import NameServerClient, TicketClient, Unavailable, parse_address
from name_server import NameServer
from net.registry_protocol import KEY_ENV, KEY_FILE_ENV, SERVICE_NAME, RegistrationKey, exchange
from net.tls import TLSFiles, client_context
from service.registrar import Registrar
from tools.launcher import LocalCluster
from tools.pki import make_local_pki, make_registration_key

LOCAL = "127.0.0.1"
NO_KEY = {KEY_FILE_ENV: "", KEY_ENV: "", "BILHETERIA_NS_INSECURE_OPEN_REGISTRATION": ""}


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[LocalCluster]:
    """A name server that applies only signed registrations, and one ticket server that holds the key."""
    cluster = LocalCluster(tmp_path / "keyed", servers=1, registration_key=make_registration_key(tmp_path / "registration.key"),
                           server_args=("--admin-token", ADMIN_TOKEN))
    with cluster:
        cluster.start()
        yield cluster


def listed(cluster: LocalCluster) -> set[int]:
    return {port for _, port in NameServerClient.query(parse_address(cluster.name_server_address), 2.0)}


def send(cluster: LocalCluster, request: bytes, source: str = LOCAL) -> object:
    """One raw exchange from `source` (any 127.x address is this machine), the bytes exactly as given (a captured
    request is replayed byte for byte)."""
    with socket.create_connection(parse_address(cluster.name_server_address), timeout=5, source_address=(source, 0)) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return brine.load(reply) if reply else None  # None: dropped without an answer


def rogue(cluster: LocalCluster, tmp_path: Path, name: str, env: dict[str, str]):
    port = free_port()
    return start(name, ["server.py", "--port", str(port), "--db", str(tmp_path / f"{name}.db"), "--admin-token", "rogue",
                        "--name-server", cluster.name_server_address], ready="Ticket server listening on", env={**NO_KEY, **env})


def test_a_rogue_server_without_the_key_is_refused_and_never_listed(keyed: LocalCluster, tmp_path: Path) -> None:
    honest = keyed.server_ports[0]
    unsigned = rogue(keyed, tmp_path, "rogue-unsigned", {})
    forged = rogue(keyed, tmp_path, "rogue-forged", {KEY_ENV: "a-key-that-is-not-the-name-servers-" + "x" * 16})
    try:
        assert TCPRegistryClient(LOCAL, keyed.ns_port).register((SERVICE_NAME,), free_port())  # stock: it reads no answer
        # Once each rogue has been told no, the listing holds the key holder alone.
        unsigned.wait_for_line("refused the registration (REFUSED: unsigned)", 10)
        forged.wait_for_line("refused the registration (REFUSED: bad signature)", 10)
        assert listed(keyed) == {honest}
        with TicketClient([keyed.name_server_address], timeout=5) as client:
            assert client.known_servers() == (f"{LOCAL}:{honest}",)
            assert client.reserve(1, 1, "Ana", "ana@example.com", sector="Pista", confirm=True).status == "confirmed"
    finally:
        unsigned.stop()
        forged.stop()
    keyed.name_server.stop()
    refusals = [line for line in keyed.name_server.lines if "refused" in line]
    assert 1 <= len(refusals) <= 2, refusals  # in aggregate: one line per 10 s, not one per heartbeat
    assert "unsigned" in refusals[-1] and "bad signature" in refusals[-1] and "from 127.0.0.1" in refusals[-1]
    assert "Traceback" not in keyed.name_server.output()


def test_a_captured_registration_cannot_be_replayed(keyed: LocalCluster) -> None:
    key = RegistrationKey.read(str(keyed.registration_key))
    port = free_port()
    captured = brine.dump(key.sign("REGISTER", ((SERVICE_NAME,), port), LOCAL))
    assert send(keyed, captured) == "OK"
    assert port in listed(keyed)
    assert send(keyed, brine.dump(key.sign("UNREGISTER", (port,), LOCAL))) == "OK"
    assert port not in listed(keyed)
    assert send(keyed, captured) == "REFUSED: replayed"
    elsewhere = brine.dump(key.sign("REGISTER", ((SERVICE_NAME,), port), LOCAL))  # captured before it reached any name server
    assert send(keyed, elsewhere, source="127.0.0.2") == "REFUSED: signed for host 127.0.0.1, sent from 127.0.0.2 (a NAT between them?)"
    late = brine.dump(key.sign("REGISTER", ((SERVICE_NAME,), port), LOCAL, now=time.time() - 60))
    assert send(keyed, late) == "REFUSED: stale timestamp"
    assert port not in listed(keyed)


def test_an_unregister_loop_without_the_key_leaves_the_real_servers_listed(keyed: LocalCluster) -> None:
    honest = keyed.server_ports[0]
    wrong = RegistrationKey.from_text("w" * 40, "a guess")
    stop = threading.Event()
    sent = []

    def blind() -> None:
        stock = TCPRegistryClient(LOCAL, keyed.ns_port)
        while not stop.is_set():
            stock.unregister(honest)
            try:
                send(keyed, brine.dump(wrong.sign("UNREGISTER", (honest,), LOCAL)))
            except OSError:
                pass  # a name server that drops what it cannot read: the stock UNREGISTER is the attack that counts
            sent.append(2)

    attacker = threading.Thread(target=blind)
    attacker.start()
    try:
        seen = [listed(keyed) for _ in range(30)]
    finally:
        stop.set()
        attacker.join(10)
    assert sum(sent) >= 20, sent
    assert all(honest in ports for ports in seen), seen


def test_a_terminal_with_the_ca_refuses_an_impostor_on_a_listed_address(tmp_path: Path) -> None:
    real = make_local_pki(tmp_path / "pki")
    impostor = make_local_pki(tmp_path / "impostor-pki")  # a certificate for 127.0.0.1 too, by a CA nobody trusts
    cluster = LocalCluster(tmp_path / "secure", servers=1, tls=real, ttl=60, registration_key=make_registration_key(tmp_path / "k"),
                           server_args=("--admin-token", ADMIN_TOKEN))
    with cluster:
        cluster.start()
        port = cluster.server_ports[0]
        cluster.server(port).kill()  # gone without unregistering: its address stays listed until the TTL
        fake = start("impostor", ["server.py", "--port", str(port), "--db", str(tmp_path / "impostor.db"), "--admin-token", "x",
                                  *impostor.server_args()[:4], "--name-server", cluster.name_server_address],
                     ready="Ticket server listening on", env=NO_KEY)
        try:
            assert port in {p for _, p in NameServerClient.query(parse_address(cluster.name_server_address), 2.0,
                                                                    client_context(real.cafile))}
            began = time.monotonic()
            with TicketClient([cluster.name_server_address], cafile=real.cafile, timeout=5) as client, \
                    pytest.raises(Unavailable) as refused:
                client.reserve(1, 1, "Ana", "ana@example.com", sector="Pista", confirm=True)
            assert time.monotonic() - began < 2.0, str(refused.value)
            assert f"{LOCAL}:{port}: its certificate was not trusted" in str(refused.value)
            assert "ana@example.com" not in fake.output()
        finally:
            fake.stop()


def test_the_demo_runs_the_secure_setup_by_default_and_its_terminal_sells(tmp_path: Path) -> None:
    data = tmp_path / "data"
    demo = start("demo", ["cli.py", "demo", "--no-interactive", "--data", str(data), "--ns-port", str(free_port()),
                          "--port-base", str(free_port()), "--servers", "1"], ready="Demo ready", env={"COLUMNS": "300", **NO_KEY},
                 timeout=60)
    try:
        output = demo.output()
        name_server = re.search(r"Demo ready: name server (127\.0\.0\.1:\d+)", output).group(1)
        cafile, key_file = data / "pki" / "ca.pem", data / "registration.key"
        assert f"Secure: TLS on every hop, trusting only {cafile}" in output and f"--cafile {cafile}" in output
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and key_file.read_text().strip() not in output
        ns_log = (data / "name-server.log").read_text()
        assert "TLS only; registrations signed with the key in the file" in ns_log
        with TicketClient([name_server], cafile=str(cafile), timeout=5) as client:
            sold = client.reserve(1, 2, "Ana", "ana@example.com", sector="Pista", confirm=True)
            assert client.get_reservation(sold.code, "ana@example.com").status == "confirmed"
        with TicketClient([name_server], timeout=5) as plain, pytest.raises(Unavailable, match="speaks TLS"):
            plain.list_events()
        unsigned = exchange(parse_address(name_server), ("RPYC", "REGISTER", ((SERVICE_NAME,), free_port())), 2.0,
                            client_context(str(cafile)))
        assert unsigned == "REFUSED: unsigned"
    finally:
        code = demo.stop(timeout=30)
    assert code == 0, demo.output()
    assert "Traceback" not in demo.output()


def test_the_insecure_mode_still_serves_stock_rpyc_registrations(tmp_path: Path) -> None:
    ns = start("open-name-server", ["name_server.py", "--port", "0", "--insecure-open-registration"],
               ready="Name server listening on", env=NO_KEY)
    try:
        host, port = parse_address(ns.address)
        assert "INSECURE: anyone may register or unregister" in ns.output()
        assert TCPRegistryClient(host, port).register((SERVICE_NAME,), 18999) is True
        assert TCPRegistryClient(host, port).discover(SERVICE_NAME) == ((LOCAL, 18999),)
    finally:
        assert ns.stop() == 0


def test_the_insecure_demo_is_todays_open_setup(tmp_path: Path) -> None:
    data = tmp_path / "data"
    demo = start("demo", ["cli.py", "demo", "--insecure", "--no-interactive", "--data", str(data), "--ns-port", str(free_port()),
                          "--port-base", str(free_port()), "--servers", "1"], ready="Demo ready", env={"COLUMNS": "300", **NO_KEY},
                 timeout=60)
    try:
        assert "Insecure: plain text" in demo.output() and not (data / "registration.key").exists()
        name_server = re.search(r"Demo ready: name server (127\.0\.0\.1:\d+)", demo.output()).group(1)
        with TicketClient([name_server], timeout=5) as client:
            assert [event.id for event in client.list_events()] == [1, 2, 3]
    finally:
        assert demo.stop(timeout=30) == 0


# --- in one process: the registrar's withdrawal, and the aggregate of a flood ----------------------------------


KEY = RegistrationKey.from_text("r" * 40, "the test")


def test_a_server_that_cannot_serve_unregisters_says_so_once_and_returns(caplog: pytest.LogCaptureFixture) -> None:
    reason: list[str | None] = [None]
    with NameServer(port=0, key=KEY) as ns:
        asked = itertools.count()
        checks = [0]

        def can_serve() -> str | None:
            checks[0] = next(asked)
            return reason[0]

        registrar = Registrar([(LOCAL, ns.port)], 40123, interval=0.05, key=KEY, can_serve=can_serve)
        with caplog.at_level(logging.INFO, logger="bilheteria.service.registrar"):
            registrar.start()
            try:
                assert ns.registry.query(SERVICE_NAME) == ((LOCAL, 40123),)
                reason[0] = "the database file was deleted"
                wait_until(lambda: ns.registry.query(SERVICE_NAME) == (), timeout=5, what="unlisted")
                unlisted_at = checks[0]
                wait_until(lambda: checks[0] >= unlisted_at + 3, timeout=5, what="three more heartbeats while it cannot serve")
                assert ns.registry.query(SERVICE_NAME) == ()
                reason[0] = None
                wait_until(lambda: ns.registry.query(SERVICE_NAME) == ((LOCAL, 40123),), timeout=5, what="listed again")
            finally:
                registrar.stop()
    said = [record.getMessage() for record in caplog.records if re.match("(can|cannot) serve", record.getMessage())]
    assert said == ["cannot serve (the database file was deleted); unregistering from the name servers until it can",
                    "can serve again; registering with the name servers"], said


def test_a_flood_of_forged_registrations_is_logged_as_a_count(caplog: pytest.LogCaptureFixture) -> None:
    forged = RegistrationKey.from_text("f" * 40, "a forger")
    with caplog.at_level(logging.WARNING, logger="bilheteria.name_server"), NameServer(port=0, key=KEY) as ns:
        ns.refused.interval = 60.0
        for port in range(20001, 20101):
            request = forged.sign("REGISTER", ((SERVICE_NAME,), port), LOCAL) if port % 2 else ("RPYC", "REGISTER", ((SERVICE_NAME,), port))
            assert exchange((LOCAL, ns.port), request, 2.0) in ("REFUSED: bad signature", "REFUSED: unsigned")
        assert ns.registry.query(SERVICE_NAME) == ()
    lines = [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("refused 100 registrations in") and "50 unsigned" in lines[0], lines
    assert "50 bad signature" in lines[0] and "from 127.0.0.1 (100)" in lines[0]


def test_tls_files_for_a_local_cluster_are_made_fresh(tmp_path: Path) -> None:
    files = make_local_pki(tmp_path / "pki")
    assert isinstance(files, TLSFiles) and stat.S_IMODE(Path(files.keyfile).stat().st_mode) == 0o600
    client_context(files.cafile)  # a usable CA
