"""An in-memory snapshot of the directory for XMPP: who exists, names, units.

Routing asks "does this account exist?" for every stanza, so the answer must not cost a
query: the snapshot holds the active accounts and the units, reloaded when the directory
fires ``directory_changed`` (bursts coalesced). Features read it for shared roster groups,
vCards and search.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from directory.model import Account

log = logging.getLogger("cxgw.xmpp.directory")


@dataclass(frozen=True)
class Snapshot:
    """Active accounts by bare JID, unit names by code, members by unit code."""

    accounts: dict[str, Account] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)
    version: int = 0

    @classmethod
    def build(cls, accounts: list[Account], units: dict[str, str], version: int) -> Snapshot:
        active = {a.address: a for a in accounts if a.active}
        members: dict[str, list[str]] = {}
        for a in sorted(active.values(), key=lambda a: a.address):
            members.setdefault(a.unit, []).append(a.address)
        return cls(active, dict(units), {k: tuple(v) for k, v in members.items()}, version)


Loader = Callable[[], Awaitable[tuple[list[Account], dict[str, str]]]]


class DirectoryCache:
    """The current Snapshot, kept fresh; ``exists`` is the routing check."""

    def __init__(self, loader: Loader) -> None:
        self._loader = loader
        self.snapshot = Snapshot()
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.listeners: list[Callable[[Snapshot, Snapshot], Awaitable[None]]] = []

    def exists(self, bare: str) -> bool:
        return bare in self.snapshot.accounts

    def account(self, bare: str) -> Account | None:
        return self.snapshot.accounts.get(bare)

    async def load(self) -> None:
        accounts, units = await self._loader()
        old = self.snapshot
        self.snapshot = Snapshot.build(accounts, units, old.version + 1)
        for listener in self.listeners:
            try:
                await listener(old, self.snapshot)
            except Exception:
                log.exception("directory change listener failed")

    def changed(self) -> None:
        """Called on ``directory_changed``: reload soon."""
        self._dirty.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(0.05)  # coalesce a burst of changes
            self._dirty.clear()
            try:
                await self.load()
            except Exception as exc:  # keep the old snapshot; retry on the next change
                log.warning("directory reload failed: %s", exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
