"""The benchmark's smoke test: `bench.py --quick` runs end to end and its audit holds. No timing is asserted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from procs import ROOT

TIMEOUT_SECONDS = 120


def run_quick_bench(json_path: Path) -> subprocess.CompletedProcess:
    """Run it as CI does; on a timeout interrupt it (so it stops its servers) before failing."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.bench", "--quick", "--json", str(json_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        raise AssertionError(f"bench.py --quick did not finish in {TIMEOUT_SECONDS} s:\n{output}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, output)


def test_quick_bench_sells_correctly_and_reports_every_level(tmp_path: Path) -> None:
    json_path = tmp_path / "bench.json"
    finished = run_quick_bench(json_path)
    assert finished.returncode == 0, finished.stdout

    report = json.loads(json_path.read_text())
    levels = {(row["kind"], row["clients"]): row for row in report["results"] if row["scenario"] == "levels"}
    for kind in ("noop", "noop_record", "reserve", "list_events", "get_seat_map"):
        row = levels[(kind, 8)]
        assert row["calls"] > 0, row
        assert row["errors"] == 0, row

    correctness = report["correctness"]
    assert correctness["ok"], correctness
    assert correctness["databases"], "at least one database was audited"
    for database in correctness["databases"]:
        assert database["ok"], database
        assert database["sold"] > 0, database
        assert database["sold"] == database["capacity"] - database["available"], database
        assert database["reservations"] == database["distinct_request_ids"], database
        assert database["codes_missing"] == 0, database
    assert "correct" in finished.stdout


def test_store_alone_mode_sells_correctly(tmp_path: Path) -> None:
    """`--store` measures the store without RPyC; its own audit must hold just the same."""
    json_path = tmp_path / "store.json"
    finished = subprocess.run(
        [sys.executable, "-m", "tools.bench", "--store", "--quick", "--json", str(json_path)],
        check=False, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        timeout=TIMEOUT_SECONDS,
    )
    assert finished.returncode == 0, finished.stdout

    report = json.loads(json_path.read_text())
    (row,) = report["results"]
    assert (row["kind"], row["clients"], row["errors"]) == ("store.reserve", 16, 0), row
    assert row["calls"] > 0, row
    (database,) = report["correctness"]["databases"]
    assert database["ok"], database
    assert database["sold"] == database["codes_returned"] == database["reservations"], database
