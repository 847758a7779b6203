"""Line charts drawn on the server as SVG: a time axis (UTC) and a value axis with their
units, gridlines, one line per series and a legend. No script and no library: the page
stays within its Content-Security-Policy and loads nothing else. Pure: numbers in, markup
out; every label is escaped.

Scale: the value axis runs from 0 to the smallest "nice" number (1, 2 or 5 x 10^k) at or
above the largest value, in at most 5 steps; a series of zeros gets an axis of 0..1.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 560, 180
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 22, 44  # margins: the unit above, axis labels, the legend below


@dataclass(frozen=True, slots=True)
class Series:
    """One line: ``values[k]`` at ``start + k * step_s``; ``kind`` is its CSS class
    (colour), ``dashed`` draws it dashed (a limit such as a guarantee)."""

    label: str
    values: list[float]
    kind: str
    dashed: bool = False


def nice_max(top: float) -> float:
    """The smallest 1, 2 or 5 x 10^k at or above ``top`` (1 for nothing above 0)."""
    if top <= 0 or not math.isfinite(top):
        return 1.0
    k = 10 ** math.floor(math.log10(top))
    return float(next(m * k for m in (1, 2, 5, 10) if m * k >= top - 1e-9))


def _ticks(top: float) -> list[float]:
    step = nice_max(top / 5) if top > 5 else (1.0 if top >= 2 else top / 2)
    n = round(top / step)
    return [k * step for k in range(n + 1)]


def _num(v: float) -> str:
    return f"{v:g}" if v < 1e5 else f"{v:.3g}"


def _time_label(t: float, span_s: float) -> str:
    g = time.gmtime(t)
    return time.strftime("%H:%M" if span_s <= 2 * 86400 else "%a %d", g)


def line_chart(series: list[Series], start: float, step_s: float, unit: str, title: str,
               width: int = WIDTH, height: int = HEIGHT) -> Markup:
    """An SVG line chart of ``series`` (each the same length), ``unit`` on the value axis."""
    n = max((len(s.values) for s in series), default=0)
    top = nice_max(max((v for s in series for v in s.values), default=0.0))
    pw, ph = width - LEFT - RIGHT, height - TOP - BOTTOM
    span = step_s * max(1, n - 1)

    def x(k: float) -> float:
        return LEFT + (pw * k / max(1, n - 1))

    def y(v: float) -> float:
        return TOP + ph - ph * min(v, top) / top

    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="{escape(title)}">'
           f"<title>{escape(title)}</title>"]
    for v in _ticks(top):  # value axis: gridlines and labels
        yy = y(v)
        out.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + pw}" y1="{yy:.1f}" '
                   f'y2="{yy:.1f}"/><text class="tick" x="{LEFT - 4}" y="{yy + 4:.1f}" '
                   f'text-anchor="end">{_num(v)}</text>')
    out.append(f'<text class="unit" x="4" y="12">{escape(unit)}</text>')
    labels = min(6, n)
    for j in range(labels):  # time axis
        k = round(j * (n - 1) / max(1, labels - 1)) if labels > 1 else 0
        xx = x(k)
        anchor = "start" if j == 0 else "end" if j == labels - 1 else "middle"
        out.append(f'<line class="axis" x1="{xx:.1f}" x2="{xx:.1f}" y1="{TOP + ph}" '
                   f'y2="{TOP + ph + 4}"/><text class="tick" x="{xx:.1f}" '
                   f'y="{TOP + ph + 15}" text-anchor="{anchor}">'
                   f"{_time_label(start + k * step_s, span)}</text>")
    out.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT + pw}" y1="{TOP + ph}" '
               f'y2="{TOP + ph}"/><line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" '
               f'y2="{TOP + ph}"/>')
    for s in series:
        if not s.values:
            continue
        pts = " ".join(f"{x(k):.1f},{y(v):.1f}" for k, v in enumerate(s.values))
        if len(s.values) == 1:
            pts += f" {x(1):.1f},{y(s.values[0]):.1f}"
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        out.append(f'<polyline class="line {escape(s.kind)}" points="{pts}"{dash}/>')
    lx = LEFT
    ly = height - 8
    out.append(f'<text class="tick" x="{LEFT + pw}" y="{ly}" text-anchor="end">UTC</text>')
    for s in series:  # the legend, below the time axis
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        out.append(f'<line class="line {escape(s.kind)}" x1="{lx}" x2="{lx + 18}" '
                   f'y1="{ly - 4}" y2="{ly - 4}"{dash}/><text class="legend" x="{lx + 22}" '
                   f'y="{ly}">{escape(s.label)}</text>')
        lx += 30 + 7 * len(s.label)
    out.append("</svg>")
    return Markup("".join(out))  # built above from numbers and escaped text


__all__ = ["Series", "line_chart", "nice_max"]
