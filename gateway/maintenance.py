"""Storage maintenance, a component of its own (issue 13 item 7).

Runs on every node, whatever listeners are enabled (it was inside the IMAP server, so
with IMAP off bodies were never collected):
- message bodies nothing refers to any more (the tables each package declares in
  `mailrelay.bodies`), every `maintenance.body_gc_seconds`;
- delivery history older than `queue.history_days` (its bodies become candidates);
- expired upload slots and files, and `.part` leftovers of interrupted uploads, every
  `maintenance.sweep_seconds`.
Every step is safe on several nodes at once (SKIP LOCKED, idempotent deletes) and a
failing step (database restarting, disk trouble) is logged and tried next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.app import COMPONENT_FACTORIES, Endpoint, Services
from mailrelay.bodies import all_refs
from mailrelay.gc_repo import collect_bodies
from mailrelay.queue import repo as queue_repo

log = logging.getLogger("cxgw.maintenance")

PART_MAX_AGE = 3600.0  # a `.part` file older than this is no write in progress


class Maintenance:
    name = "maintenance"

    def __init__(self, s: Services) -> None:
        self.s = s
        self.cfg = s.cfg
        self._tasks: list[asyncio.Task[None]] = []
        s.components["maintenance"] = self

    async def start(self) -> list[Endpoint]:
        loop = asyncio.get_running_loop()
        m = self.cfg.maintenance
        self._tasks = [loop.create_task(self._every(m.body_gc_seconds, self.collect_bodies)),
                       loop.create_task(self._every(m.sweep_seconds, self.sweep))]
        return []

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    async def _every(self, seconds: float, job: Callable[[], Awaitable[int]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception as exc:  # noqa: BLE001 - next round tries again
                log.warning("maintenance %s failed: %r", job.__name__, exc)

    async def collect_bodies(self) -> int:
        """Delete unreferenced bodies, up to 100,000 a round in batches of 1,000."""
        refs = all_refs()
        total = 0
        for _ in range(100):
            async with self.s.db.pool.acquire() as conn:
                n = await collect_bodies(conn, refs, 1000)
            total += n
            if n < 1000:
                break
        if total:
            log.info("collected %d message bodies", total)
        return total

    async def sweep(self) -> int:
        """Delivery history and uploads (slots, files, `.part` leftovers)."""
        async with self.s.db.pool.acquire() as conn:
            n = await queue_repo.expire_history(conn, self.cfg.queue.history_days)
        from xmpp.features.upload import expire_files, remove_partials
        from xmpp.features.upload.repo import UploadStore
        directory = self.cfg.state_path / "upload"
        n += await expire_files(UploadStore(self.s.db.pool), directory,
                                float(self.cfg.xmpp.upload_expiry))
        parts = await asyncio.to_thread(remove_partials, directory, PART_MAX_AGE)
        if parts:
            log.warning("removed %d interrupted upload files (.part)", parts)
        return n + parts


def factory(s: Services) -> Any:
    return Maintenance(s)


COMPONENT_FACTORIES.append(factory)
