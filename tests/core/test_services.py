"""The hub is a facade over services that own their state (issue 14, point 1).

The inbound commands (core/commands.py) and the connections (core/connections.py)
are services the hub builds and delegates to; these tests drive them through the
hub's public API and through ``hub.services`` and check that each piece of state
has one owner.
"""

from __future__ import annotations

import collections
import enum
import importlib
import inspect
import pkgutil

import realtime_lab.core as core_package
from realtime_lab.core import ConnectionState, Hub, ServerOptions
from realtime_lab.core.commands import Commands
from realtime_lab.core.connections import Connections
from realtime_lab.core.hooks import Hooks
from realtime_lab.core.membership import MembershipService
from realtime_lab.testing import RecordingPort


def test_the_hub_delegates_to_its_connections_and_commands() -> None:
    hub = Hub(ServerOptions(max_connections=1))
    connections, commands = hub.services.connections, hub.services.commands
    assert isinstance(connections, Connections) and isinstance(commands, Commands)
    assert hub.sessions is connections.sessions  # one dict, owned by the connections
    assert hub.admission is connections.admission
    port = RecordingPort()
    session = hub.open(port)
    assert hub.sessions == {session.id: session} and hub.admission.total == 1
    refused = connections.open(RecordingPort())  # the same limit, whichever way in
    assert refused.state is ConnectionState.CLOSING
    assert commands.receive_text(session, '{"type": "ping", "id": 1}') is None
    hub.flush()
    assert port.take()[-1] == {"type": "pong", "id": 1}
    commands.receive_text(session, "{")
    hub.flush()
    assert port.take()[-1]["code"] == "bad_json"
    connections.close(session, 4000, "bye")
    assert port.closes == [(4000, "bye")] and session.state is ConnectionState.CLOSING
    hub.closed(session)
    assert hub.sessions == {} and hub.admission.total == 0


def test_middleware_reaches_each_service_once_installed() -> None:
    seen: list[str] = []

    class Watcher:
        def inbound(self, ctx, call_next):  # type: ignore[no-untyped-def]
            seen.append(f"in:{ctx.type}")
            return call_next(ctx)

        def connection_closed(self, session) -> None:  # type: ignore[no-untyped-def]
            seen.append("closed")

    hub = Hub()
    session = hub.open(RecordingPort())
    hub.receive_text(session, '{"type": "ping"}')
    assert seen == []
    hub.set_middleware([Watcher()])
    assert hub.services.commands.chain is not None
    hub.receive_text(session, '{"type": "ping"}')
    hub.closed(session, 1000, "")
    assert seen == ["in:ping", "closed"]
    hub.set_middleware([])
    assert hub.services.commands.chain is None and hub.services.connections.watchers == ()


def _classes_of_core() -> list[type]:
    found = []
    for info in pkgutil.iter_modules(core_package.__path__):
        module = importlib.import_module(f"{core_package.__name__}.{info.name}")
        found += [cls for cls in vars(module).values()
                  if inspect.isclass(cls) and cls.__module__ == module.__name__]
    return found


def test_no_class_attribute_holds_instance_state() -> None:
    """State lives on instances (``__init__``), never in a class attribute shared by
    every hub ("so that ``Hub.__init__`` needs no change")."""
    mutable = (dict, list, set, collections.deque, bytearray)
    classes = _classes_of_core()
    assert any(cls is Connections for cls in classes)
    bad = [f"{cls.__module__}.{cls.__qualname__}.{name}"
           for cls in classes if not issubclass(cls, enum.Enum)
           for name, value in vars(cls).items()
           if isinstance(value, mutable) and not name.startswith("__")]
    assert bad == []


def test_replaced_hooks_reach_every_service() -> None:
    """``hub.hooks = Hooks(...)`` after the hub is built is what the connections and the
    commands run (they hold the hooks; the hub's setter hands them the new ones)."""
    calls: list[str] = []
    hub = Hub()
    hub.hooks = Hooks(on_connect=lambda req: calls.append("connect"),
                      on_message=lambda s, msg: calls.append(f"message:{msg['type']}"),
                      on_disconnect=lambda s, code, reason: calls.append("disconnect"))
    session = hub.open(RecordingPort())
    hub.receive_text(session, '{"type": "ping"}')
    hub.closed(session, 1000, "")
    assert calls == ["connect", "message:ping", "disconnect"]
    assert hub.services.commands.hooks is hub.hooks is hub.services.connections.hooks \
        is hub.services.presence.hooks


def test_the_hub_is_a_facade_and_membership_a_service() -> None:
    """No mixin is left: ``Hub`` has no base class; subscribe and leave are the
    membership service's (the commands' ``MembershipPort``), and the liveness closes
    and rejects through the connections and commands services, not through the hub."""
    assert Hub.__bases__ == (object,)
    hub = Hub(ServerOptions(presence_channels="*", presence_batch_window=0))
    services = hub.services
    membership = services.membership
    assert isinstance(membership, MembershipService)
    assert services.commands.membership is membership
    assert services.liveness.close == services.connections.close
    assert services.liveness.reject == services.commands.reject
    assert services.liveness.policy is hub.heartbeat
    ada, bob = RecordingPort(), RecordingPort()
    a = hub.open(ada, user="ada")
    b = hub.open(bob, user="bob")
    assert hub.subscribe(a, "room", 1) is None
    hub.receive_text(b, '{"type": "subscribe", "channel": "room", "id": 2}')
    hub.flush()
    assert {"type": "subscribed", "channel": "room", "id": 1}.items() <= ada.take()[1].items()
    assert set(hub.presence("room")) == {"ada", "bob"}
    membership.leave(b, "room")
    hub.flush()
    assert set(hub.presence("room")) == {"ada"} and "room" not in b.subscriptions
    assert any(m["type"] == "presence_diff" and "bob" in m["leaves"]
               for m in ada.take())
