"""Recorder unit tests (fake connections, no sockets) and one over real sockets."""

from __future__ import annotations

import json
import math
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

import realtime_lab
from realtime_lab.core.hub import Hub
from realtime_lab.core.options import ServerOptions
from realtime_lab.instrument import TABLES, Recorder, RingTable, load
from realtime_lab.instrument.ring import Column
from realtime_lab.protocol.frames import parse_frames
from realtime_lab.protocol.wire import JSON_WIRE


class FakePort:

    wire = JSON_WIRE
    def __init__(self, remote: str = "127.0.0.1") -> None:
        self.remote = remote
        self.written: list[bytes] = []
        self.buffered = 0
        self.closed: tuple[int, str] | None = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def buffered_bytes(self) -> int:
        return self.buffered

    def discard_unsent(self) -> int:
        return 0  # nothing is held back

    def when_drained(self, callback: Callable[[], None]) -> None:
        pass  # the tests drain nothing

    def ping(self) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def abort(self) -> None:
        pass

    def messages(self) -> list[dict]:
        frames, _ = parse_frames(b"".join(self.written))
        return [json.loads(f.payload) for f in frames]


def make_hub(n: int, channel: str = "room", **opts: object) -> tuple[Hub, list]:
    hub = Hub(ServerOptions(**opts))  # type: ignore[arg-type]
    sessions = []
    for i in range(n):
        s = hub.open(FakePort(), user=f"u{i}")
        hub.subscribe(s, channel)
        sessions.append(s)
    hub.flush()
    return hub, sessions


def test_ring_table_wraps_and_keeps_order() -> None:
    table = RingTable("x", (Column("t", "d", "s", ""), Column("name", "O", "", "")), 3)
    for i in range(5):
        table.append(float(i), f"n{i}")
    assert len(table) == 3
    assert table.overwritten == 2
    assert table.ordered() == {"t": [2.0, 3.0, 4.0], "name": ["n2", "n3", "n4"]}
    with pytest.raises(ValueError):
        RingTable("bad", (), 0)


def test_broadcast_rows_and_timestamp() -> None:
    hub, sessions = make_hub(5)
    rec = Recorder(hub).start()
    assert hub.recorder is rec
    assert hub.publish("room", {"x": 1}) == 5
    hub.flush()
    df = rec.to_frame("broadcasts")
    assert list(df.columns[:2]) == ["t", "time"]
    row = df.iloc[0]
    assert row["channel"] == "room"
    assert row["fanout"] == 5 and row["delivered"] == 5 and row["drops"] == 0
    assert row["payload_bytes"] > 10
    assert row["encode_us"] >= 0 and row["enqueue_us"] >= 0
    msg = [m for m in sessions[0].port.messages() if m["type"] == "message"][0]
    assert isinstance(msg["ts"], float)
    assert rec.observe(msg) is not None
    assert rec.observe({"type": "message", "channel": "room"}) is None
    lat = rec.to_frame("latency")
    assert len(lat) == 1 and lat["latency_ms"].iloc[0] >= 0
    rec.stop()
    assert hub.recorder is None
    hub.publish("room", "after")
    assert len(rec.to_frame("broadcasts")) == 1


def test_timestamps_can_be_off_and_sender_excluded() -> None:
    hub, sessions = make_hub(3, echo_to_sender=False)
    rec = Recorder(hub, timestamps=False).start()
    hub.receive_text(sessions[0], '{"type":"publish","channel":"room","data":1}')
    hub.flush()
    row = rec.to_frame("broadcasts").iloc[0]
    assert (row["fanout"], row["delivered"], row["drops"]) == (3, 2, 0)
    msg = [m for m in sessions[1].port.messages() if m["type"] == "message"][0]
    assert "ts" not in msg
    rec.stop()


def test_drops_count_slow_consumers() -> None:
    hub, sessions = make_hub(3, max_outbound_bytes=2000)
    rec = Recorder(hub).start()
    sessions[2].port.buffered = 1990  # the transport still holds almost the limit
    sessions[2].pending_bytes = 1990
    hub.publish("room", "x" * 100)
    row = rec.to_frame("broadcasts").iloc[0]
    assert row["delivered"] == 2 and row["drops"] == 1
    rec.stop()


def test_second_recorder_is_refused() -> None:
    hub, _ = make_hub(1)
    rec = Recorder(hub).start()
    with pytest.raises(RuntimeError, match="already has a recorder"):
        Recorder(hub).start()
    rec.stop()
    rec.stop()  # idempotent
    with Recorder(hub) as again:
        assert hub.recorder is again
    assert hub.recorder is None


