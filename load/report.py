"""A self-contained HTML report: summary, throughput over time, latency by percentile, errors.

Charts are inline SVG (see `load.svg` for why no matplotlib), so the file can be mailed,
attached to an issue, or opened offline.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from load.result import summary_rows
from load.svg import Series, latency_chart, line_chart

_CSS = """
body{font-family:system-ui,sans-serif;max-width:820px;margin:2em auto;color:#111;padding:0 1em}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .8em;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}td:first-child{font-weight:600;white-space:nowrap}
.ok{color:#16a34a}.bad{color:#dc2626}figure{margin:1em 0}small{color:#666}
"""


def _table(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>"
                               for k, v in rows) + "</table>"


def throughput_svg(result: dict[str, Any]) -> str:
    ts = result.get("timeseries") or []
    series = [Series("started/s", [(b["t"], b["started"]) for b in ts], color="#9ca3af",
                     dashed=True),
              Series("delivered/s", [(b["t"], b["delivered"]) for b in ts], color="#2563eb")]
    if any(b["failed"] or b["lost"] for b in ts):
        series.append(Series("failed+lost/s", [(b["t"], b["failed"] + b["lost"]) for b in ts],
                             color="#dc2626"))
    return line_chart(series, title="Throughput over time (per-second buckets)",
                      x_label="seconds since start", y_label="deliveries / s")


def latency_over_time_svg(result: dict[str, Any]) -> str:
    ts = [b for b in result.get("timeseries") or [] if b.get("latency_mean_ms") is not None]
    series = [Series("mean", [(b["t"], b["latency_mean_ms"]) for b in ts], color="#2563eb"),
              Series("max", [(b["t"], b["latency_max_ms"]) for b in ts], color="#d97706",
                     dashed=True)]
    return line_chart(series, title="Latency over time (see the summary for what it measures)",
                      x_label="seconds since start", y_label="ms")


def render_html(result: dict[str, Any]) -> str:
    curves = {k.removesuffix("_ms").replace("_", " "): v
              for k, v in (result.get("curves") or {}).items() if k != "lag_ms"}
    balanced = result.get("balanced", True)
    book = (f'<p class="{"ok" if balanced else "bad"}">sent {result["sent"]:,} = delivered '
            f'{result["delivered"]:,} + failed {result["failed"]:,} + lost {result["lost"]:,}'
            f'{"" if balanced else "  (DOES NOT BALANCE)"}</p>')
    errors = result.get("errors") or {}
    params = {k: v for k, v in (result.get("params") or {}).items() if v is not None}
    extra = {k: result[k] for k in ("verification",) if k in result}
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>cxgw load {escape(result['scenario'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>cxgw load {escape(result['scenario'])} → {escape(result['target'])}</h1>",
        f"<p><small>run {escape(str(result.get('run_id')))}, {escape(str(result.get('started')))}"
        f" … {escape(str(result.get('ended')))}</small></p>",
        book,
        _table(summary_rows(result)),
        "<h2>Throughput</h2><figure>", throughput_svg(result), "</figure>",
        "<h2>Latency distribution</h2><figure>",
        latency_chart(curves, "Latency by percentile"),
        "</figure><figure>", latency_over_time_svg(result), "</figure>",
    ]
    if errors:
        parts += ["<h2>Errors by class</h2>",
                  _table([(k, f"{v:,}") for k, v in errors.items()])]
    parts += ["<h2>Parameters</h2>", _table([(k, str(v)) for k, v in params.items()])]
    if extra:
        parts += ["<h2>Verification</h2>",
                  f"<pre>{escape(json.dumps(extra, indent=2))}</pre>"]
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(result: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(render_html(result), encoding="utf-8")
