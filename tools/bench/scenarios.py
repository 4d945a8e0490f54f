"""What one run measures, scenario by scenario: the ceiling and the product level by level, 8 buyers next
to idle terminals, and replicas (two and three servers on one SQLite file, then on a throwaway PostgreSQL).
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console

from tools.bench.load import (
    LoadPlan,
    Measurement,
    Window,
    idle_terminals,
    measure,
)
from tools.bench.noop import noop_server
from tools.bench.systems import Audit, Product, audit, product
from tools.harness import Child
from tools.pgcluster import PgCluster


@dataclass(frozen=True)
class Settings:
    """What one run measures; --quick shrinks it to a CI smoke test of correctness."""

    levels: tuple[int, ...]
    window: Window
    idle: int
    replicas: tuple[int, ...]
    replica_clients: int
    log_level: str | None
    postgres: bool
    """Replicas on a throwaway PostgreSQL too (pgcluster.py), besides SQLite."""


def run_levels(settings: Settings, system: Product, noop: Child, run_id: str) -> list[Measurement]:
    """Ceiling and product level by level, interleaved so drift on a shared machine hits both alike."""
    rows = []
    for clients in settings.levels:
        for kind, method in (("noop", "reserve"), ("noop_record", "reserve_record")):
            noop_row, _ = measure(LoadPlan(method, (noop.address,), 1, run_id), clients, [noop], settings.window,
                                  scenario="levels", kind=kind)
            rows.append(noop_row)
        for method in ("reserve", "list_events", "get_seat_map"):
            row, codes = measure(system.plan(method, f"{run_id}-{method}-{clients}"), clients, system.servers, settings.window,
                                 scenario="levels", kind=method)
            system.codes.extend(codes)
            rows.append(row)
    return rows


def run_idle(settings: Settings, system: Product, run_id: str) -> list[Measurement]:
    """The same 8 buyers without and then with idle terminals connected, back to back."""
    rows = []
    alone, codes = measure(system.plan("reserve", f"{run_id}-alone"), 8, system.servers, settings.window, scenario="idle", kind="reserve")
    system.codes.extend(codes)
    rows.append(alone)
    with idle_terminals(system.addresses[0], settings.idle) as opened:
        crowded, codes = measure(system.plan("reserve", f"{run_id}-crowded"), 8, system.servers, settings.window,
                                 scenario="idle", kind="reserve", idle=opened)
    system.codes.extend(codes)
    rows.append(crowded)
    return rows


def run_replicas(
    settings: Settings, workdir: Path, run_id: str, postgres: PgCluster | None
) -> tuple[list[Measurement], list[Audit]]:
    """N servers on one SQLite file, then on one PostgreSQL when there is one."""
    rows, audits = [], []
    for replicas in settings.replicas:
        for backend in ("sqlite", "postgresql") if postgres else ("sqlite",):
            database = postgres.create_database(f"bench{replicas}") if postgres and backend == "postgresql" else ""
            with product(f"{backend}-replicas{replicas}", replicas, workdir, settings.log_level, database) as system:
                row, codes = measure(system.plan("reserve", f"{run_id}-{backend}-x{replicas}"), settings.replica_clients,
                                     system.servers, settings.window, scenario="replicas", kind="reserve")
                system.codes.extend(codes)
                rows.append(replace(row, backend=backend))
                counts = system.sector_counts()
            audits.append(audit(system, *counts))
    return rows, audits


def with_ratios(rows: list[Measurement]) -> list[Measurement]:
    """Each row's throughput as a fraction of the no-op ceiling at the same number of terminals."""
    ceiling = {row.clients: row.calls_per_s for row in rows if row.kind == "noop"}
    return [replace(row, ratio_to_noop=row.calls_per_s / ceiling[row.clients]) if ceiling.get(row.clients) else row for row in rows]


def run(settings: Settings, console: Console) -> tuple[list[Measurement], list[Audit]]:
    """Every scenario, each server stopped before its database is audited."""
    run_id = secrets.token_hex(4)
    rows: list[Measurement] = []
    audits: list[Audit] = []
    with tempfile.TemporaryDirectory(prefix="bilheteria-bench-") as temp:
        workdir = Path(temp)
        with product("single", 1, workdir, settings.log_level) as system:
            with noop_server(workdir) as noop:
                console.print(f"[dim]levels {settings.levels}: no-op, no-op + record reply, reserve, list_events, get_seat_map ...[/dim]")
                rows += run_levels(settings, system, noop, run_id)
            console.print(f"[dim]8 active terminals without and with {settings.idle} idle ...[/dim]")
            rows += run_idle(settings, system, run_id)
            counts = system.sector_counts()
        audits.append(audit(system, *counts))
        console.print(f"[dim]replicas {settings.replicas} at {settings.replica_clients} clients ...[/dim]")
        with contextlib.ExitStack() as stack:
            postgres = stack.enter_context(PgCluster()) if settings.postgres else None
            replica_rows, replica_audits = run_replicas(settings, workdir, run_id, postgres)
        rows += replica_rows
        audits += replica_audits
    return with_ratios(rows), audits
