"""The hub: sessions, channels, presence, broadcast. No sockets, no Tornado.

A transport calls :meth:`Hub.open` when a WebSocket handshake completes,
:meth:`Hub.receive_text` / :meth:`Hub.receive_binary` for each inbound message,
:meth:`Hub.pong` for each pong frame and :meth:`Hub.closed` when the socket is
gone. The hub answers by writing prebuilt frames through the session's
:class:`~realtime_lab.core.ports.ConnectionPort`.

Broadcast encodes once: a publish serializes its message and builds its frame
once, then appends the same ``bytes`` object to each subscriber's pending list.
Pending frames are written at the end of the event-loop turn, one write per
connection however many frames it got in that turn.
"""

from __future__ import annotations

import fnmatch
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from realtime_lab.core.channels import Channel, validate_channel
from realtime_lab.core.options import ServerOptions
from realtime_lab.core.ports import (
    BroadcastProbe,
    Clock,
    ClusterPort,
    ConnectionPort,
    Scheduler,
)
from realtime_lab.core.session import ConnectionState, Session
from realtime_lab.errors import (
    BinaryNotSupported,
    Forbidden,
    NotSubscribed,
    ProtocolError,
    TooManySubscriptions,
)
from realtime_lab.protocol import codec, messages
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import text_frame

log = logging.getLogger("realtime_lab.core")


@dataclass(slots=True)
class HubStats:
    """Counters since the hub started."""

    connections_opened: int = 0
    connections_closed: int = 0
    messages_in: int = 0
    published: int = 0
    deliveries: int = 0
    errors_sent: int = 0
    slow_consumers: int = 0
    heartbeat_timeouts: int = 0


def _run_now(callback: Callable[[], None]) -> None:
    callback()


