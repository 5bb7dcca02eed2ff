"""Plot helpers: each returns a Figure that renders with Agg, with and without data."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from matplotlib.figure import Figure

from realtime_lab import plot
from realtime_lab.core.hub import Hub
from realtime_lab.instrument import Recorder

from .test_recorder import FakePort

matplotlib.use("Agg")


@pytest.fixture
def frames() -> dict[str, pd.DataFrame]:
    hub = Hub()
    rec = Recorder(hub, tracemalloc=True).start()
    sessions = []
    for i in range(6):
        s = hub.open(FakePort(), user=f"u{i}")
        hub.subscribe(s, "a" if i % 2 else "b")
        sessions.append(s)
        rec.sample()
    for i in range(20):
        hub.publish("a" if i % 2 else "b", {"i": i})
    rec.latency_ms("a", [1.0, 2.0, 3.0])
    rec.latency_ms("b", [0.5, 4.0])
    rec.sample()
    rec.stop()
    return rec.frames()


def _renders(fig: Figure, tmp_path: Path, name: str) -> None:
    assert isinstance(fig, Figure)
    out = tmp_path / f"{name}.png"
    fig.savefig(out)
    assert out.stat().st_size > 1000


def test_single_plots_render(frames: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    _renders(plot.throughput(frames["broadcasts"], bin_s=0.001), tmp_path, "tp")
    _renders(plot.throughput(frames["events"]), tmp_path, "tp_events")
    _renders(plot.fanout_latency(frames["latency"]), tmp_path, "lat")
    _renders(plot.memory(frames["memory"]), tmp_path, "mem")
    fig = plot.presence(frames["channels"])
    assert {ln.get_label() for ln in fig.axes[0].get_lines()} == {"a", "b"}
    _renders(fig, tmp_path, "presence")


def test_plots_of_empty_frames(tmp_path: Path) -> None:
    hub = Hub()
    rec = Recorder(hub)
    for name, fn in (("broadcasts", plot.throughput), ("latency", plot.fanout_latency),
                     ("memory", plot.memory), ("channels", plot.presence)):
        fig = fn(rec.to_frame(name))
        assert "no " in fig.axes[0].texts[0].get_text()
        _renders(fig, tmp_path, name)


def test_sweep_plots(tmp_path: Path) -> None:
    summary = pd.DataFrame({
        "subscribers": [10, 100, 1000],
        "cpu_us_per_delivery": [20.0, 8.0, 6.0],
        "latency_p50_ms": [1.0, 3.0, 20.0],
        "latency_p90_ms": [2.0, 5.0, 40.0],
        "latency_p99_ms": [3.0, 8.0, 60.0],
        "heap_bytes_per_connection": [9000.0, 8000.0, 8100.0],
        "rss_bytes_per_connection": [20000.0, 15000.0, 14000.0],
    })
    fig = plot.fanout_cost(summary)
    assert len(fig.axes) == 2
    _renders(fig, tmp_path, "cost")
    _renders(plot.memory_per_connection(summary), tmp_path, "mpc")
    lat = pd.DataFrame({"subscribers": [10, 10, 100, 100], "latency_ms": [1, 2, 3, 4.0]})
    fig = plot.fanout_latency(lat)
    assert fig.axes[0].get_xlabel() == "subscribers (connections)"


def test_report_writes_png(frames: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    out = tmp_path / "sub" / "report.png"
    fig = plot.report(frames, out)
    assert len(fig.axes) >= 4
    assert out.stat().st_size > 10_000
    assert len(plot.report({}).axes) >= 4


def test_last_partial_bin_is_left_out() -> None:
    # 100 broadcasts a second for 3.2 s: the bin starting at 3 s holds 0.2 s of traffic
    t = [i / 100 for i in range(320)]
    frame = pd.DataFrame({"t": t, "delivered": [10] * len(t)})
    fig = plot.throughput(frame)
    deliveries = fig.axes[0].get_lines()[0].get_ydata()
    assert list(deliveries) == [1000.0, 1000.0, 1000.0]  # no plunge at the end
    assert "partial bin left out" in fig.axes[0].get_title()
    gap = pd.DataFrame({"t": [0.1, 0.2, 2.5, 3.5], "delivered": [1, 1, 1, 1]})
    assert list(plot.throughput(gap).axes[0].get_lines()[0].get_ydata()) == [2.0, 0.0, 1.0]


def test_legends_outside_the_data_and_units_on_every_axis(
        frames: dict[str, pd.DataFrame]) -> None:
    summary = pd.DataFrame({"subscribers": [10, 100], "cpu_us_per_delivery": [2.0, 1.0],
                            "latency_p50_ms": [1.0, 2.0], "latency_p90_ms": [2.0, 3.0],
                            "latency_p99_ms": [3.0, 4.0], "heap_bytes_per_connection": [1e4, 9e3],
                            "rss_bytes_per_connection": [2e4, 1e4]})
    figures = [plot.throughput(frames["broadcasts"], bin_s=0.001), plot.memory(frames["memory"]),
               plot.presence(frames["channels"]), plot.fanout_cost(summary),
               plot.memory_per_connection(summary), plot.fanout_latency(frames["latency"])]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for fig in figures:
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        for ax in fig.axes:
            assert "(" in ax.get_ylabel(), (ax.get_title(), ax.get_ylabel())  # a unit
            if ax.get_xlabel():
                assert "(" in ax.get_xlabel() or ax.get_xlabel() == "channel"
            legend = ax.get_legend()
            if legend is not None:
                box = legend.get_window_extent(renderer)
                assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()
