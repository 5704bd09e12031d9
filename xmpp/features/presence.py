"""Presence (RFC 6121 §4): initial presence and probes, broadcast to subscribers and own
resources, directed presence, unavailable on disconnect.

Who the subscribers are is the roster feature's business (``roster/subscribers``,
``roster/subscriptions``, ``roster/subscription``); this module only moves presence.
Blocking is honoured through the ``stanza/inbound`` hook on every delivery.
"""

from __future__ import annotations

import copy
from xml.etree.ElementTree import Element

from ..events import PresenceShare, RosterQuery
from ..host import Host
from ..proto import ns
from ..proto.serializer import to_bytes
from ..router import Resource, SessionEvent, StanzaEvent

PRIORITY = ns.q(ns.CLIENT, "priority")


def _priority(stanza: Element) -> int:
    """RFC 6121 §4.7.2.3: an integer -128..127, default 0."""
    text = stanza.findtext(PRIORITY)
    try:
        return max(-128, min(127, int(text))) if text else 0
    except ValueError:
        return 0


class Presence:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.router = host.router

    def _blocked(self, stanza: Element, origin: Resource, to_bare: str) -> bool:
        return self.host.hooks.fire("stanza/inbound", stanza, origin, to_bare) is not None

    def _send_to_bare(self, stanza: Element, origin: Resource, bare: str) -> None:
        """Deliver `stanza` (from `origin`) to every available resource of `bare`."""
        targets = self.router.available_resources(bare)
        if not targets or self._blocked(stanza, origin, bare):
            return
        stanza.set("to", bare)
        data = to_bytes(stanza)
        for r in targets:
            r.deliver_bytes(data)

    async def _subscribers(self, bare: str) -> list[str]:
        return list(await self.host.bus.fire("roster/subscribers", RosterQuery(bare)) or [])

    async def on_broadcast(self, ev: StanzaEvent) -> bool:
        origin, stanza = ev.origin, ev.stanza
        assert origin is not None
        if stanza.get("type") == "unavailable":
            await self._unavailable(origin, stanza)
            return True
        initial = not origin.available
        origin.priority = _priority(stanza)
        origin.available = True
        origin.presence = stanza
        self.router.changed(origin)  # other nodes see it (issue 14)
        await self._broadcast(origin, stanza)
        if initial:
            # RFC 6121 §4.2.2: probe the contacts the user is subscribed to; local
            # contacts are answered at once from their sessions.
            contacts = await self.host.bus.fire("roster/subscriptions", RosterQuery(origin.bare))
            for contact in contacts or ():
                self._current_to(contact, origin)
            for other in self.router.available_resources(origin.bare):
                if other is not origin and other.presence is not None:
                    _deliver_copy(other, origin)
            await self.host.bus.fire("presence/initial", SessionEvent(origin))
        return True

    async def _broadcast(self, origin: Resource, stanza: Element) -> None:
        # RFC 6121 §4.2.2 / §4.4.2: to every subscriber and every own available resource.
        for bare in await self._subscribers(origin.bare):
            if bare != origin.bare:
                self._send_to_bare(copy.copy(stanza), origin, bare)
        own = to_bytes(_addressed(stanza, origin.bare))
        for r in self.router.available_resources(origin.bare):
            r.deliver_bytes(own)

    async def _unavailable(self, origin: Resource, stanza: Element) -> None:
        was = origin.available
        origin.available = False
        origin.presence = None
        if was:
            self.router.changed(origin)
        directed, origin.directed = origin.directed or set(), None
        if was:
            # RFC 6121 §4.5.2: to subscribers and the user's other available resources.
            await self._broadcast(origin, stanza)
        # RFC 6121 §4.6.3: those who got directed presence learn it ended too.
        for jid in directed:
            out = copy.copy(stanza)
            out.set("to", jid)
            target = self.router.session(jid) if "/" in jid else None
            if target is not None:
                target.deliver(out)
            elif "/" not in jid:
                self._send_to_bare(out, origin, jid)

    def _current_to(self, contact: str, to: Resource) -> None:
        """The presence of each available resource of `contact`, to the session `to`."""
        for r in self.router.available_resources(contact):
            if r.presence is not None and not self._blocked(r.presence, r, to.bare):
                _deliver_copy(r, to)

    async def on_closed(self, ev: SessionEvent) -> None:
        origin = ev.session
        if origin.available or origin.directed:
            # RFC 6121 §4.5.2: the server sends unavailable on behalf of a vanished session.
            stanza = Element(ns.PRESENCE, {"type": "unavailable", "from": origin.full})
            await self._unavailable(origin, stanza)

    async def on_probe(self, ev: StanzaEvent) -> bool:
        origin = ev.origin
        assert origin is not None
        state = await self.host.bus.fire("roster/subscription",
                                         RosterQuery(ev.target, origin.bare))
        if state in ("from", "both"):  # RFC 6121 §4.3.2: only subscribers get an answer
            self._current_to(ev.target, origin)
        return True

    async def on_share(self, ev: PresenceShare) -> bool:
        """Send `from_bare`'s presence (or unavailable) to every resource of `to_bare`."""
        for r in self.router.resources(ev.from_bare):
            if ev.available and r.presence is not None:
                out = copy.copy(r.presence)
            elif not ev.available:
                out = Element(ns.PRESENCE, {"type": "unavailable", "from": r.full})
            else:
                continue
            self._send_to_bare(out, r, ev.to_bare)
        return True


def _addressed(stanza: Element, to: str) -> Element:
    out = copy.copy(stanza)
    out.set("to", to)
    return out


def _deliver_copy(source: Resource, to: Resource) -> None:
    assert source.presence is not None
    out = copy.copy(source.presence)
    out.set("from", source.full)
    out.set("to", to.full)
    to.deliver(out)


def register(host: Host) -> None:
    p = Presence(host)
    host.bus.on("presence/broadcast", p.on_broadcast)
    host.bus.on("presence/probe", p.on_probe)
    host.bus.on("presence/share", p.on_share)
    host.bus.on("session/closed", p.on_closed)
