"""One terminal host of the multi-host test: a few terminals selling until SIGTERM.

Prints one JSON line per thing the test audits: each acknowledged sale (code, request id, quantity, server),
each request given up on as Unavailable, and each breaker state change. Run by tests/test_multihost.py
inside a network namespace; not a user tool.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from circuit_breaker import BreakerListener, CircuitBreaker
from client_core import TicketClient, Unavailable, is_server_failure

_print_lock = threading.Lock()


def say(**fields: object) -> None:
    with _print_lock:
        print(json.dumps(fields), flush=True)


class Watch(BreakerListener):
    def state_change(self, breaker: CircuitBreaker, old: str, new: str) -> None:
        say(breaker=breaker.name, old=old, new=new)


def sell(args: argparse.Namespace, number: int, stopping: threading.Event) -> None:
    # A breaker that opens on the first failure: each terminal fails over from a cut-off server after one
    # timeout and never goes back to it, so the default of two failures in a row would rarely be reached.
    breakers = lambda name: CircuitBreaker(name, failure_threshold=1, reset_timeout=2.0, is_failure=is_server_failure)  # noqa: E731
    with TicketClient([args.name_server], timeout=6.0, attempt_timeout=1.0, breaker_factory=breakers) as client:
        client.add_breaker_listener(Watch())
        sale = 0
        while not stopping.is_set():
            sale += 1
            request_id = f"{args.tag}-{number}-{sale}"
            quantity = 1 + sale % 3
            try:
                reservation = client.reserve(args.event, quantity, "Terminal", "terminal@example.com",
                                             request_id=request_id, confirm=True)
            except Unavailable as exc:
                say(unavailable=request_id, quantity=quantity, error=str(exc))
                continue
            say(sale=reservation.code, request_id=request_id, quantity=quantity, server=client.current_server)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name-server", required=True)
    parser.add_argument("--event", type=int, required=True)
    parser.add_argument("--terminals", type=int, default=3)
    parser.add_argument("--tag", required=True)
    args = parser.parse_args()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    threads = [threading.Thread(target=sell, args=(args, n, stopping)) for n in range(args.terminals)]
    for thread in threads:
        thread.start()
    say(ready=args.tag)
    for thread in threads:
        while thread.is_alive():
            # With a timeout, so the main thread wakes to run the SIGTERM handler even when the kernel handed
            # the signal to a terminal thread (a join without one would sleep through it).
            thread.join(0.2)
    say(done=args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
