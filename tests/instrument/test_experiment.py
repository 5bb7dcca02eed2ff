"""The fan-out sweep and its load generator, on small numbers."""

from __future__ import annotations

import pytest

import realtime_lab
from realtime_lab.instrument.experiment import fanout_sweep, raise_fd_limit
from realtime_lab.instrument.loadgen import Load


@pytest.mark.slow
async def test_fanout_sweep_small() -> None:
    server = await realtime_lab.serve(port=0, presence_channels=None)
    rec = server.record()
    try:
        summary, latency = await fanout_sweep(server, [3, 12], burst=5, bursts=2)
    finally:
        rec.stop()
        await server.stop()
    assert summary["subscribers"].tolist() == [3, 12]
    assert summary["lost"].tolist() == [0, 0]
    assert summary["deliveries"].tolist() == [3 * 5 * 2, 12 * 5 * 2]
    assert (summary["cpu_us_per_delivery"] > 0).all()
    assert (summary["heap_bytes_per_connection"] > 0).all()
    assert set(latency["subscribers"]) == {3, 12} and (latency["latency_ms"] >= 0).all()
    assert set(rec.to_frame("latency")["channel"]) == {"fanout-3", "fanout-12"}
    fanouts = set(rec.to_frame("broadcasts")["fanout"])
    assert {3, 12} <= fanouts


async def test_sweep_warns_when_presence_is_on() -> None:
    server = await realtime_lab.serve(port=0)
    try:
        with pytest.warns(UserWarning, match="presence"):
            await fanout_sweep(server, [2], burst=2, bursts=1, trace_memory=False)
    finally:
        await server.stop()


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "lab-client"])
async def test_load_generator_in_process(raw: bool) -> None:
    server = await realtime_lab.serve(port=0, presence_channels=None)
    rec = server.record()
    load = Load(server.url, "room", 4, raw=raw)
    try:
        await load.start()
        result = await load.burst(6, 300, timeout=10)
        assert result["received"] == result["expected"] == 24
        assert result["latency_count"] == 24
        assert all(x >= 0 for x in result["latency_ms"])
    finally:
        await load.close()
        rec.stop()
        await server.stop()


def test_raise_fd_limit() -> None:
    assert raise_fd_limit(64) >= 64
