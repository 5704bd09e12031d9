"""Group commit's scheduling, once: items wait in a list; whenever one of `max_inflight`
slots is free, everything pending (up to `max_batch`, after an optional `window` to let a
batch gather) becomes one batch handed to `run`, in a task of its own.

`run(batch)` does the writing and answers each item's waiter (a future the caller keeps
in the item); the batcher only schedules. Used by the mail submission stage
(`mailrelay.submit.Submitter`) and by documents delivered while sent
(`mailrelay.documents.ownsend`). Stdlib only (cxkernel).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Batcher"]


class Batcher(Generic[T]):
    def __init__(self, run: Callable[[list[T]], Awaitable[None]], *, max_batch: int,
                 max_inflight: int, window: float = 0.0) -> None:
        self.run = run
        self.max_batch = max_batch
        self.window = window
        self.pending: list[T] = []
        self._slots = asyncio.Semaphore(max_inflight)
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, item: T) -> None:
        self.pending.append(item)
        self._ensure_writer()

    @property
    def busy(self) -> bool:
        """Items waiting, batches being written, or the scheduler still running."""
        return bool(self.pending or self._inflight
                    or (self._task is not None and not self._task.done()))

    async def drain(self) -> None:
        """Wait until everything added so far has been written (or failed)."""
        while self.busy:
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
            else:
                await asyncio.sleep(0.01)

    def _ensure_writer(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._writer())

    async def _writer(self) -> None:
        """Take everything pending as one batch whenever a commit slot is free."""
        while self.pending:
            await self._slots.acquire()
            if self.window and len(self.pending) < self.max_batch:
                await asyncio.sleep(self.window)  # let a batch gather
            batch, self.pending = self.pending[:self.max_batch], self.pending[self.max_batch:]
            if not batch:
                self._slots.release()
                break
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            await asyncio.sleep(0)

    async def _run(self, batch: list[T]) -> None:
        try:
            await self.run(batch)
        finally:
            self._slots.release()
            if self.pending:
                self._ensure_writer()
