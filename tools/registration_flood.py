"""Measure what a flood of forged registrations costs a name server that requires the registration key.

    python -m tools.registration_flood [--seconds 5] [--attackers 4]

Starts a real name_server.py with a fresh key, keeps one honest server registered through the real `Registrar`,
then for `--seconds` runs `--attackers` threads that each loop over an unsigned REGISTER of a rogue port, a
REGISTER signed with a wrong key, and a stock UNREGISTER of the honest port (each on its own connection), while
a terminal's QUERY runs every 50 ms. Prints the honest QUERY latency before and during the flood, whether the
honest server stayed listed, how many requests were refused per second, the name server's RSS, and its log lines.
Figures for docs/reliability/identity.md; not a test (tests/test_identity.py holds the assertions).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from rpyc.utils.registry import TCPRegistryClient

from net.registry_protocol import KEY_FILE_ENV, SERVICE_NAME, Address, RegistrationKey, exchange
from service.registrar import Registrar
from tools.harness import Child, free_port, start_child
from tools.pki import make_registration_key

PROBE_SECONDS = 0.05
HONEST_PORT = 18999


def rss_kib(child: Child) -> int:
    for line in Path(f"/proc/{child.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def probe(address: Address, seconds: float) -> tuple[list[float], int]:
    """QUERY latencies (ms) over `seconds`, and how many answers did not list the honest server."""
    latencies, missing = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        began = time.perf_counter()
        servers = exchange(address, ("RPYC", "QUERY", (SERVICE_NAME,)), 2.0)
        latencies.append((time.perf_counter() - began) * 1000)
        missing += (address[0], HONEST_PORT) not in servers
        time.sleep(PROBE_SECONDS)
    return latencies, missing


def attack(address: Address, stop: threading.Event, sent: list[int]) -> None:
    forged = RegistrationKey.from_text("f" * 64, "a forger")
    stock = TCPRegistryClient(address[0], address[1])
    count = 0
    while not stop.is_set():
        for request in (("RPYC", "REGISTER", ((SERVICE_NAME,), 18998)), forged.sign("REGISTER", ((SERVICE_NAME,), 18997), address[0])):
            try:
                exchange(address, request, 2.0)
            except (OSError, ValueError):
                pass
        stock.unregister(HONEST_PORT)
        count += 3
    sent.append(count)


def describe(name: str, latencies: list[float], missing: int) -> str:
    cuts = statistics.quantiles(latencies, n=100)
    return (f"{name}: {len(latencies)} QUERYs, p50 {statistics.median(latencies):.2f} ms, p99 {cuts[98]:.2f} ms, "
            f"honest server missing from {missing}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--attackers", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="registration-flood-") as scratch:
        key_file = make_registration_key(Path(scratch) / "registration.key")
        port = free_port()
        ns = start_child("name server", ["name_server.py", "--port", str(port), "--registration-key-file", str(key_file)],
                         "Name server listening on", log=Path(scratch) / "name-server.log", env={KEY_FILE_ENV: ""})
        address = ("127.0.0.1", port)
        registrar = Registrar([address], HONEST_PORT, key=RegistrationKey.read(str(key_file)))
        registrar.start()
        try:
            print(f"name server RSS before: {rss_kib(ns)} KiB")
            print(describe("quiet", *probe(address, args.seconds)))
            stop, sent = threading.Event(), []
            attackers = [threading.Thread(target=attack, args=(address, stop, sent)) for _ in range(args.attackers)]
            for thread in attackers:
                thread.start()
            during = probe(address, args.seconds)
            stop.set()
            for thread in attackers:
                thread.join()
            print(f"attack: {sum(sent)} forged, unsigned or stock requests in {args.seconds:.0f} s "
                  f"({sum(sent) / args.seconds:.0f}/s) from {args.attackers} threads")
            print(describe("during the attack", *during))
            print(f"name server RSS after: {rss_kib(ns)} KiB")
        finally:
            registrar.stop()
            ns.stop()
        refusals = [line for line in ns.lines if "refused" in line]
        print(f"name server log: {len(ns.lines)} lines, {len(refusals)} about refusals")
        for line in refusals:
            print("  " + line)


if __name__ == "__main__":
    main()
