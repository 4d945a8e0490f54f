"""The store alone: threads of this process selling through one `Store`, no RPyC, so what the server adds to
a sale is the difference between this and the product's `reserve` row (`python -m tools.bench --store`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from database import Store
from tools.bench import (
    CAPACITY,
    SECTOR,
)
from tools.bench.load import (
    Measurement,
    ProcessReport,
    TerminalLog,
    Window,
    rss_mb,
    summarise,
)
from tools.bench.scenarios import Settings
from tools.bench.systems import Audit, Product, audit
from tools.pgcluster import PgCluster


def measure_store(threads: int, window: Window, workdir: Path, run_id: str, database: str = "") -> tuple[Measurement, Audit]:
    """The store alone: `threads` threads of this process selling through one Store on a fresh database (a SQLite
    file, or the PostgreSQL URL given), no RPyC.

    What the server adds to a sale is the difference between this and the `reserve` row; CPU is this
    process's own (os.times) over the window, so it includes the group commit's hand-offs between threads.
    """
    name = f"store-{'postgresql' if database else 'sqlite'}-{threads}"
    if not database:
        (workdir / name).mkdir()
    db = database or str(workdir / name / "tickets.db")
    store = Store(db, seed_demo=False)
    try:
        event = store.create_event("Bench Night", "Bench Hall", "2030-01-01T20:00:00-03:00", ((SECTOR, 10000, CAPACITY),))
        logs = [TerminalLog() for _ in range(threads)]
        begin = time.monotonic() + window.warmup
        end = begin + window.seconds

        def sell(terminal: int) -> None:
            log, sequence = logs[terminal], 0
            customer, email = f"Bench Terminal {terminal}", f"terminal{terminal}@bench.example"
            while (started_at := time.monotonic()) < end:
                started = time.perf_counter()
                try:
                    sold = store.reserve(event.id, 1, customer, email, SECTOR, "full", f"{run_id}-{terminal}-{sequence}", True)
                except Exception as exc:  # noqa: BLE001 - counted and sampled like a terminal's error
                    log.failed(exc)
                    continue
                finally:
                    sequence += 1
                if started_at >= begin:
                    log.latencies.append(time.perf_counter() - started)
                log.codes.append(sold.code)

        workers = [threading.Thread(target=sell, args=(terminal,), name=f"store-bench-{terminal}") for terminal in range(threads)]
        for worker in workers:
            worker.start()
        time.sleep(max(0.0, begin - time.monotonic()))
        before = os.times()
        time.sleep(max(0.0, end - time.monotonic()))
        after = os.times()
        for worker in workers:
            worker.join()
        cpu = (after.user - before.user) + (after.system - before.system)
        report = ProcessReport(b"".join(log.latencies.tobytes() for log in logs), sum(log.errors for log in logs),
                               next((log.error_sample for log in logs if log.error_sample), ""),
                               tuple(code for log in logs for code in log.codes), 0.0)
        row, codes = summarise([report], threads, 0, window.seconds, cpu, [], scenario="store", kind="store.reserve", idle=0)
        counts = next((sector.capacity, sector.available) for sector in store.get_event(event.id).sectors if sector.name == SECTOR)
    finally:
        store.close()
    system = Product(name, db, [], (), "", event.id, codes)
    backend = "postgresql" if database else "sqlite"
    return replace(row, load_cpu_us_per_call=None, server_rss_mb=rss_mb(os.getpid()), backend=backend), audit(system, *counts)


def run_store(settings: Settings) -> tuple[list[Measurement], list[Audit]]:
    """Each level on a fresh SQLite file, then on a fresh PostgreSQL database when there is one."""
    rows, audits = [], []
    run_id = secrets.token_hex(4)
    with tempfile.TemporaryDirectory(prefix="bilheteria-bench-store-") as temp, contextlib.ExitStack() as stack:
        postgres = stack.enter_context(PgCluster()) if settings.postgres else None
        for backend in ("sqlite", "postgresql") if postgres else ("sqlite",):
            for threads in settings.levels:
                database = postgres.create_database(f"store{threads}") if postgres and backend == "postgresql" else ""
                row, checked = measure_store(threads, settings.window, Path(temp), run_id, database)
                rows.append(row)
                audits.append(checked)
    return rows, audits
