"""Brokers: how a publish and presence reach the other server processes (nodes).

``serve()`` without a broker runs one node and pays nothing for this package.
``serve(broker=InMemoryBus())`` puts several servers of one process on a shared
in-memory bus (a notebook cluster); ``serve(broker="redis://HOST:PORT/0")``
links servers in several processes or machines through Redis.
"""

from __future__ import annotations

from typing import Any

from realtime_lab.broker.backplane import BrokerBackplane, ClusterNode
from realtime_lab.broker.base import Broker, BrokerStats, Envelope, HistoryRead, PresenceEvent
from realtime_lab.broker.memory import InMemoryBus, MemoryBroker

BrokerSpec = Broker | InMemoryBus | str | None
"""What ``serve(broker=...)`` accepts: see `make_broker`."""


def make_broker(spec: BrokerSpec, **kwargs: Any) -> Broker | None:
    """Turn ``serve(broker=...)`` into a broker for one node.

    ``None`` -> no broker (single node); ``"memory"`` -> a private in-memory bus;
    an :class:`InMemoryBus` -> a new node on that bus; ``"redis://..."`` or
    ``"rediss://..."`` -> :class:`~realtime_lab.broker.redis.RedisBroker` (extra
    keyword arguments go to it, and so do ``node_ttl``, ``namespace``, ``op_timeout``
    and ``resync_hold`` given in the URL's query:
    ``redis://127.0.0.1:6379/0?node_ttl=3``); a :class:`Broker`
    -> itself.
    """
    if spec is None or isinstance(spec, Broker):
        return spec
    if isinstance(spec, InMemoryBus):
        return spec.broker()
    if isinstance(spec, str):
        if spec == "memory":
            return MemoryBroker()
        if spec.startswith(("redis://", "rediss://", "unix://")):
            from realtime_lab.broker.redis import RedisBroker

            url, options = _split_options(spec)
            return RedisBroker(url, **{**options, **kwargs})
    raise ValueError(
        f"unknown broker {spec!r}: use None, 'memory', an InMemoryBus, a Broker "
        "or a URL 'redis://HOST:PORT/DB'")


_OURS = {"node_ttl": float, "namespace": str, "op_timeout": float, "resync_hold": float}


def _split_options(url: str) -> tuple[str, dict[str, Any]]:
    """Take this package's options out of a Redis URL's query string."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    ours: dict[str, Any] = {}
    rest = []
    for key, value in parse_qsl(parts.query):
        if key in _OURS:
            ours[key] = _OURS[key](value)
        else:
            rest.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


__all__ = [
    "Broker",
    "BrokerBackplane",
    "BrokerSpec",
    "BrokerStats",
    "ClusterNode",
    "Envelope",
    "HistoryRead",
    "InMemoryBus",
    "MemoryBroker",
    "PresenceEvent",
    "make_broker",
]
