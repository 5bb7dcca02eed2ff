"""Pusher clients on the hub: ``/app/{key}``, a second protocol adapter.

A Pusher connection is an ordinary hub session whose codec is ``pusher``
(``protocol.py`` translates what the hub sends). What the client sends is
translated here into native messages and handed to ``Hub.receive_text``, so it
takes the native path: inbound middleware (rate limits), the ``on_message``,
``on_subscribe`` and ``on_presence`` hooks, channel rules, limits, counters and
events. Two things are set on the session at the handshake, through its public
fields: ``echo = False`` (Pusher never sends a client its own client events) and
``authorizer``, the app's HMAC signature check for private and presence channels.

=======================  ======================================================
Pusher event             native message
=======================  ======================================================
``pusher:ping``          ``ping`` (answered ``pusher:pong``)
``pusher:subscribe``     ``subscribe`` (``auth``: the signature and channel data)
``pusher:unsubscribe``   ``unsubscribe`` (ignored when not subscribed)
``client-*``             ``publish`` with ``event`` (private and presence channels)
``pusher:signin``        (the adapter) the session's user, ``pusher:signin_success``
=======================  ======================================================
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

from realtime_lab.core.hooks import ConnectRequest
from realtime_lab.core.hub import PendingOpen
from realtime_lab.core.outbound import Priority
from realtime_lab.errors import (
    BadField,
    BinaryNotSupported,
    ChannelUnauthorized,
    Forbidden,
    NotSubscribed,
    ProtocolError,
    RateLimited,
    Unauthorized,
    UnknownType,
)
from realtime_lab.logthrottle import LogThrottle
from realtime_lab.middleware.rate_limit import Rate, TokenBucket
from realtime_lab.protocol.handshake import Agreement
from realtime_lab.pusher import protocol as pp
from realtime_lab.pusher.apps import PusherApp, PusherApps
from realtime_lab.pusher.auth import check_channel_auth, user_auth
from realtime_lab.transports.tornado_ws import HubWebSocketHandler

if TYPE_CHECKING:
    from realtime_lab.core.hub import Hub
    from realtime_lab.core.session import Session
    from realtime_lab.pusher.webhooks import Webhooks

log = logging.getLogger("realtime_lab.pusher")
_throttle = LogThrottle(log)

#: The longest presence ``user_id`` (the hub's user ids are at most this long).
MAX_USER_ID = 128
#: ``auth`` of the native subscribe to a signed-in user's channel (a client's own
#: ``auth`` always arrives packed as a JSON list, so it can never be this).
SIGNED_IN = "pusher-signed-in"
_PING = {"type": "ping"}


class ChannelAuthorizer:
    """A Pusher connection's channel authorizer (``Session.authorizer``): the app's
    HMAC signature of ``socket_id:channel[:channel_data]``.

    On a presence channel the signed ``channel_data`` names the member: its
    ``user_id`` becomes the session's user (one user per connection) and its
    ``user_info`` the member's metadata.
    """

    __slots__ = ("app", "user")

    def __init__(self, app: PusherApp) -> None:
        self.app = app
        #: The user signed in with ``pusher:signin`` (None: nobody yet).
        self.user: str | None = None

    def __call__(self, session: Session, channel: str, auth: str | None) -> Any:
        if auth == SIGNED_IN and self.user is not None \
                and channel == pp.hub_channel(pp.USER_CHANNEL_PREFIX + self.user):
            return True  # the signed-in user's own channel
        if auth is None:
            raise ChannelUnauthorized(f"{channel!r} needs an auth signature")
        try:
            signature, data = json.loads(auth)
        except (ValueError, TypeError):
            raise ChannelUnauthorized("malformed auth") from None
        presence = pp.is_presence(channel)
        if not isinstance(signature, str) or (presence and not isinstance(data, str)):
            raise ChannelUnauthorized(f"{channel!r} needs 'auth'"
                                      + (" and 'channel_data'" if presence else ""))
        socket_id = pp.socket_id_of(session.id)
        if not check_channel_auth(self.app, socket_id, channel, signature,
                                  data if presence else None):
            raise ChannelUnauthorized(f"invalid signature for {channel!r}")
        if not presence:
            return True
        return self._member(session, channel, data)

    @staticmethod
    def _member(session: Session, channel: str, data: str) -> Any:
        try:
            member = json.loads(data)
        except ValueError:
            raise ChannelUnauthorized("channel_data is not JSON") from None
        user_id = member.get("user_id") if isinstance(member, dict) else None
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID:
            raise ChannelUnauthorized(f"channel_data needs a user_id of 1 to {MAX_USER_ID} "
                                      "characters")
        if user_id != session.user and (
                any(pp.is_presence(c) for c in session.subscriptions)
                or _signed_in(session) not in (None, user_id)):
            raise ChannelUnauthorized(
                f"this connection is {session.user!r} already; one connection is one user "
                "in every presence channel")
        session.user = user_id
        info = member.get("user_info")
        return dict(info) if isinstance(info, dict) and info else True


def _signed_in(session: Session) -> str | None:
    authorizer = session.authorizer
    return authorizer.user if isinstance(authorizer, ChannelAuthorizer) else None


class PusherConnection:
    """The pump's endpoint for one Pusher connection: Pusher events in, hub calls out."""

    __slots__ = ("app", "bucket", "hub", "webhooks")

    def __init__(self, hub: Hub, app: PusherApp, webhooks: Webhooks | None) -> None:
        self.hub = hub
        self.app = app
        self.webhooks = webhooks
        self.bucket: TokenBucket | None = None

    def receive_text(self, session: Session, text: str) -> Any:
        try:
            native = self.translate(session, text)
        except ProtocolError as err:
            self.hub.reject(session, err)
            return None
        if native is None:
            return None
        return self.hub.receive_text(session, text, decode=lambda _text: native)

    def receive_binary(self, session: Session, data: bytes) -> Any:
        self.hub.reject(session, BinaryNotSupported(
            "binary frames are not part of the Pusher protocol; send JSON text frames"))

    def pong(self, session: Session) -> None:
        self.hub.pong(session)

    def closed(self, session: Session, code: int | None, reason: str) -> None:
        self.hub.closed(session, code, reason)

    def translate(self, session: Session, text: str) -> dict[str, Any] | None:
        """The native message a Pusher event becomes (None: nothing to do)."""
        event = pp.parse_event(text)
        name = event.event
        if name in ("pusher:ping", "pusher:pong"):
            return _PING
        if name == "pusher:subscribe":
            return self._subscribe(session, event.data)
        if name == "pusher:signin":
            self._signin(session, event.data)
            return None
        if name == "pusher:unsubscribe":
            channel = pp.field(event.data, "channel")
            if channel not in session.subscriptions:
                return None
            return {"type": "unsubscribe", "channel": channel}
        if name.startswith(pp.CLIENT_EVENT_PREFIX):
            return self._client_event(session, event)
        raise UnknownType(f"unsupported event {name!r}: clients send pusher:subscribe, "
                          "pusher:unsubscribe, pusher:ping or client- events")

    def _subscribe(self, session: Session, data: Any) -> dict[str, Any]:
        given = pp.field(data, "channel")
        assert given is not None
        channel = pp.hub_channel(given)
        msg: dict[str, Any] = {"type": "subscribe", "channel": channel,
                               "id": pp.SUBSCRIBE_ID_PREFIX + channel}
        if channel != given:  # a user's channel: for the signed-in user only
            msg["auth"] = SIGNED_IN
        elif pp.is_private(channel):
            auth = data.get("auth")
            channel_data = data.get("channel_data")
            if isinstance(auth, str):
                msg["auth"] = json.dumps([auth, channel_data if isinstance(channel_data, str)
                                          else None])
        return msg

    def _signin(self, session: Session, data: Any) -> None:
        """``pusher:signin``: a signed ``user_data`` names the connection's user; the
        answer is ``pusher:signin_success``, then the client joins its user channel."""
        auth, user_data = pp.field(data, "auth"), pp.field(data, "user_data")
        assert auth is not None and user_data is not None
        expected = user_auth(self.app, pp.socket_id_of(session.id), user_data)
        if not hmac.compare_digest(expected.encode(), auth.encode("utf-8", "replace")):
            raise Unauthorized("invalid signature for pusher:signin")
        try:
            user = json.loads(user_data)
        except ValueError:
            raise BadField("user_data is not JSON") from None
        user_id = user.get("id") if isinstance(user, dict) else None
        if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID:
            raise BadField(f"user_data needs an id of 1 to {MAX_USER_ID} characters")
        authorizer = session.authorizer
        assert isinstance(authorizer, ChannelAuthorizer)
        if authorizer.user not in (None, user_id) or (
                user_id != session.user
                and any(pp.is_presence(c) for c in session.subscriptions)):
            raise Forbidden(f"this connection is {session.user!r} already")
        authorizer.user = session.user = user_id
        self.hub.services.outbox.enqueue(
            session, pp.envelope("pusher:signin_success", {"user_data": user_data}),
            Priority.CONTROL)

    def _client_event(self, session: Session, event: pp.PusherEvent) -> dict[str, Any]:
        app, channel, name = self.app, event.channel, event.event
        if not app.client_events:
            raise Forbidden("client events are not enabled for this app")
        if channel is None or not pp.is_private(channel) \
                or channel.startswith(pp.ENCRYPTED_PREFIX):
            raise Forbidden("client events are allowed on private and presence channels only "
                            "(not encrypted ones)")
        if channel not in session.subscriptions:
            raise NotSubscribed(f"not subscribed to {channel!r}")
        now = self.hub.clock()
        bucket = self.bucket
        if bucket is None:
            rate = Rate.of(app.client_event_rate)
            assert rate is not None
            bucket = self.bucket = TokenBucket(rate, now)
        if bucket.refill(now) < 1:
            raise RateLimited(f"more than {app.client_event_rate:g} client events a second")
        bucket.tokens -= 1
        size = len(json.dumps(event.data, separators=(",", ":")))
        if size > app.max_event_bytes:
            raise BadField(f"the event's data is {size} bytes; the limit is "
                           f"{app.max_event_bytes}")
        if self.webhooks is not None:
            self.webhooks.client_event(app, channel, name, event.data,
                                       pp.socket_id_of(session.id),
                                       session.user if pp.is_presence(channel) else None)
        return {"type": "publish", "channel": channel, "data": event.data, "event": name}


