"""Exhaustion: a client cannot use up the server's descriptors, its threads or its memory, nor a server a terminal's.

Each attack runs against a real server process, and an honest terminal must still be served during it or
soon after, without anyone restarting anything."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import rpyc
from conftest import ADMIN_TOKEN
from procs import ROOT, Process, free_port, start, wait_until
from rpyc.core import brine
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_channel

from client.connection import CLIENT_CONFIG, REPLY_LIMITS, ReplyChannel
from client_core import TicketClient
from errors import Unavailable
from net.channel import FrameRefused, Limits, census
from service.transport import REQUEST_LIMITS

LOCAL = "127.0.0.1"
FRAME_HEADER = struct.Struct("!LB")
PROMPT = 1.0
EVENT_CAPACITY = 100_000
"""The test event's one sector: enough that no test here sells it out."""
"""An honest sale under attack answers within this (it takes milliseconds when all is well)."""


_started: list[Process] = []


@pytest.fixture(autouse=True)
def _stop_servers() -> Iterator[None]:
    """Every server a test starts is stopped after it, pass or fail."""
    yield
    while _started:
        _started.pop().stop()


def start_server(tmp_path: Path, *extra: str, descriptors: int | None = None) -> Process:
    """A ticket server on its own SQLite file, optionally under a low descriptor limit (set by prlimit on the child)."""
    port = free_port()
    prefix = ("prlimit", f"--nofile={descriptors}:{descriptors}") if descriptors else ()
    server = start(f"server-{port}", ["server.py", "--port", str(port), "--db", str(tmp_path / "tickets.db"),
                                      "--name-server", f"{LOCAL}:{free_port()}", "--admin-token", ADMIN_TOKEN, *extra],
                   ready="Ticket server listening on", prefix=prefix)
    _started.append(server)
    return server


def port_of(server: Process) -> int:
    return int(server.address.rsplit(":", 1)[1])


def honest(server: Process) -> TicketClient:
    return TicketClient(servers=[server.address], timeout=5.0, attempt_timeout=2.0)


def sell(client: TicketClient, event_id: int) -> float:
    began = time.monotonic()
    assert client.reserve(event_id, 1, "Ana", "ana@example.com", sector="Pista", confirm=True).status == "confirmed"
    return time.monotonic() - began


@pytest.fixture
def event_on(tmp_path: Path) -> Iterator:
    """Create an event that never sells out on a server; closes the admin client after the test."""
    clients: list[TicketClient] = []

    def make(server: Process) -> int:
        client = honest(server)
        clients.append(client)
        return client.create_event(ADMIN_TOKEN, "Fôlego", "Galpão", "2027-05-01T20:00:00", [("Pista", 5000, EVENT_CAPACITY)]).id

    yield make
    for client in clients:
        client.close()


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return int(next(line for line in status if line.startswith(f"{field}:")).split()[1])


# -- descriptors and connections ---------------------------------------------------------------------------------


def test_a_server_out_of_descriptors_keeps_its_listener_and_serves_again_once_idle_sockets_are_closed(tmp_path: Path, event_on) -> None:
    """128 descriptors, a cap above them (so accept() itself fails with EMFILE) and 200 silent sockets: the server
    says once that it cannot serve, keeps its listener, closes the idle sockets after 3 s and serves again."""
    server = start_server(tmp_path, "--max-connections", "1000", "--idle-seconds", "3", descriptors=128)
    event_id = event_on(server)
    sockets = [socket.create_connection((LOCAL, port_of(server)), timeout=5) for _ in range(200)]
    try:
        server.wait_for_line("cannot serve new clients: accept() failed: Too many open files", 10)
        began = time.monotonic()
        with honest(server) as client:
            wait_until(lambda: sell(client, event_id), timeout=30, what="an honest sale after the flood")
        recovered = time.monotonic() - began
    finally:
        for sock in sockets:
            sock.close()
    assert server.alive()
    assert "accepting clients again after" in server.output()
    assert server.output().count("cannot serve new clients") == 1, "the shortage is said once, not once per attempt"
    print(f"\nEMFILE at 128 descriptors: an honest sale went through {recovered:.1f} s after the shortage was logged")
    with honest(server) as client:
        assert sell(client, event_id) < PROMPT


