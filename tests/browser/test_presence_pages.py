"""Chromium: the browser client rebuilds a member list sent in pages (issue 13, point 4).

* A page (realtime-lab.js) joins a channel whose member list (900 KB) is larger than
  the server's outbound bound (256 KiB): before pages it was closed with 4100 and
  reconnected forever. While its pages are in flight, members leave, join and
  change; the page's rebuilt list equals the server's, reported as one "state"
  presence event.
* followPresence() (presence.js) and the Python PresenceView make the same thing
  of random paged sequences: pages read one at a time by a slow watcher while
  members change (a hub with fake ports, as in test_presence_model.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
from typing import Any

import pytest

from realtime_lab import ServerOptions
from realtime_lab.client.presence import PresenceView
from realtime_lab.core.hooks import ConnectRequest
from realtime_lab.core.hub import Hub
from realtime_lab.core.session import Session
from realtime_lab.testing import RestartableServer, SilentMembers, SlowPort

from .conftest import Page, eventually, needs_playwright, open_page_client, wait_page

pytestmark = [pytest.mark.browser, needs_playwright, pytest.mark.timeout(120)]


def meta() -> dict[str, str]:
    """1000 bytes of metadata that permessage-deflate cannot shrink much."""
    return {"bio": base64.b64encode(os.urandom(742)).decode()}


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


async def test_a_page_joins_a_channel_larger_than_the_outbound_bound(context: Any) -> None:
    # The members never answer pings: the default heartbeat (25 s + 20 s) leaves them
    # alone for the test's duration. Diffs unbatched (window 0): each change meets the
    # pages in flight at once, as this test means; with a window, changes made while the
    # last page goes out arrive in a diff after it (tests/integration/test_presence_batch.py
    # rebuilds lists with pages and batched diffs in flight).
    options = ServerOptions(max_outbound_bytes=256 * 1024, presence_batch_window=0,
                            presence_full_limit=2000)  # full presence past the default 500
    async with RestartableServer(options) as lab:
        hub = lab.current.hub
        room = SilentMembers(hub)
        for i in range(900):  # a 900 KB member list, 3.5 times the outbound bound
            # (fewer subscribers than fanout_slice_min: each diff is queued at once)
            room.join(f"m{i:04d}", meta())
        members = list(room.sessions.values())
        page: Page = await context.new_page()
        await open_page_client(page, lab.http_url, "browser")
        session = next(s for s in hub.sessions.values() if s.user == "browser")
        subscribed = asyncio.ensure_future(page.evaluate("lab.c.subscribe('room')"))
        async with asyncio.timeout(15):  # the subscribe reaches the server
            while "room" not in session.subscriptions and not subscribed.done():
                await asyncio.sleep(0)  # every loop turn: pages go out one per turn
        assert hub.stats.slow_consumers == 0, "the page was closed with 4100"
        turns = 0
        while hub.presence_pager.in_progress(session, "room"):
            hub.closed(members.pop(len(members) // 2))  # a listed member leaves
            members.append(room.join(f"late{turns}", {"n": turns}))  # a new one joins
            hub.set_presence(members[5], "room", state="away", meta={"turn": turns})
            turns += 1
            await asyncio.sleep(0)  # one loop turn: the next page may go out
        await subscribed
        assert turns >= 4, "the pages were not in flight long enough to test anything"
        await wait_page(page, """(want) => !lab.c.presenceSyncing("room")
            && lab.canon(lab.c.presence.get("room") || {}) === want""",
                        canonical(hub.presence("room")), timeout=30)
        events = await page.evaluate("lab.presence")
        assert [e["kind"] for e in events] == ["state"]  # the whole list at once
        assert sorted(events[0]["joined"]) == sorted(hub.presence("room"))
        assert hub.stats.slow_consumers == 0
        assert await page.evaluate("lab.reconnected") == []
        await eventually(lambda: not hub.presence_pager.in_progress(session))


# ---------------------------------------------------------------------- model: replayed

USERS = ["u0", "u1", "u2", "u3", "u4", "u5"]
SEQUENCES = 60


def paged_sequence(rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What a slow watcher receives while it joins (pages of one member) and members
    change; and the hub's member list at the end."""
    hub = Hub(ServerOptions(presence_page_bytes=40))

    def open_(user: str, port: Any = None) -> Session:
        return hub.open(port or SlowPort(), user=user,  # type: ignore[no-any-return]
                        request=ConnectRequest(remote="x", user=user))

    def send(s: Session, msg: dict[str, Any]) -> None:
        hub.receive_text(s, json.dumps(msg))

    live = []
    for user in rng.sample(USERS, rng.randrange(2, 6)):
        s = open_(user)
        send(s, {"type": "subscribe", "channel": "room"})
        live.append(s)
    port = SlowPort()
    watcher = open_("watcher", port)
    send(watcher, {"type": "subscribe", "channel": "room"})
    for _ in range(rng.randrange(3, 15)):
        kind = rng.choice(["open", "close", "meta", "state", "read", "read"])
        if kind == "open":
            s = open_(rng.choice(USERS))
            send(s, {"type": "subscribe", "channel": "room"})
            live.append(s)
        elif kind == "read":
            port.drain()
        elif live:
            s = rng.choice(live)
            if kind == "close":
                hub.closed(s)
                live.remove(s)
            elif kind == "meta":
                send(s, {"type": "presence", "channel": "room", "meta": {"n": rng.randrange(9)}})
            else:
                send(s, {"type": "presence", "channel": "room",
                         "state": rng.choice(["online", "away", "busy"])})
    while hub.presence_pager.in_progress(watcher):
        port.drain()
    msgs = [m for m in port.take() if m["type"].startswith("presence_")]
    return msgs, hub.presence("room")


REPLAY = """async (sequences) => {
  const { followPresence } = await import("/static/realtime-lab.js");
  return sequences.map((msgs) => {
    let members = null, build = null;
    const news = [];
    for (const msg of msgs) {
      const next = followPresence(members, build, msg);
      members = next.members;
      build = next.build;
      news.push(next.change && { joined: next.change.joined, updated: next.change.updated,
                                 left: next.change.left });
    }
    return { members, building: build !== null, news };
  });
}"""


async def test_follow_presence_rebuilds_pages_like_python_and_the_hub(page: Page) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    sequences = [paged_sequence(rng) for _ in range(SEQUENCES)]
    replayed = await page.evaluate(REPLAY, [msgs for msgs, _ in sequences])
    interleaved = 0
    for n, ((msgs, server), browser) in enumerate(zip(sequences, replayed, strict=True)):
        where = f"seed {seed}, sequence {n}"
        view = PresenceView()
        news = []
        for msg in msgs:
            change = view.apply(msg)
            reported = bool(change.joined or change.updated or change.left) or (
                msg["type"] == "presence_page" and not msg["more"])
            news.append({"joined": change.joined,
                         "updated": {u: list(f) for u, f in change.updated.items()},
                         "left": change.left} if reported else None)
        assert browser["news"] == news, where
        assert not browser["building"] and browser["members"] == server, where
        assert view.channels["room"] == server, where
        pages = [i for i, m in enumerate(msgs) if m["type"] == "presence_page"]
        interleaved += any(m["type"] == "presence_diff" for m in msgs[pages[0]:pages[-1]])
    assert interleaved > SEQUENCES // 4  # many sequences had diffs between their pages