class Hub:
    """Channels, presence and broadcast for a set of connections."""

    recorder: BroadcastProbe | None = None  # set by realtime_lab.instrument.Recorder.start()

    def __init__(
        self,
        options: ServerOptions | None = None,
        *,
        clock: Clock = time.monotonic,
        schedule: Scheduler | None = None,
    ) -> None:
        self.options = options or ServerOptions()
        self.clock = clock
        self._schedule: Scheduler = schedule or _run_now
        self.sessions: dict[str, Session] = {}
        self.channels: dict[str, Channel] = {}
        self.stats = HubStats()
        self._dirty: list[Session] = []
        self._flush_scheduled = False
        #: Set by realtime_lab.broker.ClusterNode when this hub is one node of several.
        self.cluster: ClusterPort | None = None

    # ------------------------------------------------------------------ lifecycle

    def open(self, port: ConnectionPort, *, user: str | None = None) -> Session:
        """Register a new connection and send it the welcome message."""
        sid = secrets.token_hex(8)
        now = self.clock()
        session = Session(id=sid, user=user or sid, port=port, connected_at=now, last_seen=now,
                          last_ping_at=now)
        self.sessions[sid] = session
        session.state = ConnectionState.OPEN
        self.stats.connections_opened += 1
        opts = self.options
        self.send(session, messages.welcome_message(
            sid, session.user, opts.heartbeat_interval, opts.heartbeat_timeout, opts.limits()))
        return session

    def close(self, session: Session, code: int, reason: str) -> None:
        """Close a connection from the server side with ``code``."""
        if session.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return
        session.state = ConnectionState.CLOSING
        session.close_code = code
        session.close_reason = reason
        self._flush_session(session)
        session.port.close(code, reason)

    def closed(self, session: Session, code: int | None = None, reason: str = "") -> None:
        """The transport reports the socket closed: drop subscriptions and presence."""
        if session.state is ConnectionState.CLOSED:
            return
        session.state = ConnectionState.CLOSED
        if session.close_code is None:
            session.close_code = code
            session.close_reason = reason
        session.pending.clear()
        session.pending_bytes = 0
        for name in list(session.subscriptions):
            self._leave(session, name)
        self.sessions.pop(session.id, None)
        self.stats.connections_closed += 1

    def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "server stopping") -> None:
        for session in list(self.sessions.values()):
            self.close(session, code, reason)

    # ------------------------------------------------------------------ inbound

    def receive_text(self, session: Session, text: str) -> None:
        """Handle one inbound text message."""
        if session.state is not ConnectionState.OPEN:
            return
        now = self.clock()
        session.last_seen = now
        session.stats.messages_in += 1
        session.stats.bytes_in += len(text)
        self.stats.messages_in += 1
        try:
            msg = messages.parse_client_message(codec.decode(text))
            self._dispatch(session, msg)
        except ProtocolError as err:
            self.reject(session, err)

    def receive_binary(self, session: Session, data: bytes) -> None:
        """Binary frames are not part of the JSON protocol: answer with an error."""
        if session.state is not ConnectionState.OPEN:
            return
        session.last_seen = self.clock()
        self.reject(session, BinaryNotSupported(
            "binary frames are not accepted on the JSON protocol; send JSON text frames"))

    def pong(self, session: Session) -> None:
        now = self.clock()
        if session.ping_sent_at is not None:
            session.rtt = now - session.ping_sent_at
            session.ping_sent_at = None
        session.last_seen = now

    def reject(self, session: Session, err: ProtocolError) -> None:
        """Answer a bad request with an error message, and close when the error is fatal."""
        session.stats.errors += 1
        self.stats.errors_sent += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("session %s: %s %s", session.id, err.code, err.message)
        self.send(session, messages.error_message(err.code, err.message, err.request_id))
        if err.close_code is not None:
            self.close(session, err.close_code, err.code)

    def _dispatch(self, session: Session, msg: messages.ClientMessage) -> None:
        if isinstance(msg, messages.Publish):
            if not self.options.client_publish:
                raise Forbidden("clients may not publish on this server", request_id=msg.id)
            validate_channel_for(msg.channel, self.options, msg.id)
            sender = None if self.options.echo_to_sender else session
            recipients = self._broadcast(msg.channel, msg.data, session.user, exclude=sender)
            if msg.id is not None:
                self.send(session, messages.published_message(msg.channel, msg.id, recipients))
        elif isinstance(msg, messages.Subscribe):
            self.subscribe(session, msg.channel, msg.id)
        elif isinstance(msg, messages.Unsubscribe):
            if msg.channel not in session.subscriptions:
                raise NotSubscribed(f"not subscribed to {msg.channel!r}", request_id=msg.id)
            self._leave(session, msg.channel)
            self.send(session, messages.unsubscribed_message(msg.channel, msg.id))
        else:  # Ping
            self.send(session, messages.pong_message(msg.id))

    # ------------------------------------------------------------------ channels

    def subscribe(self, session: Session, name: str, request_id: messages.RequestId = None) -> None:
        """Subscribe ``session`` to channel ``name`` (idempotent)."""
        validate_channel_for(name, self.options, request_id)
        if name in session.subscriptions:
            self.send(session, messages.subscribed_message(name, request_id))
            return
        if len(session.subscriptions) >= self.options.max_subscriptions:
            raise TooManySubscriptions(
                f"already subscribed to {len(session.subscriptions)} channels; "
                f"the limit is {self.options.max_subscriptions}", request_id=request_id)
        channel = self.channels.get(name)
        if channel is None:
            pattern = self.options.presence_channels
            presence = pattern is not None and fnmatch.fnmatchcase(name, pattern)
            channel = self.channels[name] = Channel(name, time.time(), presence)
        joined = channel.add(session)
        session.subscriptions.add(name)
        if self.cluster is not None:  # the node answers once the cluster knows
            self.cluster.subscribed(session, channel, request_id)
            return
        self.send(session, messages.subscribed_message(name, request_id))
        if channel.presence:
            self.send(session, messages.presence_state_message(name, channel.presence_members()))
            if joined:
                diff = messages.presence_diff_message(
                    name, {session.user: channel.member_info(session.user)}, {})
                self._fan_out(channel, text_frame(codec.encode(diff)), exclude=session)

    def _leave(self, session: Session, name: str) -> None:
        session.subscriptions.discard(name)
        channel = self.channels.get(name)
        if channel is None:
            return
        left = channel.remove(session)
        if self.cluster is not None:  # cluster-wide leave events come from the broker
            self.cluster.left(session, channel)
            left = False
        if not channel.subscribers:
            del self.channels[name]
            return
        if channel.presence and left:
            diff = messages.presence_diff_message(name, {}, {session.user: {"connections": 0}})
            self._fan_out(channel, text_frame(codec.encode(diff)))

    def publish(self, channel: str, data: Any, *, sender: str | None = None) -> int:
        """Publish ``data`` to every subscriber of ``channel``; return the recipient count."""
        validate_channel(channel, self.options)
        return self._broadcast(channel, data, sender)

    def _broadcast(self, name: str, data: Any, sender: str | None,
                   exclude: Session | None = None) -> int:
        self.stats.published += 1
        channel = self.channels.get(name)
        cluster = self.cluster  # the other nodes (realtime_lab.broker), usually None
        if channel is None:
            if cluster is not None:
                cluster.published(name, codec.encode(messages.channel_message(name, data, sender)))
            return 0
        channel.messages += 1
        msg = messages.channel_message(name, data, sender)
        probe = self.recorder  # instrumentation probe (realtime_lab.instrument), usually None
        t0 = probe.begin(msg) if probe is not None else 0.0
        text = codec.encode(msg)
        if cluster is not None:  # the same encoded text goes to the other nodes
            cluster.published(name, text)
        frame = text_frame(text)
        if probe is None:
            return self._fan_out(channel, frame, exclude)
        t1 = probe.clock()
        delivered = self._fan_out(channel, frame, exclude)
        probe.end(channel, len(frame), delivered, t0, t1, exclude)
        return delivered

    def _fan_out(self, channel: Channel, frame: bytes, exclude: Session | None = None) -> int:
        """Queue the same frame for every subscriber; return how many got it."""
        delivered = 0
        for session in list(channel.subscribers.values()):
            if session is not exclude and self._enqueue(session, frame):
                delivered += 1
        self.stats.deliveries += delivered
        return delivered

    # ------------------------------------------------------------------ outbound

    def send(self, session: Session, message: dict[str, Any]) -> bool:
        """Encode and queue one message for one session."""
        return self._enqueue(session, text_frame(codec.encode(message)))

    def _enqueue(self, session: Session, frame: bytes) -> bool:
        if session.state is not ConnectionState.OPEN:
            return False
        size = len(frame)
        if session.pending_bytes + size > self.options.max_outbound_bytes:
            self._slow_consumer(session)
            return False
        session.pending.append(frame)
        session.pending_bytes += size
        if not session.dirty:
            session.dirty = True
            self._dirty.append(session)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._schedule(self.flush)
        return True

    def flush(self) -> None:
        """Write every session's pending frames, one write per session."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for session in dirty:
            self._flush_session(session)

    def _flush_session(self, session: Session) -> None:
        session.dirty = False
        pending = session.pending
        if not pending or session.state is ConnectionState.CLOSED:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        count = len(pending)
        session.pending = []
        session.pending_bytes = 0
        port = session.port
        if port.buffered_bytes() + len(data) > self.options.max_outbound_bytes:
            self._slow_consumer(session)
            return
        session.stats.messages_out += count
        session.stats.bytes_out += len(data)
        port.write(data)

    def _slow_consumer(self, session: Session) -> None:
        self.stats.slow_consumers += 1
        log.info("closing slow consumer %s (%s)", session.id, session.port.remote)
        session.pending.clear()
        session.pending_bytes = 0
        self.close(session, CloseCode.SLOW_CONSUMER, "slow consumer: outbound buffer full")

    # ------------------------------------------------------------------ heartbeat

    def heartbeat_tick(self) -> None:
        """Ping connections whose interval is due and close those that did not answer."""
        now = self.clock()
        interval = self.options.heartbeat_interval
        timeout = self.options.heartbeat_timeout
        for session in list(self.sessions.values()):
            if session.state is not ConnectionState.OPEN:
                continue
            if session.ping_sent_at is not None:
                if session.last_seen < session.ping_sent_at:
                    if now - session.ping_sent_at >= timeout:
                        self.stats.heartbeat_timeouts += 1
                        self.close(session, CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
                    continue
                # Traffic since the ping counts as an answer; ping again when due.
                session.ping_sent_at = None
            if now - session.last_ping_at >= interval:
                session.ping_sent_at = now
                session.last_ping_at = now
                session.port.ping()

    # ------------------------------------------------------------------ views

    def channel_list(self) -> list[dict[str, object]]:
        return [c.describe() for c in sorted(self.channels.values(), key=lambda c: c.name)]

    def presence(self, channel: str) -> dict[str, dict[str, int]]:
        ch = self.channels.get(channel)
        return ch.presence_members() if ch else {}


def validate_channel_for(name: str, options: ServerOptions, request_id: messages.RequestId) -> None:
    """Validate a channel name, attaching the request id to the error."""
    try:
        validate_channel(name, options)
    except ProtocolError as err:
        err.request_id = request_id
        raise
