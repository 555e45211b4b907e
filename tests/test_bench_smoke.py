"""`make bench` must not rot: its scan section runs end to end on a small load (figures are not judged here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.journald import Journald

REPO = Path(__file__).resolve().parent.parent


def test_the_bench_runs_and_writes_its_results(tmp_path: Path, journald: Journald) -> None:
    out = tmp_path / "results.json"
    r = subprocess.run(
        [sys.executable, "-m", "bench.run", "--only", "scan", "--sizes", "20", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(REPO),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(out.read_text())
    [row] = results["scan"]
    assert row["extra_processes"] == 20 and row["watchdog_full_scan_ms"] > 0 and row["ps_ms"] > 0
    assert "full/ps" in r.stdout and results["machine"]["cpus"] >= 1
