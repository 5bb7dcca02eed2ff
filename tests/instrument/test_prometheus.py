"""GET /metrics: real scrapes after real traffic, parsed with prometheus_client's parser."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPResponse

import realtime_lab
from realtime_lab import LabServer, ServerOptions
from realtime_lab.broker import InMemoryBus
from realtime_lab.core.hooks import Hooks, MaybeAwaitable
from realtime_lab.middleware import Inbound, InboundNext, Middleware
from realtime_lab.protocol.close_codes import CloseCode
from realtime_lab.protocol.frames import OP_TEXT

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def fetch(url: str, **headers: str) -> HTTPResponse:
    return await AsyncHTTPClient().fetch(url, headers=headers, raise_error=False)


async def scrape(server: LabServer, **headers: str) -> Samples:
    """GET /metrics and parse it: {(sample name, sorted labels): value}."""
    resp = await fetch(server.http_url + "/metrics", **headers)
    assert resp.code == 200, resp.body
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def refuse_drop(session: Any, message: dict[str, Any]) -> bool | None:
    """on_message hook: drop publishes whose data is "drop"."""
    return False if message.get("data") == "drop" else None


class DropMiddleware(Middleware):
    """Inbound: does not pass on publishes whose data is "mw-drop"."""

    def inbound(self, ctx: Inbound, call_next: InboundNext) -> MaybeAwaitable[None]:
        return None if ctx.message.get("data") == "mw-drop" else call_next(ctx)


async def test_metrics_are_off_by_default(server: LabServer) -> None:
    assert server.metrics_registry is None
    assert (await fetch(server.http_url + "/metrics")).code == 404


def test_prometheus_client_is_imported_only_when_metrics_are_on() -> None:
    script = textwrap.dedent("""
        import asyncio, sys
        import realtime_lab

        async def main(metrics):
            server = await realtime_lab.serve(port=0, metrics=metrics)
            await server.stop()
            return "prometheus_client" in sys.modules

        print(asyncio.run(main(False)), asyncio.run(main(True)))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("options", [ServerOptions(
    metrics=True, max_outbound_bytes=16 * 1024)])
async def test_scrape_after_real_traffic(options: ServerOptions, raw_ws, wait_until) -> None:
    server = await realtime_lab.serve(port=0, options=options,
                                      hooks=Hooks(on_message=refuse_drop),
                                      middleware=[DropMiddleware()])
    clients = []
    try:
        ada = await realtime_lab.connect(server.url, user="ada")
        bob = await realtime_lab.connect(server.url, user="bob")
        clients += [ada, bob]
        for c in (ada, bob):
            await c.subscribe("room")
        await ada.subscribe("news")
        for n in range(5):
            await ada.publish("room", {"n": n}, ack=True)
        for _ in range(5):
            await bob.recv_message("room", timeout=5)
        await ada.publish("room", "drop")  # refused by the hook: a drop, reason hook
        await ada.publish("room", "mw-drop")  # not passed on: a drop, reason middleware
        await bob.send({"type": "dance"})  # unknown type: one error sent
        assert (await bob.recv(timeout=5))["code"] == "unknown_type"
        hub_stats = server.hub.stats  # ada's two publishes had no ack: wait for both drops
        await wait_until(lambda: hub_stats.dropped_by_hook == hub_stats.dropped_by_middleware == 1,
                         what="ada's two publishes to be dropped")

        # a client that stops reading: low messages are dropped, then it is closed (4100)
        slow = await raw_ws(server.port, rcvbuf=4096)
        await slow.send_json({"type": "subscribe", "channel": "firehose", "id": 1})
        await slow.read_until(lambda f: f.opcode == OP_TEXT and b'"subscribed"' in f.payload)
        slow_session = next(s for s in server.hub.sessions.values() if s.user not in
                            ("ada", "bob"))
        pad = "x" * 8000
        stats = server.hub.stats
        for _ in range(10_000):  # ~80 MB at most: far more than the socket buffers hold
            if stats.dropped - stats.dropped_by_hook - stats.dropped_by_middleware:
                break
            server.publish("firehose", {"pad": pad}, priority="low")
            await asyncio.sleep(0)  # let the server write what fits
        while slow_session.is_open:  # normal messages are not dropped: the client is closed
            server.publish("firehose", {"pad": pad})
        assert slow_session.close_code == CloseCode.SLOW_CONSUMER
        slow.close()
        await wait_until(lambda: len(server.hub.sessions) == 2, what="the slow one to go")

        samples = await scrape(server)
        assert value(samples, "realtime_lab_connections") == 2
        assert value(samples, "realtime_lab_channels") == 2  # room, news
        assert value(samples, "realtime_lab_subscriptions") == 3
        assert value(samples, "realtime_lab_presence_members") == 3
        assert value(samples, "realtime_lab_connections_opened_total") == 3
        assert value(samples, "realtime_lab_connections_closed_total") == 1
        assert value(samples, "realtime_lab_messages_received_total") == stats.messages_in
        assert stats.messages_in >= 5 + 2 + 1 + 3 + 1  # publishes, drops, dance, subs
        assert value(samples, "realtime_lab_messages_published_total") == stats.published
        assert value(samples, "realtime_lab_messages_delivered_total") == stats.deliveries
        assert stats.deliveries >= 10  # 5 messages x 2 subscribers of room
        assert value(samples, "realtime_lab_errors_sent_total") == 1
        assert value(samples, "realtime_lab_internal_errors_total") == 0
        assert value(samples, "realtime_lab_fanouts_failed_total") == 0
        assert value(samples, "realtime_lab_messages_dropped_total", reason="hook") == 1
        assert value(samples, "realtime_lab_messages_dropped_total", reason="middleware") == 1
        assert value(samples, "realtime_lab_messages_dropped_total",
                     reason="queue_full") == stats.dropped - 2 >= 1
        assert value(samples, "realtime_lab_server_closes_total", reason="slow_consumer",
                     code="4100") == 1
        assert value(samples, "realtime_lab_server_closes_total", reason="heartbeat_timeout",
                     code="4101") == 0
        assert value(samples, "realtime_lab_info", version=realtime_lab.__version__) == 1
        assert value(samples, "realtime_lab_start_time_seconds") == pytest.approx(
            server.started_at)
        assert value(samples, "process_resident_memory_bytes") > 0
        assert not any(name.startswith("realtime_lab_broker") for name, _ in samples)
    finally:
        for c in clients:
            await c.close()
        await server.stop()


