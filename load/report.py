"""The HTML report: headline numbers, PNG plots, per-protocol table, errors, parameters.

`write_report(result, "run.html")` writes `run.html` with the plots embedded as data:
URIs (one self-contained file to mail or attach to an issue) and the same plots next to
it as `run-throughput.png`, `run-latency.png` and `run-latency-over-time.png` (to paste
into a document or a chat). The plots are drawn by `load.plots`.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any

from load.plots import PLOTS, render_all
from load.result import summary_rows

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1120px;margin:2em auto;
color:#111;padding:0 1em;line-height:1.4}
h1{font-size:1.45em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.3em .8em;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}th{background:#f8fafc}td.n,th.n{text-align:right;
font-variant-numeric:tabular-nums}.kv td:first-child{font-weight:600;white-space:nowrap}
.ok{color:#16a34a}.bad{color:#dc2626}figure{margin:1em 0}figure img{width:100%;height:auto;
border:1px solid #e5e7eb}small{color:#666}
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}.card{border:1px solid #e5e7eb;
border-radius:8px;padding:.6em 1em;min-width:8em}.card b{display:block;font-size:1.5em;
font-variant-numeric:tabular-nums}.card span{color:#555;font-size:.85em}
"""


def plot_paths(report: str | Path) -> dict[str, Path]:
    """Where the PNGs go: `run.html` -> `run-throughput.png`, ..."""
    p = Path(report)
    stem = p.with_suffix("") if p.suffix.lower() in (".html", ".htm") else p
    return {name: stem.with_name(f"{stem.name}-{name}.png") for name in PLOTS}


def _num(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return (f"{v:,.1f}" if v >= 100 else f"{v:,.2f}") + unit
    return f"{v:,}{unit}"


def _kv(rows: list[tuple[str, str]]) -> str:
    return '<table class="kv">' + "".join(
        f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows) + "</table>"


def _cards(result: dict[str, Any]) -> str:
    lat = result.get("latency_ms") or {}
    cards = [("throughput", _num(result.get("throughput_per_s"), " /s")),
             ("sent", _num(result["sent"])), ("delivered", _num(result["delivered"])),
             ("failed", _num(result["failed"])), ("lost", _num(result["lost"])),
             *((k, _num(lat.get(k), " ms")) for k in ("p50", "p99", "p999", "max"))]
    return '<div class="cards">' + "".join(
        f'<div class="card"><b>{escape(v)}</b><span>{escape(k)}</span></div>'
        for k, v in cards) + "</div>"


def _protocols(result: dict[str, Any]) -> str:
    parts = result.get("protocols") or {}
    if not parts:
        return ""
    cols = ["sent", "delivered", "failed", "lost", "not started", "/s",
            "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"]
    head = "<tr><th>part</th>" + "".join(f'<th class="n">{c}</th>' for c in cols) + "</tr>"
    rows = []
    for name, s in parts.items():
        lat = s.get("latency_ms") or {}
        vals = [s.get("sent"), s.get("delivered"), s.get("failed"), s.get("lost"),
                s.get("not_started"), s.get("throughput_per_s"),
                *(lat.get(k) for k in ("p50", "p90", "p99", "p999", "max"))]
        rows.append(f"<tr><td><b>{escape(name)}</b></td>" + "".join(
            f'<td class="n">{_num(v)}</td>' for v in vals) + "</tr>")
    rates = (result.get("params") or {}).get("rates_per_s") or {}
    note = ("<p><small>asked rates per second: " + escape(", ".join(
        f"{k} {v:g}" for k, v in rates.items())) + "</small></p>") if rates else ""
    return f"<h2>Per protocol</h2><table>{head}{''.join(rows)}</table>{note}"


def render_html(result: dict[str, Any], plots: dict[str, bytes] | None = None) -> str:
    """The report as one HTML string; `plots` as from `load.plots.render_all`."""
    plots = render_all(result) if plots is None else plots
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
        book, _cards(result), _protocols(result),
    ]
    for name, (title, _) in PLOTS.items():
        if name in plots:
            data = base64.b64encode(plots[name]).decode("ascii")
            parts.append(f'<h2>{escape(title)}</h2><figure><img src="data:image/png;base64,'
                         f'{data}" alt="{escape(title)}"></figure>')
    parts += ["<h2>Summary</h2>", _kv(summary_rows(result))]
    if errors:
        parts += ["<h2>Errors by class</h2>", _kv([(k, f"{v:,}") for k, v in errors.items()])]
        samples = result.get("error_samples") or {}
        if samples:
            parts.append(f"<pre>{escape(json.dumps(samples, indent=2, ensure_ascii=False))}</pre>")
    parts += ["<h2>Parameters</h2>", _kv([(k, str(v)) for k, v in params.items()])]
    if extra:
        parts += ["<h2>Verification</h2>",
                  f"<pre>{escape(json.dumps(extra, indent=2))}</pre>"]
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(result: dict[str, Any], path: str | Path) -> list[Path]:
    """Write the HTML and its PNGs; return the paths written (HTML first)."""
    plots = render_all(result)
    written = [Path(path)]
    Path(path).write_text(render_html(result, plots), encoding="utf-8")
    for name, png_path in plot_paths(path).items():
        png_path.write_bytes(plots[name])
        written.append(png_path)
    return written
