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
from realtime_lab.widgets.views import STOP_AFTER


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


def test_presence_view_shows_the_count_of_a_counts_channel() -> None:
    from realtime_lab import ChannelRule, ServerOptions

    hub = Hub(ServerOptions(channel_rules=(ChannelRule("live-*", presence="counts"),),
                            presence_full_limit=2))
    for user in ("ada", "bob", "cy"):
        join(hub, user, "live-1")
    join(hub, "ada", "room")
    view = PresenceView(hub)
    assert 'data-channel="live-1"' in view.value and "rtl-presence-counts" in view.value
    assert '<span class="rtl-count">3</span> members, counts mode' in view.value
    assert 'data-user="ada" data-channel="room"' in view.value
    assert 'data-user="bob"' not in view.value  # live-1 has no roster
    for user in ("bob", "cy"):  # room passes its limit of 2: counts from then on
        join(hub, user, "room")
    view.refresh()
    assert view.value.count("rtl-presence-counts") == 2 and 'data-user=' not in view.value


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
        async with asyncio.timeout(STOP_AFTER + 3):
            while dash.running:  # a stopped (not restarting) server: the task ends
                await asyncio.sleep(0.05)
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


def test_dashboard_charts_log_and_connections_from_a_hub() -> None:
    hub = Hub()
    dash = Dashboard(hub, autostart=False)
    assert dash.controls is None  # no server to control
    charts = dash.charts.value
    for key in ("throughput", "latency", "connections", "memory", "queues", "slow"):
        assert f'data-chart="{key}"' in charts
    assert "not recording" in charts
    s = join(hub, "ada", "room")
    for i in range(20):
        hub.publish("room", i)
    dash.refresh()
    assert 'data-user="ada"' in dash.connections.value
    assert "room" in dash.connections.value
    kinds = [row.kind for row in dash.events.event_log.rows]
    assert kinds[:2] == ["connect", "join"]
    hub.closed(s)
    dash.refresh()
    assert [row.kind for row in dash.events.event_log.rows][-2:] == ["leave", "disconnect"]
    assert 'data-kind="leave"' in dash.events.value


def test_an_idle_dashboard_renders_nothing() -> None:
    hub = Hub()
    join(hub, "ada", "room")
    dash = Dashboard(hub, autostart=False)
    dash.refresh()  # the rates of the first interval
    dash.refresh()
    updates = [v.updates for v in dash.views]
    skipped = dash.skipped
    for _ in range(5):
        assert dash.refresh() == 0
    assert dash.skipped == skipped + 5
    assert [v.updates for v in dash.views] == updates
    hub.publish("room", "x")
    assert dash.refresh() > 0


def test_static_picture_for_renderers_without_a_kernel() -> None:
    hub = Hub()
    join(hub, "ada", "room")
    dash = Dashboard(hub, autostart=False)
    bundle = dash._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert '<svg class="rtl-chart"' in bundle["text/html"]
    assert 'data-user="ada"' in bundle["text/html"]
    assert 'data-chart="throughput"' in dash.snapshot()._repr_html_()


def test_event_log_merges_storms_and_finds_reconnects() -> None:
    from realtime_lab.core import events as ev
    from realtime_lab.widgets.live import EventLog

    now = [100.0]
    log = EventLog(size=50, clock=lambda: now[0])
    for i in range(300):
        log(ev.Disconnected(at=0, user=f"u{i}", code=None, reason="connection lost"))
    now[0] += 0.4
    for i in range(300):
        log(ev.Connected(at=0, user=f"u{i}"))
    rows = list(log.rows)
    assert [(r.kind, r.count) for r in rows] == [("disconnect", 300), ("reconnect", 300)]
    assert rows[1].detail == "back (down 0.40 s)"
    now[0] += 60
    log(ev.Connected(at=0, user="u1"))
    assert log.rows[-1].kind == "connect"  # too late to call it a reconnect
