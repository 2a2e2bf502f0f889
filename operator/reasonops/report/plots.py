"""Plots as SVG strings, from plain data: no plotting library, no scripts, no fonts to fetch.

Each plot is one ``<svg class="plot" data-kind=... data-series-count=... data-points=...>`` element (what a
browser test looks for), with its title as ``aria-label``. A plot without data is a panel that says so
(class ``plot no-data``, 0 series), never an empty frame. Every string from the data is escaped.
"""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

WIDTH, HEIGHT = 640, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 34, 42
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
Point = tuple[float, float]


def _number(value: float) -> str:
    """A tick or value label: short, exact for integers."""
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}"


def ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    values = []
    value = first
    while value <= high + step * 1e-9:
        if value >= low - step * 1e-9:
            values.append(round(value, 12))
        value += step
    return values


def _open(kind: str, title: str, series: int, points: int, height: int = HEIGHT) -> list[str]:
    label = escape(title)
    return [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" data-kind="{kind}" data-series-count="{series}" '
            f'data-points="{points}" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
            f'aria-label="{label}">',
            f'<rect width="{WIDTH}" height="{height}" fill="#ffffff" stroke="#d0d0d0"/>',
            f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{label}</text>']


def no_data(title: str, reason: str = "no data") -> str:
    """The panel of a plot that has nothing to show, saying why."""
    parts = _open("none", title, 0, 0, 120)
    parts[0] = parts[0].replace('class="plot"', 'class="plot no-data"')
    parts.append(f'<text x="{WIDTH / 2}" y="70" text-anchor="middle" font-size="13" fill="#666666">{escape(reason)}</text>')
    return "\n".join(parts + ["</svg>"])


class _Frame:
    """Maps data coordinates into the plot area."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float], height: int = HEIGHT, left: int = LEFT) -> None:
        self.x_low, self.x_high = x_range if x_range[1] > x_range[0] else (x_range[0] - 1, x_range[0] + 1)
        self.y_low, self.y_high = y_range if y_range[1] > y_range[0] else (y_range[0] - 1, y_range[0] + 1)
        self.height, self.left = height, left

    def x(self, value: float) -> float:
        return round(self.left + (value - self.x_low) / (self.x_high - self.x_low) * (WIDTH - self.left - RIGHT), 2)

    def y(self, value: float) -> float:
        return round(self.height - BOTTOM - (value - self.y_low) / (self.y_high - self.y_low) * (self.height - TOP - BOTTOM), 2)

    def axes(self, x_label: str, y_label: str) -> list[str]:
        bottom, right = self.height - BOTTOM, WIDTH - RIGHT
        parts = [f'<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333333"/>',
                 f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#333333"/>']
        for value in ticks(self.y_low, self.y_high):
            y = self.y(value)
            parts.append(f'<line x1="{LEFT}" y1="{y}" x2="{right}" y2="{y}" stroke="#eeeeee"/>')
            parts.append(f'<text x="{LEFT - 6}" y="{y + 4}" text-anchor="end" font-size="11">{_number(value)}</text>')
        for value in ticks(self.x_low, self.x_high):
            parts.append(f'<text x="{self.x(value)}" y="{bottom + 15}" text-anchor="middle" font-size="11">{_number(value)}</text>')
        parts.append(f'<text x="{(LEFT + right) / 2}" y="{self.height - 8}" text-anchor="middle" font-size="12">{escape(x_label)}</text>')
        parts.append(f'<text x="14" y="{(TOP + bottom) / 2}" text-anchor="middle" font-size="12" '
                     f'transform="rotate(-90 14 {(TOP + bottom) / 2})">{escape(y_label)}</text>')
        return parts


def _label_margin(labels: Sequence[str]) -> int:
    """Room left of the plot for row labels (about 6.5 px a character at 11 px)."""
    return min(240, max(LEFT, int(6.5 * max(map(len, labels), default=0)) + 12))


def _finite(points: Sequence[Point]) -> list[Point]:
    return [(float(x), float(y)) for x, y in points if math.isfinite(float(x)) and math.isfinite(float(y))]


def line_plot(title: str, series: dict[str, Sequence[Point]], x_label: str, y_label: str,
              y_range: tuple[float, float] | None = None) -> str:
    """One line per series with a marker per point (class "point"); the legend names the series."""
    cleaned = {name: _finite(points) for name, points in series.items()}
    cleaned = {name: points for name, points in cleaned.items() if points}
    if not cleaned:
        return no_data(title)
    xs = [x for points in cleaned.values() for x, _ in points]
    ys = [y for points in cleaned.values() for _, y in points]
    frame = _Frame((min(xs), max(xs)), y_range or (min(0.0, min(ys)), max(ys)))
    parts = _open("line", title, len(cleaned), len(xs)) + frame.axes(x_label, y_label)
    for index, (name, points) in enumerate(cleaned.items()):
        colour = COLOURS[index % len(COLOURS)]
        ordered = sorted(points)
        path = " ".join(f"{frame.x(x)},{frame.y(y)}" for x, y in ordered)
        parts.append(f'<g class="series" data-name="{escape(name)}">')
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>')
        radius = 2.5 if len(ordered) <= 200 else 1.2
        parts += [f'<circle class="point" cx="{frame.x(x)}" cy="{frame.y(y)}" r="{radius}" fill="{colour}">'
                  f'<title>{escape(name)}: {_number(x)}, {y:.4g}</title></circle>' for x, y in ordered]
        parts.append("</g>")
        if len(cleaned) > 1:
            legend_y = TOP + 4 + 14 * index
            parts.append(f'<rect x="{WIDTH - RIGHT - 150}" y="{legend_y}" width="10" height="10" fill="{colour}"/>')
            parts.append(f'<text x="{WIDTH - RIGHT - 136}" y="{legend_y + 9}" font-size="11">{escape(name)}</text>')
    return "\n".join(parts + ["</svg>"])


def bar_plot(title: str, bars: Sequence[tuple[str, float]], value_label: str, notes: Sequence[str] | None = None) -> str:
    """Horizontal bars, one per (label, value), the value written beside each (`notes`: replace it)."""
    rows = [(str(label), float(value)) for label, value in bars if math.isfinite(float(value))]
    if not rows:
        return no_data(title)
    height = TOP + BOTTOM + 22 * len(rows)
    high = max(max(v for _, v in rows), 0.0) or 1.0
    left = _label_margin([label for label, _ in rows])
    frame = _Frame((0.0, high * 1.15), (0.0, 1.0), height, left)
    parts = _open("bar", title, 1, len(rows), height)
    bottom = height - BOTTOM
    parts.append(f'<line x1="{left}" y1="{TOP}" x2="{left}" y2="{bottom}" stroke="#333333"/>')
    for index, (label, value) in enumerate(rows):
        y = TOP + 4 + 22 * index
        width = max(frame.x(max(value, 0.0)) - left, 0.0)
        note = notes[index] if notes else _number(round(value, 4))
        parts.append(f'<rect class="bar" x="{left}" y="{y}" width="{round(width, 2)}" height="16" fill="{COLOURS[0]}">'
                     f'<title>{escape(label)}: {escape(note)}</title></rect>')
        parts.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end" font-size="11">{escape(label)}</text>')
        parts.append(f'<text x="{left + width + 4}" y="{y + 12}" font-size="11">{escape(note)}</text>')
    parts.append(f'<text x="{(left + WIDTH - RIGHT) / 2}" y="{height - 8}" text-anchor="middle" font-size="12">{escape(value_label)}</text>')
    return "\n".join(parts + ["</svg>"])


def interval_plot(title: str, rows: Sequence[tuple[str, float, float, float]], value_label: str) -> str:
    """One row per (label, estimate, low, high) on a 0-1 scale: a dot and its interval."""
    rows = [(str(label), *map(float, values)) for label, *values in rows]  # type: ignore[misc]
    rows = [r for r in rows if all(math.isfinite(v) for v in r[1:])]
    if not rows:
        return no_data(title)
    height = TOP + BOTTOM + 26 * len(rows)
    left = _label_margin([r[0] for r in rows])
    frame = _Frame((0.0, 1.0), (0.0, 1.0), height, left)
    parts = _open("interval", title, 1, len(rows), height)
    bottom = height - BOTTOM
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="#333333"/>')
    for value in ticks(0.0, 1.0):
        x = frame.x(value)
        parts.append(f'<line x1="{x}" y1="{TOP}" x2="{x}" y2="{bottom}" stroke="#eeeeee"/>')
        parts.append(f'<text x="{x}" y="{bottom + 15}" text-anchor="middle" font-size="11">{_number(value)}</text>')
    for index, (label, score, low, high) in enumerate(rows):
        y = TOP + 14 + 26 * index
        tip = f"{label}: {score:.4f} [{low:.4f}, {high:.4f}]"
        parts.append(f'<line x1="{frame.x(low)}" y1="{y}" x2="{frame.x(high)}" y2="{y}" stroke="{COLOURS[0]}" stroke-width="2"/>')
        parts.append(f'<circle class="point" cx="{frame.x(score)}" cy="{y}" r="4" fill="{COLOURS[1]}"><title>{escape(tip)}</title></circle>')
        parts.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end" font-size="11">{escape(label)}</text>')
    parts.append(f'<text x="{(left + WIDTH - RIGHT) / 2}" y="{height - 8}" text-anchor="middle" font-size="12">{escape(value_label)}</text>')
    return "\n".join(parts + ["</svg>"])
