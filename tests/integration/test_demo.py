"""The demo: a short run with simulated clients writes a metrics CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from realtime_lab import ServerOptions
from realtime_lab.demo import run_demo


@pytest.mark.slow
async def test_run_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = await run_demo(ServerOptions(), port=0, duration=2, clients=4, out=str(tmp_path))
    assert path == tmp_path / "demo_metrics.csv"
    rows = list(csv.DictReader(path.open()))
    assert len(rows) >= 2
    assert set(rows[0]) == {"t", "connections", "channels", "members", "published", "deliveries"}
    assert int(rows[-1]["published"]) > 0 and int(rows[-1]["deliveries"]) > 0
    out = capsys.readouterr().out
    assert "realtime_lab demo: server at ws://127.0.0.1:" in out
    assert "metrics written to" in out
