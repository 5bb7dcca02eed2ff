"""Messages of the native protocol, v1 (sans-I/O: no sockets, no event loop).

Client-to-server messages are parsed into small frozen dataclasses by
:func:`parse_client_message`; server-to-client messages are plain dicts built by
the ``*_message`` helpers so that a codec can serialize them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from realtime_lab.errors import BadField, MissingField, NotAnObject, UnknownType

PROTOCOL_VERSION = 1
"""Version of the native protocol, sent in ``welcome`` (docs/protocol.md)."""

RequestId = int | str | None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``subscribe``: join a channel.

    Attributes:
        channel: the channel's name.
        id: request id, echoed in the reply (``subscribed`` or ``error``).
        auth: channel token for ``private-`` and ``presence-`` channels.
        since: ``{"offset": int, "epoch": str}`` to recover the messages missed since
            that position (channels with history).
    """

    channel: str
    id: RequestId = None
    auth: str | None = None  # channel token for private-/presence- channels
    since: dict[str, Any] | None = None  # {"offset": int, "epoch": str}: recover


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """``unsubscribe``: leave a channel.

    Attributes:
        channel: the channel's name.
        id: request id, echoed in the reply (``unsubscribed`` or ``error``).
    """

    channel: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Publish:
    """``publish``: send ``data`` to every subscriber of a channel.

    Attributes:
        channel: the channel's name.
        data: any JSON value (any MessagePack value on the binary protocol).
        id: request id; when set the server replies with ``published`` (or ``error``).
        priority: ``"low"``, ``"normal"`` or ``"high"`` (None is normal).
        event: an optional name the message carries to its subscribers (1 to
            ``MAX_EVENT_LENGTH`` characters; a Pusher client sees it as the event name).
    """

    channel: str
    data: Any
    id: RequestId = None
    priority: str | None = None  # "low" | "normal" | "high"; None is normal
    event: str | None = None


CLIENT_PRIORITIES = ("low", "normal", "high")
#: The longest ``event`` name a ``publish`` may carry (Pusher's limit on event names).
MAX_EVENT_LENGTH = 200


@dataclass(frozen=True, slots=True)
class SetPresence:
    """``presence``: change one's own presence state and/or metadata in a channel."""

    channel: str
    state: str | None = None
    meta: dict[str, Any] | None = None
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Ping:
    """``ping``: the server answers ``pong`` with the same ``id``."""

    id: RequestId = None


#: Most latency samples in one ``receipts`` message (announced in ``welcome``).
MAX_RECEIPTS = 64
#: Accepted range of one latency sample, in ms: clocks of two machines may differ
#: a little (negative values), and anything beyond ten minutes is not a latency.
RECEIPT_RANGE_MS = (-60_000.0, 600_000.0)


@dataclass(frozen=True, slots=True)
class Receipts:
    """``receipts``: delivery latencies (ms) of stamped messages of one channel.

    Sent by the lab's clients while the server records metrics (``ts`` stamps);
    the server adds them to its recorder's ``latency`` table (docs/protocol.md).
    """

    channel: str
    latency_ms: tuple[float, ...]
    id: RequestId = None


ClientMessage = Subscribe | Unsubscribe | Publish | Ping | SetPresence | Receipts
"""Any message a client may send, as `parse_client_message` returns it."""

CLIENT_TYPES = ("subscribe", "unsubscribe", "publish", "ping", "presence", "receipts")


def _latencies(obj: dict[str, Any], rid: RequestId) -> tuple[float, ...]:
    if "latency_ms" not in obj:
        raise MissingField("'latency_ms' is required", request_id=rid)
    values = obj["latency_ms"]
    low, high = RECEIPT_RANGE_MS
    if (not isinstance(values, list) or not 1 <= len(values) <= MAX_RECEIPTS
            or not all(isinstance(v, int | float) and not isinstance(v, bool)
                       and low <= v <= high for v in values)):
        raise BadField(f"'latency_ms' must be a list of 1 to {MAX_RECEIPTS} numbers "
                       f"between {low:g} and {high:g}", request_id=rid)
    return tuple(float(v) for v in values)


def _request_id(obj: dict[str, Any]) -> RequestId:
    rid = obj.get("id")
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, int | str):
        raise BadField("'id' must be an integer or a string")
    return rid


def _channel(obj: dict[str, Any], rid: RequestId) -> str:
    if "channel" not in obj:
        raise MissingField("'channel' is required", request_id=rid)
    channel = obj["channel"]
    if not isinstance(channel, str):
        raise BadField("'channel' must be a string", request_id=rid)
    return channel