class PusherSocketHandler(HubWebSocketHandler):
    """``/app/{key}?protocol=7``: a Pusher client's WebSocket, admitted by the hub."""

    def initialize(self, hub: Hub, apps: PusherApps,  # type: ignore[override]
                   webhooks: Webhooks | None = None) -> None:
        super().initialize(hub)
        self.apps = apps
        self.webhooks = webhooks

    def agreement(self) -> Agreement:
        """The ``pusher`` codec, no subprotocol and no compression."""
        return Agreement(codec=pp.CODEC)

    def get(self, *args: Any, **kwargs: Any) -> None:
        key = args[0] if args else ""
        app = self.apps.by_key(key)
        version = self.get_query_argument("protocol", None)
        connect = self._connect_request(self.request.remote_ip or "", None)
        pump = self.upgrade()
        if pump is None:
            return
        refusal = _refusal(app, key, version)
        if refusal is not None or app is None:
            code, reason = refusal or (pp.APP_NOT_FOUND, "no app")
            pump.write(pp.error_frame(code, reason))
            pump.close(code, reason[:100])
            pump.start(None, None)
            return
        self._open(pump, app, connect)

    def _open(self, pump: Any, app: PusherApp, connect: ConnectRequest) -> None:
        hub = self.hub
        try:
            result = hub.open(pump, request=connect)
        except Exception:  # a bug in the hub: this connection only, logged once in a while
            _throttle.log("open_failed", logging.ERROR, "admitting %s failed", pump.remote,
                          exc_info=True)
            pump.abort()
            return
        pending = result if isinstance(result, PendingOpen) else None
        session = result.session if pending is not None else result
        session.echo = False
        session.authorizer = ChannelAuthorizer(app)
        pump.start(PusherConnection(hub, app, self.webhooks), session, pending)


def _refusal(app: PusherApp | None, key: str, version: str | None) -> tuple[int, str] | None:
    """Why a connection to ``/app/{key}`` cannot be admitted (code, reason), or None."""
    if app is None:
        return pp.APP_NOT_FOUND, f"App key {key[:64]} does not exist"
    if version is None:
        return pp.NO_VERSION, "No protocol version supplied"
    if not version.isdigit() or len(version) > 3:
        return pp.BAD_VERSION, "Invalid version string format"
    if int(version) != pp.PROTOCOL_VERSION:
        return pp.UNSUPPORTED_VERSION, f"Unsupported protocol version {int(version)}"
    return None


__all__ = ["ChannelAuthorizer", "PusherConnection", "PusherSocketHandler"]
