"""Live progress while a run goes: a rich table refreshed twice a second, on a terminal only.

One row per scenario, or for `workday` one row per part (mail, imap, chat, docs,
circular) and a total: sent, delivered, failed and lost so far, the delivery rate and the
p50 / p99 latency over the last few seconds ("now", not since the start, so a server
that slows down shows it at once). The final numbers come from the summary afterwards.
Nothing is shown with `--quiet` or when stdout is not a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from load.context import RunContext
from load.stats import Recorder

WINDOW_S = 5.0  # rate and percentiles "now" cover this many seconds
REFRESH_S = 0.5


def _pct(sorted_us: list[int], q: float) -> float | None:
    """Nearest-rank percentile `q` (0..1) of sorted microseconds, in ms."""
    if not sorted_us:
        return None
    return sorted_us[min(len(sorted_us) - 1, max(0, math.ceil(q * len(sorted_us)) - 1))] / 1000


@dataclass
class _Row:
    label: str
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    lost: int = 0
    # (monotonic time, delivered so far, latencies µs taken at that time), newest last
    samples: deque[tuple[float, int, list[int]]] = field(default_factory=deque)

    def add(self, now: float, taps: list[int]) -> None:
        self.samples.append((now, self.delivered, taps))
        while len(self.samples) > 1 and self.samples[1][0] <= now - WINDOW_S:
            self.samples.popleft()

    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, d0, _), (t1, d1, _) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None

    def percentiles(self) -> tuple[float | None, float | None]:
        lat = sorted(us for _, _, taps in list(self.samples)[1:] for us in taps)
        return _pct(lat, 0.50), _pct(lat, 0.99)


class ProgressView:
    """What the live display shows; `update()` samples the recorders, `table()` draws."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.rows: dict[str, _Row] = {}

    def _groups(self) -> dict[str, list[Recorder]]:
        return dict(self.ctx.live_parts) or {self.ctx.scenario: [self.ctx.rec]}

    def update(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        groups = self._groups()
        total = self.rows.setdefault("total", _Row("total")) if len(groups) > 1 else None
        if total:
            total.sent = total.delivered = total.failed = total.lost = 0
        all_taps: list[int] = []
        for label, recs in groups.items():
            row = self.rows.setdefault(label, _Row(label))
            row.sent = sum(r.sent for r in recs)
            row.delivered = sum(r.delivered for r in recs)
            row.failed = sum(r.failed for r in recs)
            row.lost = sum(r.lost for r in recs)
            taps = [us for r in recs for us in r.take_tap()]
            row.add(now, taps)
            all_taps += taps
            if total:
                total.sent += row.sent
                total.delivered += row.delivered
                total.failed += row.failed
                total.lost += row.lost
        if total:
            total.add(now, all_taps)

    def table(self) -> Table:
        limits = self.ctx.limits
        of = f" of {limits.duration:g} s" if limits.duration else ""
        table = Table(title=f"cxgw load {self.ctx.scenario} → {self.ctx.target}   "
                            f"{self.ctx.rec.elapsed:,.1f} s{of}",
                      title_justify="left", caption=f"rate and latency over the last "
                                                    f"{WINDOW_S:g} s", caption_justify="left")
        for name in ("", "sent", "delivered", "failed", "lost", "rate /s", "p50 ms", "p99 ms"):
            table.add_column(name, justify="left" if not name else "right",
                             style="bold" if not name else None)
        labels = [k for k in self._groups() if k in self.rows]
        if "total" in self.rows and len(labels) > 1:
            labels.append("total")
        for label in labels:
            row = self.rows[label]
            rate = row.rate()
            p50, p99 = row.percentiles()
            table.add_row(
                label, f"{row.sent:,}", f"[green]{row.delivered:,}[/]",
                f"[red]{row.failed:,}[/]" if row.failed else "0",
                f"[red]{row.lost:,}[/]" if row.lost else "0",
                "-" if rate is None else f"[cyan]{rate:,.0f}[/]",
                "-" if p50 is None else f"{p50:,.1f}",
                "-" if p99 is None else f"{p99:,.1f}",
                end_section=len(labels) > 1 and label == labels[-2] and labels[-1] == "total")
        return table


@contextlib.asynccontextmanager
async def live_progress(ctx: RunContext, enabled: bool,
                        console: Console | None = None) -> AsyncIterator[ProgressView | None]:
    """Show the live table when `enabled` and the console is a terminal; else do nothing."""
    console = console or Console()
    if not enabled or not console.is_terminal:
        yield None
        return
    from rich.live import Live

    view = ProgressView(ctx)
    view.update()
    with Live(view.table(), console=console, auto_refresh=False, transient=True) as live:
        async def tick() -> None:
            while True:
                await asyncio.sleep(REFRESH_S)
                view.update()
                live.update(view.table(), refresh=True)

        task = asyncio.ensure_future(tick())
        try:
            yield view
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
