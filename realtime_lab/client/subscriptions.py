"""The channels a client wants: their channel tokens, recovery offsets, resubscription."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from tornado.websocket import WebSocketClientConnection

from realtime_lab.client.replies import Replies, refusals
from realtime_lab.errors import RequestFailed

#: A channel token, or ``(session_id, channel) -> token`` (sync or async).
ChannelAuth = str | Callable[[str, str], "str | Awaitable[str]"]


class Subscriptions:
    """Wanted channels (in order), their ``auth``, and the last position seen on each.

    ``positions`` maps a history channel to the ``{"offset", "epoch"}`` of the last
    message seen; it is sent as ``since`` when the channel is subscribed again after
    a reconnect, so the server replays what was missed.
    """

    def __init__(self) -> None:
        self.wanted: dict[str, None] = {}
        self.auth: dict[str, ChannelAuth] = {}
        self.positions: dict[str, dict[str, Any]] = {}

    async def message(self, channel: str, session: str, *,
                      recover: bool = False) -> dict[str, Any]:
        """The ``subscribe`` request for ``channel`` (a fresh token, ``since`` to recover)."""
        msg: dict[str, Any] = {"type": "subscribe", "channel": channel}
        position = self.positions.get(channel)
        if recover and position is not None:
            msg["since"] = dict(position)
        auth = self.auth.get(channel)
        if callable(auth):
            produced = auth(session, channel)
            auth = await produced if inspect.isawaitable(produced) else produced
        if auth is not None:
            msg["auth"] = auth
        return msg

    def added(self, channel: str, reply: dict[str, Any]) -> None:
        """The server confirmed a subscribe: want the channel, start from its position."""
        self.wanted[channel] = None
        if "epoch" in reply and channel not in self.positions:
            self.positions[channel] = {"offset": reply["offset"], "epoch": reply["epoch"]}

    def refused(self, channel: str) -> None:
        """A first subscribe was refused: forget its token unless it was wanted before."""
        if channel not in self.wanted:
            self.auth.pop(channel, None)

    def forget(self, channel: str) -> None:
        """After an unsubscribe: the channel, its token and its position."""
        self.wanted.pop(channel, None)
        self.auth.pop(channel, None)
        self.positions.pop(channel, None)

    def track(self, msg: dict[str, Any]) -> None:
        """Follow the offsets of ``message`` and incomplete ``recovered`` messages."""
        mtype = msg.get("type")
        if mtype == "message" and "offset" in msg:
            self.positions[msg["channel"]] = {"offset": msg["offset"], "epoch": msg["epoch"]}
        elif mtype == "recovered" and not msg.get("complete") and msg.get("epoch"):
            # what could not be recovered is lost: go on from the server's position
            self.positions[msg["channel"]] = {"offset": msg["offset"], "epoch": msg["epoch"]}

    async def resubscribe(self, ws: WebSocketClientConnection, replies: Replies,
                          timeout: float, session: str) -> list[tuple[str, RequestFailed]]:
        """Subscribe again to every wanted channel, pipelined, recovering from ``positions``.

        A channel the server now refuses is no longer wanted; the refusals are
        returned. Any other failure (the connection ended) is raised.
        """
        channels = list(self.wanted)
        requests = [replies.request_on(ws, await self.message(c, session, recover=True), timeout)
                    for c in channels]
        refused = await refusals(channels, requests)
        for channel, _ in refused:
            self.wanted.pop(channel, None)
        return refused
