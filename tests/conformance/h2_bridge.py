"""A small RFC 6455-to-RFC 8441 bridge, so that an HTTP/1.1 WebSocket test suite
(Autobahn's cases through kosoku) exercises the server's WebSocket over HTTP/2.

For each TCP client the bridge answers the HTTP/1.1 upgrade itself, opens one
HTTP/2 connection (h2c, prior knowledge) to the server, sends the extended CONNECT
with the client's ``Sec-WebSocket-Extensions``/``-Protocol`` and passes the server's
agreement back in the ``101``. Then bytes are copied unchanged: the client's into
DATA frames (within the server's windows), the stream's DATA to the client socket
(acknowledged once written). Client FIN -> END_STREAM, END_STREAM -> FIN,
RST_STREAM -> the client socket is reset. The bridge never parses a WebSocket frame.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import socket
import struct

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Bridge:
    def __init__(self, upstream_host: str, upstream_port: int, path: str = "/echo") -> None:
        self.host, self.port, self.path = upstream_host, upstream_port, path
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _Pair(self, reader, writer).run()
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()


class _Pair:
    """One client socket and its stream."""

    def __init__(self, bridge: Bridge, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.bridge = bridge
        self.creader, self.cwriter = reader, writer
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.sid = 1
        self.response: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self.window = asyncio.Event()
        self.done = asyncio.Event()

    async def run(self) -> None:
        head = await self.creader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        path = lines[0].split(" ")[1]
        self.ureader, self.uwriter = await asyncio.open_connection(self.bridge.host,
                                                                   self.bridge.port)
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(16 << 20)
        extra = [(k, headers[k]) for k in ("sec-websocket-extensions", "sec-websocket-protocol")
                 if k in headers]
        query = path.partition("?")[2]
        self.h2.send_headers(self.sid, [
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
            (":path", self.bridge.path + ("?" + query if query else "")),
            (":authority", f"{self.bridge.host}:{self.bridge.port}"),
            ("sec-websocket-version", "13"), *extra])
        self._flush()
        upstream = asyncio.create_task(self._from_server())
        try:
            answer = await asyncio.wait_for(self.response, 10)
            status = answer.get(":status")
            if status != "200":
                self.cwriter.write(f"HTTP/1.1 {status} Refused\r\nContent-Length: 0\r\n\r\n"
                                   .encode())
                return
            accept = base64.b64encode(hashlib.sha1(
                headers["sec-websocket-key"].encode() + GUID).digest()).decode()
            reply = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
                     "Connection: Upgrade", f"Sec-WebSocket-Accept: {accept}"]
            for name in ("sec-websocket-extensions", "sec-websocket-protocol"):
                if name in answer:
                    reply.append(f"{name}: {answer[name]}")
            self.cwriter.write(("\r\n".join(reply) + "\r\n\r\n").encode("latin-1"))
            await self._from_client()
            await self.done.wait()
        finally:
            upstream.cancel()
            self.uwriter.close()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.uwriter.is_closing():
            self.uwriter.write(data)

    async def _from_client(self) -> None:
        while not self.done.is_set():
            data = await self.creader.read(65536)
            if not data:  # FIN -> END_STREAM
                if not self.done.is_set():
                    self.h2.end_stream(self.sid)
                    self._flush()
                return
            view = memoryview(data)
            while view and not self.done.is_set():
                size = min(self.h2.local_flow_control_window(self.sid),
                           self.h2.max_outbound_frame_size, len(view))
                if size <= 0:
                    self.window.clear()
                    await self.window.wait()
                    continue
                self.h2.send_data(self.sid, bytes(view[:size]))
                view = view[size:]
                self._flush()

    async def _from_server(self) -> None:
        try:
            while True:
                data = await self.ureader.read(65536)
                if not data:
                    break
                for event in self.h2.receive_data(data):
                    await self._event(event)
                self._flush()
        finally:
            self._finish(reset=not self.done.is_set())

    async def _event(self, event: object) -> None:
        if isinstance(event, ResponseReceived):
            if not self.response.done():
                self.response.set_result(dict(event.headers))
        elif isinstance(event, DataReceived):
            self.cwriter.write(event.data)
            await self.cwriter.drain()
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, WindowUpdated):
            self.window.set()
        elif isinstance(event, StreamEnded):  # END_STREAM -> FIN
            self._finish(reset=False)
        elif isinstance(event, (StreamReset, ConnectionTerminated)):
            self._finish(reset=True)

    def _finish(self, reset: bool) -> None:
        if self.done.is_set():
            return
        self.done.set()
        self.window.set()
        if not self.response.done():
            self.response.set_result({":status": "502"})
        if reset:  # RST_STREAM -> an abortive close of the client's TCP connection
            sock = self.cwriter.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):  # the client may be gone already
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.cwriter.close()
