"""One LISTEN connection per process that comes back by itself (ARCHITECTURE rule 12).

PostgreSQL forgets a session's LISTENs when the session ends: after a database restart, a
killed backend or a network cut, a listener that does not reconnect hears nothing again.
`Listener` owns one connection taken from the pool for all channels of the process,
notices its loss (the driver's termination callback, a cheap `is_closed` check twice a
second, and a `select 1` ping for a silent half-open socket), listens again with backoff
(50 ms doubling up to `retry_max`), and then runs every subscriber's `on_reconnect`
catch-up: whatever was notified while nobody listened is found by looking again (reload
the directory, poll the queue, refresh IMAP views).

Stdlib only: the pool and its connections are duck-typed (asyncpg's `Pool.acquire`,
`release`, `Connection.add_listener`, `remove_listener`, `add_termination_listener`,
`is_closed`, `execute`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Listener", "Subscription"]

log = logging.getLogger("cxgw.listen")

OnNotify = Callable[[str], None]
OnReconnect = Callable[[], "Awaitable[None] | None"]


@dataclass(eq=False)
class Subscription:
    channel: str
    on_notify: OnNotify
    on_reconnect: OnReconnect | None
    listener: Listener

    async def close(self) -> None:
        await self.listener.unsubscribe(self)


class Listener:
    """Channels -> subscribers over one self-healing LISTEN connection."""

    def __init__(self, pool: Any, *, retry_max: float = 1.0, check_every: float = 0.5,
                 ping_every: float = 10.0, connect_timeout: float = 10.0) -> None:
        self.pool = pool
        self.connect_timeout = connect_timeout
        self.retry_max = retry_max
        self.check_every = check_every
        self.ping_every = ping_every
        self.subs: dict[str, list[Subscription]] = {}
        self.reconnects = 0  # times the connection was re-established (tests, metrics)
        self._conn: Any = None
        self._lock = asyncio.Lock()  # one operation at a time on the connection
        self._look = asyncio.Event()  # wakes the watcher
        self._terminated = False  # the driver reported the connection gone
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.connected = asyncio.Event()

    # -- public ------------------------------------------------------------------------
    async def subscribe(self, channel: str, on_notify: OnNotify,
                        on_reconnect: OnReconnect | None = None) -> Subscription:
        """Hear `channel` (payload to `on_notify`); `on_reconnect` runs after each
        reconnection. Raises the driver's error when the database is unreachable now."""
        sub = Subscription(channel, on_notify, on_reconnect, self)
        first = channel not in self.subs
        self.subs.setdefault(channel, []).append(sub)
        try:
            await self._ensure()
            if first:
                async with self._lock:
                    if self._conn is not None and self._alive(self._conn):
                        await self._conn.add_listener(channel, self._dispatch)
        except BaseException:
            self._drop(sub)
            raise
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        if not self._drop(sub):
            return
        if sub.channel not in self.subs and self._conn is not None:
            async with self._lock:
                with contextlib.suppress(Exception):
                    if self._alive(self._conn):
                        await self._conn.remove_listener(sub.channel, self._dispatch)
        if not self.subs:
            await self.stop()

    def _drop(self, sub: Subscription) -> bool:
        subs = self.subs.get(sub.channel, [])
        if sub not in subs:
            return False
        subs.remove(sub)
        if not subs:
            del self.subs[sub.channel]
        return True

    @property
    def listening(self) -> bool:
        return self._conn is not None and self._alive(self._conn)

    def backend_pid(self) -> int | None:
        """The server process id of the LISTEN session (None while reconnecting)."""
        conn = self._conn
        if conn is None or not self._alive(conn):
            return None
        try:
            return int(conn.get_server_pid())
        except Exception:  # noqa: BLE001 - released meanwhile
            return None

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._release()
        self._stopped = False
        self.connected.clear()

    def check(self) -> None:
        """Look at the connection now (for a caller that suspects a drop)."""
        self._look.set()

    # -- the connection ----------------------------------------------------------------
    async def _ensure(self) -> None:
        if self._task is None:
            await self._connect()
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _connect(self) -> None:
        async with self._lock:
            # bounded: a host that does not answer must not stall the reconnection loop
            conn = await asyncio.wait_for(self.pool.acquire(), self.connect_timeout)
            try:
                for channel in self.subs:
                    await conn.add_listener(channel, self._dispatch)
                conn.add_termination_listener(self._on_terminated)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.pool.release(conn)
                raise
            self._conn = conn
            self._terminated = False
            self.connected.set()

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        async with self._lock:
            with contextlib.suppress(Exception):
                conn.remove_termination_listener(self._on_terminated)
            if self._alive(conn):
                for channel in list(self.subs):
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.remove_listener(channel, self._dispatch), 2)
            with contextlib.suppress(Exception):  # a dead connection: the pool replaces it
                await self.pool.release(conn)

    @staticmethod
    def _alive(conn: Any) -> bool:
        try:
            return not conn.is_closed()
        except Exception:  # noqa: BLE001 - a pool proxy of a released connection raises
            return False

    def _on_terminated(self, conn: object) -> None:
        self._terminated = True
        self._look.set()

    def _dispatch(self, conn: object, pid: int, channel: str, payload: str) -> None:
        for sub in list(self.subs.get(channel, ())):
            try:
                sub.on_notify(payload)
            except Exception:
                log.exception("LISTEN %s: subscriber failed", channel)

    async def _watch(self) -> None:
        since_ping = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._look.wait(), self.check_every)
            self._look.clear()
            since_ping += self.check_every
            conn = self._conn
            healthy = conn is not None and self._alive(conn) and not self._terminated
            if healthy and since_ping >= self.ping_every:
                since_ping = 0.0
                try:
                    async with self._lock:
                        await asyncio.wait_for(conn.execute("select 1"), 5)
                except Exception:  # noqa: BLE001 - a silent drop: listen again
                    healthy = False
            if not healthy:
                await self._reconnect()
                since_ping = 0.0

    async def _reconnect(self) -> None:
        log.warning("LISTEN connection lost (%s); listening again", ", ".join(self.subs))
        self.connected.clear()
        await self._release()
        delay = 0.05
        while True:
            try:
                await self._connect()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - database still away
                log.info("LISTEN: database unreachable (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
        self.reconnects += 1
        log.warning("LISTEN connection back (%s)", ", ".join(self.subs))
        for subs in list(self.subs.values()):
            for sub in list(subs):
                if sub.on_reconnect is None:
                    continue
                try:
                    res = sub.on_reconnect()
                    if inspect.isawaitable(res):
                        await res
                except Exception:
                    log.exception("LISTEN %s: catch-up after reconnect failed", sub.channel)
