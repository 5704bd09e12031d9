"""PNG plots of a run for the HTML report (matplotlib, drawn off-screen by Agg).

Three figures, each from the result dict alone (so old JSON files can be re-plotted):

- throughput over time: deliveries per second, with what was started per second and
  what failed or was lost;
- latency distribution: the HdrHistogram percentile plot, latency against a log axis of
  1 / (1 - percentile), so 50%, 90%, 99%, 99.9%, 99.99% are evenly spaced and the tail is
  visible;
- latency over time: per-second mean and max.

A `workday` result gets one panel per protocol part (mail, imap, chat, docs, circular),
and throughput a first panel for all parts together.

Only the object-oriented API is used (`Figure` + the Agg canvas, no pyplot): nothing
needs a display, nothing is kept in a global figure list, and a run in a worker thread is
safe.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

DPI = 110
WIDTH_IN = 10.0
BLUE, GREY, RED, ORANGE = "#2563eb", "#6b7280", "#dc2626", "#d97706"
CURVE_COLORS = {"latency": BLUE, "e2e latency": "#16a34a", "smtp": ORANGE,
                "login": "#7c3aed", "connect": "#0891b2"}
STYLE: dict[Any, Any] = {"font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold",
         "axes.labelsize": 10, "legend.fontsize": 9, "xtick.labelsize": 9,
         "ytick.labelsize": 9, "axes.grid": True, "grid.color": "#e5e7eb",
         "grid.linewidth": 0.8, "axes.edgecolor": "#9ca3af", "axes.spines.top": False,
         "axes.spines.right": False, "figure.facecolor": "white"}
PERCENTILE_LABELS = ["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]

Panel = tuple[str, dict[str, Any]]  # (title, result-like dict with timeseries / curves)


def percentile_x(p: float) -> float:
    """Position of percentile `p` on the HdrHistogram axis: 1 / (1 - p), log-scaled."""
    return 1.0 / max(1.0 - p / 100.0, 1e-9)


def panels(result: dict[str, Any]) -> list[Panel]:
    """One panel per workday part, else one for the whole run."""
    params = result.get("params") or {}
    rates = params.get("rates_per_s") or {}
    parts = [(k, {**v, "asked_rate": rates.get(k)})
             for k, v in (result.get("protocols") or {}).items()
             if v.get("timeseries") is not None or v.get("curves")]
    return parts or [(result["scenario"], {**result, "asked_rate": params.get("rate")})]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _figure(n: int, title: str, panel_h: float, sharex: bool) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(WIDTH_IN, 0.7 + panel_h * n), layout="constrained")
    axes = list(fig.subplots(n, 1, squeeze=False, sharex=sharex)[:, 0])
    fig.suptitle(title, fontsize=13, fontweight="bold", x=0.01, ha="left")
    return fig, axes


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center",
            color=GREY, fontsize=12)
    ax.set_yticks([])


def _render(title: str, items: Sequence[Panel],
            draw: Callable[[Axes, dict[str, Any]], bool], x_label: str,
            panel_h: float = 2.6, sharex: bool = True) -> bytes:
    if len(items) > 3:
        panel_h *= 0.75
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(len(items), title, panel_h, sharex)
        for ax, (name, data) in zip(axes, items, strict=True):
            if len(items) > 1:
                ax.set_title(name, loc="left")
            if not draw(ax, data):
                _no_data(ax)
        axes[-1].set_xlabel(x_label)
        return _png(fig)


def _headroom(top: float) -> float:
    """A y limit that leaves the legend room above the data."""
    return top * 1.3 if top > 0 else 1.0


def _draw_throughput(ax: Axes, data: dict[str, Any]) -> bool:
    ts = data.get("timeseries") or []
    if not ts:
        return False
    t = [b["t"] + 0.5 for b in ts]  # a bucket covers [t, t+1)
    delivered = [b["delivered"] for b in ts]
    mean = sum(delivered) / max(len(ts), 1)
    ax.plot(t, [b["started"] for b in ts], color=GREY, ls="--", lw=1.2, label="started/s")
    ax.plot(t, delivered, color=BLUE, lw=1.8, label=f"delivered/s (mean {mean:,.1f})")
    ax.fill_between(t, delivered, color=BLUE, alpha=0.08)
    asked = data.get("asked_rate")
    if asked:
        ax.axhline(asked, color=GREY, ls=":", lw=1.2, label=f"asked {asked:,.4g}/s")
    bad = [b["failed"] + b["lost"] for b in ts]
    if any(bad):
        ax.plot(t, bad, color=RED, lw=1.5, label=f"failed+lost/s (total {sum(bad):,})")
    ax.set_ylabel("deliveries / s")
    ax.set_ylim(0, _headroom(max(max(delivered), max(b["started"] for b in ts), max(bad),
                                 asked or 0)))
    ax.set_xlim(0, max(t[-1] + 0.5, 1))
    ax.legend(loc="upper right", frameon=False, ncols=4)
    return True


def throughput_png(result: dict[str, Any]) -> bytes:
    items = panels(result)
    if len(items) > 1:
        items = [("all parts", result), *items]
    return _render(f"Throughput over time — {result['scenario']} (per-second buckets)",
                   items, _draw_throughput, "seconds since start")


def _curve_name(key: str) -> str:
    return key.removesuffix("_ms").replace("_", " ")


def _draw_percentiles(ax: Axes, data: dict[str, Any]) -> bool:
    curves = {_curve_name(k): v for k, v in (data.get("curves") or {}).items()
              if k != "lag_ms" and v}
    if not curves:
        return False
    x_hi = 1.0
    for name, pts in curves.items():
        finite = [(percentile_x(p), ms) for p, ms in pts if p < 100.0]
        x_end = (finite[-1][0] if finite else 1.0) * 10 ** 0.15
        xy = finite + [(x_end, pts[-1][1])]  # the max, just right of the last percentile
        x_hi = max(x_hi, x_end)
        color = CURVE_COLORS.get(name, ORANGE)
        ax.plot([x for x, _ in xy], [y for _, y in xy], color=color, lw=1.8,
                drawstyle="steps-post" if len(xy) < 8 else "default",
                label=f"{name} (max {pts[-1][1]:,.1f} ms)")
        summary = data.get(f"{name.replace(' ', '_')}_ms") or {}
        for key, p in (("p50", 50.0), ("p99", 99.0), ("p999", 99.9)):
            ms = summary.get(key)
            if ms is not None and percentile_x(p) < x_end and name in ("latency", "e2e latency"):
                ax.plot(percentile_x(p), ms, "o", color=color, ms=4)
                ax.annotate(f"p{p:g} {ms:,.1f}", (percentile_x(p), ms),
                            textcoords="offset points", xytext=(-4, 7), ha="right",
                            fontsize=8, color=color)
    ax.set_xscale("log")
    decades = max(1, math.ceil(math.log10(x_hi)))
    ticks = [10.0 ** k for k in range(decades + 1)]
    ticks.insert(1, 2.0)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda x, _: "50%" if x == 2.0 else PERCENTILE_LABELS[
            min(round(math.log10(x)) + (1 if x >= 10 else 0), len(PERCENTILE_LABELS) - 1)]))
    ax.set_xlim(1.0, x_hi * 1.05)
    ax.set_ylim(0, _headroom(max(pts[-1][1] for pts in curves.values())))
    ax.set_ylabel("latency (ms)")
    ax.legend(loc="upper left", frameon=False)
    return True


def latency_png(result: dict[str, Any]) -> bytes:
    return _render(f"Latency distribution — {result['scenario']} (by percentile, HDR)",
                   panels(result), _draw_percentiles, "percentile", panel_h=3.0,
                   sharex=False)


def _draw_latency_time(ax: Axes, data: dict[str, Any]) -> bool:
    ts = [b for b in data.get("timeseries") or [] if b.get("latency_mean_ms") is not None]
    if not ts:
        return False
    t = [b["t"] + 0.5 for b in ts]
    mean = [b["latency_mean_ms"] for b in ts]
    top = [b["latency_max_ms"] for b in ts]
    ax.fill_between(t, mean, top, color=ORANGE, alpha=0.12)
    ax.plot(t, top, color=ORANGE, lw=1.0, ls="--", label="max in the second")
    ax.plot(t, mean, color=BLUE, lw=1.8, marker="o" if len(t) < 4 else None, ms=3,
            label="mean in the second")
    lo = min(v for v in mean if v > 0) if any(v > 0 for v in mean) else 0
    if lo and max(top) / lo > 30:
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms, log)")
    else:
        ax.set_ylim(0, _headroom(max(top)))
        ax.set_ylabel("latency (ms)")
    ax.legend(loc="upper right", frameon=False, ncols=2)
    return True


def latency_over_time_png(result: dict[str, Any]) -> bytes:
    return _render(f"Latency over time — {result['scenario']} (per-second buckets)",
                   panels(result), _draw_latency_time, "seconds since start")


PLOTS: dict[str, tuple[str, Callable[[dict[str, Any]], bytes]]] = {
    "throughput": ("Throughput over time", throughput_png),
    "latency": ("Latency distribution", latency_png),
    "latency-over-time": ("Latency over time", latency_over_time_png),
}


def render_all(result: dict[str, Any]) -> dict[str, bytes]:
    """{plot name: PNG bytes} for every plot in `PLOTS`."""
    return {name: fn(result) for name, (_, fn) in PLOTS.items()}
