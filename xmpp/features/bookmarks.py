"""Bookmarks: PEP Native Bookmarks (XEP-0402, ``urn:xmpp:bookmarks:1``) are the truth;
XEP-0048 bookmarks in private XML storage (XEP-0049, ``storage:bookmarks``) are kept in
step with them (XEP-0402 §3 compatibility, advertised as ``urn:xmpp:bookmarks:1#compat``).

- A private-storage set of ``storage:bookmarks`` publishes one XEP-0402 item per
  conference (item id = room JID) and retracts the rooms no longer listed; the private
  feature then stores the XML as usual (URLs, which XEP-0402 has no place for, stay there).
- A private-storage get of ``storage:bookmarks`` is answered from the PEP items (plus the
  stored URLs) when there are any.

Meets PEP at ``pep/publish``, ``pep/retract``, ``pep/items`` and private storage through
its store (``host.store.get_private``); imports neither feature.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement, fromstring

from ..events import PepItems, PepPublish
from ..host import Host
from ..jid import JIDError, parse_jid
from ..router import IqEvent
from ..stanzas import iq_result

NODE = "urn:xmpp:bookmarks:1"
LEGACY = "storage:bookmarks"
PRIVATE = "jabber:iq:private"
PUBSUB = "http://jabber.org/protocol/pubsub"
#: XEP-0402 §4 node options (publish-options preconditions).
OPTIONS = {"persist_items": "true", "max_items": "max",
           "send_last_published_item": "never", "access_model": "whitelist"}




def _t(namespace: str, local: str) -> str:
    return f"{{{namespace}}}{local}"


def _true(value: str | None) -> bool:
    return value in ("1", "true")


def legacy_to_items(storage: Element) -> dict[str, Element]:
    """XEP-0048 ``<storage/>`` → XEP-0402 ``<item id=room><conference/></item>``."""
    out: dict[str, Element] = {}
    for conf in storage.findall(_t(LEGACY, "conference")):
        jid = conf.get("jid") or ""
        try:
            jid = str(parse_jid(jid).bare)
        except JIDError:
            continue
        item = Element(_t(PUBSUB, "item"), {"id": jid})
        attrs = {"autojoin": "true" if _true(conf.get("autojoin")) else "false"}
        if conf.get("name"):
            attrs["name"] = conf.get("name") or ""
        new = SubElement(item, _t(NODE, "conference"), attrs)
        for child in ("nick", "password"):
            text = conf.findtext(_t(LEGACY, child))
            if text:
                SubElement(new, _t(NODE, child)).text = text
        out[jid] = item
    return out


def items_to_legacy(items: list[Element], urls: list[Element]) -> Element:
    """XEP-0402 items → XEP-0048 ``<storage/>`` (with the stored URLs)."""
    storage = Element(_t(LEGACY, "storage"))
    for item in items:
        conf = item.find(_t(NODE, "conference"))
        if conf is None or not item.get("id"):
            continue
        attrs = {"jid": item.get("id") or "",
                 "autojoin": "true" if _true(conf.get("autojoin")) else "false"}
        if conf.get("name"):
            attrs["name"] = conf.get("name") or ""
        old = SubElement(storage, _t(LEGACY, "conference"), attrs)
        for child in ("nick", "password"):
            text = conf.findtext(_t(NODE, child))
            if text:
                SubElement(old, _t(LEGACY, child)).text = text
    for url in urls:
        storage.append(url)
    return storage


class Bookmarks:
    def __init__(self, host: Host) -> None:
        self.host = host

    async def _pep_items(self, owner: str) -> list[Element]:
        return list(await self.host.bus.fire("pep/items", PepItems(owner, NODE)) or [])

    async def _stored_urls(self, owner: str) -> list[Element]:
        xml = await self.host.store.get_private(owner, LEGACY)
        if not xml:
            return []
        try:
            return fromstring(xml).findall(_t(LEGACY, "url"))
        except Exception:
            return []

    async def private_get(self, ev: IqEvent) -> Element | None:
        query = ev.stanza[0]
        if len(query) != 1 or query[0].tag != _t(LEGACY, "storage"):
            return None
        items = await self._pep_items(ev.origin.bare)
        if not items:
            return None  # nothing in PEP: private storage answers as before
        out = Element(_t(PRIVATE, "query"))
        out.append(items_to_legacy(items, await self._stored_urls(ev.origin.bare)))
        return iq_result(ev.stanza, out)

    async def private_set(self, ev: IqEvent) -> None:
        query = ev.stanza[0]
        if len(query) != 1 or query[0].tag != _t(LEGACY, "storage"):
            return None
        owner = ev.origin.bare
        wanted = legacy_to_items(query[0])
        current = {i.get("id") or "": i for i in await self._pep_items(owner)}
        bus = self.host.bus
        for jid, item in wanted.items():
            old = current.get(jid)
            if old is None or _signature(old) != _signature(item):
                await bus.fire("pep/publish", PepPublish(owner, NODE, jid, item, dict(OPTIONS)))
        for jid in current.keys() - wanted.keys():
            await bus.fire("pep/retract", PepItems(owner, NODE, jid))
        return None  # the private feature stores the XML too


def _signature(item: Element) -> tuple[str, ...]:
    conf = item.find(_t(NODE, "conference"))
    if conf is None:
        return ()
    return (conf.get("name") or "", str(_true(conf.get("autojoin"))),
            conf.findtext(_t(NODE, "nick")) or "", conf.findtext(_t(NODE, "password")) or "")


def register(host: Host) -> None:
    b = Bookmarks(host)
    query = _t(PRIVATE, "query")
    # Before the private feature (priority 0): answer gets from PEP, mirror sets into it.
    host.bus.on(f"iq/self/get/{query}", b.private_get, priority=10)
    host.bus.on(f"iq/self/set/{query}", b.private_set, priority=10)
    host.add_feature(f"{NODE}#compat", account=True)
