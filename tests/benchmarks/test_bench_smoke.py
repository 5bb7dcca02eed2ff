"""The fan-out benchmark's smoke mode still runs end to end (no assertion on speed)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("psutil")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_bench_smoke_produces_rows_without_loss(tmp_path: Path) -> None:
    out = tmp_path / "smoke.csv"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--csv", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=150, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert {row["server"] for row in rows} == {"realtime_lab", "tornado"}
    for row in rows:
        assert int(row["expected"]) > 0
        assert int(row["lost"]) == 0, row
        assert row["timed_out"] == "False", row
        assert int(row["idle_connections"]) > 0
