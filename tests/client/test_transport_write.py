"""The client's write path on a connection that is already closed."""

from __future__ import annotations

import pytest
from tornado.websocket import WebSocketClosedError, websocket_connect

from realtime_lab import LabServer
from realtime_lab.client import transport


async def test_write_after_close_raises_websocket_closed(server: LabServer) -> None:
    """Every caller catches WebSocketClosedError (replies, outbox, send, receipts);
    a write racing a close must raise that, not fail Tornado's assertion in
    ``selected_subprotocol`` (seen in lesson 04 under load: AssertionError)."""
    ws = await websocket_connect(server.url + "?user=ada")
    ws.close()
    with pytest.raises(WebSocketClosedError):
        transport.write(ws, {"type": "ping"})
