"""The report: the results table, the targets (ratios within one run, information and never the exit
code), the audit lines, and the JSON document with the machine it ran on.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import rpyc
from rich.console import Console
from rich.table import Table

from tools.bench import (
    REFERENCE_CLIENTS,
)
from tools.bench.load import (
    Measurement,
)
from tools.bench.scenarios import Settings
from tools.bench.systems import Audit


@dataclass(frozen=True)
class Target:
    """A goal stated as a ratio within one run; `passed` is None when the run did not measure it."""

    goal: str
    measured: str
    passed: bool | None


def find(rows: Sequence[Measurement], **where: Any) -> Measurement | None:
    return next((row for row in rows if all(getattr(row, key) == value for key, value in where.items())), None)


def cpu_ratio(row: Measurement, noop: Measurement) -> float:
    """Server CPU per call of `row` as a multiple of the no-op's at the same level."""
    return (row.server_cpu_us_per_call or 0) / (noop.server_cpu_us_per_call or math.inf)


def evaluate_targets(rows: Sequence[Measurement], levels: Sequence[int]) -> list[Target]:
    clients = REFERENCE_CLIENTS if REFERENCE_CLIENTS in levels else max(levels)
    at = f" at {clients} clients"
    noop = find(rows, scenario="levels", kind="noop", clients=clients)
    reserve = find(rows, scenario="levels", kind="reserve", clients=clients)
    alone = find(rows, scenario="idle", idle_terminals=0)
    crowded = next((row for row in rows if row.scenario == "idle" and row.idle_terminals > 0), None)
    targets = []
    if noop and reserve and noop.calls and reserve.calls:
        ratio = reserve.calls_per_s / noop.calls_per_s
        targets.append(Target("reserve calls/s >= 0.75 x no-op" + at, f"{ratio:.2f} x", ratio >= 0.75))
        targets.append(Target("reserve p99 <= no-op p99" + at, f"{reserve.p99_ms:.1f} ms vs {noop.p99_ms:.1f} ms",
                              reserve.p99_ms <= noop.p99_ms))
        cpu = cpu_ratio(reserve, noop)
        targets.append(Target("server CPU per reservation <= 1.5 x per no-op call" + at,
                              f"{reserve.server_cpu_us_per_call:.0f} us vs {noop.server_cpu_us_per_call:.0f} us ({cpu:.1f} x)",
                              cpu <= 1.5))
    else:
        targets.append(Target("reserve vs no-op" + at, "not measured", None))
    record = find(rows, scenario="levels", kind="noop_record", clients=clients)
    if noop and record and noop.calls and record.calls:
        cpu = cpu_ratio(record, noop)
        targets.append(Target("for reference, the record reply alone: a no-op returning a reservation record" + at,
                              f"{record.calls_per_s / noop.calls_per_s:.2f} x calls/s, {cpu:.1f} x CPU", None))
    if alone and crowded and alone.calls and crowded.calls:
        growth = crowded.p99_ms / alone.p99_ms - 1
        targets.append(Target(f"active p99 with {crowded.idle_terminals} idle terminals within 10% of without",
                              f"{crowded.p99_ms:.1f} ms vs {alone.p99_ms:.1f} ms ({growth:+.0%})", growth <= 0.10))
        targets.append(Target(f"server RSS < 200 MB with {crowded.idle_terminals} idle terminals",
                              f"{crowded.server_rss_mb:.0f} MB (without: {alone.server_rss_mb:.0f} MB)", crowded.server_rss_mb < 200))
    return targets


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def results_table(rows: Sequence[Measurement], title: str = "bilheteria benchmark (closed loop, one CALLATTR message per call)") -> Table:
    table = Table(title=title)
    for heading in ("call", "clients", "calls", "calls/s", "p50 ms", "p99 ms", "errors", "server us/call", "load us/call",
                    "server RSS MB", "x no-op"):
        table.add_column(heading, justify="left" if heading == "call" else "right")
    scenario = None
    for row in rows:
        if scenario is not None and row.scenario != scenario:
            table.add_section()
        scenario = row.scenario
        table.add_row(
            row.label, str(row.clients), f"{row.calls:,}", fmt(row.calls_per_s, 0), fmt(row.p50_ms, 2), fmt(row.p99_ms, 2),
            f"[red]{row.errors}[/red]" if row.errors else "0", fmt(row.server_cpu_us_per_call, 0), fmt(row.load_cpu_us_per_call, 0),
            fmt(row.server_rss_mb, 0), fmt(row.ratio_to_noop, 2),
        )
    return table


def targets_table(targets: Sequence[Target]) -> Table:
    table = Table(title="targets (informational; never the exit code)")
    table.add_column("goal")
    table.add_column("measured", justify="right")
    table.add_column("result")
    for target in targets:
        verdict = {True: "[green]pass[/green]", False: "[yellow]fail[/yellow]", None: "[dim]-[/dim]"}[target.passed]
        table.add_row(target.goal, target.measured, verdict)
    return table


def print_audits(console: Console, audits: Sequence[Audit]) -> None:
    for check in audits:
        summary = (f"{check.database}: sold {check.sold:,} == capacity {check.capacity:,} - available {check.available:,}; "
                   f"{check.reservations:,} reservations, {check.distinct_request_ids:,} distinct request ids; "
                   f"{check.codes_returned:,} codes returned, all present and distinct")
        if check.ok:
            console.print(f"[green]correct[/green] {summary}")
        else:
            for violation in check.violations:
                console.print(f"[bold red]VIOLATION[/bold red] {check.database}: {violation}")


def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as meminfo:
        total_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "memory_mb": total_kb // 1024,
        "python": platform.python_version(),
        "rpyc": rpyc.__version__,
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def write_json(path: str, info: dict, settings: Settings, rows: Sequence[Measurement], targets: Sequence[Target],
               audits: Sequence[Audit]) -> None:
    document = {
        "machine": {**info, "loadavg_at_end": os.getloadavg()},
        "settings": asdict(settings),
        "results": [{**asdict(row), "label": row.label} for row in rows],
        "targets": [asdict(target) for target in targets],
        "correctness": {"ok": all(check.ok for check in audits), "databases": [{**asdict(check), "ok": check.ok} for check in audits]},
    }
    Path(path).write_text(json.dumps(document, indent=2, allow_nan=False, default=str) + "\n")
