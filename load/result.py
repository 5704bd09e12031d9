"""The result of a run as one JSON-ready dict, and the summary table printed after it.

Schema (version 1), stable for `compare` and for anyone plotting runs over time:

    scenario, target, run_id, params{...}, started, ended (ISO 8601 UTC), elapsed_s,
    completed (false if the hard max duration cut the run), sent, delivered, failed, lost,
    accepted, balanced (sent == delivered + failed + lost), messages_sent,
    messages_accepted, connections_opened, bytes_sent,
    throughput_per_s (deliveries accepted with 250 per second of the run),
    latency_ms {p50, p90, p99, p999, max, mean, count}  (SMTP: transaction start -> 250;
    IMAP: one whole sync; imap-idle: 250 -> EXISTS; XMPP chat: sent -> received by the
    peer; xmpp-login: connect -> bound), login_ms {...} (IMAP, XMPP), smtp_ms {...} (imap-idle),
    e2e_latency_ms {...} (with IMAP verification), connect_ms {...}, lag_ms {...} (open loop),
    curves {name: [[percentile, ms], ...]}, errors {class: count},
    timeseries [{t, started, delivered, failed, lost, latency_mean_ms, latency_max_ms}],
    plus scenario extras (e.g. verification, reach_everyone_ms).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from load.context import RunContext
from load.stats import percentile_curve, summarize

SCHEMA_VERSION = 1
_HISTS = {"latency": "latency_ms", "e2e": "e2e_latency_ms", "connect": "connect_ms",
          "login": "login_ms", "lag": "lag_ms", "smtp": "smtp_ms"}


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def build_result(ctx: RunContext) -> dict[str, Any]:
    rec = ctx.rec
    if rec.t_end is None:
        rec.finish()
    out: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "scenario": ctx.scenario,
        "target": str(ctx.target),
        "run_id": ctx.run_id,
        "params": ctx.params,
        "started": _iso(rec.started_wall),
        "ended": _iso(rec.ended_wall),
        "elapsed_s": round(rec.elapsed, 6),
        "completed": ctx.completed,
        "sent": rec.sent,
        "delivered": rec.delivered,
        "failed": rec.failed,
        "lost": rec.lost,
        "accepted": rec.accepted,
        "balanced": rec.balanced(),
        "messages_sent": rec.messages_sent,
        "messages_accepted": rec.messages_accepted,
        "connections_opened": rec.connections_opened,
        "bytes_sent": rec.bytes_sent,
        "not_started": rec.not_started,
        "throughput_per_s": round(rec.accepted / rec.elapsed, 3),
    }
    out["latency_ms"] = summarize(rec.hist("latency"))
    for name, key in _HISTS.items():
        if name != "latency" and name in rec.hists:
            out[key] = summarize(rec.hists[name])
    out["curves"] = {key: percentile_curve(rec.hists[name])
                     for name, key in _HISTS.items() if name in rec.hists}
    out["errors"] = dict(sorted(rec.errors.items()))
    out["error_samples"] = dict(sorted(rec.samples.items()))
    out["timeseries"] = rec.timeseries()
    out.update(ctx.extra)
    return out


def write_json(result: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a load result")
    return data


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if v < 100 else f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def summary_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs for the summary table, shared by terminal and HTML."""
    rows = [("scenario", result["scenario"]), ("target", result["target"]),
            ("elapsed", f"{result['elapsed_s']:.3f} s" +
             ("" if result.get("completed", True) else " (cut by --max-duration)")),
            ("sent", _fmt(result["sent"])), ("delivered", _fmt(result["delivered"])),
            ("failed", _fmt(result["failed"])), ("lost", _fmt(result["lost"])),
            ("throughput", f"{_fmt(result['throughput_per_s'])} /s")]
    for key, label in (("latency_ms", "latency"), ("e2e_latency_ms", "e2e latency"),
                       ("smtp_ms", "smtp 250"), ("connect_ms", "connect"),
                       ("login_ms", "login"),
                       ("lag_ms", "schedule lag")):
        s = result.get(key)
        if s and s.get("count"):
            rows.append((f"{label} ms", "  ".join(f"{k} {_fmt(s[k])}" for k in
                                                   ("p50", "p90", "p99", "p999", "max"))))
    if "reach_everyone_ms" in result:
        rows.append(("reached everyone", f"{_fmt(result['reach_everyone_ms'])} ms "
                                         f"({result.get('reach_everyone_basis')})"))
    if result.get("not_started"):
        rows.append(("not started", f"{_fmt(result['not_started'])} (open loop fell behind: "
                                    "the target rate was not held)"))
    for name, part in (result.get("protocols") or {}).items():
        lat = part.get("latency_ms") or {}
        rows.append((f"  {name}", f"sent {_fmt(part['sent'])}  delivered "
                     f"{_fmt(part['delivered'])}  failed {_fmt(part['failed'])}  lost "
                     f"{_fmt(part['lost'])}  {_fmt(part.get('throughput_per_s'))}/s  p50 "
                     f"{_fmt(lat.get('p50'))}  p99 {_fmt(lat.get('p99'))} ms"))
    for name, why in (result.get("skipped") or {}).items():
        rows.append((f"  {name}", f"skipped: {why}"))
    if result["errors"]:
        rows.append(("errors", ", ".join(f"{k} {v}" for k, v in result["errors"].items())))
    if not result.get("balanced", True):
        rows.append(("WARNING", "sent != delivered + failed + lost"))
    return rows


def print_summary(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cxgw load {result['scenario']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in summary_rows(result):
        table.add_row(label, value)
    Console().print(table)