@pytest.mark.parametrize("options", [ServerOptions(
    metrics=True, heartbeat_interval=0.2, heartbeat_timeout=0.3)])
async def test_heartbeat_timeouts_are_counted(server: LabServer, raw_ws) -> None:
    silent = await raw_ws(server.port)  # never answers the server's pings
    assert await silent.read_close(timeout=10) == CloseCode.HEARTBEAT_TIMEOUT
    samples = await scrape(server)
    assert value(samples, "realtime_lab_server_closes_total", reason="heartbeat_timeout",
                 code="4101") == 1


@pytest.mark.parametrize("options", [ServerOptions(metrics=True, api_token="s3cret")])
async def test_the_api_token_guards_metrics(server: LabServer) -> None:
    url = server.http_url + "/metrics"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        resp = await fetch(url, **headers)
        assert resp.code == 401
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert json.loads(resp.body)["error"] == "unauthorized"
    samples = await scrape(server, Authorization="Bearer s3cret")
    assert value(samples, "realtime_lab_connections") == 0


@pytest.mark.parametrize("options", [ServerOptions(metrics=True)])
async def test_openmetrics_when_the_scraper_asks_for_it(server: LabServer) -> None:
    resp = await fetch(server.http_url + "/metrics", Accept="application/openmetrics-text")
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert resp.body.decode().endswith("# EOF\n")


async def test_cluster_metrics_with_a_broker() -> None:
    bus = InMemoryBus()
    a = await realtime_lab.serve(port=0, broker=bus, metrics=True)
    b = await realtime_lab.serve(port=0, broker=bus, metrics=True)
    clients = []
    try:
        bob = await realtime_lab.connect(b.url, user="bob")
        clients.append(bob)
        await bob.subscribe("room")
        a.publish("room", {"n": 1})
        assert (await bob.recv_message("room", timeout=5))["data"] == {"n": 1}
        sa, sb = await scrape(a), await scrape(b)
        for samples in (sa, sb):
            assert value(samples, "realtime_lab_broker_connected", broker="MemoryBroker") == 1
            assert value(samples, "realtime_lab_broker_envelopes_dropped_total",
                         direction="out") == 0
        assert value(sa, "realtime_lab_broker_envelopes_sent_total") >= 1
        assert value(sb, "realtime_lab_broker_envelopes_received_total") >= 1
        assert value(sb, "realtime_lab_cluster_remote_deliveries_total") == 1
    finally:
        for c in clients:
            await c.close()
        await a.stop()
        await b.stop()


async def test_a_wrong_token_is_not_a_server_error() -> None:
    server = await realtime_lab.serve(port=0, metrics=True, api_token="t")
    try:
        with pytest.raises(HTTPClientError) as err:
            await AsyncHTTPClient().fetch(server.http_url + "/metrics",
                                          headers={"Authorization": "Bearer \u00e9"})
        assert err.value.code == 401
    finally:
        await server.stop()


async def test_every_metric_is_documented_in_metrics_md() -> None:
    """docs/metrics.md lists every name the collector exposes, and no other."""
    from realtime_lab.instrument.prometheus import LabCollector

    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    server = await realtime_lab.serve(port=0, broker="memory", metrics=True)
    try:
        exposed = set()
        for family in LabCollector(server).collect():
            suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
            exposed.add(family.name + suffix)  # the sample name, as Prometheus shows it
    finally:
        await server.stop()
    documented = set(re.findall(r"\| `(realtime_lab_\w+)` \|", doc))
    assert exposed - documented == set(), "exposed but not in docs/metrics.md"
    assert documented - exposed == set(), "in docs/metrics.md but not exposed"
