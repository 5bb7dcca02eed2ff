"""The dashboard's controls drive a real crowd: a reconnect storm, a stall the heartbeat
finds, a slow link, a server restart; the dashboard's event log and counters follow."""

from __future__ import annotations

import asyncio

import realtime_lab


async def _until(condition, timeout: float = 60.0) -> None:
    """Wait for a condition; the timeout only bounds a hang (a busy machine is slow)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_controls_storm_stall_slow_restart() -> None:
    # 2.5 s of silence before a connection counts as dead: enough to find the stall
    # quickly, and more than a busy machine's pauses (0.5 + 0.5 s failed under load)
    server = await realtime_lab.serve(port=0, heartbeat_interval=0.5, heartbeat_timeout=2.0,
                                      presence_grace=0.2)
    dash = server.dashboard(autostart=False)
    controls = dash.controls
    assert controls is not None
    try:
        await controls.add(20)
        assert len(server.presence("classroom")) == 20
        # a reconnect storm: every connection reset, every client back and subscribed
        assert await controls.cut() == 20
        await _until(lambda: controls.crowd.reconnects >= 20)
        await controls.crowd.wait_open()
        await _until(lambda: len(server.presence("classroom")) == 20)
        dash.refresh()
        assert dash.events.event_log.counts["reconnect"] >= 20
        assert "20 open" in controls.status.value
        # a stall: nothing closes, the server's heartbeat gives up on every connection
        await controls.stall()
        await _until(lambda: server.inspect(connections=False).counters[
            "heartbeat_timeouts"] >= 20)
        await controls.resume()
        await controls.crowd.wait_open()
        await _until(lambda: len(server.presence("classroom")) == 20)
        # a slow link: the proxy holds messages back; latency climbs, nothing is lost
        rec = server.record()
        await controls.slow(300)
        await asyncio.sleep(1.5)
        await controls.resume()
        await _until(lambda: len(rec.tables["latency"]) > 0)
        rec.stop()
        # a restart: 1001 for everyone, and back on the same port
        port = server.port
        await controls.restart()
        assert server.port == port and server.running
        await _until(lambda: len(server.presence("classroom")) == 20)
        assert controls.actions == ["+20 clients", "cut", "stall", "resume", "slow link 300 B/s",
                                    "resume", "restart"]
        await controls.stop_clients()
        assert controls.crowd.size == 0 and controls.crowd.proxy is None
        await _until(lambda: not server.presence("classroom"))
    finally:
        await controls.aclose()
        dash.close()
        await server.stop()
