"""Server-rendered SVG charts for the dashboard: heat map, time series, reliability diagram, bars.

Why SVG from the server and no charting library: the pages need five small chart kinds over at most a few
hundred points; rendering them here is a few kilobytes per page, needs nothing vendored or fetched, draws
the same in every browser and is testable in Python. The browser only swaps refreshed fragments in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

W, H = 760, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 14, 30


def hhmm(ms: int) -> str:
    """A window start as the dashboard prints it (UTC)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%m-%d %H:%M")


def _svg(width: int, height: int, body: str, label: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{escape(label)}">{body}</svg>')


def _heat(value: float, top: float) -> str:
    """White (no change) to deep orange (``top`` or more); ``value`` is an effect size (PSI)."""
    t = 0.0 if top <= 0 or not math.isfinite(value) else max(0.0, min(1.0, value / top))
    r, g, b = (int(255 + (end - 255) * t) for end in (217, 72, 1))
    return f"rgb({r},{g},{b})"


def heatmap(features: Sequence[str], windows: Sequence[int], cells: dict[tuple[str, int], tuple[float, bool, str]],
            top: float = 0.5) -> str:
    """Features (rows, in the order given) by windows (columns); a cell is (effect, breached, tooltip).

    Breached cells get a dark outline and a dot, so a breach reads without relying on colour alone.
    """
    label_w, cell_h = 170, 22
    cell_w = max(8, min(90, (W - label_w - RIGHT) // max(1, len(windows))))
    height = TOP + cell_h * len(features) + BOTTOM
    parts = []
    for i, feature in enumerate(features):
        y = TOP + i * cell_h
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" class="axis">{escape(feature)}</text>')
        for j, start in enumerate(windows):
            x = label_w + j * cell_w
            found = cells.get((feature, start))
            if found is None:
                parts.append(f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" class="empty"/>')
                continue
            effect, breached, tip = found
            outline = ' stroke="#7f1d1d" stroke-width="2"' if breached else ' stroke="#e4e7eb"'
            parts.append(f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" '
                         f'fill="{_heat(effect, top)}"{outline} data-breached="{int(breached)}">'
                         f"<title>{escape(tip)}</title></rect>")
            if breached:
                parts.append(f'<circle cx="{x + (cell_w - 2) / 2}" cy="{y + (cell_h - 2) / 2}" r="3" fill="#7f1d1d"/>')
    step = math.ceil(84 / cell_w)  # a time label is about 80 px wide: never let two overlap
    for j in range(0, len(windows), step):
        x = label_w + j * cell_w + (cell_w - 2) / 2
        parts.append(f'<text x="{x}" y="{height - 10}" text-anchor="middle" class="axis">{hhmm(windows[j])}</text>')
    return _svg(W, height, "".join(parts), "drift per feature and window")


class Series:
    """One line: (window start ms, value, breached) points, drawn solid or dashed."""

    def __init__(self, name: str, points: Sequence[tuple[int, float, bool]], css: str, dashed: bool = False) -> None:
        self.name, self.points, self.css, self.dashed = name, [p for p in points if math.isfinite(p[1])], css, dashed


def _ticks(lo: float, hi: float) -> list[float]:
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / 4)) if span > 0 else 1.0
    for mult in (1, 2, 5, 10):
        if span / (step * mult) <= 5:
            step *= mult
            break
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def lines(series: Sequence[Series], bars: Sequence[tuple[int, float]] = (), bar_name: str = "",
          y_range: tuple[float, float] | None = None, fmt: str = "{:.3f}") -> str:
    """Time series over shared window starts; ``bars`` (0..1, e.g. label coverage) get a strip under the plot.

    A series without points is left out of the legend too (a key for a line that is not there confuses).
    """
    series = [s for s in series if s.points]
    xs = sorted({p[0] for s in series for p in s.points} | {b[0] for b in bars})
    values = [p[1] for s in series for p in s.points]
    if not xs or not values:
        return '<p class="empty-note">No values yet.</p>'
    lo, hi = y_range or (min(values), max(values))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.05, hi + 0.05
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    strip = 40 if bars else 0  # label coverage gets its own strip under the plot, never over the lines
    x0, x1, y0, y1 = LEFT, W - RIGHT, H - BOTTOM - strip, TOP

    def x(ms: int) -> float:
        return x0 + (x1 - x0) * (xs.index(ms) + 0.5) / len(xs)

    def y(v: float) -> float:
        return y0 + (y1 - y0) * (v - lo) / (hi - lo)

    parts = []
    for tick in _ticks(lo, hi):
        parts.append(f'<line x1="{x0}" x2="{x1}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" class="grid"/>'
                     f'<text x="{x0 - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" class="axis">'
                     f"{fmt.format(tick)}</text>")
    band = (x1 - x0) / len(xs)
    if bars:
        parts.append(f'<line x1="{x0}" x2="{x1}" y1="{H - BOTTOM}" y2="{H - BOTTOM}" class="grid"/>'
                     f'<text x="{x0 - 6}" y="{H - BOTTOM - 4}" text-anchor="end" class="axis">0-1</text>')
    for ms, share in bars:
        height = max(0.0, min(1.0, share)) * (strip - 8)
        parts.append(f'<rect x="{x(ms) - band * 0.35:.1f}" y="{H - BOTTOM - height:.1f}" width="{band * 0.7:.1f}" '
                     f'height="{height:.1f}" class="bar-soft"><title>{escape(bar_name)} {share:.0%} at '
                     f'{hhmm(ms)}</title></rect>')
    for s in series:
        path = " ".join(f"{'M' if k == 0 else 'L'}{x(p[0]):.1f},{y(p[1]):.1f}" for k, p in enumerate(s.points))
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        parts.append(f'<path d="{path}" class="line {s.css}"{dash}/>')
        for ms, v, breached in s.points:
            parts.append(f'<circle cx="{x(ms):.1f}" cy="{y(v):.1f}" r="{4 if breached else 2.5}" '
                         f'class="{"dot-breached" if breached else "dot " + s.css}"><title>{escape(s.name)} '
                         f'{fmt.format(v)} at {hhmm(ms)}{" (breached)" if breached else ""}</title></circle>')
    step = max(1, len(xs) // 8)
    for k in range(0, len(xs), step):
        parts.append(f'<text x="{x(xs[k]):.1f}" y="{H - 10}" text-anchor="middle" class="axis">{hhmm(xs[k])}</text>')
    legend = [(s.name, s.css, s.dashed) for s in series]
    svg = _svg(W, H, "".join(parts), ", ".join(n for n, _, _ in legend))
    keys = "".join(f'<span class="key {css}{" dashed" if dashed else ""}">{escape(name)}</span>'
                   for name, css, dashed in legend)
    if bars:
        keys += f'<span class="key bar-soft">{escape(bar_name)} (bars under the plot, 0-100 %)</span>'
    keys += '<span class="key dot-breached">breached</span>'
    return f'<div class="legend">{keys}</div>{svg}'


def reliability(bins: Sequence[dict[str, float]]) -> str:
    """Reliability diagram: observed frequency against mean predicted probability per bin; the diagonal is ideal."""
    size, pad = 220, 34
    span = size - 2 * pad

    def at(p: float, q: float) -> tuple[float, float]:
        return pad + span * p, size - pad - span * q

    (dx0, dy0), (dx1, dy1) = at(0, 0), at(1, 1)
    parts = [f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" class="frame"/>',
             f'<line x1="{dx0}" y1="{dy0}" x2="{dx1}" y2="{dy1}" class="ideal"/>']
    used = [b for b in bins if b.get("count", 0) > 0]
    points = [at(float(b["mean_p"]), float(b["frac_pos"])) for b in used]
    if points:
        parts.append('<path d="' + " ".join(f"{'M' if k == 0 else 'L'}{px:.1f},{py:.1f}"
                                            for k, (px, py) in enumerate(points)) + '" class="line s1"/>')
    for b, (px, py) in zip(used, points, strict=True):
        parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" class="dot s1"><title>predicted {b["mean_p"]:.2f}, '
                     f'observed {b["frac_pos"]:.2f} ({int(b["count"])} predictions)</title></circle>')
    parts.append(f'<text x="{size / 2}" y="{size - 6}" text-anchor="middle" class="axis">mean predicted score</text>'
                 f'<text x="10" y="{size / 2}" text-anchor="middle" class="axis" '
                 f'transform="rotate(-90 10 {size / 2})">observed positive rate</text>'
                 f'<text x="{pad}" y="{size - pad + 12}" class="axis">0</text>'
                 f'<text x="{size - pad}" y="{size - pad + 12}" text-anchor="end" class="axis">1</text>')
    return _svg(size, size, "".join(parts), "reliability diagram")


def hbars(rows: Sequence[tuple[str, float, int, bool, float | None]]) -> str:
    """Horizontal bars 0..1, in the order given: (label, value, support, breached, baseline or None)."""
    label_w, row_h = 170, 24
    x0, x1 = label_w, W - 120
    height = TOP + row_h * len(rows) + 8
    parts = []
    for i, (label, value, support, breached, baseline) in enumerate(rows):
        y = TOP + i * row_h
        width = (x1 - x0) * max(0.0, min(1.0, value))
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" class="axis">{escape(label)}</text>'
                     f'<rect x="{x0}" y="{y + 2}" width="{width:.1f}" height="{row_h - 8}" '
                     f'class="{"bar-breached" if breached else "bar"}"/>'
                     f'<text x="{x1 + 8}" y="{y + 15}" class="axis">{value:.1%}  n={support}</text>')
        if baseline is not None:
            bx = x0 + (x1 - x0) * max(0.0, min(1.0, baseline))
            parts.append(f'<line x1="{bx:.1f}" x2="{bx:.1f}" y1="{y}" y2="{y + row_h - 4}" class="baseline">'
                         f"<title>baseline {baseline:.1%}</title></line>")
    return _svg(W, height, "".join(parts), "slice accuracy")
