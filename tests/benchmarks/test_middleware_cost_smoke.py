"""benchmarks/middleware_cost.py still runs end to end (no assertion on speed).

It had stopped running when ``server_process`` began yielding a ``Running`` record
instead of a ``(pid, port)`` pair, and nothing noticed. With ``--ref HEAD`` it also
measures the committed realtime_lab from a ``git archive`` snapshot, interleaved.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_BOUND = 400  # about 25 s on an idle machine; the bound only catches a hang


@pytest.mark.slow
@pytest.mark.timeout(RUN_BOUND + 60)
def test_middleware_cost_runs_and_compares_with_a_revision() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.middleware_cost", "--rounds", "1",
         "--subscribers", "200", "--messages", "20", "--ref", "HEAD"],
        cwd=ROOT, capture_output=True, text=True, timeout=RUN_BOUND, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in done.stderr, done.stderr  # no message lost
    rows = [line.strip("|").split("|") for line in done.stdout.splitlines()
            if line.startswith("| 200 |")]
    assert [cells[2].strip() for cells in rows] == ["none", "stack", "stack+events"]
    for cells in rows:
        for cell in (cells[3], cells[5]):  # this tree, and HEAD
            assert math.isfinite(float(cell)) and float(cell) > 0, cells
