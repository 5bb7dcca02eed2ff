"""Small SVG line charts for the dashboard, drawn by the kernel (pure functions, no I/O).

Why SVG text and not a plotting widget (ipympl, bqplot, an anywidget chart): an
``ipywidgets.HTML`` holding SVG renders wherever ipywidgets render (JupyterLab,
Notebook 7, Voilà, VS Code) with no front-end extension to install or to keep
compatible, and the same markup is a static picture that nbconvert, GitHub and
a docs site show from a notebook's stored outputs. A chart of 120 points costs
about 0.1 ms to build; ipympl redraws a Matplotlib figure into a PNG in the
kernel (tens of ms), which would be taken from the server sharing that event
loop. docs/widgets.md has the measurements.

Every chart has a title, units on both axes, its legend above the plot area
(never over the data), and ``data-*`` attributes that tests can read:
``data-chart`` (its key), ``data-points`` (points drawn) and ``data-last`` (the
newest value of the first series).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


@dataclass(frozen=True, slots=True)
class Series:
    """One line: a label, a colour and ``(t, value)`` points (``None`` values are gaps)."""

    label: str
    points: Sequence[tuple[float, float | None]]
    color: str = PALETTE[0]


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= ``value`` (> 0)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * 10**exp >= value * (1 - 1e-9):
            return step * 10**exp
    return 10.0 ** (exp + 1)  # pragma: no cover - the loop always returns


def compact(value: float) -> str:
    """A short tick label: 0, 0.25, 12, 1.5k, 2M."""
    if value == 0:
        return "0"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:g}{suffix}"
    return f"{value:.3g}"


def line_chart(key: str, title: str, y_unit: str, series: Sequence[Series], *,
               now: float, window: float = 60.0, width: int = 400, height: int = 165,
               note: str = "") -> str:
    """An SVG chart of ``series`` over the last ``window`` seconds before ``now``.

    The x axis is "seconds ago" (``-window`` .. 0); the y axis starts at 0 and
    ends at a round number above the largest value shown. ``note`` is drawn in
    the plot area when there is nothing to show (e.g. "no latency: not recording").
    """
    left, right, top, bottom = 46, 8, 34, 26
    pw, ph = width - left - right, height - top - bottom
    shown = [[(t, v) for t, v in s.points if v is not None and math.isfinite(v)
              and now - window <= t <= now] for s in series]
    peak = max((v for pts in shown for _, v in pts), default=0.0)
    y_max = nice_ceiling(peak) if peak > 0 else 1.0

    def x(t: float) -> float:
        return left + pw * (1 - (now - t) / window)

    def y(v: float) -> float:
        return top + ph * (1 - v / y_max)

    parts = [f'<text x="{left}" y="13" class="rtl-chart-title">{escape(title)}</text>']
    lx = left
    for s in series:  # the legend, above the plot area
        parts.append(f'<rect x="{lx}" y="20" width="10" height="4" fill="{s.color}"/>'
                     f'<text x="{lx + 13}" y="26" class="rtl-chart-legend">'
                     f"{escape(s.label)}</text>")
        lx += 20 + 6 * len(s.label)
    for i in range(5):  # y grid and ticks
        v = y_max * i / 4
        yy = y(v)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" '
                     'class="rtl-chart-grid"/>'
                     f'<text x="{left - 4}" y="{yy + 3:.1f}" text-anchor="end" '
                     f'class="rtl-chart-tick">{compact(v)}</text>')
    for i in range(5):  # x ticks: seconds ago
        ago = window * (4 - i) / 4
        xx = x(now - ago)
        parts.append(f'<text x="{xx:.1f}" y="{top + ph + 11}" text-anchor="middle" '
                     f'class="rtl-chart-tick">{-ago if ago else 0:g}</text>')
    parts.append(f'<text x="{left + pw}" y="{height - 2}" text-anchor="end" '
                 'class="rtl-chart-axis">time (s, 0 = now)</text>'
                 f'<text x="10" y="{top + ph / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 10 {top + ph / 2:.1f})" class="rtl-chart-axis">'
                 f"{escape(y_unit)}</text>"
                 f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="rtl-chart-frame"/>')
    points = 0
    for s, pts in zip(series, shown, strict=True):
        if not pts:
            continue
        points += len(pts)
        coords = " ".join(f"{x(t):.0f},{y(v):.0f}" for t, v in pts)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{s.color}" '
                     'stroke-width="1.6"/>')
    if points == 0 and note:
        parts.append(f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" '
                     f'class="rtl-chart-note">{escape(note)}</text>')
    last = shown[0][-1][1] if series and shown[0] else None
    last_attr = "" if last is None else f"{last:.6g}"
    return (f'<svg class="rtl-chart" data-chart="{escape(key)}" data-points="{points}" '
            f'data-last="{last_attr}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
            f'{"".join(parts)}</svg>')


CHART_STYLE = (
    ".rtl-chart{background:#fff;margin:2px;font-family:sans-serif}"
    ".rtl-chart-title{font-size:12px;font-weight:bold;fill:#222}"
    ".rtl-chart-legend{font-size:10px;fill:#333}"
    ".rtl-chart-tick{font-size:9px;fill:#555}"
    ".rtl-chart-axis{font-size:9px;fill:#555}"
    ".rtl-chart-grid{stroke:#e6e6e6;stroke-width:1}"
    ".rtl-chart-frame{fill:none;stroke:#bbb;stroke-width:1}"
    ".rtl-chart-note{font-size:10px;fill:#888}"
)