def test_samples_connections_channels_events_memory() -> None:
    hub, sessions = make_hub(4)
    sessions[0].rtt = 0.002
    rec = Recorder(hub, max_connections_per_sample=3).start()
    hub.publish("room", "hi")
    rec.sample()
    conns = rec.to_frame("connections")
    assert len(conns) == 6  # two samples of 3 (rotating)
    assert set(conns["session"]) == {s.id for s in sessions}
    assert conns["queue_bytes"].dtype == "int64"
    rtt = conns.loc[conns["session"] == sessions[0].id, "rtt_ms"]
    assert math.isclose(rtt.iloc[0], 2.0)
    channels = rec.to_frame("channels")
    assert channels.iloc[-1][["channel", "subscribers", "members", "messages"]].tolist() == [
        "room", 4, 4, 1]
    events = rec.to_frame("events")
    assert events["published"].tolist() == [0, 1]
    assert events["deliveries"].iloc[-1] - events["deliveries"].iloc[0] == 4
    mem = rec.to_frame("memory")
    assert (mem["rss_bytes"] > 0).all()
    assert (mem["heap_bytes"] == -1).all()
    rec.stop()


def test_bytes_per_connection_and_top_allocations() -> None:
    was_tracing = tracemalloc.is_tracing()
    hub, _ = make_hub(1)
    rec = Recorder(hub, tracemalloc=True).start()
    for i in range(50):
        s = hub.open(FakePort(), user=f"late{i}")
        hub.subscribe(s, "room")
    rec.sample()
    mem = rec.to_frame("memory")
    assert mem["heap_bytes"].iloc[-1] > 0
    per_conn = mem["bytes_per_connection"].iloc[-1]
    assert 100 < per_conn < 1_000_000
    top = rec.top_allocations(5)
    assert list(top.columns) == ["file", "line", "size_bytes", "count"]
    assert 0 < len(top) <= 5
    rec.stop()
    assert tracemalloc.is_tracing() == was_tracing
    with pytest.raises(RuntimeError, match="tracemalloc"):
        rec.top_allocations()


def test_to_frame_dtypes_match_schema() -> None:
    hub, _ = make_hub(2)
    rec = Recorder(hub).start()
    hub.publish("room", 1)
    rec.sample()
    for name, columns in TABLES.items():
        df = rec.to_frame(name)
        for col in columns:
            if col.kind == "O":
                assert pd.api.types.is_string_dtype(df[col.name]), (name, col.name)
            else:
                assert str(df[col.name].dtype) == col.dtype, (name, col.name)
        assert str(df["time"].dtype).startswith("datetime64")
    with pytest.raises(KeyError):
        rec.to_frame("nope")
    assert "broadcasts=1" in repr(rec)
    rec.stop()


def _recorded() -> Recorder:
    hub, _ = make_hub(2)
    rec = Recorder(hub).start()
    hub.publish("room", 1)
    hub.publish("room", "x" * 50)
    rec.latency_ms("room", [1.25, 3.5])
    rec.sample()
    return rec.stop()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_save_and_load_round_trip(tmp_path: Path, fmt: str) -> None:
    rec = _recorded()
    paths = rec.save(tmp_path / "run", format=fmt)
    assert paths["broadcasts"].suffix == f".{fmt}" and paths["broadcasts"].is_file()
    meta = json.loads(paths["meta"].read_text())
    assert meta["rows"]["broadcasts"] == 2 and meta["format"] == fmt
    loaded = load(tmp_path / "run")
    assert set(loaded) == set(rec.tables)
    for name, original in rec.frames().items():
        pd.testing.assert_frame_equal(loaded[name], original, check_exact=True, obj=name)


def test_format_is_explicit_and_runs_do_not_mix(tmp_path: Path) -> None:
    rec = _recorded()
    run = tmp_path / "run"
    rec.save(run, format="parquet")
    rec.save(run, format="csv")  # the same run folder again: replaced whole
    assert sorted(p.suffix for p in run.iterdir()) == [".csv"] * 6 + [".json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    with pytest.raises(ValueError, match="csv' or 'parquet"):
        rec.save(tmp_path / "x", format="auto")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a run folder"):
        rec.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (run / "stray.csv").write_text("a\n1\n")  # a file that is not one of the run's tables
    assert set(load(run)) == set(rec.tables)


def test_default_folder_is_new_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rec = _recorded()
    first = rec.save()["meta"].parent
    second = rec.save()["meta"].parent
    assert first != second and first.parent == second.parent == Path("data/runs")


async def test_recorder_on_a_live_server() -> None:
    server = await realtime_lab.serve(port=0)
    rec = server.record(interval=0.05)
    try:
        sub = await realtime_lab.connect(server.url, user="ada")
        pub = await realtime_lab.connect(server.url, user="bob")
        await sub.subscribe("live")
        await pub.publish("live", {"n": 1}, ack=True)
        msg = await sub.recv_message("live", timeout=5)
        assert rec.observe(msg) is not None
        await sub.close()
        await pub.close()
        # the timer samples on its own
        for _ in range(100):
            if len(rec.to_frame("memory")) >= 3:
                break
            await __import__("asyncio").sleep(0.02)
        assert len(rec.to_frame("memory")) >= 3
        assert rec.to_frame("broadcasts")["delivered"].tolist() == [1]
    finally:
        rec.stop()
        await server.stop()
