"""The queue lease around a document arrival's state changes (ARCHITECTURE rule 14).

The scheduler hands the docs handler rows leased to this node. Every state change the
handler makes for them (verdict, registration of a delivery, a copy in the clerks'
INBOXes, a receipt) happens in one transaction that first locks the rows still leased
to us (:func:`mailrelay.queue.repo.lock_owned`, as local delivery does): a row whose
lease another node took over is skipped with a WARNING, and while we hold the lock no
reaper can hand the row to someone else.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from mailrelay.queue import repo as queue_repo
from mailrelay.queue.repo import QueueRow
from mailrelay.queue.scheduler import Outcome

log = logging.getLogger("cxgw.docs")

# What the handler answers for a row it no longer owns; the scheduler drops it anyway
# (it records outcomes only for rows still leased to it).
LEASE_LOST = Outcome("temp", 451, "4.4.0", "queue lease lost: another node handles it")


class LeaseLost(Exception):
    """The queue row is no longer leased to us: nothing was changed."""


@contextlib.asynccontextmanager
async def owned(pool: Any, rows: Sequence[QueueRow],
                owner: str) -> AsyncIterator[tuple[Any, list[QueueRow]]]:
    """A transaction holding the locks of those of ``rows`` still leased to ``owner``;
    yields (connection, those rows). The others are logged as lost."""
    async with pool.acquire() as conn, conn.transaction():
        mine = await queue_repo.lock_owned(conn, owner, [r.id for r in rows])
        for r in rows:
            if r.id not in mine:
                log.warning("lease lost on id=%s to=<%s> (row %d): another node owns it"
                            " now; the document is left to it", r.queue_id, r.recipient, r.id)
        yield conn, [r for r in rows if r.id in mine]
