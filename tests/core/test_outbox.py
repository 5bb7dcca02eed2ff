"""The Outbox service (issue 14 step 3): its own state, the paced path that trusts the
backlog ``port.write`` reports, and ``fan_out(skip=)``."""

from __future__ import annotations

from collections.abc import Callable

from realtime_lab.core import Hub, ServerOptions, Session
from realtime_lab.core.outbound import Priority
from realtime_lab.core.outbox import Outbox
from realtime_lab.protocol.frames import text_frame
from realtime_lab.testing import RecordingPort, TurnScheduler


class CountingPort(RecordingPort):
    """A RecordingPort that counts ``buffered_bytes()`` calls; ``write`` reports
    ``reported`` as the backlog (None: a port written before write() returned it)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0
        self.reported: int | None = 0

    def buffered_bytes(self) -> int:
        self.asked += 1
        return self.buffered

    def write(self, data: bytes) -> int:  # type: ignore[override]  # None: an old port
        self.writes.append(data)
        return self.reported  # type: ignore[return-value]


Clients = list[tuple[Session, CountingPort]]


def room(n: int, **options: object) -> tuple[Hub, TurnScheduler, Clients]:
    loop = TurnScheduler()
    opts = ServerOptions(presence_channels=None, **options)  # type: ignore[arg-type]
    hub = Hub(opts, schedule=loop)
    clients = []
    for i in range(n):
        port = CountingPort()
        session = hub.open(port, user=f"u{i}")
        hub.subscribe(session, "room")
        clients.append((session, port))
    loop.run()
    for _, port in clients:
        port.take()
        port.asked = 0
    return hub, loop, clients


def data(port: RecordingPort) -> list[object]:
    return [m["data"] for m in port.take() if m["type"] == "message"]


def test_a_paced_delivery_does_not_ask_the_port_for_its_backlog() -> None:
    hub, loop, clients = room(20)
    for i in range(5):
        hub.publish("room", i)
        loop.run()
    for _, port in clients:
        assert data(port) == [0, 1, 2, 3, 4]
        assert port.asked == 0, "the backlog write() returned is enough"


def test_a_backlog_reported_by_write_sends_the_next_flush_the_careful_way() -> None:
    hub, loop, [(session, port)] = room(1)
    port.reported = 500  # the transport kept 500 bytes of that write
    hub.publish("room", "a")
    loop.run()
    assert session.backlog == 500 and port.asked == 0
    port.reported = 0  # ... and has sent them by the next write
    hub.publish("room", "b")
    loop.run()
    assert port.asked >= 1, "a flush after a backlog reads the transport's backlog again"
    assert data(port) == ["a", "b"]
    assert session.backlog == 0


def test_a_port_whose_write_returns_none_is_asked_its_backlog() -> None:
    hub, loop, [(session, port)] = room(1)
    port.reported = None
    port.buffered = 123
    hub.publish("room", "a")
    loop.run()
    assert data(port) == ["a"]
    assert session.backlog == 123


def test_a_drained_port_clears_the_kept_backlog() -> None:
    hub, loop, [(session, port)] = room(1, write_buffer_bytes=1 << 16,
                                        max_outbound_bytes=1 << 22)
    port.reported = port.buffered = 1 << 17  # over the write budget after this write
    hub.publish("room", 0)
    loop.run()
    hub.publish("room", 1)
    loop.run()
    assert port.drains, "over the write budget: the outbox waits for the transport"
    assert data(port) == [0]
    port.reported = 0
    port.drain()
    loop.run()
    assert session.backlog == 0
    assert data(port) == [1]


def test_fan_out_skips_the_sessions_named_in_skip() -> None:
    hub, loop, clients = room(5)
    frame = text_frame('{"type":"message","channel":"room","data":"s"}')
    skipped = {clients[1][0].id, clients[3][0].id}
    targets = [s for s, _ in clients]
    assert hub.services.outbox.fan_out(targets, frame, Priority.NORMAL, skip=skipped) == 3
    loop.run()
    for session, port in clients:
        assert data(port) == ([] if session.id in skipped else ["s"])


def test_fan_out_skip_holds_in_a_sliced_fan_out() -> None:
    hub, loop, clients = room(40, fanout_slice_seconds=0, fanout_slice_min=5)
    frame = text_frame('{"type":"message","channel":"room","data":"s"}')
    skipped = {s.id for s, _ in clients[::4]}
    assert hub.services.outbox.fan_out([s for s, _ in clients], frame, Priority.NORMAL,
                              skip=skipped) == 30
    assert hub.services.outbox.pending_fan_outs == 1
    loop.run()
    assert hub.services.outbox.pending_fan_outs == 0
    for session, port in clients:
        assert data(port) == ([] if session.id in skipped else ["s"])


def test_outbox_state_lives_on_the_instance() -> None:
    on_class = [name for name, value in vars(Outbox).items()
                if not name.startswith("__") and not callable(value)
                and not isinstance(value, property | staticmethod)]
    assert on_class == []
    a, b = Hub(), Hub()
    assert a.services.outbox is not b.services.outbox
    a.services.outbox.binary_sessions = 3
    assert b.services.outbox.binary_sessions == 0 and b.binary_sessions == 0


def test_hub_send_and_flush_go_through_the_outbox() -> None:
    calls: list[Callable[[], None]] = []
    hub = Hub(ServerOptions(presence_channels=None), schedule=calls.append)
    port = RecordingPort()
    session = hub.open(port)
    assert hub.services.outbox.send(session, {"type": "pong"})
    hub.flush()
    assert [m["type"] for m in port.take()] == ["welcome", "pong"]
