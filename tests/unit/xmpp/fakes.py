"""Fakes for router and feature tests: an in-memory store, sessions that record output,
and a Host with every feature loaded over a small directory. No sockets, no database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from xml.etree.ElementTree import Element, fromstring

from cxkernel.config import XMPPConfig
from cxkernel.events import EventBus
from directory.model import Account, Role, Status
from xmpp import features
from xmpp.dircache import DirectoryCache
from xmpp.hooks import Hooks
from xmpp.host import Host
from xmpp.jid import JID
from xmpp.proto.errors import StreamError
from xmpp.repo import RosterRow
from xmpp.router import Resource, Router, SessionEvent

DOMAIN = "cx.example"


class MemoryStore:
    """The XmppStore interface over dicts."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, RosterRow]] = {}
        self.versions: dict[str, int] = {}
        self.requests: dict[str, dict[str, str]] = {}
        self.offline: dict[str, list[tuple[str, datetime]]] = {}
        self.private: dict[tuple[str, str], str] = {}
        self.blocks: dict[str, set[str]] = {}
        self.last: dict[str, tuple[datetime, str]] = {}
        self.avatars: dict[str, tuple[str, bytes, str]] = {}

    async def roster(self, owner: str) -> tuple[int, list[RosterRow]]:
        return self.versions.get(owner, 0), sorted(self.items.get(owner, {}).values(),
                                                   key=lambda r: r.contact)

    async def roster_item(self, owner: str, contact: str) -> RosterRow | None:
        return self.items.get(owner, {}).get(contact)

    async def put_item(self, owner: str, item: RosterRow) -> int:
        self.items.setdefault(owner, {})[item.contact] = item
        self.versions[owner] = self.versions.get(owner, 0) + 1
        return self.versions[owner]

    async def delete_item(self, owner: str, contact: str) -> int | None:
        if self.items.get(owner, {}).pop(contact, None) is None:
            return None
        self.versions[owner] = self.versions.get(owner, 0) + 1
        return self.versions[owner]

    async def subscribers(self, owner: str) -> list[str]:
        return [c for c, r in self.items.get(owner, {}).items()
                if r.subscription in ("from", "both")]

    async def sub_requests(self, owner: str) -> list[tuple[str, str]]:
        return list(self.requests.get(owner, {}).items())

    async def add_sub_request(self, owner: str, contact: str, status: str = "") -> None:
        self.requests.setdefault(owner, {})[contact] = status

    async def drop_sub_request(self, owner: str, contact: str) -> bool:
        return self.requests.get(owner, {}).pop(contact, None) is not None

    async def store_offline(self, owner: str, stanza: str, limit: int) -> bool:
        box = self.offline.setdefault(owner, [])
        if len(box) >= limit:
            return False
        box.append((stanza, datetime.now(UTC)))
        return True

    async def take_offline(self, owner: str) -> list[tuple[str, datetime]]:
        return self.offline.pop(owner, [])

    async def count_offline(self, owner: str) -> int:
        return len(self.offline.get(owner, []))

    async def get_private(self, owner: str, namespace: str) -> str | None:
        return self.private.get((owner, namespace))

    async def set_private(self, owner: str, namespace: str, xml: str) -> None:
        self.private[(owner, namespace)] = xml

    async def all_blocklists(self) -> dict[str, set[str]]:
        return {k: set(v) for k, v in self.blocks.items()}

    async def block(self, owner: str, jids: Any) -> None:
        self.blocks.setdefault(owner, set()).update(jids)

    async def unblock(self, owner: str, jids: Any) -> None:
        if jids is None:
            self.blocks.pop(owner, None)
        else:
            self.blocks.get(owner, set()).difference_update(jids)

    async def last_seen(self, owner: str) -> tuple[datetime, str] | None:
        return self.last.get(owner)

    async def set_last_seen(self, owner: str, seen: datetime, status: str) -> None:
        self.last[owner] = (seen, status)

    async def avatar(self, owner: str) -> tuple[str, bytes, str] | None:
        return self.avatars.get(owner)

    async def set_avatar(self, owner: str, mime_type: str, data: bytes, sha1: str) -> None:
        if data:
            self.avatars[owner] = (mime_type, data, sha1)
        else:
            self.avatars.pop(owner, None)


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
        self.store = MemoryStore()
        self.cache = DirectoryCache(self._load)
        self.bus = EventBus()
        self.hooks = Hooks()
        self.router = Router(DOMAIN, self.bus, self.hooks, self.cache.exists)
        cfg = XMPPConfig(directory_groups=directory_groups, offline_max=offline_max)
        self.host = Host(DOMAIN, cfg, self.bus, self.hooks, self.router, self.cache,
                         self.store)  # type: ignore[arg-type]
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