def test_beyond_the_connection_cap_a_newcomer_is_refused_at_once_and_idle_connections_make_room(tmp_path: Path, event_on) -> None:
    server = start_server(tmp_path, "--max-connections", "20", "--idle-seconds", "3")
    event_id = event_on(server)
    idle = [rpyc.connect(LOCAL, port_of(server), config={"sync_request_timeout": 5}) for _ in range(25)]
    try:
        began = time.monotonic()
        with pytest.raises(Unavailable), TicketClient(servers=[server.address], timeout=1.5, attempt_timeout=1.0) as refused:
            refused.ping()
        assert time.monotonic() - began < 2.0, "a refused newcomer was kept waiting"
        with honest(server) as client:
            wait_until(lambda: sell(client, event_id) < PROMPT, timeout=15, what="an honest sale once the idle ones are closed")
    finally:
        for connection in idle:
            connection._channel.close()
    log = server.output()
    assert re.search(r"refused connections: 20 open, the cap \(--max-connections\) from 127\.0\.0\.1", log)
    assert "closed connections idle for 3 s from 127.0.0.1" in log
    assert log.count("refused connections: 20 open") <= 2, "refusals are logged in aggregate"


def test_an_idle_terminal_is_served_again_transparently_and_its_subscription_outlives_the_idle_deadline(tmp_path: Path,
                                                                                                        event_on) -> None:
    server = start_server(tmp_path, "--idle-seconds", "3")
    event_id = event_on(server)
    updates: list = []
    with honest(server) as client:
        subscription = client.subscribe(event_id, updates.append)
        wait_until(lambda: updates, what="the first update")
        sell(client, event_id)
        server.wait_for_line("closed connections idle for 3 s", 10)  # the terminal's pool connection, idle since
        assert sell(client, event_id) < PROMPT + 2.0, "the terminal dials again without the clerk noticing"
        # The second sale's own update, however early it arrived: counting updates after the sale raced the push.
        wait_until(lambda: any(update.available == EVENT_CAPACITY - 2 for update in updates),
                   what="the subscription, kept alive by its callback line, showing the second sale")
        subscription.close()


# -- what a frame may decode into ----------------------------------------------------------------------------------


def tuples_frame(count: int) -> bytes:
    """One RPyC request frame whose payload is a tuple of `count` 1-tuples: tiny once compressed, huge once decoded."""
    payload = bytes([1]) + brine.TAG_TUP_L4 + count.to_bytes(4, "big") + (brine.TAG_TUP1 + brine.TAG_NONE) * count
    packed = zlib.compress(payload, 9)
    return FRAME_HEADER.pack(len(packed), 1) + packed + b"\n"


