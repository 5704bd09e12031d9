"""Message Carbons (XEP-0280): copies of chat messages for a user's other devices.

Enabled per session (``urn:xmpp:carbons:2`` enable/disable). After routing (the
``message/routed`` hook): 'sent' copies go to the sender's other enabled resources,
'received' copies to the recipient's enabled resources that did not get the message.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from ..host import Host
from ..proto import ns
from ..proto.serializer import to_bytes
from ..router import IqEvent, Resource
from ..stanzas import iq_result

NS = "urn:xmpp:carbons:2"
ENABLE = f"{{{NS}}}enable"
DISABLE = f"{{{NS}}}disable"
PRIVATE = f"{{{NS}}}private"
NO_COPY = "{urn:xmpp:hints}no-copy"
FORWARDED = "{urn:xmpp:forward:0}forwarded"
BODY = ns.q(ns.CLIENT, "body")
KEY = "carbons"


def _eligible(stanza: Element) -> bool:
    """XEP-0280 §6.1: chat messages (and normal ones with a body); not private/no-copy."""
    mtype = stanza.get("type", "normal")
    if mtype != "chat" and not (mtype == "normal" and stanza.find(BODY) is not None):
        return False
    return stanza.find(PRIVATE) is None and stanza.find(NO_COPY) is None


def _wrap(kind: str, stanza: Element, bare: str, to: Resource) -> bytes:
    outer = Element(ns.MESSAGE, {"from": bare, "to": to.full, "type": stanza.get("type", "chat")})
    SubElement(SubElement(outer, f"{{{NS}}}{kind}"), FORWARDED).append(stanza)
    return to_bytes(outer)


class Carbons:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.enabled = 0  # sessions with carbons on: skip all work when 0

    async def enable(self, ev: IqEvent) -> Element:
        if not ev.origin.data.get(KEY):
            ev.origin.data[KEY] = True
            self.enabled += 1
            self.host.router.changed(ev.origin)  # other nodes' copies (issue 14)
        return iq_result(ev.stanza)

    async def disable(self, ev: IqEvent) -> Element:
        if ev.origin.data.pop(KEY, None):
            self.enabled -= 1
            self.host.router.changed(ev.origin)
        return iq_result(ev.stanza)

    async def on_closed(self, ev: object) -> None:
        session = getattr(ev, "session", None)
        if session is not None and session.data.pop(KEY, None):
            self.enabled -= 1

    def on_routed(self, stanza: Element, origin: Resource, to_bare: str,
                  delivered: list[Resource]) -> None:
        if not (self.enabled or self.host.router.remote) or not _eligible(stanza):
            return None
        sessions = self.host.router.sessions
        for r in sessions.get(origin.bare, {}).values():
            if r is not origin and r.data.get(KEY) and r not in delivered:
                r.deliver_bytes(_wrap("sent", stanza, origin.bare, r))
        if delivered:
            for r in sessions.get(to_bare, {}).values():
                if r.data.get(KEY) and r not in delivered and r is not origin:
                    r.deliver_bytes(_wrap("received", stanza, to_bare, r))
        return None


def register(host: Host) -> None:
    c = Carbons(host)
    host.router.shared_keys.add(KEY)
    host.bus.on(f"iq/self/set/{ENABLE}", c.enable)
    host.bus.on(f"iq/self/set/{DISABLE}", c.disable)
    host.bus.on("session/closed", c.on_closed, priority=20)
    host.hooks.on("message/routed", c.on_routed)
    host.add_feature(NS)
