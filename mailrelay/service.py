"""The mail component: address book, submission stage, queue scheduler and SMTP listeners,
built from explicit services and configuration (no globals)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from cxkernel.config import Config
from cxkernel.limiter import limiter_for
from cxkernel.listen import Listener, Subscription
from cxkernel.metrics import Metrics
from directory.auth import Authenticator
from directory.nodes import Node
from mailrelay import addressbook
from mailrelay.addressbook import AddressBook
from mailrelay.bounce import Bouncer
from mailrelay.inbound_auth.checker import InboundAuth
from mailrelay.inbound_auth.dns import AiodnsResolver, CachingResolver
from mailrelay.queue.scheduler import Scheduler
from mailrelay.sieve.delivery import SieveDelivery
from mailrelay.smtp.handler import ListenerPolicy, handler_for
from mailrelay.smtp.server import LiveSessions, start_listener
from mailrelay.submit import Submitter

log = logging.getLogger("cxgw.mail")


class LiveAddressBook:
    """Keeps the address book fresh: reload on `directory_changed` (and after the LISTEN
    connection comes back), usage every few seconds."""

    def __init__(self, pool: asyncpg.Pool, domain: str, refresh: float = 5.0,
                 roles: dict[str, str] | None = None,
                 listener: Listener | None = None) -> None:
        self.pool = pool
        self.domain = domain
        self.roles = roles or {}
        self.refresh = refresh
        self.book = AddressBook(domain)
        self._dirty = asyncio.Event()
        self._reloading = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._listener = listener or Listener(pool)
        self._own_listener = listener is None
        self._sub: Subscription | None = None

    def __call__(self) -> AddressBook:
        return self.book

    async def start(self) -> None:
        self.book = await addressbook.load(self.pool, self.domain, self.roles)
        self._sub = await self._listener.subscribe("directory_changed", self._changed,
                                                   self._dirty.set)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _changed(self, payload: str) -> None:
        self._dirty.set()

    async def reload(self) -> None:
        # One load at a time: a background reload begun before a change must not finish
        # after (and overwrite) an explicit reload that saw the change.
        async with self._reloading:
            self.book = await addressbook.load(self.pool, self.domain, self.roles)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._dirty.wait(), self.refresh)
                await asyncio.sleep(0.05)  # coalesce a burst of directory changes
            except TimeoutError:
                pass
            self._dirty.clear()
            try:
                await self.reload()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("address book reload failed: %s", exc)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.close()
        if self._own_listener:
            await self._listener.stop()


def dkim_signer(cfg: Config) -> Callable[[bytes], bytes] | None:
    """The DKIM signing function when signing is on and a key exists."""
    path = cfg.dkim_key_path
    if not cfg.dkim.sign or not path.is_file():
        return None
    from mailrelay.dkim import DkimSigner
    signer = DkimSigner(cfg.server.domain, cfg.dkim.selector, path.read_bytes())
    log.info("DKIM signing as %s._domainkey.%s", cfg.dkim.selector, cfg.server.domain)
    return signer.sign


def listener_policy(cfg: Config, role: str,
                    nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> ListenerPolicy:
    """The policy of one SMTP listener from `[smtp]`; bare list names get our domain."""
    c = cfg.smtp
    domain = cfg.server.domain.lower()
    open_lists = frozenset(x.strip().lower() if "@" in x or x.strip() == "*"
                           else f"{x.strip().lower()}@{domain}" for x in c.open_lists)
    return ListenerPolicy(role, c.max_recipients, nets, open_lists, c.large_alias_members,
                          c.soft_error_limit, c.hard_error_limit, c.error_sleep_time)


def inbound_auth(cfg: Config) -> InboundAuth | None:
    """SPF/DKIM/ARC/DMARC checks for the port-25 role, DNS through aiodns with a cache."""
    ia = cfg.inbound_auth
    if not ia.enabled:
        return None
    resolver = CachingResolver(AiodnsResolver(ia.dns_servers, ia.dns_timeout), ia.dns_cache_max)
    return InboundAuth(resolver, ia.authserv_id or cfg.server.host_name,
                       enforce=ia.enforce_dmarc, check_loopback=ia.check_loopback)


@dataclass
class MailParts:
    book: LiveAddressBook
    submitter: Submitter
    scheduler: Scheduler


def build(pool: asyncpg.Pool, cfg: Config, metrics: Metrics, *, node: Node | None = None,
          listener: Listener | None = None) -> MailParts:
    """Address book, submission stage and scheduler (also used by the CLI's `mail send`)."""
    book = LiveAddressBook(pool, cfg.server.domain,
                           roles={"postmaster": cfg.mail.postmaster, "abuse": cfg.mail.abuse},
                           listener=listener)
    host = cfg.server.host_name
    submitter = Submitter(pool, book, host, metrics, dkim=dkim_signer(cfg), domain=cfg.server.domain,
                          group_commit_ms=cfg.smtp.group_commit_ms)
    remote = None
    try:
        from mailrelay.delivery.remote import RemoteDelivery
        remote = RemoteDelivery(cfg.relay, host)
    except ImportError:  # pragma: no cover - the remote transport ships with the package
        log.warning("remote delivery unavailable")
    bouncer = Bouncer(pool, submitter, host, cfg.server.domain, cfg.queue)
    scheduler = Scheduler(pool, cfg.queue, book, remote, bouncer, metrics, node=node,
                          listener=listener)
    submitter.on_committed = scheduler.nudge
    scheduler.sieve = SieveDelivery(pool, submitter, host, cfg.server.domain)
    submitter.on_delivered = bouncer.delivered_inline
    return MailParts(book, submitter, scheduler)


class MailComponent:
    """SMTP listeners plus the queue scheduler."""

    name = "mail"

    def __init__(self, pool: asyncpg.Pool, cfg: Config, auth: Authenticator,
                 tls: ssl.SSLContext, metrics: Metrics, *, node: Node | None = None,
                 listener: Listener | None = None) -> None:
        self.cfg = cfg
        self.pool = pool
        self.auth = auth
        self.tls = tls
        self.metrics = metrics
        self.parts = build(pool, cfg, metrics, node=node, listener=listener)
        self.inbound = inbound_auth(cfg)
        self.servers: list[asyncio.base_events.Server] = []
        self.sessions = LiveSessions()

    async def start(self) -> list[tuple[str, str, int, str]]:
        await self.parts.book.start()
        await self.parts.scheduler.start()
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in self.cfg.smtp.trusted_networks)
        out = []
        for role in ("smtp", "submission", "submissions"):
            addr = self.cfg.listen_addr(role)
            if addr is None:
                continue
            policy = listener_policy(self.cfg, role, nets)
            handler = handler_for(policy, book=self.parts.book, submitter=self.parts.submitter,
                                  auth=self.auth if policy.submission else None,
                                  metrics=self.metrics,
                                  inbound=self.inbound if role == "smtp" else None,
                                  srs_reverse=self.srs_reverse)
            server = await start_listener(role, addr[0], addr[1], handler,
                                          hostname=self.cfg.server.host_name, tls=self.tls,
                                          max_size=self.cfg.smtp.max_message_size,
                                          timeout=self.cfg.smtp.timeout,
                                          max_unauth_line=self.cfg.smtp.max_unauth_line,
                                          live=self.sessions,
                                          limiter=limiter_for(self.cfg.limits, role,
                                                              self.metrics))
            self.servers.append(server)
            port = server.sockets[0].getsockname()[1]
            out.append((role, addr[0], port, "implicit" if role == "submissions" else "starttls"))
        return out

    async def srs_reverse(self, address: str) -> str | None:
        """The original sender behind one of our SRS0 addresses (bounces of redirects)."""
        sieve = self.parts.scheduler.sieve
        return await sieve.reverse(address) if isinstance(sieve, SieveDelivery) else None

    async def stop(self) -> None:
        for s in self.servers:
            s.close()  # stop accepting; sessions in DATA finish their submit
        self.sessions.shutdown()  # 421 4.3.2 now, or right after DATA's reply
        if not await self.sessions.drained(10):
            log.warning("stopping with SMTP sessions still inside DATA")
        await self.parts.submitter.close()
        await self.parts.scheduler.stop()
        await self.parts.book.stop()
