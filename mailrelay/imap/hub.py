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
from typing import Any, Protocol

import asyncpg

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
    def __init__(self, pool: asyncpg.Pool, store: MailStore) -> None:
        self.pool = pool
        self.store = store
        self.subs: dict[int, set[Subscriber]] = {}
        self._conn: Any = None
        self._running: set[int] = set()
        self._again: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reconnecting: asyncio.Task[None] | None = None
        self._stopped = True  # until start()

    #: the longest wait between two attempts to listen again
    RETRY_MAX = 5.0

    async def start(self) -> None:
        self._stopped = False
        conn = await self.pool.acquire()
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            conn.add_termination_listener(self._on_lost)
        except BaseException:
            await self.pool.release(conn)
            raise
        self._conn = conn

    async def stop(self) -> None:
        self._stopped = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.remove_termination_listener(self._on_lost)
                if self.listening_on(conn):
                    await conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
                await self.pool.release(conn)
            except asyncpg.InterfaceError:
                pass  # already closed and handed back

    # -- losing the LISTEN connection ----------------------------------------------------
    @property
    def listening(self) -> bool:
        # a dead pool connection is taken back by the pool: its proxy then raises
        return self._conn is not None and self.listening_on(self._conn)

    @staticmethod
    def listening_on(conn: Any) -> bool:
        try:
            return not conn.is_closed()
        except asyncpg.InterfaceError:
            return False

    def _on_lost(self, conn: object) -> None:
        """The LISTEN connection died (backend terminated, database restarted)."""
        self.check()

    def check(self) -> None:
        """Listen again if the connection is gone (also called by the server's sweeper,
        for a drop the driver did not report)."""
        if self._stopped or self._reconnecting is not None or self.listening:
            return
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.05
        try:
            old, self._conn = self._conn, None
            if old is not None:
                log.warning("mailbox change listener lost its connection; listening again")
                try:
                    await self.pool.release(old)
                except Exception:  # a dead connection: the pool replaces it
                    pass
            while not self._stopped:
                try:
                    await self.start()
                    break
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("mailbox change listener: %s; retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.RETRY_MAX)
            # whatever changed while nobody listened: every watched mailbox looks again
            for mid in list(self.subs):
                self.changed(mid)
        finally:
            self._reconnecting = None

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
    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
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
