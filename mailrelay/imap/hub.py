"""Mailbox change fan-out: one LISTEN connection per process, many sessions.

The store NOTIFYs ``mailbox_changed`` with a comma-separated list of mailbox ids after
every committed change (delivery, APPEND, STORE, EXPUNGE, COPY, MOVE, from any
process). The hub asks the store once per notified mailbox for the changes since the
oldest MODSEQ any subscriber has seen, and hands them to each subscriber, which keeps
only what is new to it. No task exists while nothing changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

import asyncpg

from cxkernel.listen import Listener, Subscription

from .pgstore import NOTIFY_CHANNEL
from .store_api import Change, MailStore

__all__ = ["ChangeHub", "Subscriber"]

log = logging.getLogger("cxgw.imap")


class Subscriber(Protocol):
    def known_modseq(self, mailbox_id: int) -> int | None:
        """The MODSEQ this subscriber has seen for the mailbox, None if not interested."""
        ...

    async def deliver_changes(self, mailbox_id: int, changes: Sequence[Change]) -> None: ...


class ChangeHub:
    def __init__(self, pool: asyncpg.Pool, store: MailStore,
                 listener: Listener | None = None) -> None:
        self.pool = pool
        self.store = store
        self.subs: dict[int, set[Subscriber]] = {}
        self._running: set[int] = set()
        self._again: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # The process's self-healing LISTEN connection (cxkernel.listen); its catch-up
        # after a reconnect makes every watched mailbox look again.
        self._listener = listener or Listener(pool)
        self._own_listener = listener is None
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._listener.subscribe(NOTIFY_CHANNEL, self._on_notify,
                                                   self._caught_up)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.close()
        if self._own_listener:
            await self._listener.stop()

    @property
    def listening(self) -> bool:
        return self._sub is not None and self._listener.listening

    def check(self) -> None:
        """Look at the LISTEN connection now (the server's sweeper calls this)."""
        if self._sub is not None:
            self._listener.check()

    def _caught_up(self) -> None:
        """Whatever changed while nobody listened: every watched mailbox looks again."""
        for mid in list(self.subs):
            self.changed(mid)

    # -- subscriptions -------------------------------------------------------------------
    def subscribe(self, mailbox_id: int, sub: Subscriber) -> None:
        self.subs.setdefault(mailbox_id, set()).add(sub)

    def unsubscribe(self, mailbox_id: int, sub: Subscriber) -> None:
        s = self.subs.get(mailbox_id)
        if s is not None:
            s.discard(sub)
            if not s:
                del self.subs[mailbox_id]

    # -- notifications -------------------------------------------------------------------
    def _on_notify(self, payload: str) -> None:
        for part in payload.split(","):
            try:
                mid = int(part)
            except ValueError:
                continue
            if mid in self.subs:
                self.changed(mid)

    def changed(self, mailbox_id: int) -> None:
        """Schedule a refresh of one mailbox (coalesced while one runs)."""
        if mailbox_id in self._running:
            self._again.add(mailbox_id)
            return
        self._running.add(mailbox_id)
        t = asyncio.get_running_loop().create_task(self._refresh(mailbox_id))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _refresh(self, mid: int) -> None:
        try:
            while True:
                self._again.discard(mid)
                subs = list(self.subs.get(mid, ()))
                known = [m for s in subs if (m := s.known_modseq(mid)) is not None]
                if not known:
                    return
                try:
                    changes = await self.store.changes_since(mid, min(known))
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("mailbox %d refresh failed: %s", mid, exc)
                    return
                if changes:
                    results = await asyncio.gather(
                        *(s.deliver_changes(mid, changes) for s in subs), return_exceptions=True
                    )
                    for r in results:
                        if isinstance(r, BaseException):  # one broken session must not stop others
                            log.error("delivering changes to a session failed: %r", r)
                if mid not in self._again:
                    return
        finally:
            self._running.discard(mid)
