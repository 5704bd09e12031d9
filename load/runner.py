"""The driver: hands numbered tickets to connection workers, closed or open loop, always bounded.

- Closed loop (default): N workers each start their next message as soon as the previous
  one is answered, until the count or the duration is reached.
- Open loop (`--rate R`): a pacer issues tickets at R per second regardless of replies;
  N workers take them from a queue. Tickets still queued when the duration ends are never
  started (counted in `not_started`, not in `sent`), so a run that cannot keep up still
  ends on time. The wait between the due time and the actual start
  is recorded in the `lag` histogram, so a server (or harness) that falls behind shows up
  instead of being hidden by coordinated omission.

Every run is capped by `max_duration`: in-flight work is then cancelled and the workers
account for what they had started (`aborted`), so the books still balance.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from load.options import Limits
from load.stats import Recorder


@dataclass(frozen=True)
class Ticket:
    """One unit of work: the `seq`-th message, due at monotonic time `due`."""

    seq: int
    due: float


class Worker(Protocol):
    """What a scenario supplies per connection."""

    async def handle(self, ticket: Ticket) -> None: ...

    async def close(self) -> None: ...


async def _closed_loop(workers: list[Worker], limits: Limits, deadline: float) -> None:
    counter = itertools.count()

    async def run(w: Worker) -> None:
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return
                seq = next(counter)
                if limits.count is not None and seq >= limits.count:
                    return
                await w.handle(Ticket(seq, now))
        finally:
            await w.close()

    await asyncio.gather(*(run(w) for w in workers))


async def _open_loop(workers: list[Worker], limits: Limits, deadline: float,
                     rec: Recorder) -> None:
    assert limits.rate
    queue: asyncio.Queue[Ticket | None] = asyncio.Queue()
    interval = 1.0 / limits.rate

    async def pace() -> None:
        t0 = time.monotonic()
        seq = 0
        try:
            while limits.count is None or seq < limits.count:
                now = time.monotonic()
                if now >= deadline:
                    break
                due = t0 + seq * interval
                if due > now:
                    await asyncio.sleep(due - now)
                    continue
                # issue everything that is due now (cheap at high rates)
                while due <= now and (limits.count is None or seq < limits.count):
                    queue.put_nowait(Ticket(seq, due))
                    seq += 1
                    due = t0 + seq * interval
        finally:
            for _ in workers:
                queue.put_nowait(None)

    async def run(w: Worker) -> None:
        try:
            while (t := await queue.get()) is not None:
                now = time.monotonic()
                if now >= deadline:  # behind schedule at the end: never start these
                    rec.not_started += 1
                    continue
                rec.record_latency("lag", max(now - t.due, 0.0))
                await w.handle(t)
        finally:
            await w.close()

    await asyncio.gather(pace(), *(run(w) for w in workers))


async def drive(limits: Limits, make_worker: Callable[[int], Worker], rec: Recorder) -> bool:
    """Run the workers until the limits say stop; return False if the hard cap cut it short."""
    start = time.monotonic()
    deadline = start + (limits.duration if limits.duration is not None else limits.max_duration)
    deadline = min(deadline, start + limits.max_duration)
    workers = [make_worker(i) for i in range(limits.connections)]
    if limits.rate:
        body = _open_loop(workers, limits, deadline, rec)
    else:
        body = _closed_loop(workers, limits, deadline)
    task = asyncio.ensure_future(body)
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=limits.max_duration)
        return True
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
