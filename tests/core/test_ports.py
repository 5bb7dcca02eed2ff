"""The hub's ports (issue 14 step 1): the scheduler it is bound to, the compression
policy it resolves once, and testing ports that implement the whole ConnectionPort."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from realtime_lab.core import Hub, ServerOptions
from realtime_lab.core.ports import ConnectionPort, SoonScheduler, Timer
from realtime_lab.middleware import Compression
from realtime_lab.protocol.deflate import CompressionPolicy
from realtime_lab.testing import NullPort, RecordingPort, SlowPort


class Handle:
    def cancel(self) -> None:
        pass


class Loop:
    """A Scheduler that holds callbacks until the test runs them."""

    def __init__(self) -> None:
        self.soon: list[Callable[[], None]] = []
        self.later: list[tuple[float, Callable[[], None]]] = []

    def call_soon(self, callback: Callable[[], None]) -> object:
        self.soon.append(callback)
        return None

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        self.later.append((delay, callback))
        return Handle()

    def run(self) -> None:
        while self.soon:
            self.soon.pop(0)()


def test_an_unbound_hub_writes_at_once_and_bind_defers_to_the_loop() -> None:
    hub = Hub(ServerOptions(presence_channels=None))
    port = RecordingPort()
    session = hub.open(port)
    assert [m["type"] for m in port.take()] == ["welcome"]  # no scheduler: written at once

    loop = Loop()
    hub.bind(loop)
    assert hub.scheduler is loop
    hub.send(session, {"type": "pong"})
    assert port.take() == []  # waits for the loop's turn
    assert loop.soon
    loop.run()
    assert [m["type"] for m in port.take()] == ["pong"]


def test_schedule_callable_is_wrapped_as_a_scheduler() -> None:
    calls: list[Callable[[], None]] = []
    hub = Hub(schedule=calls.append)
    assert isinstance(hub.scheduler, SoonScheduler)
    hub.scheduler.call_soon(lambda: None)
    assert len(calls) == 1


def test_compression_is_resolved_once_from_middleware_or_options() -> None:
    policy = CompressionPolicy(level=9, threshold=512)
    assert Hub(middleware=[Compression(policy)]).compression is policy
    off = Hub(ServerOptions(compression=False))
    assert off.compression is off.options.compression
    assert not off.compression.enabled
    off.set_middleware([Compression(policy)])
    assert off.compression is policy
    off.set_middleware([])
    assert off.compression is off.options.compression


def test_an_object_with_a_policy_attribute_is_not_taken_for_compression() -> None:
    class Other:  # not a Compression middleware: its .policy means something else
        policy = CompressionPolicy(level=1)

    hub = Hub(middleware=[Other()])
    assert hub.compression is hub.options.compression


@pytest.mark.parametrize("port_type", [RecordingPort, SlowPort, NullPort])
def test_testing_ports_implement_every_port_method(port_type: type) -> None:
    declared = {name for name, _ in inspect.getmembers(ConnectionPort, inspect.isfunction)
                if not name.startswith("_")}
    assert declared >= {"write", "buffered_bytes", "when_drained", "discard_unsent", "ping",
                        "close", "abort"}
    port = port_type()
    missing = sorted(name for name in declared if not callable(getattr(port, name, None)))
    assert missing == []
    assert port.remote and port.wire is not None