def test_a_46_kb_frame_of_tuples_is_refused_before_it_is_decoded(tmp_path: Path, event_on) -> None:
    server = start_server(tmp_path)
    event_id = event_on(server)
    frame = tuples_frame(REQUEST_LIMITS.frame_bytes // 2 - 8)  # inflates to just under the frame cap
    peak_before = vm_kib(server.pid, "VmHWM")
    attackers = [socket.create_connection((LOCAL, port_of(server)), timeout=10) for _ in range(4)]
    try:
        for sock in attackers:
            sock.sendall(frame)
        with honest(server) as client:
            latencies = [sell(client, event_id) for _ in range(20)]
        for sock in attackers:
            assert sock.recv(1) == b"", "the attacker's connection is cut"
    finally:
        for sock in attackers:
            sock.close()
    grown = (vm_kib(server.pid, "VmHWM") - peak_before) / 1024
    print(f"\n4 x {len(frame)} byte frames of 1-tuples: server peak grew {grown:.1f} MiB; honest sale max {max(latencies) * 1000:.0f} ms")
    assert grown < 30, f"four small frames raised the server's peak memory by {grown:.0f} MiB"
    assert max(latencies) < PROMPT
    assert server.output().count(f"a frame of more than {REQUEST_LIMITS.objects} objects") == 4


def test_the_census_refuses_depth_and_counts_without_building_anything() -> None:
    limits = Limits(frame_bytes=1 << 20, objects=100, depth=5)
    assert census(brine.dump(((1, "two"), None, 3.0)), limits, 0) == (7, 3)
    with pytest.raises(FrameRefused, match="more than 5 deep"):
        census(brine.dump(((((((1,),),),),),)), limits, 0)
    with pytest.raises(FrameRefused, match="more than 100 objects"):
        census(brine.dump(tuple(range(200))), limits, 0)
    with pytest.raises(FrameRefused, match="ends in the middle"):
        census(brine.TAG_TUP_L4 + (10**9).to_bytes(4, "big"), Limits(1 << 20, 10**10, 5), 0)
    with pytest.raises(FrameRefused, match="unknown brine tag"):
        census(b"\x07", limits, 0)


HOSTILE_CLIENT = """
import sys
from client_core import TicketClient
from errors import Unavailable
try:
    TicketClient(servers=[sys.argv[1]], timeout=3.0, attempt_timeout=2.0).ping()
except Unavailable as exc:
    print("unavailable:", exc)
with open("/proc/self/status") as status:
    print(next(line for line in status if line.startswith("VmHWM:")).split()[1])
"""


def test_a_terminal_inflates_no_more_than_its_cap_from_a_hostile_server() -> None:
    """A 'server' answers the terminal's first request with a 390 KB frame inflating to 400 MB: the terminal stops
    at its cap (32 MB) and reports the server unavailable."""
    bomb = zlib.compress(bytes(400 * 1024 * 1024), 9)
    listener = socket.create_server((LOCAL, 0))
    port = listener.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            with sock:
                try:
                    sock.recv(65536)
                    sock.sendall(FRAME_HEADER.pack(len(bomb), 1) + bomb + b"\n")
                    sock.recv(1)
                except OSError:
                    pass

    threading.Thread(target=answer, daemon=True).start()
    try:
        done = subprocess.run([sys.executable, "-c", HOSTILE_CLIENT, f"{LOCAL}:{port}"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, check=False)
    finally:
        listener.close()
    lines = done.stdout.splitlines()
    assert lines and lines[0].startswith("unavailable:"), done.stdout + done.stderr
    assert "inflating past" in lines[0]
    peak_mib = int(lines[-1]) / 1024
    print(f"\n{len(bomb)} byte frame inflating to 400 MB: terminal peak {peak_mib:.0f} MiB")
    assert peak_mib < 32 + 100, f"the terminal peaked at {peak_mib:.0f} MiB"


class Recording(ReplyChannel):
    """The terminal's channel, noting the census of every frame it sends and receives."""

    __slots__ = ()
    seen: ClassVar[dict[str, list[tuple[int, int, int]]]] = {"sent": [], "received": []}
    limits = Limits(frame_bytes=1 << 30, objects=10**9, depth=10**3)

    def recv(self) -> bytes:
        data = super().recv()
        self.seen["received"].append((*census(data, self.limits), len(data)))
        return data

    def send(self, data: bytes) -> None:
        self.seen["sent"].append((*census(data, self.limits), len(data)))
        super().send(data)


def test_the_largest_honest_request_and_reply_fit_the_limits_with_room(tmp_path: Path) -> None:
    """The figures behind REQUEST_LIMITS and REPLY_LIMITS: the largest request the API takes (an event of 50
    seated sectors with the longest names) and replies per record of the listings that grow with the data."""
    server = start_server(tmp_path, "--max-per-order", "50")
    sock = socket.create_connection((LOCAL, port_of(server)))
    connection = connect_channel(Recording(SocketStream(sock)), rpyc.VoidService, config=dict(CLIENT_CONFIG, sync_request_timeout=30))
    root, seen = connection.root, Recording.seen

    def measure(call):
        seen["sent"].clear()
        seen["received"].clear()
        result = call()
        return max(seen["sent"]), max(seen["received"]), result

    names = tuple(f"S{number:02d}" + "x" * 97 for number in range(50))
    request, reply, event = measure(lambda: root.admin_create_event(ADMIN_TOKEN, "n" * 200, "v" * 200, "2027-01-01T20:00:00",
                                                                    tuple((name, 10**6, 26, 50) for name in names)))
    event_id = dict(event)["id"]
    reserve, _, _ = measure(lambda: root.reserve(event_id, 50, "c" * 200, "e@example.com", names[0], "full", "r" * 100, False,
                                                 tuple(f"A{seat}" for seat in range(1, 51))))
    listing = dict(root.admin_create_event(ADMIN_TOKEN, "L", "V", "2027-01-01T20:00:00", (("G", 100, 100_000),)))["id"]
    for number in range(200):
        root.reserve(listing, 1, "c" * 30, f"e{number}@example.com", "G", "full", f"req-{number}", True)
    _, reservations, _ = measure(lambda: root.admin_list_reservations(ADMIN_TOKEN, listing, None, None))
    _, ledger, _ = measure(lambda: root.admin_ledger(ADMIN_TOKEN, 0, 200))
    connection._channel.close()
    largest_request = max(request, reserve)
    print(f"\nlargest request: {largest_request[0]} objects, {largest_request[1]} deep, {largest_request[2]} bytes; "
          f"create_event reply: {reply[0]} objects, {reply[1]} deep; per reservation listed: {reservations[0] / 200:.0f} "
          f"objects, {reservations[2] / 200:.0f} bytes; per ledger row: {ledger[0] / 200:.0f} objects")
    assert largest_request[0] * 10 < REQUEST_LIMITS.objects and largest_request[1] + 4 <= REQUEST_LIMITS.depth
    assert largest_request[2] * 100 < REQUEST_LIMITS.frame_bytes
    assert reply[1] + 4 <= REPLY_LIMITS.depth
    assert REPLY_LIMITS.objects > 50_000 * reservations[0] / 200, "a terminal lists an event of 50,000 reservations"
    assert REPLY_LIMITS.objects > 10_000 * ledger[0] / 200, "a terminal reads the largest ledger page (10,000 rows)"
