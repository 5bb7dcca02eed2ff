"""Plots of recorded metrics; each function returns a matplotlib Figure.

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot state), so
they work with the Agg backend in scripts and the demo, and display inline in a
notebook (after ``%matplotlib inline``). Inputs are the DataFrames of
:meth:`realtime_lab.instrument.Recorder.to_frame` or of
:func:`realtime_lab.instrument.experiment.fanout_sweep` (docs/metrics.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from realtime_lab.errors import require

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MB = 1024 * 1024


def _figure(width: float = 7.0, height: float = 4.0, ncols: int = 1) -> tuple[Figure, Any]:
    require("matplotlib", "notebook")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def _legend_outside(ax: Axes, handles: Any = None, labels: Any = None) -> None:
    """The legend to the right of the plot area, never over the data."""
    kwargs: dict[str, Any] = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0),
                              "borderaxespad": 0.0, "fontsize": "small"}
    if handles is not None:
        ax.legend(handles, labels, **kwargs)
    else:
        ax.legend(**kwargs)


def _empty(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} recorded", ha="center", va="center",
            transform=ax.transAxes, color="gray")


def draw_fanout_latency(ax: Axes, latency: pd.DataFrame, *, by: str | None = None,
                        title: str = "Delivery latency by fan-out") -> None:
    """Draw :func:`fanout_latency` into ``ax``."""
    by = by or ("subscribers" if "subscribers" in latency.columns else "channel")
    if latency.empty:
        _empty(ax, "latency")
        return
    groups = [(key, g["latency_ms"].dropna().to_numpy())
              for key, g in latency.groupby(by, sort=True)]
    groups = [(k, v) for k, v in groups if len(v)]
    ax.boxplot([v for _, v in groups], tick_labels=[str(k) for k, _ in groups],
               showfliers=False, whis=(1, 99))
    ax.set_yscale("log")
    ax.set_xlabel("subscribers (connections)" if by == "subscribers" else by)
    ax.set_ylabel("latency (ms, log scale)")
    if by != "subscribers" and title == "Delivery latency by fan-out":
        title = f"Delivery latency by {by}"
    ax.set_title(title + "  (whiskers: p1-p99)")
    ax.grid(True, axis="y", alpha=0.3)


def fanout_latency(latency: pd.DataFrame, *, by: str | None = None,
                   title: str = "Delivery latency by fan-out") -> Figure:
    """Latency distribution (box plot, log scale) per group.

    ``by`` defaults to ``subscribers`` when the frame has it (the sweep), else ``channel``.
    """
    fig, ax = _figure()
    draw_fanout_latency(ax, latency, by=by, title=title)
    return fig


def draw_throughput(ax: Axes, frame: pd.DataFrame, *, bin_s: float = 1.0,
                    title: str = "Throughput over time") -> None:
    """Draw :func:`throughput` into ``ax``."""
    if frame.empty:
        _empty(ax, "broadcasts")
        return
    note = ""
    if "delivered" in frame.columns:
        pdm: Any = require("pandas", "notebook")
        bins = (frame["t"] // bin_s).astype("int64")
        last = int(frame["t"].max() // bin_s)
        complete = bins < last  # the last bin is cut short by the end of the recording
        grouped = frame[complete].groupby(bins[complete])
        index = pdm.RangeIndex(int(bins.min()), last)
        deliveries = grouped["delivered"].sum().reindex(index, fill_value=0) / bin_s
        publishes = grouped.size().reindex(index, fill_value=0) / bin_s
        t = index.to_numpy() * bin_s
        note = " (last, partial bin left out)"
        if not len(index):
            _empty(ax, f"complete {bin_s:g} s bin of broadcasts")
            return
        deliveries, publishes = deliveries.to_numpy(), publishes.to_numpy()
    else:
        dt = frame["t"].diff()
        t = frame["t"].to_numpy()
        deliveries = (frame["deliveries"].diff() / dt).to_numpy()
        publishes = (frame["published"].diff() / dt).to_numpy()
    ax.plot(t, deliveries, drawstyle="steps-post", label="deliveries/s")
    ax.plot(t, publishes, drawstyle="steps-post", label="publishes/s")
    ax.set_xlabel("time since recording started (s)")
    ax.set_ylabel("messages per second (1/s)")
    ax.set_ylim(bottom=0)
    ax.set_title(title + note, fontsize="medium")
    _legend_outside(ax)
    ax.grid(True, alpha=0.3)


def throughput(frame: pd.DataFrame, *, bin_s: float = 1.0,
               title: str = "Throughput over time") -> Figure:
    """Deliveries and publishes per second over time.

    Takes the ``broadcasts`` table (binned by ``bin_s``) or the ``events`` table
    (differences of the cumulative counters). With ``broadcasts``, the last bin,
    cut short by the end of the recording, is left out (it would plunge).
    """
    fig, ax = _figure()
    draw_throughput(ax, frame, bin_s=bin_s, title=title)
    return fig


def draw_memory(ax: Axes, mem: pd.DataFrame, *, title: str = "Memory over time") -> None:
    """Draw :func:`memory` into ``ax``."""
    if mem.empty:
        _empty(ax, "memory")
        return
    ax.plot(mem["t"], mem["rss_bytes"] / MB, label="RSS")
    if (mem["heap_bytes"] >= 0).any():
        heap = mem["heap_bytes"].where(mem["heap_bytes"] >= 0)
        ax.plot(mem["t"], heap / MB, label="Python heap (tracemalloc)")
    ax.set_xlabel("time since recording started (s)")
    ax.set_ylabel("memory (MiB)")
    ax2 = ax.twinx()
    ax2.plot(mem["t"], mem["connections"], color="tab:gray", linestyle="--",
             label="connections (right axis)")
    ax2.set_ylabel("open connections (count)")
    ax2.set_ylim(bottom=0)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [str(ln.get_label()) for ln in lines], loc="upper center",
              bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize="small", frameon=False)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)


def memory(mem: pd.DataFrame, *, title: str = "Memory over time") -> Figure:
    """RSS and traced heap (MiB) over time, with open connections on a second axis."""
    fig, ax = _figure()
    draw_memory(ax, mem, title=title)
    return fig


def draw_presence(ax: Axes, channels: pd.DataFrame, *, title: str = "Presence over time",
                  top: int = 8) -> None:
    """Draw :func:`presence` into ``ax``."""
    if channels.empty:
        _empty(ax, "channels")
        return
    busiest = channels.groupby("channel")["members"].max().nlargest(top).index
    for name in sorted(busiest):
        g = channels[channels["channel"] == name]
        ax.plot(g["t"], g["members"], drawstyle="steps-post", label=str(name))
    ax.set_xlabel("time since recording started (s)")
    ax.set_ylabel("presence members (users)")
    ax.set_title(title)
    _legend_outside(ax)
    ax.grid(True, alpha=0.3)


def presence(channels: pd.DataFrame, *, title: str = "Presence over time",
             top: int = 8) -> Figure:
    """Presence members per channel over time (the ``channels`` table)."""
    fig, ax = _figure()
    draw_presence(ax, channels, title=title, top=top)
    return fig


def fanout_cost(summary: pd.DataFrame, *,
                title: str = "Cost of a delivery against fan-out") -> Figure:
    """Server CPU per delivery and latency percentiles against subscribers (sweep summary)."""
    fig, (ax1, ax2) = _figure(10, 4, ncols=2)
    x = summary["subscribers"]
    ax1.plot(x, summary["cpu_us_per_delivery"], marker="o")
    ax1.set_xscale("log")
    ax1.set_xlabel("subscribers (connections, log scale)")
    ax1.set_ylabel("server CPU per delivery (us)")
    ax1.set_ylim(bottom=0)
    ax1.set_title("Server CPU per delivery")
    ax1.grid(True, alpha=0.3)
    for col, label in (("latency_p50_ms", "p50"), ("latency_p90_ms", "p90"),
                       ("latency_p99_ms", "p99")):
        if col in summary.columns:
            ax2.plot(x, summary[col], marker="o", label=label)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("subscribers (connections, log scale)")
    ax2.set_ylabel("delivery latency (ms, log scale)")
    ax2.set_title("Delivery latency")
    _legend_outside(ax2)
    ax2.grid(True, alpha=0.3)
    fig.suptitle(title)
    return fig


def memory_per_connection(summary: pd.DataFrame, *,
                          title: str = "Server memory per connection") -> Figure:
    """Heap and RSS growth per connection against subscribers (sweep summary), in KiB."""
    fig, ax = _figure()
    x = summary["subscribers"]
    for col, label in (("heap_bytes_per_connection", "Python heap (tracemalloc)"),
                       ("rss_bytes_per_connection", "RSS")):
        if col in summary.columns:
            ax.plot(x, summary[col] / 1024, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("subscribers (connections, log scale)")
    ax.set_ylabel("memory per connection (KiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    _legend_outside(ax)
    ax.grid(True, alpha=0.3)
    return fig


def report(frames: dict[str, pd.DataFrame], path: str | Path | None = None, *,
           title: str = "realtime_lab report") -> Figure:
    """Throughput, latency, memory and presence in one 2x2 Figure; saved as PNG when
    ``path`` is given. ``frames`` is ``Recorder.frames()`` or ``instrument.load(dir)``."""
    require("matplotlib", "notebook")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 8), layout="constrained")
    (a, b), (c, d) = fig.subplots(2, 2)
    pdm: Any = require("pandas", "notebook")
    empty = pdm.DataFrame()
    draw_throughput(a, frames.get("broadcasts", empty))
    draw_fanout_latency(b, frames.get("latency", empty))
    draw_memory(c, frames.get("memory", empty))
    draw_presence(d, frames.get("channels", empty))
    fig.suptitle(title)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig
