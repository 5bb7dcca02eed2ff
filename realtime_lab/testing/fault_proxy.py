"""A TCP fault proxy for tests and lessons (asyncio, 127.0.0.1 only).

Put it between clients and a server, then break things on purpose::

    proxy = await FaultProxy(server.port).start()
    client = await realtime_lab.connect(proxy.url("/ws"), reconnect=True)
    proxy.cut()          # every connection closed abruptly (RST), as a crashed router would
    proxy.stall()        # nothing forwarded, nothing closed: a half-open connection
    proxy.resume()       # forward again (stalled connections are cut: their bytes are gone)
    proxy.delay = 0.2    # add 200 ms to every chunk, both ways
    proxy.bandwidth = 2000  # at most 2000 bytes/s per connection and direction (slow link)
    proxy.refuse = True  # accept then close new connections at once (server "down")

A slow link pushes back: at most ``QUEUE_CHUNKS`` chunks wait in the proxy per
direction, then it stops reading, so the sender's socket buffers fill, exactly
as behind a slow network (a server sees a slow consumer).

``accept_times`` records when each connection arrived (``time.monotonic()``), so a
test can count attempts and measure how a reconnect storm is spread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("realtime_lab.testing")

LOCALHOST = "127.0.0.1"
CHUNK = 65536
QUEUE_CHUNKS = 16


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client side and the upstream side."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stalled: bool = False

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """Forward TCP from ``127.0.0.1:port`` to ``127.0.0.1:target_port``, with faults.

    Args:
        target_port: the port of the server behind the proxy.
        port: where to listen (0: any free port).
        delay: seconds added to every chunk in each direction.
        bandwidth: bytes per second per connection and direction (None: unlimited).
    """

    def __init__(self, target_port: int, *, port: int = 0, delay: float = 0.0,
                 bandwidth: float | None = None, target_host: str = LOCALHOST) -> None:
        if target_host not in (LOCALHOST, "localhost"):
            raise ValueError("the fault proxy only forwards to 127.0.0.1")
        self.target_host = target_host
        self.target_port = target_port
        self.requested_port = port
        self.delay = delay
        self.bandwidth = bandwidth
        self.refuse = False
        self.accept_times: list[float] = []
        self.cuts = 0
        self._stalled = False
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FaultProxy:
        """Listen on 127.0.0.1 and return self."""
        self._server = await asyncio.start_server(
            self._accept, LOCALHOST, self.requested_port, backlog=2048)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and cut every connection (idempotent)."""
        if self._server is not None:
            self._server.close()
            self.cut()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy is not started; await proxy.start()")
        return self._port

    def url(self, path: str = "/ws", scheme: str = "ws") -> str:
        """``ws://127.0.0.1:PORT/ws`` through the proxy."""
        return f"{scheme}://{LOCALHOST}:{self.port}{path}"

    # ------------------------------------------------------------------ faults

    @property
    def connections(self) -> int:
        """Connections open through the proxy now."""
        return len(self._links)

    @property
    def accepted(self) -> int:
        """Connections accepted since the start."""
        return len(self.accept_times)

    @property
    def stalled(self) -> bool:
        return self._stalled

    def cut(self) -> int:
        """Close every connection abruptly (both sides); return how many."""
        links = list(self._links)
        self._links.clear()
        for link in links:
            link.abort()
        self.cuts += 1
        log.info("fault proxy: cut %d connection(s)", len(links))
        return len(links)

    def stall(self) -> None:
        """Stop forwarding without closing anything: bytes are read and dropped.

        New connections are accepted and stalled too, as behind a dead router.
        """
        self._stalled = True
        for link in self._links:
            link.stalled = True

    def resume(self) -> int:
        """Forward again; connections that were stalled are cut. Returns how many."""
        self._stalled = False
        stale = [link for link in self._links if link.stalled]
        for link in stale:
            self._links.discard(link)
            link.abort()
        return len(stale)

    # ------------------------------------------------------------------ forwarding

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accept_times.append(time.monotonic())
        if self.refuse:
            writer.transport.abort()
            return
        link = _Link(writer, stalled=self._stalled)
        self._links.add(link)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host,
                                                                 self.target_port)
        except OSError:
            self._links.discard(link)
            writer.transport.abort()
            return
        link.upstream = up_writer
        if link not in self._links:  # cut while connecting
            link.abort()
            return
        link.tasks += [
            asyncio.create_task(self._pump(reader, up_writer, link)),
            asyncio.create_task(self._pump(up_reader, writer, link)),
        ]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    link: _Link) -> None:
        """Copy one direction; a delay keeps order through a queue of due chunks."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)
        sender = asyncio.create_task(self._send_due(queue, writer, link))
        link.tasks.append(sender)  # cut() cancels it with the pumps
        try:
            while data := await reader.read(CHUNK):
                if link.stalled:
                    continue
                await queue.put((time.monotonic() + self.delay, data))
        except (ConnectionError, OSError):
            pass
        finally:
            if not sender.done():  # let it send what is queued, then end
                marker = asyncio.ensure_future(queue.put(None))
                await asyncio.wait({marker, sender}, return_when=asyncio.FIRST_COMPLETED)
                marker.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.shield(sender)
            if not link.stalled:
                self._links.discard(link)
                link.abort()

    async def _send_due(self, queue: asyncio.Queue[tuple[float, bytes] | None],
                        writer: asyncio.StreamWriter, link: _Link) -> None:
        while (item := await queue.get()) is not None:
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if link.stalled:
                continue
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return
            if self.bandwidth:
                await asyncio.sleep(len(data) / self.bandwidth)
