"""A sale rush on one event through several replicas of the store on one PostgreSQL, at a chosen isolation level.

What it answers: how the store's writes fare when replicas compete for one event's rows, with the event's
row lock under READ COMMITTED (the store's design) or under SERIALIZABLE (the alternative, where a wait on the
hot row becomes an abort and a rerun). Run it from a checkout to measure that checkout's store:

    python -m tools.pgrush --isolation read-committed --replicas 2 --threads 8 --seconds 5
    python -m tools.pgrush --isolation serializable --replicas 2 --threads 8 --seconds 5

Each replica is a `Store` of this process (its own pool, its own sale lanes), as a server process would hold
it; the throwaway PostgreSQL commits durably (fsync on). It prints one line: sales/s, p50 and p99 latency,
errors, write reruns after conflicts, and whether the audit is clean.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from contextlib import ExitStack, closing

from database import Store
from tools.pgcluster import PgCluster

ISOLATION = {"read-committed": "read%5C%20committed", "serializable": "serializable"}
"""Each level as the URL's `options` spell it (a space inside a value is escaped with a backslash)."""
CAPACITY = 10_000_000
"""Large enough that no rush sells out: what is measured is the competition for the row, not refusals."""


class Reruns(logging.Handler):
    """Counts the engine's "write conflicted; attempt N again" lines: each is one transaction run again."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "conflicted" in record.getMessage():
            self.count += 1


def rush(url: str, replicas: int, threads: int, seconds: float) -> str:
    reruns = Reruns()
    engine_log = logging.getLogger("bilheteria.storage.postgres")
    engine_log.setLevel(logging.DEBUG)
    engine_log.addHandler(reruns)
    with ExitStack() as stack:
        stores = [stack.enter_context(closing(Store(url, seed_demo=False))) for _ in range(replicas)]
        event = stores[0].create_event("Rush", "Hall", "2030-01-01T20:00:00-03:00", (("Pista", 10000, CAPACITY),))
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        end = time.monotonic() + seconds

        def sell(store: Store, terminal: int) -> None:
            mine: list[float] = []
            sequence = 0
            while time.monotonic() < end:
                started = time.perf_counter()
                try:
                    store.reserve(event.id, 1, "Fan", f"fan{terminal}@example.com", "Pista", "full", f"{terminal}-{sequence}", True)
                    mine.append(time.perf_counter() - started)
                except Exception as exc:  # noqa: BLE001 - counted and sampled, the rush goes on
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                sequence += 1
            with lock:
                latencies.extend(mine)

        workers = [threading.Thread(target=sell, args=(stores[n % replicas], n)) for n in range(replicas * threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        latencies.sort()
        sold = CAPACITY - stores[0].get_event(event.id).sector("Pista").available
        problems = stores[0].check_invariants()
        correct = not problems and sold == len(latencies)
        p50, p99 = (latencies[int(q * (len(latencies) - 1))] * 1000 for q in (0.5, 0.99)) if latencies else (0.0, 0.0)
        sample = f" (e.g. {errors[0]})" if errors else ""
        return (f"{len(latencies) / seconds:.0f} sales/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, {len(errors)} errors{sample}, "
                f"{reruns.count} reruns, audit {'clean' if correct else f'BROKEN: {sold} sold, {problems[:2]}'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isolation", choices=sorted(ISOLATION), default="read-committed")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="selling threads per replica")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with PgCluster(durable=True) as postgres:
        url = postgres.create_database("rush") + f"?options=-c%20default_transaction_isolation%3D{ISOLATION[args.isolation]}"
        print(f"{args.isolation}, {args.replicas} replicas x {args.threads} threads, {args.seconds:g} s: "
              f"{rush(url, args.replicas, args.threads, args.seconds)}")


if __name__ == "__main__":
    main()
