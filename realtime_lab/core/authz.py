"""Channel authorization: signed channel tokens, an authorizer callback, per-channel rules.

No sockets here. The hub asks :func:`rule_for` which policy a channel has; a
``private`` or ``presence`` channel then needs either a channel token (minted on
the application server with :func:`sign_channel_token` and sent by the client in
its subscribe message as ``"auth"``) or an ``authorizer`` callback that allows it.

A channel token is ``<payload>.<signature>``, both base64url without padding.
The payload is JSON ``{"s": session id, "c": channel, "m": member data or null,
"exp": unix seconds or null}``; the signature is HMAC-SHA256 of
``"rtl-channel-v1." + payload`` with the channel secret, compared in constant time.
The member data is inside the signed payload, so changing it breaks the signature.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from realtime_lab.core.hooks import Refuse
from realtime_lab.core.security import _b64, _unb64
from realtime_lab.errors import ChannelTokenExpired, ChannelUnauthorized, ProtocolError
from realtime_lab.logthrottle import LogThrottle

if TYPE_CHECKING:
    from realtime_lab.core.session import Session

log = logging.getLogger("realtime_lab.core")
_failures = LogThrottle(log)  # an authorizer failing on some input: one record a minute

Policy = Literal["public", "private", "presence"]
PublishPolicy = Literal["any", "subscribers", "none"]
#: How a channel shows presence (docs/presence.md, "Presence modes").
PresenceMode = Literal["full", "counts", "off"]
#: What a full channel does at its member limit: fall back to counts, or refuse.
OverLimit = Literal["counts", "refuse"]
Authorizer = Callable[..., Any]

_DOMAIN = b"rtl-channel-v1."
POLICIES = ("public", "private", "presence")
PUBLISH_POLICIES = ("any", "subscribers", "none")
PRESENCE_MODES = ("full", "counts", "off")
OVER_LIMIT = ("counts", "refuse")


@dataclass(frozen=True, slots=True)
class ChannelRule:
    """A channel pattern (fnmatch glob) and its policy.

    ``policy``: ``public`` (anyone may subscribe), ``private`` (needs a token or
    the authorizer) or ``presence`` (as private; the authorization may attach
    member data). ``publish``: who may publish from a client: ``any`` connection,
    only the channel's ``subscribers``, or ``none`` (server side only).

    Presence (docs/presence.md, "Presence modes"); None takes the server's option:
    ``presence``: ``full`` (members with states and metadata), ``counts`` (only the
    member count, throttled) or ``off`` (default: ``presence_mode`` for channels
    that match ``presence_channels``, else off). ``presence_limit``: members above
    which a full channel does ``over_limit`` (``presence_full_limit``):
    ``counts`` (it falls back to counts) or ``refuse`` (``presence_full``).
    """

    pattern: str
    policy: Policy = "public"
    publish: PublishPolicy = "any"
    presence: PresenceMode | None = None
    presence_limit: int | None = None
    over_limit: OverLimit | None = None

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.publish not in PUBLISH_POLICIES:
            raise ValueError(f"publish must be one of {PUBLISH_POLICIES}, got {self.publish!r}")
        if self.presence is not None and self.presence not in PRESENCE_MODES:
            raise ValueError(f"presence must be one of {PRESENCE_MODES}, got {self.presence!r}")
        if self.over_limit is not None and self.over_limit not in OVER_LIMIT:
            raise ValueError(f"over_limit must be one of {OVER_LIMIT}, got {self.over_limit!r}")
        limit = self.presence_limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise ValueError(f"presence_limit must be an integer >= 1, got {limit!r}")

    def matches(self, channel: str) -> bool:
        return fnmatch.fnmatchcase(channel, self.pattern)


#: Used when no rules are given: private-* and presence-* always need authorization
#: (refused with channel_unauthorized when the server has no secret or authorizer).
DEFAULT_RULES: tuple[ChannelRule, ...] = (
    ChannelRule("private-*", "private", "subscribers"),
    ChannelRule("presence-*", "presence", "subscribers"),
)
PUBLIC = ChannelRule("*")


def rule_for(channel: str, rules: Iterable[ChannelRule]) -> ChannelRule:
    """The first rule whose pattern matches ``channel``, or the public rule."""
    for rule in rules:
        if rule.matches(channel):
            return rule
    return PUBLIC


def _signature(secret: str, payload: str) -> bytes:
    return hmac.new(secret.encode(), _DOMAIN + payload.encode(), hashlib.sha256).digest()


def sign_channel_token(secret: str, session: str, channel: str,
                       member: dict[str, Any] | None = None, ttl: float | None = None, *,
                       now: float | None = None) -> str:
    """A token that lets session ``session`` subscribe to ``channel``.

    ``member``: presence data attached to the member (signed, cannot be changed by
    the client). ``ttl``: seconds the token stays valid (None: no expiry).
    """
    exp = None if ttl is None else (time.time() if now is None else now) + ttl
    body = {"s": session, "c": channel, "m": member, "exp": exp}
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_b64(_signature(secret, payload))}"


def verify_channel_token(secret: str, token: str, session: str, channel: str, *,
                         now: float | None = None) -> dict[str, Any] | None:
    """The member data of a valid token (None when it has none).

    Raises :class:`~realtime_lab.errors.ChannelUnauthorized` (malformed, bad
    signature, other session or channel) or
    :class:`~realtime_lab.errors.ChannelTokenExpired`.
    """
    payload, sep, sig = token.partition(".")
    if not sep:
        raise ChannelUnauthorized("malformed channel token")
    try:
        given = _unb64(sig)
        body = json.loads(_unb64(payload))
    except (ValueError, UnicodeDecodeError):
        raise ChannelUnauthorized("malformed channel token") from None
    if not hmac.compare_digest(_signature(secret, payload), given):
        raise ChannelUnauthorized("channel token signature does not match")
    if not isinstance(body, dict):
        raise ChannelUnauthorized("malformed channel token")
    if body.get("s") != session:
        raise ChannelUnauthorized("channel token was issued for another session")
    if body.get("c") != channel:
        raise ChannelUnauthorized(f"channel token was issued for another channel, not {channel!r}")
    exp = body.get("exp")
    if exp is not None and exp <= (time.time() if now is None else now):
        raise ChannelTokenExpired("channel token expired")
    member = body.get("m")
    return member if isinstance(member, dict) else None


@dataclass(frozen=True, slots=True)
class Grant:
    """An allowed subscription, with the member data the authorization attached."""

    member: dict[str, Any] | None = None


def authorize(rule: ChannelRule, session: Session, channel: str, auth: str | None, *,
              secret: str | None, authorizer: Authorizer | None, timeout: float,
              now: float | None = None) -> Grant | Awaitable[Grant]:
    """Check a subscribe to a channel with ``rule``: a Grant, or an awaitable of one.

    Public channels are always granted. Otherwise a token in ``auth`` is checked
    against ``secret`` when both are there; else the ``authorizer`` decides; with
    neither the subscribe is refused with ``channel_unauthorized``.
    """
    if rule.policy == "public":
        return Grant()
    if auth is not None and secret:
        return Grant(verify_channel_token(secret, auth, session.id, channel, now=now))
    if authorizer is None and not secret:
        raise ChannelUnauthorized(
            f"{channel!r} is a {rule.policy} channel and this server has no channel secret "
            "or authorizer configured to allow it")
    if authorizer is None:
        raise ChannelUnauthorized(
            f"{channel!r} is a {rule.policy} channel: send a channel token in 'auth'")
    try:
        verdict = authorizer(session, channel, auth)
    except ProtocolError:
        raise
    except Exception as exc:
        _failures.log("authorizer_failed", logging.ERROR, "authorizer failed", exc_info=True)
        raise ChannelUnauthorized(f"the authorizer failed: {type(exc).__name__}") from None
    if inspect.isawaitable(verdict):
        return _authorize_later(verdict, channel, timeout)
    return _grant(verdict, channel)


async def _authorize_later(verdict: Awaitable[Any], channel: str, timeout: float) -> Grant:
    try:
        value = await asyncio.wait_for(verdict, timeout)
    except TimeoutError:
        raise ChannelUnauthorized(f"the authorizer took longer than {timeout}s") from None
    except ProtocolError:
        raise
    except Exception as exc:
        _failures.log("authorizer_failed", logging.ERROR, "authorizer failed", exc_info=True)
        raise ChannelUnauthorized(f"the authorizer failed: {type(exc).__name__}") from None
    return _grant(value, channel)


def _grant(verdict: Any, channel: str) -> Grant:
    if verdict is True:
        return Grant()
    if isinstance(verdict, dict):
        return Grant(dict(verdict))
    if isinstance(verdict, Refuse):
        raise verdict.error(ChannelUnauthorized)
    raise ChannelUnauthorized(f"not authorized to subscribe to {channel!r}")
