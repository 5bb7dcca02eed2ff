"""benchmarks/presence_join.py runs end to end with a small N (no assertion on speed):
every client's member list, rebuilt from presence_state + diffs over real sockets
while everyone joins at once, is exact, and each join reached every earlier member."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
N = 60


@pytest.mark.parametrize("flags", [[], ["--minimal"], ["--sockets"], ["--sockets", "--minimal"]],
                         ids=["hub", "hub-minimal", "sockets", "sockets-minimal"])
def test_presence_join_bench_counts_and_rebuilt_lists(flags: list[str]) -> None:
    out = subprocess.run([sys.executable, "benchmarks/presence_join.py", "--members", str(N),
                          *flags], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True)
    result = json.loads(out.stdout)
    pairs = N * (N - 1) // 2  # every join goes to every earlier member
    assert result["members"] == N and result["presence_details"] == ("--minimal" not in flags)
    if "--sockets" in flags:
        assert result["every_view_exact"] is True
        assert result["diffs_received"] == pairs == result["server_diffs_queued"]
        assert result["server_cpu_seconds"] >= 0
    else:
        assert result["diff_deliveries"] == pairs and result["presence_events"] == N
        assert result["cpu_seconds"] > 0
