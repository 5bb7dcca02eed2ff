"""History channels across nodes: broker offsets, in-order delivery, recovery anywhere.

A part of :class:`~realtime_lab.broker.node.ClusterNode` (a mixin).

With a broker, a channel that matches a history rule is numbered by the broker,
not by the hub: :meth:`ClusterRecovery.publish_numbered` hands the encoded
message to :meth:`Broker.publish_numbered`, which gives it the channel's next
offset and its epoch, keeps it in the channel's capped history and sends it
back to every subscribed node (this one included). Each node delivers those
messages in offset order, dropping an offset it already delivered.

A subscribe to a history channel holds the session's live messages from the
moment the hub adds it (``_hold_live``) until the node has the broker's position
(one atomic read: epoch, offset, and with ``since`` the retained messages after
it). Then the node sends ``subscribed`` with that position, the missed messages,
``recovered``, and the held live messages whose offset is above the position.
The read may be ahead of the messages Redis has still to deliver on the pub/sub
connection; until those arrive, the session skips live messages at or below its
position (its *floor*). So every message is sent exactly once, in offset order,
whichever node the client used before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from realtime_lab.broker.base import Broker, Envelope, HistoryRead
from realtime_lab.core.outbound import Priority
from realtime_lab.protocol.frames import text_frame
from realtime_lab.protocol.wire import JSON_WIRE, FrameVariants

if TYPE_CHECKING:
    from realtime_lab.broker.node import NodeStats
    from realtime_lab.core.channels import Channel
    from realtime_lab.core.history import HistoryRule
    from realtime_lab.core.hub import Hub
    from realtime_lab.core.session import Session

#: A live message held for a session that waits for its position:
#: (epoch, offset, id of a session that must not get it or "", encoded text).
Held = tuple[str, int, str, str]


class ClusterRecovery:
    """Broker-numbered history and cross-node recovery (part of ClusterNode)."""

    hub: Hub
    broker: Broker
    node_id: str
    stats: NodeStats

    def _init_recovery(self) -> None:
        self._waiting: dict[str, dict[str, list[Held]]] = {}  # channel -> session -> held
        self._since: dict[tuple[str, str], dict[str, Any]] = {}  # (session, channel) -> since
        self._last_offset: dict[str, tuple[str, int]] = {}  # channel -> (epoch, offset) delivered
        self._floors: dict[str, dict[str, tuple[str, int]]] = {}  # channel -> session -> position

    def _rule(self, name: str) -> HistoryRule | None:
        return self.hub.history_rule(name) if self.hub.options.history else None

    # ------------------------------------------------------------------ hub side

    def publish_numbered(self, name: str, text: str, exclude: Session | None = None) -> bool:
        """Send a history channel's message to the broker to be numbered and delivered.

        Returns False when the channel keeps no history or the broker is
        unreachable: the hub then delivers the message locally, unnumbered.
        """
        rule = self._rule(name)
        if rule is None:
            return False
        return self.broker.publish_numbered(name, text, size=rule.size, ttl=rule.ttl,
                                            exclude=exclude.id if exclude is not None else "")

    def recover(self, session: Session, name: str, since: dict[str, Any]) -> None:
        """The subscribe of ``session`` to ``name`` carried ``since``: recover after it."""
        waiting = self._waiting.get(name)
        if waiting is not None and session.id in waiting:
            self._since[(session.id, name)] = since
            return
        # the position was already sent (cannot happen through the hub): say so honestly
        self.hub.send(session, {"type": "recovered", "channel": name, "complete": False,
                                "count": 0, "offset": 0, "epoch": None}, Priority.NORMAL)

    # ------------------------------------------------------------------ subscribe

    def _hold_live(self, session: Session, name: str) -> None:
        if self._rule(name) is not None:
            self._waiting.setdefault(name, {})[session.id] = []

    def _release_live(self, session: Session, name: str) -> None:
        for table in (self._waiting, self._floors):
            per_channel = table.get(name)
            if per_channel is not None:
                per_channel.pop(session.id, None)
                if not per_channel:
                    del table[name]
        self._since.pop((session.id, name), None)

    async def _read_position(self, session: Session, name: str) -> HistoryRead | None:
        """The channel's position (and missed messages) for a session that waits for it."""
        waiting = self._waiting.get(name)
        rule = self._rule(name)
        if waiting is None or session.id not in waiting or rule is None:
            return None
        since = self._since.get((session.id, name))
        offset = since.get("offset") if since else None
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            offset = -1
        return await self.broker.history_since(name, offset, ttl=rule.ttl)

    def _finish_recovery(self, session: Session, name: str, read: HistoryRead | None) -> None:
        """Send the missed messages, ``recovered``, then the held live messages."""
        waiting = self._waiting.get(name)
        held = waiting.pop(session.id, None) if waiting is not None else None
        if waiting is not None and not waiting:
            del self._waiting[name]
        since = self._since.pop((session.id, name), None)
        if held is None or name not in session.subscriptions or not session.is_open:
            return
        if since is not None:
            offset, epoch = since.get("offset"), since.get("epoch")
            missed: list[str] = []
            complete = False
            if read is not None and isinstance(offset, int) and isinstance(epoch, str):
                complete = read.complete_since(offset, epoch)
                if epoch == read.epoch:
                    missed = read.texts
            for text in missed:
                self._send_text(session, text)
            self.hub.send(session, {
                "type": "recovered", "channel": name, "complete": complete,
                "count": len(missed), "offset": read.offset if read else 0,
                "epoch": read.epoch if read else None}, Priority.NORMAL)
            self.stats.recoveries += 1
        for epoch, off, exclude, text in held:
            if read is not None and epoch == read.epoch and off <= read.offset:
                continue  # before the position, or already sent as recovered
            if exclude != session.id:
                self._send_text(session, text)
        last = self._last_offset.get(name)
        if read is not None and (last is None or last[0] != read.epoch or last[1] < read.offset):
            # the read is ahead of the pub/sub: skip what is still to arrive up to it
            self._floors.setdefault(name, {})[session.id] = (read.epoch, read.offset)

    def _send_text(self, session: Session, text: str) -> None:
        frame = text_frame(text)
        if session.wire is not JSON_WIRE:
            frame = FrameVariants(frame).get(session.wire)
        self.hub._enqueue(session, frame, Priority.NORMAL)

    # ------------------------------------------------------------------ broker side

    def _on_numbered(self, env: Envelope) -> None:
        """A history channel's message, numbered by the broker: deliver it once, in order."""
        name = env.channel
        epoch, exclude, text = env.payload.split("\n", 2)
        if env.origin != self.node_id:
            exclude = ""
        last = self._last_offset.get(name)
        if last is not None and last[0] == epoch:
            if env.seq <= last[1]:
                self.broker.stats.duplicates += 1
                return
            self.stats.missed += env.seq - last[1] - 1
        self._last_offset[name] = (epoch, env.seq)
        self.stats.envelopes_in += 1
        channel = self.hub.channels.get(name)
        if channel is None:
            self.stats.unrouted += 1
            return
        channel.messages += 1
        skip: set[str] = set()
        waiting = self._waiting.get(name)
        if waiting:
            for held in waiting.values():
                held.append((epoch, env.seq, exclude, text))
            skip.update(waiting)
        floors = self._floors.get(name)
        if floors:
            skip.update(self._below_floor(name, floors, epoch, env.seq))
        self.stats.remote_deliveries += self._fan_out_except(channel, text, skip, exclude)

    def _below_floor(self, name: str, floors: dict[str, tuple[str, int]], epoch: str,
                     offset: int) -> list[str]:
        """Sessions whose position is at or above ``offset``; drop floors passed."""
        below = []
        for sid, (floor_epoch, floor) in list(floors.items()):
            if floor_epoch == epoch and offset <= floor:
                below.append(sid)  # already sent (recovered) or before its position
            if floor_epoch != epoch or offset >= floor:
                del floors[sid]
        if not floors:
            del self._floors[name]
        return below

    def _fan_out_except(self, channel: Channel, text: str, skip: set[str],
                        exclude: str) -> int:
        """Queue one frame for every subscriber but those in ``skip`` and ``exclude``."""
        frame = text_frame(text)
        if not skip and not exclude:
            return self.hub._fan_out(channel, frame)
        delivered = 0
        variants: FrameVariants | None = None
        for session in list(channel.subscribers.values()):
            sid = session.id
            if sid in skip or sid == exclude:
                continue
            out = frame
            if session.wire is not JSON_WIRE:
                if variants is None:
                    variants = FrameVariants(frame)
                out = variants.get(session.wire)
            if self.hub._enqueue(session, out, Priority.NORMAL):
                delivered += 1
        self.hub.stats.deliveries += delivered
        return delivered
