"""`python -m tools.bench`: the benchmark's arguments, and the run from start to report (the package's
docstring, tools/bench/__init__.py, says what it measures and how).
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
import time
from typing import Any

from rich.console import Console

from tools.bench import (
    FD_HEADROOM,
    REFERENCE_CLIENTS,
    WARMUP_SECONDS,
)
from tools.bench.load import (
    Window,
)
from tools.bench.noop import serve_noop
from tools.bench.report import Target, evaluate_targets, machine, print_audits, results_table, targets_table, write_json
from tools.bench.scenarios import Settings, run
from tools.bench.store import run_store
from tools.pgcluster import find_binaries


def raise_file_limit(needed: int) -> None:
    """Children inherit the limit: the server needs a descriptor per terminal, the idle holder one per idle terminal."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark bilheteria against a no-op RPyC server on this machine.")
    parser.add_argument("--quick", action="store_true", help="CI smoke test: 0.5 s per level, 8 clients, 100 idle, 2 replicas")
    parser.add_argument("--postgres", action=argparse.BooleanOptionalAction, default=None,
                        help="replicas on a throwaway PostgreSQL too (default: yes when its binaries are here, except with --quick)")
    parser.add_argument("--json", metavar="FILE", help="also write the results, targets, audit and machine info here")
    parser.add_argument("--clients", help="comma-separated terminal counts (default 1,8,64,256)")
    parser.add_argument("--seconds", type=float, help="measured seconds per level (default 5)")
    parser.add_argument("--idle", type=int, help="idle terminals next to 8 active ones (default 1000)")
    parser.add_argument("--replica-clients", type=int, help="terminals in the replica runs (default 64)")
    parser.add_argument("--server-log-level", help="pass --log-level to server.py (default: the server's own)")
    parser.add_argument("--store", action="store_true",
                        help="only the store: threads of this process selling through Store.reserve, no RPyC (levels 1,16,64)")
    parser.add_argument("--serve-noop", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    quick = args.quick
    default_levels = (16,) if args.store and quick else (1, 16, 64) if args.store else (8,) if quick else (1, 8, 64, 256)
    levels = tuple(int(item) for item in args.clients.split(",")) if args.clients else default_levels
    if not levels or min(levels) < 1:
        raise SystemExit("--clients needs positive numbers, e.g. 1,8,64")
    seconds = args.seconds if args.seconds is not None else (0.5 if quick else 5.0)
    return Settings(
        levels=levels,
        window=Window(WARMUP_SECONDS, seconds),
        idle=args.idle if args.idle is not None else (100 if quick else 1000),
        replicas=(2,) if quick else (2, 3),
        replica_clients=args.replica_clients or (8 if quick else REFERENCE_CLIENTS),
        log_level=args.server_log_level,
        postgres=args.postgres if args.postgres is not None else (not quick and find_binaries() is not None),
    )


def interrupt(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` stops what it started."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_noop is not None:
        return serve_noop(args.serve_noop)
    signal.signal(signal.SIGTERM, interrupt)
    settings = settings_from(args)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # CI logs and pipes: the table needs more than 80 columns
    raise_file_limit(max(*settings.levels, settings.replica_clients) + settings.idle + FD_HEADROOM)
    info = machine()
    started = time.monotonic()
    if args.store:
        rows, audits = run_store(settings)
        targets: list[Target] = []
        console.print(results_table(rows, title="the store alone (threads of one process, no RPyC)"))
    else:
        rows, audits = run(settings, console)
        targets = evaluate_targets(rows, settings.levels)
        console.print(results_table(rows))
        console.print(targets_table(targets))
    print_audits(console, audits)
    console.print(f"[dim]{info['nproc']} cores, Python {info['python']}, rpyc {info['rpyc']}, "
                  f"load average at start {info['loadavg_at_start'][0]:.2f}, took {time.monotonic() - started:.0f} s[/dim]")
    if args.json:
        write_json(args.json, info, settings, rows, targets, audits)
    return 0 if all(check.ok for check in audits) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every process this run started has been stopped", file=sys.stderr)
        sys.exit(130)
