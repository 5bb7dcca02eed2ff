"""DataSender (sans-I/O): DATA framed by us, accounted by h2 (deferred accounting).

A real h2 client connection reads every byte the sender writes: it raises
FlowControlError if a frame exceeds a window it granted, so each test also checks
that we never send more than the client allows. After a settle, the server's h2
windows must equal what the client thinks the server may send."""

from __future__ import annotations

import random

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RequestReceived, StreamEnded, WindowUpdated
from h2.settings import SettingCodes
from hyperframe.frame import DataFrame

from realtime_lab.transports.http2.sender import QUANTUM, STREAM_SEND_CAP, DataSender


class Pair:
    """An h2 client and an h2 server with a DataSender, joined by function calls."""

    def __init__(self, streams: int = 3, connection_window: int = 0) -> None:
        self.client = H2Connection(H2Configuration(client_side=True))
        self.server = H2Connection(H2Configuration(client_side=False))
        self.sender = DataSender(self.server)
        self.client.initiate_connection()
        if connection_window:
            self.client.increment_flow_control_window(connection_window)
        self.server.initiate_connection()
        self.sids = [self.client.get_next_available_stream_id() + 2 * i for i in range(streams)]
        for sid in self.sids:
            self.client.send_headers(sid, [(":method", "GET"), (":scheme", "http"),
                                           (":path", "/"), (":authority", "x")])
        self.received: dict[int, bytearray] = {sid: bytearray() for sid in self.sids}
        self.consumed = dict.fromkeys(self.sids, 0)
        self.ended: list[int] = []
        self.to_server()
        for sid in self.sids:
            self.server.send_headers(sid, [(":status", "200")])
        self.sender.collect()
        self.to_client()

    def to_server(self) -> None:
        """The client's bytes to the server: settle first, as the session does."""
        data = self.client.data_to_send()
        if data:
            self.sender.settle()
            for event in self.server.receive_data(data):
                if isinstance(event, WindowUpdated):
                    self.sender.window_opened(event.stream_id, event.delta)
                assert not isinstance(event, RequestReceived) or event.stream_id in self.sids
            self.sender.collect()  # the server's answers (SETTINGS ACK)

    def to_client(self) -> None:
        for event in self.client.receive_data(self.sender.take()):
            if isinstance(event, DataReceived):
                self.received[event.stream_id] += event.data
            elif isinstance(event, StreamEnded):
                self.ended.append(event.stream_id)

    def consume(self, sid: int, size: int) -> None:
        """The client's application read ``size`` bytes of ``sid`` (WINDOW_UPDATE)."""
        if size:
            self.consumed[sid] += size
            self.client.acknowledge_received_data(size, sid)
            self.to_server()

    def check_windows(self) -> None:
        """Everything delivered and settled: both sides agree on every window."""
        self.sender.settle()
        for sid in self.sids:
            budget = self.sender._budget(sid)
            assert budget == self.server.local_flow_control_window(sid) \
                == self.client.remote_flow_control_window(sid)
        assert self.sender.connection_window == self.server.outbound_flow_control_window


def test_a_frame_is_the_bytes_h2_writes() -> None:
    pair = Pair(streams=1)
    sid = pair.sids[0]
    payload = bytes(range(200))
    assert pair.sender.queue(sid, payload)
    assert pair.sender.take() == DataFrame(sid, data=payload).serialize()


def test_a_write_that_fits_is_framed_at_once() -> None:
    pair = Pair()
    for i, sid in enumerate(pair.sids):
        pair.sender.queue(sid, b"m%d" % i)
        assert pair.sender.unsent(sid) == 0  # no backlog for the hub to see
    pair.to_client()
    assert [bytes(pair.received[sid]) for sid in pair.sids] == [b"m0", b"m1", b"m2"]
    pair.check_windows()


def test_what_the_window_refuses_waits_and_follows_window_updates() -> None:
    pair = Pair(streams=2, connection_window=1 << 20)
    big, small = pair.sids
    message = random.Random(1).randbytes(300_000)
    pair.sender.queue(big, message)
    assert pair.sender.unsent(big) == 300_000 - 65535  # the stream window: 64 KiB - 1
    pair.sender.queue(small, b"still goes")  # the other stream is not held up
    pair.to_client()
    assert pair.received[small] == b"still goes"
    while pair.sender.unsent(big):
        pair.consume(big, 65535)
        while pair.sender.ready and pair.sender.frame_ready():
            pass
        pair.to_client()
    assert pair.received[big] == message
    pair.check_windows()


def test_end_stream_follows_the_data() -> None:
    pair = Pair(streams=1)
    sid = pair.sids[0]
    pair.sender.queue(sid, b"x" * 100_000)  # more than the window
    pair.sender.end(sid)
    pair.sender.frame_ready()
    pair.to_client()
    assert not pair.ended
    pair.consume(sid, 65535)
    pair.sender.frame_ready()
    pair.to_client()
    assert pair.ended == [sid] and len(pair.received[sid]) == 100_000


def test_the_send_cap_refuses_one_stream() -> None:
    pair = Pair(streams=2, connection_window=1 << 20)
    stuck, other = pair.sids
    pair.sender.queue(stuck, b"x" * 65535)  # its window is used up
    assert pair.sender.queue(stuck, b"y" * QUANTUM)
    chunk = b"z" * (1 << 20)
    while pair.sender.unsent(stuck) + len(chunk) <= STREAM_SEND_CAP + QUANTUM:
        assert pair.sender.queue(stuck, chunk)
    assert not pair.sender.queue(stuck, chunk)  # over the cap: the session resets it
    assert pair.sender.unsent(stuck) == 0
    assert pair.sender.queue(other, b"fine")
    pair.to_client()
    assert pair.received[other] == b"fine"


@pytest.mark.parametrize("seed", range(12))
def test_windows_stay_exact_under_random_traffic(seed: int) -> None:
    """Random writes, client reads, window updates and SETTINGS changes: the client
    never sees a frame beyond its windows, and after each settle h2's windows (stream
    and connection) equal the client's view and our own budget."""
    rng = random.Random(seed)
    pair = Pair(streams=4, connection_window=rng.choice([0, 100_000, 16 << 20]))
    sent = {sid: bytearray() for sid in pair.sids}
    for _ in range(300):
        action = rng.random()
        sid = rng.choice(pair.sids)
        if action < 0.5:
            data = rng.randbytes(rng.choice([1, 100, 5000, 70_000]))
            sent[sid] += data
            assert pair.sender.queue(sid, data, frame_now=rng.random() < 0.8)
        elif action < 0.65:
            pair.sender.frame_ready()
        elif action < 0.85:
            pair.to_client()
            pair.consume(sid, rng.randint(0, len(pair.received[sid]) - pair.consumed[sid]))
        elif action < 0.9:
            size = rng.choice([0, 1000, 65535, 300_000])
            pair.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: size})
            pair.to_server()
        else:
            pair.to_client()
            pair.check_windows()
    pair.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    pair.client.increment_flow_control_window(1 << 24)
    pair.to_server()
    for _ in range(1000):
        if not any(pair.sender.unsent(sid) for sid in pair.sids):
            break
        pair.sender.frame_ready()
        pair.to_client()
        for sid in pair.sids:
            pair.consume(sid, len(pair.received[sid]) - pair.consumed[sid])
    pair.to_client()
    for sid in pair.sids:
        assert pair.received[sid] == sent[sid]
    pair.check_windows()
