"""Live progress while a run goes: a one-line rich display refreshed a few times a second."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from load.stats import Recorder


def _line(scenario: str, rec: Recorder) -> str:
    s = rec.snapshot()
    p99 = f"{s['p99_ms']:.1f}" if s["p99_ms"] is not None else "-"
    return (f"[bold]{scenario}[/] {s['elapsed']:6.1f}s  sent {s['sent']:,}  "
            f"accepted {s['accepted']:,}  failed {s['failed']:,}  lost {s['lost']:,}  "
            f"[cyan]{s['rate']:,.0f}/s[/]  p99 {p99} ms")


@contextlib.asynccontextmanager
async def live_progress(scenario: str, rec: Recorder, enabled: bool) -> AsyncIterator[None]:
    """Show progress when `enabled` and stdout is a terminal; otherwise do nothing."""
    if not enabled or not sys.stdout.isatty():
        yield
        return
    from rich.live import Live

    with Live(_line(scenario, rec), refresh_per_second=4, transient=True) as live:
        async def tick() -> None:
            while True:
                await asyncio.sleep(0.25)
                live.update(_line(scenario, rec))

        task = asyncio.ensure_future(tick())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
