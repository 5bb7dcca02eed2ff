"""The Pusher Channels protocol, version 7: envelopes, socket ids, codes (sans-I/O).

Every Pusher message is a JSON object ``{"event": ..., "channel": ..., "data": ...}``.
Server to client, ``data`` is a JSON *string* (pusher-js parses it again); client to
server it is a JSON value. This module translates both ways between that envelope
and the hub's native messages (docs/protocol.md), without a socket:

* :func:`parse_event` checks one client frame and returns a :class:`PusherEvent`;
* :func:`frames_for` is the ``pusher`` frame codec (protocol/wire.py): the frames a
  Pusher connection gets for one native message the hub sends (``welcome`` becomes
  ``pusher:connection_established``, ``message`` the event it names, ``presence_state``
  ``pusher_internal:subscription_succeeded`` with the presence hash, ...). A
  broadcast is translated once, whatever the number of Pusher subscribers.

The socket id Pusher clients and server SDKs see is the hub's session id (16 hex
digits) written as two decimal numbers, ``"2864434397.4023233417"``, so that
translation needs no table: :func:`socket_id_of` and :func:`session_id_of`.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from realtime_lab.errors import BadField, NotAnObject, ProtocolError
from realtime_lab.protocol import codec
from realtime_lab.protocol.frames import text_frame
from realtime_lab.protocol.wire import register_frame_codec

#: The protocol version spoken (the ``protocol`` query parameter of ``/app/{key}``).
PROTOCOL_VERSION = 7
#: The codec name of Pusher connections (``realtime_lab.protocol.wire``).
CODEC = "pusher"
#: The longest event name (Pusher's limit).
MAX_EVENT_NAME = 200
#: ``id`` of the native subscribe a ``pusher:subscribe`` becomes: the error reply to
#: it carries the channel back, so it can become ``pusher:subscription_error``.
SUBSCRIBE_ID_PREFIX = "pusher-subscribe:"

PRIVATE_PREFIX = "private-"
ENCRYPTED_PREFIX = "private-encrypted-"
PRESENCE_PREFIX = "presence-"
CLIENT_EVENT_PREFIX = "client-"
#: A signed-in user's channel, as Pusher names it; the hub's name is private.
USER_CHANNEL_PREFIX = "#server-to-user-"
HUB_USER_CHANNEL_PREFIX = "private-server-to-user-"

# Close and error codes (https://pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/):
# 4000-4099 the client must not reconnect, 4100-4199 back off, 4200-4299 reconnect now,
# 4300-4399 other errors (sent in pusher:error, the connection stays open).
APP_NOT_FOUND = 4001
BAD_VERSION = 4006
UNSUPPORTED_VERSION = 4007
NO_VERSION = 4008
UNAUTHORIZED = 4009
OVER_CAPACITY = 4100
GENERIC_ERROR = 4300
CLIENT_EVENT_RATE = 4301
#: The close code of too many invalid messages (the hub's 4008: do not reconnect).
TOO_MANY_ERRORS = 4008

#: native error code -> the code of the ``pusher:error`` it becomes (default 4300).
ERROR_CODES: dict[str, int] = {
    "unauthorized": UNAUTHORIZED,
    "token_expired": UNAUTHORIZED,
    "connect_refused": UNAUTHORIZED,
    "server_full": OVER_CAPACITY,
    "too_many_connections_from_ip": OVER_CAPACITY,
    "too_many_errors": TOO_MANY_ERRORS,
    "rate_limited": CLIENT_EVENT_RATE,
    "rate_limit_abuse": CLIENT_EVENT_RATE,
}
#: native error code -> HTTP-like status of a ``pusher:subscription_error``.
SUBSCRIPTION_STATUS: dict[str, int] = {
    "channel_unauthorized": 401,
    "channel_token_expired": 401,
    "forbidden": 403,
    "subscribe_refused": 403,
    "presence_refused": 403,
    "presence_full": 403,
    "too_many_subscriptions": 403,
    "rate_limited": 429,
}

_SOCKET_ID = re.compile(r"\A(\d{1,10})\.(\d{1,10})\Z")
_SESSION_ID = re.compile(r"\A[0-9a-f]{16}\Z")


def socket_id_of(session_id: str) -> str:
    """The Pusher socket id of a hub session id (16 hex digits): ``"<n>.<m>"``."""
    if _SESSION_ID.fullmatch(session_id) is None:
        return session_id
    return f"{int(session_id[:8], 16)}.{int(session_id[8:], 16)}"


def session_id_of(socket_id: str) -> str | None:
    """The hub session id of a Pusher socket id; None when it is not one we issue."""
    match = _SOCKET_ID.fullmatch(socket_id)
    if match is None:
        return None
    high, low = int(match.group(1)), int(match.group(2))
    if high >= 1 << 32 or low >= 1 << 32:
        return None
    return f"{high:08x}{low:08x}"


def hub_channel(channel: str) -> str:
    """The hub's name of a Pusher channel (``#server-to-user-7`` is
    ``private-server-to-user-7``: only its signed-in user may join it)."""
    if channel.startswith(USER_CHANNEL_PREFIX):
        return HUB_USER_CHANNEL_PREFIX + channel[len(USER_CHANNEL_PREFIX):]
    return channel


def pusher_channel(channel: str) -> str:
    """The Pusher name of a hub channel (the inverse of :func:`hub_channel`)."""
    if channel.startswith(HUB_USER_CHANNEL_PREFIX):
        return USER_CHANNEL_PREFIX + channel[len(HUB_USER_CHANNEL_PREFIX):]
    return channel


def is_private(channel: str) -> bool:
    """``private-`` (including ``private-encrypted-``) and ``presence-`` channels."""
    return channel.startswith(PRIVATE_PREFIX) or channel.startswith(PRESENCE_PREFIX)


def is_presence(channel: str) -> bool:
    return channel.startswith(PRESENCE_PREFIX)


@dataclass(frozen=True, slots=True)
class PusherEvent:
    """One client message: ``event``, its ``channel`` (or None) and ``data``."""

    event: str
    channel: str | None
    data: Any


def parse_event(text: str | bytes) -> PusherEvent:
    """Check one client frame: a JSON object with a string ``event``.

    The JSON goes through the hub's decoder (``protocol/codec.py``: the data model's
    bounds on depth and numbers). Raises :class:`~realtime_lab.errors.BadJSON`,
    ``BadValue``, ``NotAnObject`` or ``BadField``.
    """
    obj = codec.decode(text)
    if type(obj) is not dict:
        raise NotAnObject("a Pusher message is a JSON object")
    event = obj.get("event")
    if not isinstance(event, str) or not 0 < len(event) <= MAX_EVENT_NAME:
        raise BadField(f"'event' must be a string of 1 to {MAX_EVENT_NAME} characters")
    channel = obj.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise BadField("'channel' must be a string")
    data = obj.get("data")
    if isinstance(data, str) and event.startswith("pusher:") and data[:1] == "{":
        with contextlib.suppress(ProtocolError):  # some clients send it as a JSON string
            data = codec.decode(data)
    return PusherEvent(event, channel, data)


def field(data: Any, name: str, *, required: bool = True) -> str | None:
    """A string field of a ``pusher:*`` event's data (``BadField`` when it is wrong)."""
    value = data.get(name) if isinstance(data, dict) else None
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BadField(f"'data.{name}' must be a non-empty string")
    return value


