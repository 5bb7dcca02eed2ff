"""examples/two_nodes_redis.py against a real redis-server: presence and a message
cross the two nodes, as the script prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import RedisProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "two_nodes_redis.py"


@pytest.mark.timeout(120)
def test_two_nodes_share_presence_and_messages(redis: RedisProcess) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE), "--redis", redis.url],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("node A ws://127.0.0.1:") and redis.url in lines[0]
    assert lines[1:] == [
        "members seen by node A: ['ada', 'bob']",
        "members seen by node B: ['ada', 'bob']",
        "bob on node B received from ada: hello from node A",
    ]
