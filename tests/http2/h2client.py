"""An independent HTTP/2 + WebSocket client for the tests: the ``h2`` library for the
connection, ``wsproto`` (RFC 6455 framing, not realtime_lab's) on each extended CONNECT
stream (RFC 8441). asyncio streams, one reader task; every wait has a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections import deque
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.settings import SettingCodes
from wsproto.connection import Connection, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)

TIMEOUT = 10.0
CONNECTION_WINDOW = 16 << 20


class H2Client:
    """One HTTP/2 connection to the server; ``websocket()`` opens streams on it."""

    def __init__(self) -> None:
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.streams: dict[int, Any] = {}
        self.settings = asyncio.Event()
        self.connect_protocol = 0
        self.terminated: ConnectionTerminated | None = None
        self.closed = asyncio.Event()
        self.window = asyncio.Event()
        self.authority = ""
        self.scheme = "http"

    async def connect(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None,
                      ) -> H2Client:
        self.authority = f"{host}:{port}"
        self.scheme = "https" if ssl_context else "http"
        self.reader, self.writer = await asyncio.open_connection(host, port, ssl=ssl_context)
        self.h2.initiate_connection()
        # As browsers do (Chromium: 15 MB): a connection window far above the streams'
        # (64 KiB), so one stream that stops reading cannot use it all up.
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()
        self.task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.settings.wait(), TIMEOUT)
        return self

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for event in self.h2.receive_data(data):
                    self._event(event)
                self.flush()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            for stream in self.streams.values():
                stream.ended.set()

    def _event(self, event: Any) -> None:
        if isinstance(event, RemoteSettingsChanged):
            value = event.changed_settings.get(SettingCodes.ENABLE_CONNECT_PROTOCOL)
            if value is not None:
                self.connect_protocol = value.new_value
            self.settings.set()
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
        elif isinstance(event, WindowUpdated):
            self.window.set()
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if stream is not None:
            stream.event(event)

    def request_headers(self, method: str, path: str, extra: list[tuple[str, str]] = (),
                        protocol: str | None = None) -> list[tuple[str, str]]:
        headers = [(":method", method)]
        if protocol is not None:
            headers.append((":protocol", protocol))
        headers += [(":scheme", self.scheme), (":path", path), (":authority", self.authority)]
        return headers + list(extra)

    async def get(self, path: str, method: str = "GET", body: bytes = b"",
                  extra: list[tuple[str, str]] = ()) -> tuple[int, dict[str, str], bytes]:
        """An ordinary request; (status, headers, body)."""
        sid = self.h2.get_next_available_stream_id()
        stream = self.streams[sid] = RequestStream(self, sid)
        self.h2.send_headers(sid, self.request_headers(method, path, extra),
                             end_stream=not body)
        if body:
            self.h2.send_data(sid, body, end_stream=True)
        self.flush()
        await asyncio.wait_for(stream.ended.wait(), TIMEOUT)
        return stream.status, stream.headers, bytes(stream.body)

    async def websocket(self, path: str = "/ws", extra: list[tuple[str, str]] = (),
                        protocol: str = "websocket") -> WsStream:
        """An extended CONNECT; the stream (``status`` 200 when accepted)."""
        sid = self.h2.get_next_available_stream_id()
        stream = self.streams[sid] = WsStream(self, sid)
        headers = self.request_headers("CONNECT", path, [("sec-websocket-version", "13"),
                                                         *extra], protocol)
        self.h2.send_headers(sid, headers)
        self.flush()
        await asyncio.wait_for(stream.response.wait(), TIMEOUT)
        return stream

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.h2.close_connection()
            self.flush()
            self.writer.close()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class RequestStream:
    def __init__(self, client: H2Client, sid: int) -> None:
        self.client = client
        self.sid = sid
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.response = asyncio.Event()
        self.ended = asyncio.Event()
        self.reset_code: int | None = None

    def event(self, event: Any) -> None:
        if isinstance(event, ResponseReceived):
            self.headers = dict(event.headers)
            self.status = int(self.headers[":status"])
            self.response.set()
        elif isinstance(event, DataReceived):
            self.data(event.data, event.flow_controlled_length)
        elif isinstance(event, StreamEnded):
            self.ended.set()
        elif isinstance(event, StreamReset):
            self.reset_code = event.error_code
            self.response.set()
            self.ended.set()

    def data(self, data: bytes, flow: int) -> None:
        self.body += data
        self.client.h2.acknowledge_received_data(flow, self.sid)


class WsStream(RequestStream):
    """A WebSocket over one HTTP/2 stream, framed by wsproto."""

    def __init__(self, client: H2Client, sid: int) -> None:
        super().__init__(client, sid)
        self.ws = Connection(ConnectionType.CLIENT)
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.reading = True
        self._held: deque[int] = deque()  # flow of DATA not acknowledged (paused)
        self._parts: list[Any] = []
        self.received_bytes = 0

    def data(self, data: bytes, flow: int) -> None:
        self.received_bytes += len(data)
        if self.reading:
            self.client.h2.acknowledge_received_data(flow, self.sid)
        else:
            self._held.append(flow)
        if not data or self.ws.state.name == "CLOSED":
            return
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, Message):
                self._parts.append(event.data)
                if event.message_finished:
                    joined = ("".join(self._parts) if isinstance(event, TextMessage)
                              else b"".join(self._parts))
                    self._parts = []
                    self.messages.put_nowait(joined)
            elif isinstance(event, CloseConnection):
                self.messages.put_nowait(event)
            elif isinstance(event, Ping):
                self._send(self.ws.send(event.response()))

    def pause(self) -> None:
        """Stop acknowledging DATA: the server's window for this stream runs out."""
        self.reading = False

    def resume(self) -> None:
        self.reading = True
        while self._held:
            self.client.h2.acknowledge_received_data(self._held.popleft(), self.sid)
        self.client.flush()

    def _send(self, data: bytes, end: bool = False) -> None:
        self.client.h2.send_data(self.sid, data, end_stream=end)
        self.client.flush()

    async def send(self, message: str | bytes | dict[str, Any]) -> None:
        """Send one message, waiting for flow-control window as needed."""
        if isinstance(message, dict):
            message = json.dumps(message)
        data = self.ws.send(TextMessage(message) if isinstance(message, str)
                            else BytesMessage(message))
        h2 = self.client.h2
        view = memoryview(data)
        while view:
            window = min(h2.local_flow_control_window(self.sid), h2.max_outbound_frame_size)
            if window <= 0:
                self.client.window.clear()
                await asyncio.wait_for(self.client.window.wait(), TIMEOUT)
                continue
            h2.send_data(self.sid, bytes(view[:window]))
            view = view[window:]
            self.client.flush()

    async def recv(self, timeout: float = TIMEOUT) -> Any:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def recv_json(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        message = await self.recv(timeout)
        assert isinstance(message, str), message
        return json.loads(message)

    async def recv_type(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next message of type ``kind`` (others are skipped)."""
        while True:
            message = await self.recv_json(timeout)
            if message.get("type") == kind:
                return message

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._send(self.ws.send(CloseConnection(code, reason)))

    def end(self) -> None:
        """END_STREAM: the TCP FIN of RFC 6455 over HTTP/2."""
        self._send(b"", end=True)

    def reset(self) -> None:
        self.client.h2.reset_stream(self.sid)
        self.client.flush()
