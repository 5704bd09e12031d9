"""Node identity: this process's row in the `nodes` table, its heartbeat, and the takeover
of dead nodes' work.

Every stateful piece that leases rows to a process (the mail queue now, XMPP sessions
later) names the owner by `Node.id` and registers a *reaper*: a coroutine run after each
heartbeat that hands back whatever is held by an owner that is not a live node. A node is
live while its heartbeat is younger than `node.dead_seconds` by the database's clock, so
the rule holds across hosts (no `kill(pid, 0)`, no hostname comparison) and two
containers with one hostname never release each other's work.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from cxkernel.config import NodeConfig
from directory import nodes_repo

__all__ = ["Node", "Reaper", "list_nodes", "new_node_id"]

log = logging.getLogger("cxgw.node")

# Called with `dead_seconds`; hands back what dead owners hold; returns how many items.
Reaper = Callable[[float], Awaitable[int]]


async def list_nodes(pool: Any, dead_seconds: float) -> list[dict[str, Any]]:
    """Every registered node (`cxgw node list`): id, host, pid, started, heartbeat age."""
    async with pool.acquire() as conn:
        return await nodes_repo.listing(conn, dead_seconds)


def new_node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Node:
    """This process as seen by the others: register, beat, reap, deregister."""

    def __init__(self, pool: Any, cfg: NodeConfig, node_id: str | None = None) -> None:
        self.pool = pool
        self.cfg = cfg
        self.id = node_id or new_node_id()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.reapers: dict[str, Reaper] = {}
        self._task: asyncio.Task[None] | None = None
        self.beats = 0  # successful heartbeats (tests and /metrics)

    def add_reaper(self, name: str, reaper: Reaper) -> None:
        self.reapers[name] = reaper

    def remove_reaper(self, name: str) -> None:
        self.reapers.pop(name, None)

    async def start(self) -> None:
        async with self.pool.acquire() as conn:
            await nodes_repo.register(conn, self.id, self.host, self.pid)
        log.info("node %s registered", self.id)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop beating and delete our row, so others need not wait for it to age. When the
        database is unreachable the row ages out and the others take over."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            async with self.pool.acquire() as conn:
                await asyncio.wait_for(nodes_repo.remove(conn, self.id), 5)
        except Exception as exc:  # noqa: BLE001 - any database failure: left to expiry
            log.warning("node %s: could not remove its row (%s); others take over after"
                        " %.0fs", self.id, exc, self.cfg.dead_seconds)

    async def _run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.cfg.heartbeat_seconds)
            try:
                await self.beat()
                if failing:
                    log.warning("node %s: heartbeat restored", self.id)
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - database down: keep trying
                if not failing:
                    log.warning("node %s: heartbeat failed: %s", self.id, exc)
                failing = True

    async def beat(self) -> None:
        """One heartbeat, then every reaper (also callable directly, e.g. at start)."""
        async with self.pool.acquire() as conn:
            if not await nodes_repo.beat(conn, self.id, self.host, self.pid):
                log.error("node %s: our row was gone (declared dead after a %.0fs silence);"
                          " leases we held may have been taken over", self.id,
                          self.cfg.dead_seconds)
            dead = await nodes_repo.dead(conn, self.cfg.dead_seconds)
        self.beats += 1
        await self.reap()
        if dead:
            async with self.pool.acquire() as conn:
                if await nodes_repo.forget(conn, dead, self.cfg.dead_seconds):
                    log.warning("nodes %s stopped beating; their work was taken over",
                                ", ".join(dead))

    async def reap(self) -> int:
        n = 0
        for name, reaper in list(self.reapers.items()):
            try:
                got = await reaper(self.cfg.dead_seconds)
            except Exception as exc:  # noqa: BLE001 - one reaper must not stop the others
                log.warning("node reaper %s failed: %s", name, exc)
                continue
            if got:
                log.warning("took over %d %s of dead nodes", got, name)
            n += got
        return n
