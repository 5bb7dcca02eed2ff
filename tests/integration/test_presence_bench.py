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


@pytest.mark.parametrize("flags", [[], ["--minimal"], ["--window", "0"], ["--sockets"],
                                   ["--sockets", "--minimal"], ["--sockets", "--window", "0"]],
                         ids=["hub", "hub-minimal", "hub-at-once", "sockets", "sockets-minimal",
                              "sockets-at-once"])
def test_presence_join_bench_counts_and_rebuilt_lists(flags: list[str]) -> None:
    out = subprocess.run([sys.executable, "benchmarks/presence_join.py", "--members", str(N),
                          *flags], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True)
    result = json.loads(out.stdout)
    pairs = N * (N - 1) // 2  # at once, every join goes to every earlier member
    at_once = "--window" in flags
    assert result["members"] == N and result["presence_details"] == ("--minimal" not in flags)
    if "--sockets" in flags:
        assert result["every_view_exact"] is True
        if at_once:
            assert result["diffs_received"] == pairs == result["server_diffs_queued"]
        else:  # a client stops reading once its list is whole (a last diff may be an echo)
            assert 0 < result["diffs_received"] <= result["server_diffs_queued"] < pairs
        assert result["server_cpu_seconds"] >= 0
    else:  # batched: one merged diff per window, to the members there at its end
        assert result["diff_deliveries"] == pairs if at_once else \
            0 < result["diff_deliveries"] < pairs
        assert result["presence_events"] == N
        assert result["cpu_seconds"] > 0