def parse_client_message(obj: object) -> ClientMessage:
    """Validate a decoded JSON value and return the client message it holds.

    Raises a :class:`~realtime_lab.errors.ProtocolError` subclass that names the
    problem (and carries the request id when one could be read).
    """
    if not isinstance(obj, dict):
        raise NotAnObject(f"a message must be a JSON object, not {type(obj).__name__}")
    rid = _request_id(obj)
    if "type" not in obj:
        raise MissingField("'type' is required", request_id=rid)
    mtype = obj["type"]
    if not isinstance(mtype, str):
        raise BadField("'type' must be a string", request_id=rid)
    if mtype == "publish":
        channel = _channel(obj, rid)
        if "data" not in obj:
            raise MissingField("'data' is required", request_id=rid)
        priority = obj.get("priority")
        if priority is not None and priority not in CLIENT_PRIORITIES:
            raise BadField("'priority' must be one of low, normal, high", request_id=rid)
        event = obj.get("event")
        if event is not None and not (isinstance(event, str)
                                      and 0 < len(event) <= MAX_EVENT_LENGTH):
            raise BadField(f"'event' must be a string of 1 to {MAX_EVENT_LENGTH} characters",
                           request_id=rid)
        return Publish(channel, obj["data"], rid, priority, event)
    if mtype == "subscribe":
        auth = obj.get("auth")
        if auth is not None and not isinstance(auth, str):
            raise BadField("'auth' must be a string", request_id=rid)
        since = obj.get("since")
        if since is not None and not (
                isinstance(since, dict) and isinstance(since.get("epoch"), str)
                and isinstance(since.get("offset"), int)
                and not isinstance(since.get("offset"), bool)):
            raise BadField("'since' must be {\"offset\": integer, \"epoch\": string}",
                           request_id=rid)
        return Subscribe(_channel(obj, rid), rid, auth, since)
    if mtype == "unsubscribe":
        return Unsubscribe(_channel(obj, rid), rid)
    if mtype == "ping":
        return Ping(rid)
    if mtype == "presence":
        channel = _channel(obj, rid)
        state, meta = obj.get("state"), obj.get("meta")
        if state is not None and not isinstance(state, str):
            raise BadField("'state' must be a string", request_id=rid)
        if meta is not None and not isinstance(meta, dict):
            raise BadField("'meta' must be an object", request_id=rid)
        if state is None and meta is None:
            raise MissingField("'state' or 'meta' is required", request_id=rid)
        return SetPresence(channel, state, meta, rid)
    if mtype == "receipts":
        return Receipts(_channel(obj, rid), _latencies(obj, rid), rid)
    raise UnknownType(
        f"unknown message type {mtype!r}; expected one of {', '.join(CLIENT_TYPES)}",
        request_id=rid,
    )


def _with_id(msg: dict[str, Any], rid: RequestId) -> dict[str, Any]:
    if rid is not None:
        msg["id"] = rid
    return msg


def welcome_message(
    session: str, user: str, heartbeat_interval: float, heartbeat_timeout: float,
    limits: dict[str, int],
) -> dict[str, Any]:
    return {
        "type": "welcome",
        "version": PROTOCOL_VERSION,
        "session": session,
        "user": user,
        "heartbeat": {"interval": heartbeat_interval, "timeout": heartbeat_timeout},
        "limits": limits,
        "receipts": {"max_samples": MAX_RECEIPTS},
    }


def subscribed_message(channel: str, rid: RequestId) -> dict[str, Any]:
    return _with_id({"type": "subscribed", "channel": channel}, rid)


def unsubscribed_message(channel: str, rid: RequestId) -> dict[str, Any]:
    return _with_id({"type": "unsubscribed", "channel": channel}, rid)


def published_message(channel: str, rid: RequestId, recipients: int) -> dict[str, Any]:
    return _with_id({"type": "published", "channel": channel, "recipients": recipients}, rid)


def channel_message(channel: str, data: Any, sender: str | None,
                    event: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "message", "channel": channel, "data": data}
    if sender is not None:
        msg["from"] = sender
    if event is not None:
        msg["event"] = event
    return msg


def pong_message(rid: RequestId) -> dict[str, Any]:
    return _with_id({"type": "pong"}, rid)


def error_message(code: str, message: str, rid: RequestId = None) -> dict[str, Any]:
    return _with_id({"type": "error", "code": code, "message": message}, rid)


def presence_state_message(channel: str, members: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"type": "presence_state", "channel": channel, "members": members}


def presence_diff_message(
    channel: str, joins: dict[str, dict[str, Any]], leaves: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return {"type": "presence_diff", "channel": channel, "joins": joins, "leaves": leaves}


def heartbeat_message(interval: float, timeout: float) -> dict[str, Any]:
    """Sent to every client when the adaptive heartbeat changes its interval."""
    return {"type": "heartbeat", "interval": interval, "timeout": timeout}
