"""Tiny SVG line charts, drawn by hand so the report needs no plotting library.

Why not matplotlib: it is a ~40 MB dependency with a native build for two line charts,
and its PNGs are blurry when zoomed. Inline SVG is crisp, searchable, small, and opens in
any browser with the report as one self-contained file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2"]


@dataclass
class Series:
    name: str
    points: Sequence[tuple[float, float]]
    color: str = ""
    dashed: bool = False


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi] (steps of 1, 2, 5 x 10^k)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 0.5:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def line_chart(series: list[Series], *, title: str, x_label: str, y_label: str,
               width: int = 760, height: int = 300,
               x_ticks: list[tuple[float, str]] | None = None) -> str:
    """Return an `<svg>` element: one polyline per series, axes, grid, legend."""
    ml, mr, mt, mb = 64, 16, 34, 44
    pw, ph = width - ml - mr, height - mt - mb
    pts = [p for s in series for p in s.points]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}" '
             'font-family="system-ui,sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="#fff"/>',
             f'<text x="{ml}" y="20" font-size="14" font-weight="600">{escape(title)}</text>']
    if not pts:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
                     'fill="#888">no data</text></svg>')
        return "".join(parts)
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    xt = x_ticks or [(t, _fmt(t)) for t in nice_ticks(min(xs), max(xs))]
    x0 = min(min(xs), xt[0][0])
    x1 = max(max(xs), xt[-1][0])
    yt = nice_ticks(0.0, max(ys) if max(ys) > 0 else 1.0)
    y0, y1 = 0.0, yt[-1]
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1

    def sx(x: float) -> float:
        return ml + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return mt + ph - (y - y0) / (y1 - y0) * ph

    for t in yt:
        parts.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
                     'stroke="#e5e7eb"/>')
        parts.append(f'<text x="{ml - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for t, label in xt:
        parts.append(f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{mt}" y2="{mt + ph}" '
                     'stroke="#f1f5f9"/>')
        parts.append(f'<text x="{sx(t):.1f}" y="{mt + ph + 16}" text-anchor="middle">'
                     f'{escape(label)}</text>')
    parts.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" '
                 'stroke="#9ca3af"/>')
    parts.append(f'<text x="{ml + pw / 2}" y="{height - 8}" text-anchor="middle">'
                 f'{escape(x_label)}</text>')
    parts.append(f'<text transform="translate(14,{mt + ph / 2}) rotate(-90)" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    legend_w = sum(8 + 7 * len(s.name) + 22 for s in series)
    lx = ml + pw - legend_w
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="5,4"' if s.dashed else ""
        if len(s.points) == 1:
            x, y = s.points[0]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>')
        else:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s.points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                         f'stroke-width="1.8"{dash}/>')
        parts.append(f'<line x1="{lx}" x2="{lx + 16}" y1="{mt - 8}" y2="{mt - 8}" '
                     f'stroke="{color}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{lx + 20}" y="{mt - 4}">{escape(s.name)}</text>')
        lx += 8 + 7 * len(s.name) + 22
    parts.append("</svg>")
    return "".join(parts)


def percentile_x(p: float) -> float:
    """Position of percentile `p` on the classic HdrHistogram axis: log10(1 / (1 - p))."""
    return math.log10(1.0 / max(1.0 - p / 100.0, 1e-5))


PERCENTILE_TICKS = [(percentile_x(p), label) for p, label in
                    ((0.0, "0%"), (90.0, "90%"), (99.0, "99%"), (99.9, "99.9%"),
                     (99.99, "99.99%"), (99.999, "max"))]


def latency_chart(curves: dict[str, list[list[float]]], title: str) -> str:
    """Latency by percentile (log-spaced tail) for one or more curves."""
    series = [Series(name, [(percentile_x(p), ms) for p, ms in pts])
              for name, pts in curves.items() if pts]
    return line_chart(series, title=title, x_label="percentile", y_label="ms",
                      x_ticks=PERCENTILE_TICKS)
