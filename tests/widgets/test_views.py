"""Widget views with no kernel (ipywidgets uses a dummy comm): content, classes, throttling."""

from __future__ import annotations

import asyncio
import time

import pytest

import realtime_lab
from realtime_lab.core.hub import Hub
from realtime_lab.testing import NullPort
from realtime_lab.widgets import (
    MIN_INTERVAL,
    ChannelsView,
    Dashboard,
    MetricsView,
    PresenceView,
)


def join(hub: Hub, user: str, channel: str):
    s = hub.open(NullPort(), user=user)
    hub.subscribe(s, channel)
    return s


def test_views_have_css_classes_and_render_state() -> None:
    hub = Hub()
    join(hub, "ada", "physics")
    ch, pr, me = ChannelsView(hub), PresenceView(hub), MetricsView(hub)
    assert {"rtl-view", "rtl-channels"} <= set(ch._dom_classes)
    assert "rtl-presence" in pr._dom_classes and "rtl-metrics" in me._dom_classes
    assert 'data-channel="physics"' in ch.value
    assert 'class="rtl-subscribers">1<' in ch.value
    assert 'data-user="ada"' in pr.value
    assert 'data-metric="connections">connections: <b>1</b>' in me.value


def test_refresh_sends_only_changes() -> None:
    hub = Hub()
    view = PresenceView(hub)
    assert "nobody here yet" in view.value
    first = view.updates
    assert view.refresh() is False
    assert view.updates == first
    s = join(hub, "bob", "lobby")
    assert view.refresh() is True
    assert 'data-user="bob"' in view.value
    hub.closed(s)
    assert view.refresh() is True
    assert 'data-user="bob"' not in view.value


def test_presence_view_of_one_channel_and_escaping() -> None:
    hub = Hub()
    join(hub, "<script>x</script>", "a")
    join(hub, "eve", "b")
    view = PresenceView(hub, channel="b")
    assert 'data-user="eve"' in view.value and "script" not in view.value
    whole = PresenceView(hub)
    assert "<script>" not in whole.value and "&lt;script&gt;" in whole.value


def test_channel_rate() -> None:
    hub = Hub()
    join(hub, "ada", "r")
    view = ChannelsView(hub)
    for _ in range(10):
        hub.publish("r", 1)
    view.refresh(now=10_000.0)
    for _ in range(5):
        hub.publish("r", 1)
    view.refresh(now=10_001.0)
    assert "<td>15</td><td>5.0</td>" in view.value


def test_dashboard_without_a_loop_refreshes_by_hand() -> None:
    hub = Hub()
    dash = Dashboard(hub)
    assert not dash.running and not dash.start()
    assert "rtl-dashboard" in dash._dom_classes
    join(hub, "ada", "room")
    assert dash.refresh() >= 2
    assert 'data-user="ada"' in dash.presence.value
    dash.stop()


def test_interval_has_a_floor() -> None:
    assert Dashboard(Hub(), interval=0.001, autostart=False).interval == MIN_INTERVAL


async def test_dashboard_updates_from_the_loop_and_is_throttled() -> None:
    server = await realtime_lab.serve(port=0)
    dash = server.dashboard(interval=0.25)
    try:
        assert dash.running
        assert server.url in dash.children[0].value
        client = await realtime_lab.connect(server.url, user="grace")
        await client.subscribe("lab")
        for _ in range(100):
            if 'data-user="grace"' in dash.presence.value:
                break
            await asyncio.sleep(0.02)
        assert 'data-user="grace"' in dash.presence.value
        assert 'data-channel="lab"' in dash.channels.value
        # a busy server: many publishes, but the views change at most once per interval
        before, started = dash.metrics.updates, time.monotonic()
        for i in range(200):
            await client.publish("lab", i)
            await asyncio.sleep(0.004)
        updates = dash.metrics.updates - before
        assert 1 <= updates <= (time.monotonic() - started) / MIN_INTERVAL + 2
        await client.close()
    finally:
        await server.stop()
        await asyncio.sleep(0.6)
        assert not dash.running
        dash.stop()


def test_missing_ipywidgets_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from realtime_lab.errors import MissingDependency, require

    real = importlib.import_module

    def fake(name: str, *a: object):
        if name == "ipywidgets":
            raise ImportError("no")
        return real(name, *a)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(MissingDependency, match=r"realtime_lab\[notebook\]"):
        require("ipywidgets", "notebook")


def test_member_state_and_metadata() -> None:
    from realtime_lab.widgets.render import _info_html

    html = _info_html({"connections": 2, "meta": {"state": "away", "role": "<b>teacher</b>"}})
    assert 'data-state="away"' in html and "2 conn" in html
    assert "role=&lt;b&gt;teacher&lt;/b&gt;" in html
    assert _info_html({"connections": 1}) == "1 conn"
    assert 'data-state="busy"' in _info_html({"state": "busy", "x": 1})
