"""TLS on every hop, as an operator sets it up and a terminal meets it.

A throwaway CA is made with the openssl CLI; a name server and a ticket server are started with its certificate
(SAN 127.0.0.1 and localhost). A terminal with that CA sells through them; a terminal with another CA, or none,
is turned away at once with a message that says why, and the servers log one line and keep serving.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ADMIN_TOKEN
from procs import ROOT, start

from client_core import NameServerClient, TicketClient, Unavailable
from name_server import NameServer
from net.tls import TLSFiles, client_context, server_context
from tools.launcher import LocalCluster

FAST = 1.5
"""A mismatch is a configuration error: the terminal says so at once instead of retrying until its deadline."""


def openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA, a server certificate it signed for 127.0.0.1 and localhost, and an unrelated second CA."""
    directory = tmp_path_factory.mktemp("pki")
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr", cwd=directory)
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "san.cnf", "-out", "server.pem", cwd=directory)
    names = {"ca": "ca.pem", "other-ca": "other-ca.pem", "server": "server.pem", "key": "server.key"}
    return {name: str(directory / file) for name, file in names.items()}


@pytest.fixture(scope="module")
def tls_cluster(pki: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One TLS name server and one TLS ticket server (which reaches the name server over TLS too)."""
    files = TLSFiles(pki["server"], pki["key"], pki["ca"])
    cluster = LocalCluster(tmp_path_factory.mktemp("tls-cluster"), servers=1, tls=files, server_args=("--admin-token", ADMIN_TOKEN))
    with cluster:
        cluster.start()
        yield cluster


def log_lines(cluster: LocalCluster, text: str) -> list[str]:
    return [line for child in cluster.children() for line in child.log.read_text().splitlines() if text in line]


def refused_quickly(client: TicketClient) -> str:
    """The `Unavailable` a call ends with, checked to come well before the client's deadline."""
    began = time.monotonic()
    with client, pytest.raises(Unavailable) as refused:
        client.list_events()
    assert time.monotonic() - began < FAST, f"took {time.monotonic() - began:.2f} s: {refused.value}"
    return str(refused.value)


def test_a_terminal_with_the_ca_sells_through_tls_name_server_and_servers(tls_cluster: LocalCluster, pki: dict[str, str]) -> None:
    with TicketClient([tls_cluster.name_server_address], cafile=pki["ca"], timeout=5) as client:
        assert client.known_servers() == (f"127.0.0.1:{tls_cluster.server_ports[0]}",)
        reservation = client.reserve(1, 2, "Ana", "ana@example.com", sector="Pista", confirm=True)
        assert reservation.status == "confirmed" and reservation.quantity == 2
        assert client.get_reservation(reservation.code, "ana@example.com").code == reservation.code
    with TicketClient(servers=[f"localhost:{tls_cluster.server_ports[0]}"], cafile=pki["ca"]) as client:
        assert client.ping() == "pong"  # the certificate's DNS name works as well as its IP address


def test_another_ca_is_refused_saying_the_certificate_was_not_trusted(tls_cluster: LocalCluster, pki: dict[str, str]) -> None:
    server = f"127.0.0.1:{tls_cluster.server_ports[0]}"
    message = refused_quickly(TicketClient(servers=[server], cafile=pki["other-ca"]))
    assert f"{server}: its certificate was not trusted" in message and "--cafile" in message
    message = refused_quickly(TicketClient([tls_cluster.name_server_address], cafile=pki["other-ca"]))
    assert f"{tls_cluster.name_server_address} (its certificate was not trusted" in message


def test_the_cli_without_the_ca_exits_3_with_one_clear_message(tls_cluster: LocalCluster, pki: dict[str, str]) -> None:
    command = ["cli.py", "events", "--name-server", tls_cluster.name_server_address]
    for extra, expected in (([], "speaks TLS"), (["--cafile", pki["other-ca"]], "certificate was not trusted")):
        done = subprocess.run([sys.executable, *command, *extra], check=False, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert done.returncode == 3, done.stderr
        assert expected in done.stderr and "Traceback" not in done.stderr + done.stdout


def test_a_plain_text_terminal_fails_fast_and_each_server_logs_one_line(tls_cluster: LocalCluster, pki: dict[str, str]) -> None:
    before = len(log_lines(tls_cluster, "plain-text client"))
    message = refused_quickly(TicketClient(servers=[f"127.0.0.1:{tls_cluster.server_ports[0]}"]))
    assert "it speaks TLS and this side does not; pass the CA that signed its certificate with --cafile" in message
    message = refused_quickly(TicketClient([tls_cluster.name_server_address]))
    assert "No ticket server known" in message and "speaks TLS" in message
    assert len(log_lines(tls_cluster, "plain-text client")) == before + 2
    assert not log_lines(tls_cluster, "Traceback")
    with TicketClient([tls_cluster.name_server_address], cafile=pki["ca"]) as client:
        assert client.ping() == "pong"  # and the servers kept serving


def test_a_tls_terminal_against_plain_servers_fails_fast(cluster, pki: dict[str, str]) -> None:
    server = cluster.server_addresses()[0]
    message = refused_quickly(TicketClient(servers=[server], cafile=pki["ca"]))
    assert "closed the connection during the TLS handshake" in message
    message = refused_quickly(TicketClient([cluster.name_server_address], cafile=pki["ca"]))
    assert "closed the connection during the TLS handshake" in message
    assert "this server speaks plain text" in cluster.servers[int(server.rsplit(":")[1])].output()
    assert "this name server speaks plain text" in cluster.name_server.output()
    assert "Traceback" not in cluster.name_server.output()


def test_a_stalled_handshake_never_delays_the_tls_name_server(pki: dict[str, str]) -> None:
    """Half a ClientHello, then silence: the single-threaded name server must keep answering others."""
    context = server_context(pki["server"], pki["key"])
    with NameServer(port=0, tls_context=context, deadline=1.0) as ns:
        staller = socket.create_connection(("127.0.0.1", ns.port))
        staller.sendall(b"\x16\x03\x01\x02\x00\x01")
        try:
            began = time.monotonic()
            assert NameServerClient.query(("127.0.0.1", ns.port), 2.0, client_context(pki["ca"])) == ()
            assert time.monotonic() - began < 0.5
            staller.settimeout(3)
            assert staller.recv(100) == b""  # cut off by the deadline
        finally:
            staller.close()


@pytest.mark.parametrize("program", ["server.py", "name_server.py"])
def test_an_unreadable_certificate_exits_2_with_one_line(program: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    args = [program, "--port", "0", "--certfile", str(missing), "--keyfile", str(missing)]
    args += ["--db", str(tmp_path / "t.db")] if program == "server.py" else ["--insecure-open-registration"]
    environment = {name: value for name, value in os.environ.items() if not name.startswith("BILHETERIA_REGISTRATION_KEY")}
    done = subprocess.run([sys.executable, *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=30, env=environment)
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and f"{missing}" in lines[0] and "cannot be read" in lines[0]


def test_the_environment_configures_tls_like_the_flags(pki: dict[str, str]) -> None:
    ns = start("tls-name-server", ["name_server.py", "--port", "0"], ready="Name server listening on",
               env={"BILHETERIA_NS_CERTFILE": pki["server"], "BILHETERIA_NS_KEYFILE": pki["key"],
                    "BILHETERIA_NS_INSECURE_OPEN_REGISTRATION": "1",
                    "BILHETERIA_REGISTRATION_KEY": "", "BILHETERIA_REGISTRATION_KEY_FILE": ""})
    try:
        host, port = ns.wait_for_line("Name server listening on").rsplit(maxsplit=1)[-1].rsplit(":", 1)
        assert "TLS only" in ns.output()
        assert NameServerClient.query((host, int(port)), 2.0, client_context(pki["ca"])) == ()
    finally:
        assert ns.stop() == 0
