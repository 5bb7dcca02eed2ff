"""The demo records through the Recorder and writes its tables and a PNG report."""

from __future__ import annotations

from pathlib import Path

import pytest

from realtime_lab import ServerOptions
from realtime_lab.demo import run_demo
from realtime_lab.instrument import load


@pytest.mark.slow
async def test_demo_writes_tables_and_report(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    await run_demo(ServerOptions(), port=0, duration=2.5, clients=5, out=str(tmp_path))
    run = tmp_path / "demo_run"
    assert (run / "report.png").stat().st_size > 10_000
    frames = load(run)
    assert {"broadcasts", "connections", "channels", "memory", "latency", "events"} <= set(frames)
    assert len(frames["broadcasts"]) > 0
    assert (frames["latency"]["latency_ms"] >= 0).all() and len(frames["latency"]) > 0
    out = capsys.readouterr().out
    assert f"report written to {run / 'report.png'}" in out
    assert "conns=" in out  # the live summary in the progress bar
