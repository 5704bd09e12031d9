"""Service Discovery (XEP-0030) and Entity Capabilities (XEP-0115).

The server's disco#info lists exactly the features the loaded modules registered with
``host.add_feature`` (disco advertises only what works); an account's bare JID answers
with the 'account/registered' identity and the account features. The caps verification
string (XEP-0115 §5) is computed from the same lists and answered at ``node#ver``.
"""

from __future__ import annotations

import copy
from xml.etree.ElementTree import Element, SubElement

from ..caps import NODE, verification_string
from ..events import RosterQuery
from ..host import Host
from ..proto.errors import StanzaError
from ..router import IqEvent
from ..stanzas import iq_result

INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"
CAPS = "http://jabber.org/protocol/caps"


class Disco:
    def __init__(self, host: Host) -> None:
        self.host = host

    def caps_ver(self) -> str:
        return verification_string(self.host.identities, self.host.features,
                                   self.host.server_forms)

    def _info(self, identities: list[tuple[str, str, str]], features: list[str],
              node: str | None, forms: list[Element] | None = None) -> Element:
        query = Element(f"{{{INFO}}}query", {"node": node} if node else {})
        for cat, typ, name in identities:
            attrs = {"category": cat, "type": typ}
            if name:
                attrs["name"] = name
            SubElement(query, f"{{{INFO}}}identity", attrs)
        for feature in sorted(set(features)):
            SubElement(query, f"{{{INFO}}}feature", {"var": feature})
        query.extend(copy.deepcopy(f) for f in forms or ())  # XEP-0128 extended info
        return query

    async def host_info(self, ev: IqEvent) -> Element:
        node = ev.stanza[0].get("node")
        if node and node != f"{NODE}#{self.caps_ver()}":
            raise StanzaError("item-not-found")
        return iq_result(ev.stanza, self._info(self.host.identities, self.host.features, node,
                                               self.host.server_forms))

    async def host_items(self, ev: IqEvent) -> Element:
        """The services under the server (XEP-0030 §4): whatever each feature lists on the
        sync hook ``disco/host/items`` as (jid, name) pairs — MUC, upload, components."""
        if ev.stanza[0].get("node"):
            raise StanzaError("item-not-found")
        query = Element(f"{{{ITEMS}}}query")
        for handler in self.host.hooks.handlers("disco/host/items"):
            for jid, name in handler() or ():
                attrs = {"jid": jid}
                if name:
                    attrs["name"] = name
                SubElement(query, f"{{{ITEMS}}}item", attrs)
        return iq_result(ev.stanza, query)

    async def account_info(self, ev: IqEvent) -> Element:
        if ev.stanza[0].get("node"):
            raise StanzaError("item-not-found")
        if ev.target != ev.origin.bare:
            # XEP-0030 §8 / RFC 6121: only those who may see the account's presence.
            state = await self.host.bus.fire("roster/subscription",
                                             RosterQuery(ev.target, ev.origin.bare))
            if state not in ("from", "both"):
                raise StanzaError("service-unavailable")
        features = [INFO, ITEMS, *self.host.account_features]
        identities = [("account", "registered", ""), *self.host.account_identities]
        return iq_result(ev.stanza, self._info(identities, features, None))

    async def account_items(self, ev: IqEvent) -> Element:
        """The items under an account (XEP-0030 §4): its PEP nodes the requester may read,
        from the ``disco/account/items`` bus event (``IqEvent`` in, (jid, node) pairs out)."""
        if ev.stanza[0].get("node"):
            raise StanzaError("item-not-found")
        query = Element(f"{{{ITEMS}}}query")
        for jid, node in await self.host.bus.fire("disco/account/items", ev) or ():
            SubElement(query, f"{{{ITEMS}}}item", {"jid": jid, "node": node})
        return iq_result(ev.stanza, query)


def register(host: Host) -> None:
    d = Disco(host)
    host.add_identity("server", "im", "cx-gateway")
    host.add_feature(INFO)
    host.add_feature(ITEMS)
    host.add_feature(CAPS)
    host.bus.on(f"iq/host/get/{{{INFO}}}query", d.host_info)
    host.bus.on(f"iq/host/get/{{{ITEMS}}}query", d.host_items)
    for scope in ("self", "bare"):
        host.bus.on(f"iq/{scope}/get/{{{INFO}}}query", d.account_info)
        host.bus.on(f"iq/{scope}/get/{{{ITEMS}}}query", d.account_items)
