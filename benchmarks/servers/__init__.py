"""Servers under test, each started as its own OS process by ``benchmarks.run``.

A server binds 127.0.0.1 on an ephemeral port, prints ``PORT <n>`` on stdout
when it is ready, stops when its stdin closes or on SIGTERM, and with
``--lag-file PATH`` writes its event-loop lag record there when it stops
(``benchmarks/servers/_common.py``). The native servers speak the subset of
realtime_lab's protocol the load generator uses (``welcome`` on connect,
``subscribe`` -> ``subscribed``, ``publish`` -> ``message`` to every subscriber);
python-socketio speaks Socket.IO (``benchmarks/wire.py``). To add a peer, write
such a module and add a :class:`ServerSpec` to :data:`SERVERS`.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parent.parent / "node"


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """How to start one server under test."""

    name: str
    module: str  # a Python module run with -m, or a script path under benchmarks/node
    description: str
    args: tuple[str, ...] = ()
    dialect: str = "native"
    runtime: str = "python"

    def command(self) -> list[str]:
        """The argv that starts this server (without ``--lag-file``)."""
        if self.runtime == "node":
            return [shutil.which("node") or "node", str(NODE_DIR / self.module), *self.args]
        return [sys.executable, "-m", self.module, *self.args]

    def unavailable(self) -> str | None:
        """Why this server cannot run here, or None if it can."""
        if self.runtime != "node":
            return None
        if shutil.which("node") is None:
            return "node is not installed (apt-get install nodejs npm)"
        if not (NODE_DIR / "node_modules" / "ws").is_dir():
            return ("benchmarks/node/node_modules is missing (make bench runs "
                    "`npm ci --prefix benchmarks/node`)")
        return None


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            "realtime_lab",
            "benchmarks.servers.realtime_lab_server",
            "realtime_lab.serve(presence_channels=None)",
        ),
        ServerSpec(
            "tornado",
            "benchmarks.servers.tornado_server",
            "plain Tornado WebSocketHandler, write_message() per subscriber",
        ),
        ServerSpec(
            "websockets",
            "benchmarks.servers.websockets_server",
            "websockets (asyncio) server, broadcast()",
        ),
        ServerSpec(
            "socketio",
            "benchmarks.servers.socketio_server",
            "python-socketio AsyncServer (ASGI) on uvicorn, emit(room=...)",
            dialect="socketio",
        ),
        ServerSpec(
            "node_ws",
            "server.js",
            "Node.js ws, send() of one Buffer per subscriber",
            runtime="node",
        ),
    )
}

PYTHON_SERVERS = [name for name, spec in SERVERS.items() if spec.runtime == "python"]

__all__ = ["NODE_DIR", "PYTHON_SERVERS", "SERVERS", "ServerSpec"]
