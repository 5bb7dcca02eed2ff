"""Chromium: the browser's applyPresence() equals the Python PresenceView and the hub.

Random sequences of presence changes (tabs opening and closing, unsubscribes,
states, metadata, idle moves, kicks, grace periods) run on a real Hub with fake
ports and a fake clock, for both wire shapes (presence_details True and False).
The messages a watcher connection received are replayed in the page through
/static/realtime-lab.js's applyPresence(): after every message the page's member
map and what it reports (joined, updated, left with reasons) must equal the Python
client's PresenceView.apply(), and after every step the map must equal the hub's
(without the connection counts when presence_details is off).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from realtime_lab import ServerOptions
from realtime_lab.client.presence import PresenceView
from realtime_lab.core.hooks import ConnectRequest
from realtime_lab.core.hub import Hub
from realtime_lab.core.session import Session
from realtime_lab.testing import ManualClock, RecordingPort

from .conftest import Page, needs_playwright

pytestmark = [pytest.mark.browser, needs_playwright, pytest.mark.timeout(120)]
USERS = ["u0", "u1", "u2", "u3"]
SEQUENCES = 60  # per wire shape and grace setting
Members = dict[str, dict[str, Any]]


class Scenario:
    """A hub with fake ports; records what a watcher receives and the hub's view per step."""

    def __init__(self, rng: random.Random, details: bool, grace: float) -> None:
        self.rng = rng
        self.clock = ManualClock(1000.0)
        self.hub = Hub(ServerOptions(presence_details=details, presence_grace=grace,
                                     presence_idle_timeout=10.0), clock=self.clock)
        self.live: list[Session] = []
        self.watcher = self.open("watcher")
        self.steps: list[list[dict[str, Any]]] = []
        self.views: list[Members] = []
        self.sub(self.watcher)
        self.record()

    def open(self, user: str) -> Session:
        port = RecordingPort("10.0.0.8")
        return self.hub.open(port, user=user,  # type: ignore[no-any-return]
                             request=ConnectRequest(remote="x", user=user))

    def send(self, s: Session, msg: dict[str, Any]) -> None:
        self.hub.receive_text(s, json.dumps(msg))

    def sub(self, s: Session) -> None:
        self.send(s, {"type": "subscribe", "channel": "room"})

    def record(self) -> None:
        port: RecordingPort = self.watcher.port  # type: ignore[assignment]
        self.steps.append([m for m in port.take()
                           if m["type"] in ("presence_state", "presence_diff")])
        self.views.append(self.hub.presence("room"))

    def step(self) -> None:
        rng, live = self.rng, self.live
        kind = rng.choice(["open", "open", "close", "unsub", "state", "meta", "ping",
                           "wait", "idle", "kick"])
        if kind == "open":
            s = self.open(rng.choice(USERS))
            self.sub(s)
            live.append(s)
        elif kind == "wait":
            self.clock.now += rng.choice([0.5, 2.0, 5.0])
            self.hub.expire_presence()
        elif kind == "idle":
            self.clock.now += 10.0
            self.hub.expire_presence()
            self.hub.check_presence_idle()
        elif kind == "kick":
            self.hub.kick("room", rng.choice(USERS))
            self.live = [s for s in live if "room" in s.subscriptions]
        elif live:
            s = rng.choice(live)
            if kind == "close":
                self.hub.closed(s)
                live.remove(s)
            elif kind == "unsub":
                self.send(s, {"type": "unsubscribe", "channel": "room"})
                live.remove(s)
            elif kind == "ping":
                self.send(s, {"type": "ping"})
            elif kind == "state":
                self.send(s, {"type": "presence", "channel": "room",
                              "state": rng.choice(["online", "away", "busy"])})
            else:
                self.send(s, {"type": "presence", "channel": "room",
                              "meta": rng.choice([{}, {"a": 1}, {"b": 2}])})
        self.record()


def python_side(steps: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """What the Python client's PresenceView makes of the same messages."""
    view = PresenceView()
    out = []
    for step in steps:
        news = []
        for msg in step:
            change = view.apply(msg)
            news.append({"joined": change.joined,
                         "updated": {u: list(f) for u, f in change.updated.items()},
                         "left": change.left})
        out.append({"members": dict(view.channels.get("room", {})), "news": news})
    return out


REPLAY = """async (sequences) => {
  const { applyPresence } = await import("/static/realtime-lab.js");
  return sequences.map((steps) => {
    let members = null;
    return steps.map((step) => {
      const news = step.map((msg) => {
        const change = applyPresence(members, msg);
        if (members !== null && change.members === members) throw new Error("map mutated");
        members = change.members;
        return { joined: change.joined, updated: change.updated, left: change.left };
      });
      return { members: members || {}, news };
    });
  });
}"""


def without_counts(members: Members) -> Members:
    return {u: {k: v for k, v in info.items() if k != "connections"}
            for u, info in members.items()}


@pytest.mark.parametrize("grace", [0.0, 3.0], ids=["no-grace", "grace"])
@pytest.mark.parametrize("details", [True, False], ids=["details", "minimal"])
async def test_browser_rebuilds_the_member_list_like_python_and_the_hub(
        page: Page, details: bool, grace: float) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    scenarios = []
    for _ in range(SEQUENCES):
        scenario = Scenario(rng, details, grace)
        for _ in range(rng.randrange(5, 40)):
            scenario.step()
        scenarios.append(scenario)
    replayed = await page.evaluate(REPLAY, [s.steps for s in scenarios])
    messages = 0
    for n, (scenario, browser_steps) in enumerate(zip(scenarios, replayed, strict=True)):
        python_steps = python_side(scenario.steps)
        where = f"seed {seed}, sequence {n}"
        assert browser_steps == python_steps, where  # map and news, message by message
        for view, step in zip(scenario.views, browser_steps, strict=True):
            if details:
                assert step["members"] == view, where
            else:
                assert without_counts(step["members"]) == without_counts(view), where
        messages += sum(len(step) for step in scenario.steps)
    assert messages > SEQUENCES * 3  # the sequences did produce presence traffic
