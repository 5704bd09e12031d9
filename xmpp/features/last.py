"""Last Activity (XEP-0012): server uptime, and when an account was last online.

Only contacts subscribed to the account's presence may ask (XEP-0012 §4 'forbidden');
an account with an available resource is active now (seconds='0').
"""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree.ElementTree import Element

from ..events import RosterQuery
from ..host import Host
from ..proto.errors import StanzaError
from ..router import IqEvent, SessionEvent
from ..stanzas import iq_result

NS = "jabber:iq:last"
QUERY = f"{{{NS}}}query"


class Last:
    def __init__(self, host: Host) -> None:
        self.host = host

    async def uptime(self, ev: IqEvent) -> Element:
        seconds = int((datetime.now(UTC) - self.host.started).total_seconds())
        return iq_result(ev.stanza, Element(QUERY, {"seconds": str(seconds)}))

    async def account(self, ev: IqEvent) -> Element:
        state = await self.host.bus.fire("roster/subscription",
                                         RosterQuery(ev.target, ev.origin.bare))
        if state not in ("from", "both"):
            raise StanzaError("forbidden")  # XEP-0012 §4
        if self.host.router.available_resources(ev.target):
            return iq_result(ev.stanza, Element(QUERY, {"seconds": "0"}))
        seen = await self.host.store.last_seen(ev.target)
        if seen is None:
            raise StanzaError("item-not-found")
        seconds = int((datetime.now(UTC) - seen[0]).total_seconds())
        el = Element(QUERY, {"seconds": str(max(0, seconds))})
        if seen[1]:
            el.text = seen[1]
        return iq_result(ev.stanza, el)

    async def on_closed(self, ev: SessionEvent) -> None:
        session = ev.session
        if not self.host.router.resources(session.bare):
            status = ""
            if session.presence is not None:
                status = session.presence.findtext("{jabber:client}status") or ""
            await self.host.store.set_last_seen(session.bare, datetime.now(UTC), status)


def register(host: Host) -> None:
    last = Last(host)
    host.bus.on(f"iq/host/get/{QUERY}", last.uptime)
    host.bus.on(f"iq/bare/get/{QUERY}", last.account)
    host.bus.on("session/closed", last.on_closed, priority=10)
    host.add_feature(NS)
