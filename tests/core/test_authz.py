"""Private and presence channels: channel tokens, the authorizer, per-channel rules."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from realtime_lab import ChannelRule, sign_channel_token, verify_channel_token
from realtime_lab.core import Hub, ServerOptions, Session
from realtime_lab.core.authz import rule_for
from realtime_lab.core.hooks import ConnectRequest, Hooks, Refuse
from realtime_lab.errors import ChannelTokenExpired, ChannelUnauthorized
from realtime_lab.testing import RecordingPort

SECRET = "channel-secret"


async def settle(result: Any) -> Any:
    return await result if hasattr(result, "__await__") else result


async def open_session(hub: Hub, user: str) -> tuple[Session, RecordingPort]:
    port = RecordingPort("10.0.0.7")
    session = await settle(hub.open(port, user=user,
                                    request=ConnectRequest(remote=port.remote, user=user)))
    port.take()
    return session, port


async def send(hub: Hub, s: Session, msg: dict[str, Any]) -> list[dict[str, Any]]:
    await settle(hub.receive_text(s, json.dumps(msg)))
    return s.port.take()  # type: ignore[attr-defined, no-any-return]


# ---------------------------------------------------------------------------- tokens


def test_valid_token_gives_member_data() -> None:
    tok = sign_channel_token(SECRET, "s1", "presence-room", {"name": "Ada"}, ttl=60)
    assert verify_channel_token(SECRET, tok, "s1", "presence-room") == {"name": "Ada"}
    assert verify_channel_token(SECRET, sign_channel_token(SECRET, "s1", "private-x"),
                                "s1", "private-x") is None


@pytest.mark.parametrize("case", ["expired", "channel", "session", "member", "secret",
                                  "garbage", "signature"])
def test_bad_tokens_are_refused(case: str) -> None:
    tok = sign_channel_token(SECRET, "s1", "presence-room", {"name": "Ada"}, ttl=60,
                             now=1000.0)
    session, channel, secret, now = "s1", "presence-room", SECRET, 1030.0
    if case == "expired":
        now = 1061.0
    elif case == "channel":
        channel = "presence-other"
    elif case == "session":
        session = "s2"
    elif case == "member":  # the client swaps in other member data
        forged = sign_channel_token("attacker", "s1", "presence-room", {"name": "Root"},
                                    ttl=60, now=1000.0)
        tok = forged.split(".")[0] + "." + tok.split(".")[1]
    elif case == "secret":
        secret = "other"
    elif case == "garbage":
        tok = "no-dot-here"
    else:
        tok = tok[:-3] + ("AAA" if not tok.endswith("AAA") else "BBB")
    expected = ChannelTokenExpired if case == "expired" else ChannelUnauthorized
    with pytest.raises(expected):
        verify_channel_token(secret, tok, session, channel, now=now)


def test_rules_first_match_and_validation() -> None:
    rules = (ChannelRule("private-admin-*", "private", "none"),
             ChannelRule("private-*", "private"))
    assert rule_for("private-admin-1", rules).publish == "none"
    assert rule_for("private-x", rules).publish == "any"
    assert rule_for("news", rules).policy == "public"
    with pytest.raises(ValueError):
        ChannelRule("x", "secret")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- hub


async def test_subscribe_with_token_and_refusals_keep_connection_usable() -> None:
    hub = Hub(ServerOptions(channel_secret=SECRET))
    s, port = await open_session(hub, "ada")
    msgs = await send(hub, s, {"type": "subscribe", "channel": "private-a", "id": 1})
    assert msgs == [{"type": "error", "code": "channel_unauthorized", "id": 1,
                     "message": msgs[0]["message"]}]
    bad = sign_channel_token(SECRET, "someone-else", "private-a")
    msgs = await send(hub, s, {"type": "subscribe", "channel": "private-a", "id": 2,
                               "auth": bad})
    assert msgs[0]["code"] == "channel_unauthorized" and msgs[0]["id"] == 2
    old = sign_channel_token(SECRET, s.id, "private-a", ttl=-1)
    msgs = await send(hub, s, {"type": "subscribe", "channel": "private-a", "id": 3,
                               "auth": old})
    assert msgs[0]["code"] == "channel_token_expired"
    good = sign_channel_token(SECRET, s.id, "private-a")
    msgs = await send(hub, s, {"type": "subscribe", "channel": "private-a", "id": 4,
                               "auth": good})
    assert msgs[0] == {"type": "subscribed", "channel": "private-a", "id": 4}
    assert port.closes == [] and s.subscriptions == {"private-a"}
    # plain channels stay public
    assert (await send(hub, s, {"type": "subscribe", "channel": "news", "id": 5}))[0][
        "type"] == "subscribed"


async def test_presence_token_member_data_is_announced() -> None:
    hub = Hub(ServerOptions(channel_secret=SECRET))
    a, pa = await open_session(hub, "ada")
    b, pb = await open_session(hub, "bob")
    for s, name in ((a, "Ada"), (b, "Bob")):
        tok = sign_channel_token(SECRET, s.id, "presence-room", {"name": name})
        await send(hub, s, {"type": "subscribe", "channel": "presence-room", "auth": tok})
    assert hub.presence("presence-room")["bob"]["meta"] == {"name": "Bob"}
    diff = [m for m in pa.take() if m["type"] == "presence_diff"]
    assert diff and diff[0]["joins"]["bob"]["meta"] == {"name": "Bob"}


def sync_and_async(fn: Any) -> list[Any]:
    async def afn(*args: Any) -> Any:
        await asyncio.sleep(0)
        return fn(*args)
    return [fn, afn]


def decide(session: Session, channel: str, auth: str | None) -> Any:
    if channel == "private-open":
        return True
    if channel == "presence-room":
        return {"role": "admin" if session.user == "ada" else "guest"}
    if channel == "private-vip":
        return Refuse("vip_only", "VIPs only")
    if channel == "private-boom":
        raise RuntimeError("db down")
    return None  # None refuses: an authorizer must allow explicitly


@pytest.mark.parametrize("authorizer", sync_and_async(decide))
async def test_authorizer_allows_refuses_and_attaches_member_data(authorizer: Any) -> None:
    hub = Hub(ServerOptions(authorizer=authorizer))
    s, port = await open_session(hub, "ada")
    out: dict[str, Any] = {}
    for i, ch in enumerate(("private-open", "presence-room", "private-vip", "private-boom",
                            "private-none")):
        out[ch] = (await send(hub, s, {"type": "subscribe", "channel": ch, "id": i}))[0]
    assert out["private-open"]["type"] == "subscribed"
    assert out["presence-room"]["type"] == "subscribed"
    assert hub.presence("presence-room")["ada"]["meta"] == {"role": "admin"}
    assert out["private-vip"] == {"type": "error", "code": "vip_only", "message": "VIPs only",
                                  "id": 2}
    assert out["private-boom"]["code"] == "channel_unauthorized"
    assert out["private-none"]["code"] == "channel_unauthorized" and out["private-none"]["id"] == 4
    assert port.closes == []


async def test_publish_policies() -> None:
    rules = (ChannelRule("private-*", "private", "subscribers"),
             ChannelRule("announce", "public", "none"))
    hub = Hub(ServerOptions(channel_secret=SECRET, channel_rules=rules))
    s, _ = await open_session(hub, "ada")
    msgs = await send(hub, s, {"type": "publish", "channel": "private-a", "data": 1, "id": 1})
    assert msgs[0]["code"] == "forbidden"
    msgs = await send(hub, s, {"type": "publish", "channel": "announce", "data": 1, "id": 2})
    assert msgs[0]["code"] == "forbidden"
    await send(hub, s, {"type": "subscribe", "channel": "private-a",
                        "auth": sign_channel_token(SECRET, s.id, "private-a")})
    msgs = await send(hub, s, {"type": "publish", "channel": "private-a", "data": 1, "id": 3})
    assert msgs[-1]["type"] == "published"
    assert hub.publish("announce", "server side is always allowed") == 0


async def test_without_channel_auth_configured_private_channels_are_refused() -> None:
    hub = Hub(ServerOptions())
    s, _ = await open_session(hub, "ada")
    for name in ("private-x", "presence-x"):
        msgs = await send(hub, s, {"type": "subscribe", "channel": name, "id": 1})
        assert msgs[0]["code"] == "channel_unauthorized"
        assert "no channel secret or authorizer" in msgs[0]["message"]
    msgs = await send(hub, s, {"type": "subscribe", "channel": "lobby", "id": 2})
    assert msgs[0]["type"] == "subscribed", "the connection stays usable"


async def test_explicit_rules_can_make_every_channel_public() -> None:
    hub = Hub(ServerOptions(channel_rules=()))
    s, _ = await open_session(hub, "ada")
    msgs = await send(hub, s, {"type": "subscribe", "channel": "private-x", "id": 1})
    assert msgs[0]["type"] == "subscribed"


async def test_on_subscribe_hook_runs_before_authorization() -> None:
    seen: list[str] = []
    hub = Hub(ServerOptions(channel_secret=SECRET),
              hooks=Hooks(on_subscribe=lambda s, ch: seen.append(ch) or {"topic": ch}))
    s, _ = await open_session(hub, "ada")
    tok = sign_channel_token(SECRET, s.id, "private-a")
    msgs = await send(hub, s, {"type": "subscribe", "channel": "private-a", "id": 1,
                               "auth": tok})
    assert seen == ["private-a"] and msgs[0]["meta"] == {"topic": "private-a"}
