"""A reconnect storm: 500 clients lose their connection at once.

The 500 clients run in their own process (``python -m realtime_lab.testing.storm``)
so that their event loop is not the server's; the server and the fault proxy run
here. The fault is a proxy cut (no close frame: back off) or a server restart on
the same port (close 1001: reconnect now). Asserted: the planned attempt times
(from the clients' state transitions) and, after a cut, the arrival times at the
proxy are spread (no 100 ms window holds more than a stated share); every client
comes back subscribed exactly once and receives a message published after the
storm. Measured without jitter the same arrivals put about 85% in one 100 ms window.
Figures are printed and written to tests/artifacts/storm_<fault>.json.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from realtime_lab import ServerOptions
from realtime_lab.testing import FaultProxy, RestartableServer
from realtime_lab.testing.storm import STORM_CHANNEL, max_window_share, storm_report

N = 500
PLANNED_MAX_SHARE = 0.30  # full jitter over 0.5 s: about 20% per 100 ms window
# The attempts the clients really made (their own clock, in their own process) are
# asserted; arrivals at the proxy are reported only: the proxy shares its event loop
# with the server under test, and on a loaded machine (CI, other jobs) accepts bunch
# behind that loop's work (18-48% after a cut in 20 quiet runs, 69% once under a
# load average of 10; without jitter 85-87%).
ATTEMPTS_MAX_SHARE = 0.50  # quiet runs: 24-33%; without jitter: about 85%
# The real attempts follow the plan only as far as the clients' own event loop keeps
# time: on a busy machine it runs the reconnect timers late and in bunches (54-61% in
# one window seen at a load average of 6-8). A loop late by L runs together what was
# planned within 100 ms + L, so the attempts' share may reach the plan's share over
# that wider window (plus this margin for retries and several stalls); and no client's
# first attempt may come before its planned time (it waited its jittered delay).
STALL_MARGIN = 0.15
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture
def lab_options() -> ServerOptions:
    # Presence off: with presence, 500 leaves and 500 joins on one channel send
    # 2 x 500 x 499 presence diffs, which measures presence fan-out, not reconnection.
    return ServerOptions(heartbeat_interval=30, heartbeat_timeout=30, close_timeout=5,
                         presence_channels=None)


async def read_line(proc: asyncio.subprocess.Process, prefix: str, timeout: float) -> str:
    """The next stdout line of ``proc``, which must start with ``prefix``."""
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode().strip()
    assert line.startswith(prefix), f"expected {prefix!r} from the clients, got {line!r}"
    return line[len(prefix):].strip()


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", ["proxy_cut", "server_restart"])
async def test_reconnect_storm_spreads_and_everyone_is_served(
        fault: str, lab: RestartableServer) -> None:
    async with FaultProxy(lab.port) as proxy:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-W", "ignore", "-m", "realtime_lab.testing.storm", proxy.url(),
            str(N), stdout=asyncio.subprocess.PIPE)
        try:
            await read_line(proc, "ready", 90)
            assert lab.current.channels()[0]["subscribers"] == N

            t0 = time.monotonic()
            if fault == "proxy_cut":
                assert proxy.cut() == N
            else:
                await lab.restart()
            done = json.loads(await read_line(proc, "done", 60))

            # Everyone served: open, subscribed exactly once, receives a message published now.
            assert done["open"] == N
            assert lab.current.channels()[0]["subscribers"] == N
            lab.current.publish(STORM_CHANNEL, "after the storm")
            assert int(await read_line(proc, "received", 40)) == N

            arrivals = [t - t0 for t in proxy.accept_times if t >= t0]
            planned = [t - t0 for t in done["planned"]]
            report = storm_report(planned,
                                  [t - t0 for t in done["attempts"]], arrivals,
                                  [t - t0 for t in done["reopened"]])
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / f"storm_{fault}.json").write_text(
                json.dumps({"fault": fault, **report.as_dict()}, indent=1))
            print(f"\nreconnect storm ({fault}): {report}; the clients' loop was late by up "
                  f"to {done['loop_lag_max'] * 1000:.0f} ms")

            assert len(done["planned"]) == N and len(arrivals) >= N
            assert report.planned_max_share_100ms <= PLANNED_MAX_SHARE, report
            assert report.planned_p90 - report.planned_p10 >= 0.25, report
            # (asyncio may run a timer up to its clock resolution early: 1 ms allowed)
            assert len(done["late"]) == N and min(done["late"]) >= -0.001, (
                "a client attempted before its planned time", min(done["late"]))
            stalled = max_window_share(planned, 0.1 + done["loop_lag_max"]) + STALL_MARGIN
            assert report.attempts_max_share_100ms <= max(ATTEMPTS_MAX_SHARE, stalled), report
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
