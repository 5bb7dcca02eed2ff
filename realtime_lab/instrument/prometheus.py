"""Prometheus metrics of a running server, read from its counters at scrape time.

``ServerOptions(metrics=True)`` (``realtime-lab serve --metrics``) serves them at
``GET /metrics``. Nothing is counted for Prometheus on the message path: the hub
already keeps its counters (``HubStats``), and :class:`LabCollector` reads them,
and the few gauges below, each time Prometheus scrapes. docs/metrics.md lists
every name beside the recorder's DataFrame columns.

Everything this module reads from a server is read in :func:`read_counters`, through
``server.hub.stats``, ``server.hub.sessions``, ``server.hub.channels``,
``server.started_at`` and ``server.cluster.describe()``.

Needs the ``prometheus`` extra (``pip install 'realtime_lab[prometheus]'``);
``prometheus_client`` is imported only when a registry is built.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

from realtime_lab._version import __version__
from realtime_lab.errors import require
from realtime_lab.protocol.close_codes import CloseCode

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from realtime_lab.core.hub import Hub

PREFIX = "realtime_lab"

#: Server-initiated closes counted by the hub: reason label -> (HubStats field, close code).
CLOSE_REASONS: dict[str, tuple[str, int]] = {
    "slow_consumer": ("slow_consumers", CloseCode.SLOW_CONSUMER),
    "heartbeat_timeout": ("heartbeat_timeouts", CloseCode.HEARTBEAT_TIMEOUT),
    "idle_timeout": ("idle_timeouts", CloseCode.IDLE_TIMEOUT),
    "too_many_errors": ("too_many_errors", CloseCode.TOO_MANY_ERRORS),
}

#: Counters: metric name (``_total`` is added) -> (HubStats field, help text).
HUB_COUNTERS: dict[str, tuple[str, str]] = {
    "connections_opened": ("connections_opened", "WebSocket connections admitted"),
    "connections_closed": ("connections_closed", "connections ended, for any reason"),
    "connections_refused": ("refused", "connections refused at connect (limits, tokens, "
                                       "on_connect hook)"),
    "messages_received": ("messages_in", "messages received from clients"),
    "messages_published": ("published", "messages published to channels (by clients, "
                                        "the server or the HTTP API)"),
    "messages_delivered": ("deliveries", "channel messages queued to subscribers: one per "
                                         "subscriber per message"),
    "errors_sent": ("errors_sent", "error messages sent to clients"),
    "internal_errors": ("internal_errors", "internal_error replies: the server failed on a "
                                           "message (a bug; input never causes one)"),
    "fanouts_failed": ("fanouts_failed", "broadcasts dropped because their fan-out raised "
                                         "(a bug; the broadcasts after it go on)"),
}

#: Broker counters (``GET /api/cluster``'s ``broker_stats``): name -> (key, help).
BROKER_COUNTERS: dict[str, tuple[str, str]] = {
    "broker_envelopes_sent": ("published", "envelopes this node handed to the broker"),
    "broker_envelopes_received": ("received", "envelopes received from other nodes"),
    "broker_duplicates": ("duplicates", "received envelopes with a sequence already seen"),
    "broker_reconnects": ("reconnects", "reconnections to the broker after a failure"),
    "broker_presence_resyncs": ("resyncs", "presence resynchronisations with the broker"),
    "broker_reaped_nodes": ("reaped_nodes", "dead nodes whose presence this node removed"),
}

#: Cluster counters (``node_stats``): name -> (key, help).
NODE_COUNTERS: dict[str, tuple[str, str]] = {
    "cluster_remote_deliveries": ("remote_deliveries",
                                  "deliveries to local subscribers of messages published "
                                  "on other nodes"),
    "cluster_missed_envelopes": ("missed", "envelopes other nodes sent that this node did "
                                           "not get (gaps in their sequence)"),
    "cluster_unrouted_envelopes": ("unrouted", "envelopes for channels with no local "
                                               "subscriber"),
}


@dataclass(frozen=True)
class Counters:
    """One reading of a server's counters and gauges."""

    stats: Mapping[str, int]
    connections: int
    channels: int
    subscriptions: int
    presence_members: int
    started_at: float
    cluster: Mapping[str, Any] | None = field(default=None)


class DescribedCluster(Protocol):
    """The cluster part of a server (``realtime_lab.broker.ClusterNode``)."""

    def describe(self) -> Mapping[str, object]: ...


