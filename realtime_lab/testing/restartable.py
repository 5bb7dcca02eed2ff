"""A server that can be stopped and started again on the same port (restart scenarios)."""

from __future__ import annotations

from realtime_lab.core.options import ServerOptions
from realtime_lab.server import LabServer


class RestartableServer:
    """Wraps :class:`LabServer` instances that share one port across restarts.

    ``await srv.start()`` binds (port 0 the first time), ``await srv.restart()``
    stops the current server (clients get 1001) and starts a new one on the same
    port; ``srv.current`` is the running :class:`LabServer`.
    """

    def __init__(self, options: ServerOptions | None = None, *, port: int = 0) -> None:
        self.options = options or ServerOptions()
        self.port = port
        self.server: LabServer | None = None
        self.restarts = 0

    async def start(self) -> LabServer:
        self.server = await LabServer(self.options, port=self.port).start()
        self.port = self.server.port
        return self.server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    async def restart(self) -> LabServer:
        await self.stop()
        self.restarts += 1
        return await self.start()

    @property
    def url(self) -> str:
        """The WebSocket endpoint (stable across restarts)."""
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def current(self) -> LabServer:
        if self.server is None:
            raise RuntimeError("not started; await start()")
        return self.server

    async def __aenter__(self) -> RestartableServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
