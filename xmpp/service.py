"""The XMPP component: directory snapshot, feature modules, router and c2s listeners,
built from explicit services (no globals). ``gateway.wiring_xmpp`` plugs it in."""

from __future__ import annotations

import logging
import ssl

import asyncpg

from cxkernel.config import Config, parse_hostport
from cxkernel.events import EventBus
from cxkernel.limiter import limiter_for
from cxkernel.listen import Listener, Subscription
from cxkernel.metrics import Metrics
from directory.auth import Authenticator
from directory.model import Account
from directory.nodes import Node
from directory.service import DirectoryService

from . import component, features
from .cluster import Cluster
from .dircache import DirectoryCache, Snapshot
from .hooks import Hooks
from .host import Host
from .proto.errors import StreamError
from .router import Router
from .server import C2SServer
from .stores import Stores

log = logging.getLogger("cxgw.xmpp")


class XmppComponent:
    """Start: load the directory, register features, listen. Stop: ``system-shutdown``."""

    def __init__(self, pool: asyncpg.Pool, cfg: Config, directory: DirectoryService,
                 auth: Authenticator, tls: ssl.SSLContext, bus: EventBus | None = None,
                 metrics: Metrics | None = None,
                 feature_names: tuple[str, ...] = features.DEFAULT, *,
                 listener: Listener | None = None, node: Node | None = None) -> None:
        self.cfg = cfg
        self.directory_service = directory
        self.auth = auth
        self.tls = tls
        self.metrics = metrics or Metrics()
        # The one place stores are built: features get them from the host, never
        # make their own (issue 14 item 6).
        self.stores = Stores.postgres(pool)
        self.store = self.stores.xmpp
        domain = cfg.server.domain
        cache = DirectoryCache(self._load_directory)
        hooks = Hooks()
        bus = bus or EventBus()
        router = Router(domain, bus, hooks, cache.exists)
        self.host = Host(domain, cfg.xmpp, bus, hooks, router, cache, self.stores)
        self.feature_names = feature_names
        self.c2s: C2SServer | None = None
        self.component_server: component.ComponentServer | None = None
        # directory_changed over the process's self-healing LISTEN connection; after a
        # reconnect the snapshot reloads (a user added meanwhile becomes known).
        self._listener = listener or Listener(pool)
        self._own_listener = listener is None
        self._sub: Subscription | None = None
        # Issue 14: with a node identity, sessions and stanzas cross to the other nodes
        # sharing the database (xmpp.cluster); without one (unit tests) this is one node.
        self.node = node
        self.cluster: Cluster | None = None
        if node is not None:
            self.cluster = Cluster(router, pool, node.id, self._listener,
                                   node.cfg.dead_seconds, self.metrics, self.host.spawn,
                                   resume_window=float(cfg.xmpp.sm_resume_timeout))

    async def _load_directory(self) -> tuple[list[Account], dict[str, str]]:
        units = {u.code: u.name for u in await self.directory_service.list_units()}
        return await self.directory_service.list_users(), units

    async def start(self) -> list[tuple[str, str, int, str]]:
        """Returns (role, host, port, tls) for each listener."""
        host = self.host
        host.directory.listeners.append(self._kick_removed)
        await host.directory.load()
        features.load(host, self.feature_names)
        await host.start()
        self._sub = await self._listener.subscribe(
            "directory_changed", lambda _payload: host.directory.changed(),
            host.directory.changed)
        # Other nodes' changes to rows that features keep or push (xmpp.changes).
        await host.changes.start(self._listener)
        host.directory.start()
        if self.cluster is not None and self.node is not None:
            await self.cluster.start()
            self.node.add_reaper("xmpp sessions", self.cluster.reap)
        self.c2s = C2SServer(host, self.auth, self.tls, self.metrics, {
            r: limiter_for(self.cfg.limits, r, self.metrics) for r in ("xmpp", "xmpps")})
        out: list[tuple[str, str, int, str]] = []
        for role, direct in (("xmpp", False), ("xmpps", True)):
            addr = self.cfg.listen_addr(role)
            if addr is None:
                continue
            port = await self.c2s.listen(addr[0], addr[1], direct)
            out.append((role, addr[0], port, "implicit" if direct else "starttls"))
        secrets = {}
        for item in self.cfg.xmpp.components:  # "domain=secret", checked by the config
            domain, _, secret = item.partition("=")
            secrets[domain.strip().lower()] = secret
        listen = self.cfg.listen.xmpp_component
        if secrets and listen:  # XEP-0114 listener, only when components are configured
            x = self.cfg.xmpp
            self.component_server = component.ComponentServer(
                host, secrets, limiter_for(self.cfg.limits, "xmpp_component", self.metrics),
                rate=x.component_rate_bytes_per_s, auth_delay=x.component_auth_delay,
                max_unauth_stanza=x.max_unauth_stanza_size)
            chost, cport = parse_hostport(listen)
            cport = await self.component_server.listen(chost, cport)
            out.append(("xmpp_component", chost, cport, "none"))
        return out

    def end_sessions(self, bare: str, keep: str = "") -> int:
        """End every session of `bare` but the one whose full JID is `keep` (its password
        changed): live streams get ``not-authorized``, hibernating ones (XEP-0198) are
        released so they cannot be resumed with the old credentials."""
        n = 0
        for session in list(self.host.router.resources(bare)):
            if session.full == keep:
                continue
            n += 1
            release = getattr(session, "release", None)
            if getattr(session, "ended", False) and release is not None:
                release()
            else:
                session.close_stream(StreamError("not-authorized", "Password changed"))
        return n

    async def _kick_removed(self, old: Snapshot, new: Snapshot) -> None:
        """Accounts disabled, removed or renamed lose their sessions at once."""
        for bare in [b for b in self.host.router.accounts() if b not in new.accounts]:
            for session in self.host.router.resources(bare):
                session.close_stream(StreamError("not-authorized", "Account disabled"))

    async def stop(self) -> None:
        if self.component_server is not None:
            await self.component_server.stop()
        if self.c2s is not None:
            await self.c2s.stop()
        if self.cluster is not None and self.node is not None:
            self.node.remove_reaper("xmpp sessions")
            await self.cluster.stop()
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.close()
        await self.host.changes.stop()
        if self._own_listener:
            await self._listener.stop()
        await self.host.directory.stop()
        await self.host.stop()