class CountedServer(Protocol):
    """What the collector reads of a server (``realtime_lab.server.LabServer`` is one)."""

    @property
    def hub(self) -> Hub: ...

    @property
    def started_at(self) -> float: ...

    @property
    def cluster(self) -> DescribedCluster | None: ...


def read_counters(server: CountedServer) -> Counters:
    """Read everything the collector exposes, in one place (see the module docstring)."""
    hub = server.hub
    stats = hub.stats
    subscriptions = members = 0
    for channel in hub.channels.values():
        subscriptions += len(channel.subscribers)
        members += len(channel.members)
    cluster = server.cluster
    return Counters(
        stats={f.name: int(getattr(stats, f.name)) for f in fields(stats)},
        connections=len(hub.sessions),
        channels=len(hub.channels),
        subscriptions=subscriptions,
        presence_members=members,
        started_at=server.started_at,
        cluster=cluster.describe() if cluster is not None else None,
    )


class LabCollector:
    """A prometheus_client collector: one :func:`read_counters` per scrape."""

    def __init__(self, server: CountedServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        c = read_counters(self.server)
        yield InfoMetricFamily(PREFIX, "realtime_lab version", value={"version": __version__})
        yield GaugeMetricFamily(f"{PREFIX}_start_time_seconds",
                                "when the server started, Unix time", value=c.started_at)
        for name, value, text in (
            ("connections", c.connections, "open WebSocket connections"),
            ("channels", c.channels, "channels with at least one subscriber on this node"),
            ("subscriptions", c.subscriptions, "subscriptions: (connection, channel) pairs"),
            ("presence_members", c.presence_members,
             "presence members, summed over channels (users, however many connections)"),
        ):
            yield GaugeMetricFamily(f"{PREFIX}_{name}", text, value=value)
        for name, (key, text) in HUB_COUNTERS.items():
            yield CounterMetricFamily(f"{PREFIX}_{name}", text, value=c.stats[key])
        dropped = CounterMetricFamily(
            f"{PREFIX}_messages_dropped", "messages not delivered, by reason: queue_full "
            "(a droppable message for a connection that fell behind), hook (on_message "
            "refused it), middleware (an inbound middleware did not pass it on)",
            labels=["reason"])
        by_hook, by_middleware = c.stats["dropped_by_hook"], c.stats["dropped_by_middleware"]
        dropped.add_metric(["queue_full"], c.stats["dropped"] - by_hook - by_middleware)
        dropped.add_metric(["hook"], by_hook)
        dropped.add_metric(["middleware"], by_middleware)
        yield dropped
        closes = CounterMetricFamily(
            f"{PREFIX}_server_closes", "connections the server closed because a limit was "
            "reached, by reason and close code", labels=["reason", "code"])
        for reason, (key, code) in CLOSE_REASONS.items():
            closes.add_metric([reason, str(int(code))], c.stats[key])
        yield closes
        if c.cluster is not None:
            yield from _cluster_metrics(c.cluster)


def _cluster_metrics(cluster: Mapping[str, Any]) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    broker_stats: Mapping[str, int] = cluster.get("broker_stats", {})
    node_stats: Mapping[str, int] = cluster.get("node_stats", {})
    connected = GaugeMetricFamily(f"{PREFIX}_broker_connected",
                                  "1 while the node is connected to its broker, else 0",
                                  labels=["broker"])
    connected.add_metric([str(cluster.get("broker"))], 1.0 if cluster.get("connected") else 0.0)
    yield connected
    dropped = CounterMetricFamily(
        f"{PREFIX}_broker_envelopes_dropped", "envelopes lost at this node: out (not sent: "
        "broker down or outbox full), in (received but not decodable)", labels=["direction"])
    dropped.add_metric(["out"], broker_stats.get("dropped_out", 0))
    dropped.add_metric(["in"], broker_stats.get("dropped_in", 0))
    yield dropped
    for table, source in ((BROKER_COUNTERS, broker_stats), (NODE_COUNTERS, node_stats)):
        for name, (key, text) in table.items():
            yield CounterMetricFamily(f"{PREFIX}_{name}", text, value=source.get(key, 0))


def server_registry(server: CountedServer) -> CollectorRegistry:
    """A registry with this server's collector and the process, platform and GC collectors.

    Raises :class:`~realtime_lab.errors.MissingDependency` (with the install hint)
    when prometheus_client is not installed. Register your own collectors on it
    (``server.metrics_registry.register(...)``) to serve them at the same URL.
    """
    require("prometheus_client", "prometheus")
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(LabCollector(server))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
