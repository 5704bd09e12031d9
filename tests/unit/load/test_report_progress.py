"""The HTML report with its PNG plots, and the live progress table (no TTY needed)."""

from __future__ import annotations

import asyncio
import io
import random
import struct
from pathlib import Path
from typing import Any

from rich.console import Console

from load.cli import build_parser
from load.context import RunContext
from load.plots import panels
from load.progress import ProgressView, live_progress
from load.report import plot_paths, render_html, write_report
from load.stats import Recorder, percentile_curve, summarize

PNG = b"\x89PNG\r\n\x1a\n"
IMG = '<img src="data:image/png;base64,'


def recorder(n: int, base_s: float, seed: int = 1, secs: float = 4.0) -> Recorder:
    rng = random.Random(seed)
    r = Recorder(t0=100.0)
    for i in range(n):
        now = 100.0 + secs * i / n
        r.started(1, now=now)
        r.accept(1, rng.lognormvariate(0, 0.5) * base_s, now=now)
    r.started(2, now=101.5)
    r.fail("smtp-4xx", 1, now=101.5)
    r.lose("timeout", 1, now=101.6)
    return r


def result_of(r: Recorder, scenario: str = "smtp-burst") -> dict[str, Any]:
    return {"scenario": scenario, "target": "127.0.0.1:2525", "sent": r.sent,
            "delivered": r.delivered, "failed": r.failed, "lost": r.lost,
            "balanced": r.balanced(), "elapsed_s": 4.0, "throughput_per_s": r.accepted / 4,
            "latency_ms": summarize(r.hist("latency")), "errors": dict(r.errors),
            "curves": {"latency_ms": percentile_curve(r.hist("latency"))},
            "timeseries": r.timeseries(), "params": {"connections": 3}}


def png_height(data: bytes) -> int:
    assert data.startswith(PNG)
    return int(struct.unpack(">I", data[20:24])[0])


def test_percentile_curve_is_log_spaced_and_ends_at_max() -> None:
    r = recorder(2000, 0.01)
    curve = percentile_curve(r.hist("latency"))
    ps = [p for p, _ in curve]
    assert ps[0] == 0.0 and ps[-1] == 100.0 and ps == sorted(ps)
    assert any(abs(p - 99.9) < 1e-6 for p in ps) and ps[-2] <= 100 * (1 - 1 / 2000) + 1e-9
    assert [ms for _, ms in curve] == sorted(ms for _, ms in curve)
    assert curve[-1][1] == summarize(r.hist("latency"))["max"]


def test_report_embeds_pngs_and_writes_them_next_to_the_html(tmp_path: Path) -> None:
    result = result_of(recorder(500, 0.02))
    html_path = tmp_path / "run.html"
    written = write_report(result, html_path)
    html = html_path.read_text()
    assert html.count(IMG) == 3
    for title in ("Throughput over time", "Latency distribution", "Latency over time"):
        assert title in html
    assert f"{result['latency_ms']['p99']:,.2f} ms" in html  # the headline numbers
    assert "smtp-4xx" in html and "timeout" in html
    assert written[0] == html_path
    assert {p.name for p in written[1:]} == {"run-throughput.png", "run-latency.png",
                                             "run-latency-over-time.png"}
    for p in written[1:]:
        assert p.read_bytes().startswith(PNG)
    assert plot_paths("x/y.report")["latency"] == Path("x/y.report-latency.png")


def test_workday_report_has_one_panel_per_protocol(tmp_path: Path) -> None:
    parts = {"mail": recorder(300, 0.05, 1), "chat": recorder(900, 0.005, 2),
             "circular": recorder(3, 0.4, 3)}
    total = Recorder(t0=100.0)
    for r in parts.values():
        total.merge(r)
    result = result_of(total, "workday")
    result["protocols"] = {k: {**result_of(r), "not_started": 0} for k, r in parts.items()}
    assert [name for name, _ in panels(result)] == ["mail", "chat", "circular"]
    write_report(result, tmp_path / "w.html")
    write_report(result_of(total), tmp_path / "s.html")
    for name in ("throughput", "latency", "latency-over-time"):
        wd, single = (png_height((tmp_path / f"{s}-{name}.png").read_bytes())
                      for s in ("w", "s"))
        assert wd > 2 * single, name
    html = (tmp_path / "w.html").read_text()
    assert "Per protocol" in html and "<b>circular</b>" in html


def test_report_without_data_still_has_its_plots() -> None:
    result = result_of(Recorder())
    result["timeseries"], result["curves"] = [], {}
    assert render_html(result).count(IMG) == 3


def context(*extra: str) -> RunContext:
    args = build_parser().parse_args(["load", "smtp-burst", "--target", "127.0.0.1:2525",
                                      "--rcpt", "a@x.test", "--duration", "30", *extra])
    return RunContext.from_args("smtp-burst", args)


def render(view: ProgressView) -> str:
    console = Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None)
    console.print(view.table())
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def test_progress_table_shows_counts_rate_and_recent_percentiles() -> None:
    ctx = context()
    view = ProgressView(ctx)
    view.update(now=10.0)  # starts tapping the recorder
    for i in range(100):
        ctx.rec.started(1)
        ctx.rec.accept(1, 0.010 if i < 98 else 0.500)
    ctx.rec.started(1)
    ctx.rec.fail("smtp-5xx")
    view.update(now=12.0)
    out = render(view)
    assert "smtp-burst" in out and "of 30 s" in out
    line = next(x for x in out.splitlines() if "smtp-burst" in x and "│" in x)
    cells = [c.strip() for c in line.split("│") if c.strip()]
    assert cells == ["smtp-burst", "101", "100", "1", "0", "50", "10.0", "500.0"]
    view.update(now=20.0)  # nothing new for longer than the window: rate 0, no percentiles
    cells = [c.strip() for c in next(x for x in render(view).splitlines()
                                     if "smtp-burst" in x and "│" in x).split("│") if c.strip()]
    assert cells[5:] == ["0", "-", "-"]


def test_progress_table_has_a_row_per_workday_part_and_a_total() -> None:
    ctx = context()
    mail, chat = Recorder(), Recorder()
    ctx.live_parts.update({"mail": [mail], "chat": [chat], "circular": []})
    view = ProgressView(ctx)
    view.update(now=1.0)
    for r, n in ((mail, 3), (chat, 7)):
        for _ in range(n):
            r.started(1)
            r.accept(1, 0.002)
    view.update(now=2.0)
    rows = {c[0]: c[1:] for c in ([x.strip() for x in line.split("│") if x.strip()]
                                  for line in render(view).splitlines() if "│" in line) if c}
    assert rows["mail"][:2] == ["3", "3"] and rows["chat"][:2] == ["7", "7"]
    assert rows["circular"][:2] == ["0", "0"] and rows["total"][:2] == ["10", "10"]


async def test_live_progress_draws_on_a_terminal_only() -> None:
    ctx = context()
    buf = io.StringIO()
    async with live_progress(ctx, True, Console(file=buf, force_terminal=True)) as view:
        assert view is not None
        ctx.rec.started(1)
        ctx.rec.accept(1, 0.003)
        await asyncio.sleep(0.6)
    assert "delivered" in buf.getvalue()
    quiet = io.StringIO()
    async with live_progress(ctx, True, Console(file=quiet)) as view:  # not a terminal
        assert view is None
    async with live_progress(ctx, False, Console(file=quiet, force_terminal=True)) as view:
        assert view is None
    assert quiet.getvalue() == ""