# ---------------------------------------------------------------------- server -> client


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def envelope(event: str, data: Any, channel: str | None = None,
             user_id: str | None = None) -> bytes:
    """One server frame: ``data`` goes out as a JSON string, as pusher-js expects."""
    msg: dict[str, Any] = {"event": event}
    if channel is not None:
        msg["channel"] = channel
    msg["data"] = data if isinstance(data, str) else _dumps(data)
    if user_id is not None:
        msg["user_id"] = user_id
    return text_frame(_dumps(msg))


def error_frame(code: int | None, message: str) -> bytes:
    """``pusher:error`` (its data an object, as Pusher sends it)."""
    return text_frame(_dumps({"event": "pusher:error",
                              "data": {"code": code, "message": message}}))


def subscription_error(channel: str, code: str, message: str) -> bytes:
    status = SUBSCRIPTION_STATUS.get(code, 400)
    kind = "AuthError" if status == 401 else "SubscriptionError"
    return envelope("pusher:subscription_error",
                    {"type": kind, "error": message, "status": status}, channel)


def _presence_hash(members: dict[str, Any]) -> dict[str, Any]:
    ids = list(members)
    return {"presence": {"ids": ids, "hash": {u: _user_info(members[u]) for u in ids},
                         "count": len(ids)}}


def _user_info(info: Any) -> Any:
    return info.get("meta") if isinstance(info, dict) else None


def _member_added(channel: str, user: str, info: Any) -> bytes:
    return envelope("pusher_internal:member_added",
                    {"user_id": user, "user_info": _user_info(info)}, channel)


