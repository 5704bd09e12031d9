"""Blocking Command (XEP-0191). Blocklists live in memory (loaded at start, written
through to the database), so the check on the routing hot path costs a dict lookup.

Several nodes (issue 14): every block/unblock commits a notice (``xmpp.changes``, kinds
``block`` and ``unblock`` naming the JIDs); each other node applies it to its lists and
pushes it to its own interested sessions, in that order, so a session that saw the push
is on a node that already refuses the blocked contact. After a LISTEN reconnect the
lists reload from PostgreSQL. Each node pushes only to its local sessions.

Inbound from a blocked entity (XEP-0191 §3.4/§3.5): presence is dropped, message and
iq get/set get ``service-unavailable``, everything else is dropped. Outbound to a blocked
entity: ``not-acceptable`` with ``<blocked xmlns='urn:xmpp:blocking:errors'/>``.
"""

from __future__ import annotations

import secrets
from xml.etree.ElementTree import Element, SubElement

from ..host import Host
from ..jid import JIDError, parse_jid
from ..proto import ns
from ..proto.errors import StanzaError, error_reply
from ..router import IqEvent, Resource
from ..stanzas import iq_result

NS = "urn:xmpp:blocking"
BLOCKLIST = f"{{{NS}}}blocklist"
BLOCK = f"{{{NS}}}block"
UNBLOCK = f"{{{NS}}}unblock"
ITEM = f"{{{NS}}}item"
BLOCKED_ERROR = "{urn:xmpp:blocking:errors}blocked"
INTERESTED = "blocklist"


def _matches(blocked: set[str], jid: str) -> bool:
    """XEP-0191 §3.1 with RFC 6121 §8.5 style matching: full, bare or domain."""
    if jid in blocked:
        return True
    bare = jid.partition("/")[0]
    if bare in blocked:
        return True
    return bare.rpartition("@")[2] in blocked


class Blocking:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.lists: dict[str, set[str]] = {}

    async def load(self) -> None:
        self.lists = await self.host.store.all_blocklists()

    async def heard_block(self, owner: str, jids: list[str]) -> None:
        """Another node blocked `jids` for `owner` (committed)."""
        self.lists.setdefault(owner, set()).update(jids)
        self._push(owner, BLOCK, jids)

    async def heard_unblock(self, owner: str, jids: list[str]) -> None:
        """Another node unblocked `jids` (none: all) for `owner` (committed)."""
        if jids:
            self.lists.get(owner, set()).difference_update(jids)
        else:
            self.lists.pop(owner, None)
        self._push(owner, UNBLOCK, jids)

    def check(self, stanza: Element, origin: Resource, to_bare: str) -> bool | None:
        """The ``stanza/inbound`` hook: True when the stanza must not be delivered."""
        lists = self.lists
        if not lists:
            return None
        theirs = lists.get(to_bare)
        if theirs and _matches(theirs, origin.full):
            if stanza.tag != ns.PRESENCE and stanza.get("type") in (None, "get", "set",
                                                                       "normal", "chat"):
                origin.deliver(error_reply(stanza, StanzaError("service-unavailable")))
            return True
        mine = lists.get(origin.bare)
        if mine and _matches(mine, stanza.get("to", to_bare)):
            if stanza.tag != ns.PRESENCE and stanza.get("type") != "error":
                reply = error_reply(stanza, StanzaError("not-acceptable"))
                reply[-1].append(Element(BLOCKED_ERROR))
                origin.deliver(reply)
            return True
        return None

    async def get(self, ev: IqEvent) -> Element:
        ev.origin.data[INTERESTED] = True
        out = Element(BLOCKLIST)
        for jid in sorted(self.lists.get(ev.origin.bare, ())):
            SubElement(out, ITEM, {"jid": jid})
        return iq_result(ev.stanza, out)

    def _jids(self, el: Element, allow_empty: bool) -> list[str]:
        jids = []
        for item in el.findall(ITEM):
            try:
                jids.append(str(parse_jid(item.get("jid", ""))))
            except JIDError:
                raise StanzaError("jid-malformed") from None
        if not jids and not allow_empty:
            raise StanzaError("bad-request")  # XEP-0191 §3.3: at least one item
        return jids

    async def block(self, ev: IqEvent) -> Element:
        owner = ev.origin.bare
        jids = self._jids(ev.stanza[0], allow_empty=False)
        await self.host.store.block(owner, jids,
                                    self.host.changes.payloads("block", owner, jids))
        self.lists.setdefault(owner, set()).update(jids)
        self._push(owner, BLOCK, jids)
        self._vanish(owner, jids)
        return iq_result(ev.stanza)

    def _vanish(self, owner: str, jids: list[str]) -> None:
        """XEP-0191 §3.3: the blocked contacts see the user go unavailable."""
        router = self.host.router
        mine = router.available_resources(owner)
        for jid in jids:
            if "@" not in jid:
                continue  # a whole domain: nobody local to tell
            for r in mine:
                pres = Element(ns.PRESENCE, {"type": "unavailable", "from": r.full, "to": jid})
                if "/" in jid:
                    router.to_full(jid, pres)
                else:
                    router.to_available(jid, pres)

    async def unblock(self, ev: IqEvent) -> Element:
        owner = ev.origin.bare
        jids = self._jids(ev.stanza[0], allow_empty=True)
        await self.host.store.unblock(owner, jids or None,
                                      self.host.changes.payloads("unblock", owner, jids))
        if jids:
            self.lists.get(owner, set()).difference_update(jids)
        else:
            self.lists.pop(owner, None)  # XEP-0191 §3.4: no items means unblock all
        self._push(owner, UNBLOCK, jids)
        return iq_result(ev.stanza)

    def _push(self, owner: str, tag: str, jids: list[str]) -> None:
        # XEP-0191 §3.3: push to every resource that asked for the blocklist; those on
        # other nodes get it from their node, which heard the change notice.
        for r in self.host.router.resources(owner):
            if r.local and r.data.get(INTERESTED):
                iq = Element(ns.IQ, {"type": "set", "id": "block" + secrets.token_hex(4),
                                     "to": r.full})
                el = SubElement(iq, tag)
                for jid in jids:
                    SubElement(el, ITEM, {"jid": jid})
                r.deliver(iq)


def register(host: Host) -> None:
    b = Blocking(host)
    host.bus.on(f"iq/self/get/{BLOCKLIST}", b.get)
    host.bus.on(f"iq/self/set/{BLOCK}", b.block)
    host.bus.on(f"iq/self/set/{UNBLOCK}", b.unblock)
    host.hooks.on("stanza/inbound", b.check, priority=100)
    host.on_start(b.load)
    host.changes.on("block", b.heard_block, b.load)
    host.changes.on("unblock", b.heard_unblock)
    host.add_feature(NS)
