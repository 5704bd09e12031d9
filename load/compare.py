"""`cxgw load compare A.json B.json`: how B differs from A, as ratios B/A.

Throughput ratio > 1 means B is faster; latency ratios < 1 mean B answers sooner.
"""

from __future__ import annotations

from typing import Any

KEYS = ("p50", "p90", "p99", "p999", "max")


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a == 0:
        return None
    return b / a


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Ratios B/A for throughput and every latency percentile both runs have."""
    out: dict[str, Any] = {"throughput_per_s": {
        "a": a.get("throughput_per_s"), "b": b.get("throughput_per_s"),
        "ratio": _ratio(a.get("throughput_per_s"), b.get("throughput_per_s"))}}
    for block in ("latency_ms", "e2e_latency_ms"):
        la, lb = a.get(block) or {}, b.get(block) or {}
        if not la and not lb:
            continue
        for k in KEYS:
            out[f"{block}.{k}"] = {"a": la.get(k), "b": lb.get(k),
                                   "ratio": _ratio(la.get(k), lb.get(k))}
    return out


def print_comparison(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"B/A  (A={names[0]}, B={names[1]})")
    for col in ("metric", "A", "B", "B/A"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for metric, row in compare(a, b).items():
        ratio = row["ratio"]
        better = (ratio is not None and
                  ((ratio > 1) if metric.startswith("throughput") else (ratio < 1)))
        style = "" if ratio is None or abs(ratio - 1) < 0.02 else ("green" if better else "red")
        table.add_row(metric, _f(row["a"]), _f(row["b"]),
                      f"[{style}]{ratio:.3f}[/]" if ratio is not None and style else
                      (f"{ratio:.3f}" if ratio is not None else "-"))
    Console().print(table)
    for label, r in (("A", a), ("B", b)):
        if r.get("scenario") and r.get("params"):
            Console().print(f"[dim]{label}: {r['scenario']} {r.get('target')} "
                            f"{r.get('params')}[/]")


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:,.3f}" if isinstance(v, float) else f"{v:,}"