def _presence_diff(msg: dict[str, Any], channel: str) -> bytes:
    changed = msg.get("changed") or {}
    out = [envelope("pusher_internal:member_removed", {"user_id": user}, channel)
           for user in msg.get("leaves") or {}]
    out += [_member_added(channel, user, info) for user, info in (msg.get("joins") or {}).items()
            if user not in changed]  # a member's update (another tab, a state) is no join
    return b"".join(out)


def _message(msg: dict[str, Any], channel: str) -> bytes:
    event = msg.get("event") or "message"
    sender = msg.get("from")
    user_id = sender if (sender is not None and event.startswith(CLIENT_EVENT_PREFIX)
                         and is_presence(channel)) else None
    return envelope(event, _dumps(msg.get("data")), pusher_channel(channel), user_id)


def _welcome(msg: dict[str, Any]) -> bytes:
    heartbeat = msg.get("heartbeat") or {}
    interval = heartbeat.get("interval") if isinstance(heartbeat, dict) else None
    timeout = max(1, math.ceil(interval)) if isinstance(interval, int | float) else 120
    return envelope("pusher:connection_established",
                    {"socket_id": socket_id_of(str(msg.get("session"))),
                     "activity_timeout": timeout})


def _error(msg: dict[str, Any]) -> bytes:
    code, text, rid = str(msg.get("code")), str(msg.get("message")), msg.get("id")
    if isinstance(rid, str) and rid.startswith(SUBSCRIBE_ID_PREFIX):
        return subscription_error(pusher_channel(rid[len(SUBSCRIBE_ID_PREFIX):]), code, text)
    return error_frame(ERROR_CODES.get(code, GENERIC_ERROR), text)


def frames_for(msg: dict[str, Any]) -> bytes:
    """The ``pusher`` codec: what a Pusher connection gets for one native message
    (zero, one or several frames; docs/pusher.md, "How the hub's messages look")."""
    kind = msg.get("type")
    channel = msg.get("channel")
    if kind == "message" and isinstance(channel, str):
        return _message(msg, channel)
    if not isinstance(channel, str):
        if kind == "welcome":
            return _welcome(msg)
        if kind == "error":
            return _error(msg)
        if kind == "pong":
            return envelope("pusher:pong", {})
        return b""
    if kind == "subscribed":  # a presence channel's answer is its member list
        return b"" if is_presence(channel) else envelope(
            "pusher_internal:subscription_succeeded", {}, pusher_channel(channel))
    if kind == "error":
        return _error(msg)
    if not is_presence(channel):
        return b""
    if kind == "presence_state":
        return envelope("pusher_internal:subscription_succeeded",
                        _presence_hash(msg.get("members") or {}), channel)
    if kind == "presence_page":  # a very large list: page 1 first, the rest as joins
        members = msg.get("members") or {}
        if msg.get("page") == 1:
            return envelope("pusher_internal:subscription_succeeded", _presence_hash(members),
                            channel)
        return b"".join(_member_added(channel, u, i) for u, i in members.items())
    if kind == "presence_diff":
        return _presence_diff(msg, channel)
    if kind == "presence_count":  # counts mode (docs/presence.md): Pusher has no count
        # event; the subscription's answer with the count and no member (each update too)
        return envelope("pusher_internal:subscription_succeeded",
                        {"presence": {"ids": [], "hash": {}, "count": msg.get("count", 0)}},
                        channel)
    return b""


def personal_frames(msg: dict[str, Any], user: str) -> bytes | None:
    """A presence diff without the recipient's own join (Pusher never tells a member
    that it joined: it is in its ``subscription_succeeded``); None for any other
    message (the shared frames)."""
    if msg.get("type") != "presence_diff":
        return None
    joins = msg.get("joins") or {}
    channel = msg.get("channel")
    if user not in joins or user in (msg.get("changed") or {}) \
            or not isinstance(channel, str) or not is_presence(channel):
        return None
    return _presence_diff({**msg, "joins": {u: i for u, i in joins.items() if u != user}},
                          channel)


register_frame_codec(CODEC, frames_for, personal_frames)  # /app/{key} uses it (socket.py)

__all__ = [
    "CODEC",
    "ERROR_CODES",
    "PROTOCOL_VERSION",
    "PusherEvent",
    "envelope",
    "error_frame",
    "frames_for",
    "hub_channel",
    "is_presence",
    "is_private",
    "parse_event",
    "pusher_channel",
    "session_id_of",
    "socket_id_of",
    "subscription_error",
]
