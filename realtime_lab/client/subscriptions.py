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

    ``left`` holds the channels forgotten on the current connection (unsubscribed,
    or removed by the server). The server sends its ``unsubscribed`` before
    messages of lower priority that were already queued for the channel, so a
    few may still arrive: they are not tracked. ``pending`` counts the
    ``subscribe()`` calls waiting for their reply, per channel.
    """

    def __init__(self) -> None:
        self.wanted: dict[str, None] = {}
        self.auth: dict[str, ChannelAuth] = {}
        self.positions: dict[str, dict[str, Any]] = {}
        self.left: set[str] = set()
        self.pending: dict[str, int] = {}

    async def message(self, channel: str, session: str, *,
                      recover: bool = False) -> dict[str, Any]:
        """The ``subscribe`` request for ``channel`` (a fresh token, ``since`` to recover)."""
        msg: dict[str, Any] = {"type": "subscribe", "channel": channel}
        self.left.discard(channel)
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

    def confirmed(self, reply: dict[str, Any]) -> None:
        """The reader got a ``subscribed`` reply: if ``subscribe()`` waits for it, want it.

        Done by the reader, in wire order, so that a removal by the server right
        after the reply (a kick) is applied after it, not undone by it.
        """
        channel = reply.get("channel")
        if isinstance(channel, str) and self.pending.get(channel):
            self.added(channel, reply)

    def refused(self, channel: str) -> None:
        """A first subscribe was refused: forget its token unless it was wanted before."""
        if channel not in self.wanted:
            self.auth.pop(channel, None)

    def forget(self, channel: str) -> None:
        """The channel is no longer subscribed: drop it, its token and its position."""
        self.wanted.pop(channel, None)
        self.auth.pop(channel, None)
        self.positions.pop(channel, None)
        self.left.add(channel)

    def is_left(self, channel: object) -> bool:
        """True for a channel forgotten on this connection and not subscribed since."""
        return channel in self.left

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
        self.left.clear()  # a new connection: nothing from the old one arrives on it
        channels = list(self.wanted)
        requests = [replies.request_on(ws, await self.message(c, session, recover=True), timeout)
                    for c in channels]
        refused = await refusals(channels, requests)
        for channel, _ in refused:
            self.wanted.pop(channel, None)
        # unsubscribed (or removed by the server) while the resubscribe was in flight:
        # the server subscribed it again, so leave it; a refusal here means already gone
        gone = {c for c, _ in refused}
        stale = [c for c in channels if c not in self.wanted and c not in gone]
        await refusals(stale, [replies.request_on(ws, {"type": "unsubscribe", "channel": c},
                                                  timeout) for c in stale])
        return refused
