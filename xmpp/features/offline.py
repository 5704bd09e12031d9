"""Offline messages (XEP-0160): kept for an account with no available resource, delivered
with a delay stamp (XEP-0203) when the account next sends initial presence with a
non-negative priority (XEP-0160 §5). At most ``xmpp.offline_max`` per account; above it
the sender gets ``service-unavailable`` (XEP-0160 §3).

Through a database outage the write is retried within the process's outage budget
(`xmpp.outage`); when that is spent the sender gets ``resource-constraint`` (wait):
stored or refused, never lost in silence (issue 13)."""

from __future__ import annotations

import logging
from xml.etree.ElementTree import Element, SubElement, fromstring

from ..host import Host
from ..outage import OutageBudget
from ..proto import ns
from ..proto.serializer import to_string
from ..router import SessionEvent, StanzaEvent

log = logging.getLogger("cxgw.xmpp.offline")

DELAY = "{urn:xmpp:delay}delay"
BODY = ns.q(ns.CLIENT, "body")
SUBJECT = ns.q(ns.CLIENT, "subject")
HINTS = "urn:xmpp:hints"


class Offline:
    def __init__(self, host: Host) -> None:
        self.host = host
        cfg = host.cfg
        self.budget = OutageBudget(getattr(cfg, "outage_buffer_bytes", 16 * 1024 * 1024),
                                   getattr(cfg, "outage_retry_seconds", 30.0))

    async def store(self, ev: StanzaEvent) -> bool | None:
        stanza = ev.stanza
        if stanza.get("type", "normal") not in ("normal", "chat"):
            return None
        if stanza.find(f"{{{HINTS}}}no-store") is not None:
            return True  # XEP-0334: the sender asked us not to keep it
        if stanza.find(BODY) is None and stanza.find(SUBJECT) is None:
            return True  # chat states and receipts alone are not worth keeping
        text = to_string(stanza)

        async def write() -> bool:
            return await self.host.store.store_offline(ev.target, text, self.host.cfg.offline_max)

        # raises StanzaError(resource-constraint) when the outage budget is spent
        if await self.budget.run(len(text), write, f"offline message for {ev.target}"):
            return True
        return None  # full: the router bounces service-unavailable

    async def deliver(self, ev: SessionEvent) -> None:
        session = ev.session
        if session.priority < 0:
            return
        for text, stamp in await self.host.store.take_offline(session.bare):
            try:
                el = fromstring(_wrap(text))[0]
            except Exception:
                log.warning("unreadable offline message for %s dropped", session.bare)
                continue
            # A message kept again after an unacked delivery (XEP-0198) has its stamp.
            if not any(d.get("from") == self.host.domain for d in el.findall(DELAY)):
                SubElement(el, DELAY, {"from": self.host.domain,
                                       "stamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ")})
            session.deliver(el)


def _wrap(text: str) -> str:
    return f'<w xmlns="{ns.CLIENT}">{text}</w>'


def register(host: Host) -> None:
    off = Offline(host)
    host.bus.on("message/offline/handle", off.store)
    host.bus.on("presence/initial", off.deliver, priority=-10)
    host.bus.on("offline/recheck", off.deliver)  # stored by another node (xmpp.cluster)
    host.add_feature("msgoffline")


__all__ = ["Element", "register"]
