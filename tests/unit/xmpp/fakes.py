"""Fakes for router and feature tests: in-memory stores (``tests.xmpp_doubles``),
sessions that record output, and a Host with every feature loaded over a small directory. No sockets, no database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from xml.etree.ElementTree import Element, fromstring

from cxkernel.config import XMPPConfig
from cxkernel.events import EventBus
from directory.model import Account, Role, Status
from tests.xmpp_doubles import MemoryStore, memory_stores
from xmpp import features
from xmpp.dircache import DirectoryCache
from xmpp.hooks import Hooks
from xmpp.host import Host
from xmpp.jid import JID
from xmpp.proto.errors import StreamError
from xmpp.router import Resource, Router, SessionEvent

__all__ = ["MemoryStore", "FakeSession", "World"]

DOMAIN = "cx.example"


class FakeSession(Resource):
    """Records delivered stanzas; lane jobs wait until ``drain()``."""

    __slots__ = ("out", "jobs", "closed_with")

    def __init__(self) -> None:
        super().__init__()
        self.out: list[Element] = []
        self.jobs: list[Callable[[], Awaitable[object]]] = []
        self.closed_with: StreamError | None = None

    def deliver_bytes(self, data: bytes) -> None:
        wrapped = b"<w xmlns='jabber:client'>" + data + b"</w>"
        self.out.extend(list(fromstring(wrapped)))

    def run(self, job: Callable[[], Awaitable[object]]) -> None:
        self.jobs.append(job)

    def close_stream(self, error: StreamError | None) -> None:
        self.closed_with = error

    def take(self) -> list[Element]:
        out, self.out = self.out, []
        return out


def account(local: str, unit: str, name: str, title: str = "") -> Account:
    return Account(hash(local) & 0xFFFF, f"{local}@{DOMAIN}", name, unit, title,
                   (Role.STAFF,), Status.ACTIVE, 0)


ACCOUNTS = [account("zhang.san", "finance", "张三", "科长"), account("li.si", "finance", "李四"),
            account("wang.wu", "health", "王五"), account("zhao.liu", "health", "赵六")]
UNITS = {"finance": "财政局", "health": "卫生健康委员会"}


class World:
    """A Host with all features, fake sessions and helpers to drive them."""

    def __init__(self, directory_groups: str = "unit", offline_max: int = 500) -> None:
        self.accounts = list(ACCOUNTS)
        self.units = dict(UNITS)
        self.stores = memory_stores()
        self.store = self.stores.xmpp
        self.cache = DirectoryCache(self._load)
        self.bus = EventBus()
        self.hooks = Hooks()
        self.router = Router(DOMAIN, self.bus, self.hooks, self.cache.exists)
        cfg = XMPPConfig(directory_groups=directory_groups, offline_max=offline_max)
        self.host = Host(DOMAIN, cfg, self.bus, self.hooks, self.router, self.cache,
                         self.stores)
        self.sessions: list[FakeSession] = []

    async def _load(self) -> tuple[list[Account], dict[str, str]]:
        return self.accounts, self.units

    async def start(self) -> World:
        await self.cache.load()
        features.load(self.host)
        await self.host.start()
        return self

    async def login(self, local: str, resource: str = "r", *, presence: bool = True,
                    priority: int = 0) -> FakeSession:
        s = FakeSession()
        self.router.bind(s, JID(local, DOMAIN, resource))
        self.sessions.append(s)
        await self.bus.fire("session/bound", SessionEvent(s))
        if presence:
            pres = Element("{jabber:client}presence", {"from": s.full})
            if priority:
                prio = Element("{jabber:client}priority")
                prio.text = str(priority)
                pres.append(prio)
            await self.send(s, pres)
        return s

    async def logout(self, s: FakeSession) -> None:
        self.router.unbind(s)
        await self.bus.fire("session/closed", SessionEvent(s))

    async def send(self, s: FakeSession, stanza: Element | str) -> None:
        """Route a stanza from `s` (as the core would: 'from' stamped) and run its jobs."""
        if isinstance(stanza, str):
            stanza = fromstring(f"<w xmlns='jabber:client'>{stanza}</w>")[0]
        stanza.set("from", s.full)
        self.router.route(stanza, s)
        await self.drain()

    async def drain(self) -> None:
        while any(x.jobs for x in self.sessions):
            for x in self.sessions:
                while x.jobs:
                    await x.jobs.pop(0)()

    async def iq(self, s: FakeSession, xml: str) -> Element:
        """Send an iq and return the reply with the same id."""
        await self.send(s, xml)
        stanza = fromstring(f"<w xmlns='jabber:client'>{xml}</w>")[0]
        for el in s.take():
            if el.tag == "{jabber:client}iq" and el.get("id") == stanza.get("id"):
                return el
        raise AssertionError("no reply")
