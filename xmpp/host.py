"""What feature modules get: the served domain, the bus and hooks, the router, the
directory snapshot, their stores (``xmpp.stores``: required, never defaulted), the
feature-cache notices of other nodes (``xmpp.changes``), and the disco registry (features
advertise only what they implement, XEP-0030 §3)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cxkernel.config import XMPPConfig
from cxkernel.events import EventBus

from .changes import Changes
from .dircache import DirectoryCache
from .hooks import Hooks
from .repo import XmppStore
from .router import Router

if TYPE_CHECKING:  # stores imports the feature packages, which import this module
    from .stores import Stores

log = logging.getLogger("cxgw.xmpp")


@dataclass
class Host:
    domain: str
    cfg: XMPPConfig
    bus: EventBus
    hooks: Hooks
    router: Router
    directory: DirectoryCache
    stores: Stores
    #: Feature caches subscribe here to other nodes' row changes (``xmpp.changes``).
    changes: Changes = field(default_factory=Changes)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Disco features of the server (XEP-0030) and of accounts (bare JIDs).
    features: list[str] = field(default_factory=list)
    account_features: list[str] = field(default_factory=list)
    identities: list[tuple[str, str, str]] = field(default_factory=list)
    #: Identities of accounts' bare JIDs beyond account/registered (e.g. pubsub/pep).
    account_identities: list[tuple[str, str, str]] = field(default_factory=list)
    #: Extended disco#info forms of the server (XEP-0128), e.g. XEP-0157 contacts.
    server_forms: list[Any] = field(default_factory=list)
    #: Stream features the core should advertise (e.g. roster versioning).
    stream_features: set[str] = field(default_factory=set)
    _starters: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _stoppers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _pressure: set[str] = field(default_factory=set)

    @property
    def store(self) -> XmppStore:
        """The core store (roster, offline, private, blocklist, last, avatar)."""
        return self.stores.xmpp

    def add_feature(self, namespace: str, *, account: bool = False) -> None:
        """Advertise `namespace` on the server (and on accounts' bare JIDs if asked)."""
        if namespace not in self.features:
            self.features.append(namespace)
        if account and namespace not in self.account_features:
            self.account_features.append(namespace)

    def add_identity(self, category: str, type_: str, name: str = "", *,
                     account: bool = False) -> None:
        """Advertise an identity on the server (or, with `account`, on accounts)."""
        (self.account_identities if account else self.identities).append((category, type_, name))

    # -- back-pressure -------------------------------------------------------------------------
    # A feature whose work queue outruns its writer (the archive, under a flood) says so;
    # the c2s driver then stops reading from clients until every source is clear again, so
    # memory stays bounded and nothing is dropped. Sync hook "c2s/pressure" gets the state.
    def set_pressure(self, source: str, on: bool) -> None:
        before = bool(self._pressure)
        if on:
            self._pressure.add(source)
        else:
            self._pressure.discard(source)
        after = bool(self._pressure)
        if after != before:
            self.hooks.fire("c2s/pressure", after)

    @property
    def under_pressure(self) -> bool:
        return bool(self._pressure)

    def on_start(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._starters.append(fn)

    async def start(self) -> None:
        for fn in self._starters:
            await fn()

    def on_stop(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._stoppers.append(fn)

    def spawn(self, coro: Awaitable[Any]) -> None:
        """A background task the host keeps a reference to (and logs failures of)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("xmpp background task failed", exc_info=t.exception())

        task.add_done_callback(done)

    async def stop(self) -> None:
        for fn in reversed(self._stoppers):
            try:
                await fn()
            except Exception:
                log.exception("xmpp stop hook failed")
        for task in list(self._tasks):
            task.cancel()
