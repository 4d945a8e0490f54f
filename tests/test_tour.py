"""The guided tour runs end to end and every chapter's own check passes."""

from __future__ import annotations

import os
import subprocess
import sys

from procs import ROOT

CHAPTER_TITLES = (
    "1. RPC as middleware, and access transparency",
    "2. Tiers",
    "3. Concurrency and mutual exclusion",
    "4. Service discovery and location transparency",
    "5. Failure transparency",
    "6. Exactly-once over an unreliable network",
    "7. Soft state",
    "8. Live updates and callbacks",
)


def test_the_tour_passes_every_chapter_check() -> None:
    result = subprocess.run(
        [sys.executable, "cli.py", "tour", "--auto"],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False, env={**os.environ, "COLUMNS": "120"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for title in CHAPTER_TITLES:
        assert title in output, f"chapter {title!r} missing:\n{output}"
    assert "✗" not in output
    assert output.count("✓") >= 19
    assert "checks of 8 chapters passed" in output
    assert "Traceback" not in output


def test_the_tour_refuses_options_it_cannot_honour() -> None:
    result = subprocess.run(
        [sys.executable, "cli.py", "--json", "tour"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "tour starts its own cluster" in result.stderr
