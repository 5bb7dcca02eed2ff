"""The scripts in examples/ run as their docstrings say: each is started as a real
process and its first output checked, then what it claims (examples/live_dashboard.ipynb
runs under nbval with the lessons; examples/two_nodes_redis.py is tested in
tests/broker/test_example_two_nodes.py, beside the Redis fixture).
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import pytest

import realtime_lab

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.timeout(300)


async def start(script: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / script), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


async def line(proc: asyncio.subprocess.Process, timeout: float = 60) -> str:
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), timeout)
    assert raw, f"the example exited early (status {await proc.wait()})"
    return raw.decode().rstrip("\n")


async def lines_until(proc: asyncio.subprocess.Process, wanted: set[str],
                      timeout: float = 30) -> list[str]:
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while not wanted <= set(seen):
            seen.append(await line(proc))
    return seen


async def test_chat_server_prints_presence_and_messages() -> None:
    proc = await start("chat_server.py", "--port", "0", "--grace", "0")
    try:
        first = await line(proc)
        m = re.match(r"chat on http://127\.0\.0\.1:(\d+)/ \(WebSocket (ws://\S+)\)", first)
        assert m, first
        ada = await realtime_lab.connect(m.group(2), user="ada")
        bob = await realtime_lab.connect(m.group(2), user="bob")
        await ada.subscribe("lobby")
        await bob.subscribe("lobby")
        await bob.publish("lobby", {"text": "hi"}, ack=True)
        await bob.close()
        seen = await lines_until(proc, {"ada joined lobby", "bob joined lobby",
                                        "bob left lobby (closed)"})
        assert any(s.startswith("[lobby] bob: ") for s in seen), seen
        await ada.close()
        proc.send_signal(signal.SIGTERM)
        assert "stopped" in await lines_until(proc, {"stopped"})
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_load_experiment_prints_a_line_per_step(tmp_path: Path) -> None:
    proc = await start("load_experiment.py", "--subscribers", "10", "--bursts", "1",
                       "--out", str(tmp_path / "run"))
    try:
        header = (await line(proc)).split()
        assert header == ["subscribers", "lost", "cpu_us_per_delivery", "latency_p50_ms",
                          "latency_p99_ms", "heap_bytes_per_connection"]
        step = (await line(proc, timeout=180)).split()
        assert step[:2] == ["10", "0"], step  # ten subscribers, nothing lost
        assert float(step[2]) > 0 and float(step[3]) > 0, step  # CPU and latency measured
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        assert (tmp_path / "run" / "broadcasts.csv").is_file()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
