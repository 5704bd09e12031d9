"""Private XML Storage (XEP-0049): one XML fragment per namespace per account."""

from __future__ import annotations

from xml.etree.ElementTree import Element, fromstring

from ..host import Host
from ..proto.errors import StanzaError
from ..proto.serializer import to_string
from ..router import IqEvent
from ..stanzas import iq_result

NS = "jabber:iq:private"
QUERY = f"{{{NS}}}query"


def _child_ns(query: Element) -> tuple[Element, str]:
    if len(query) != 1:
        raise StanzaError("bad-request", "Exactly one child element")
    child = query[0]
    if not child.tag.startswith("{"):
        raise StanzaError("bad-request", "The child must be namespaced")
    namespace = child.tag[1:].partition("}")[0]
    if namespace.startswith("jabber:") and namespace != "jabber:iq:private":
        raise StanzaError("not-acceptable")  # XEP-0049 §3: jabber:* is reserved
    return child, namespace


class Private:
    def __init__(self, host: Host) -> None:
        self.host = host

    async def get(self, ev: IqEvent) -> Element:
        child, namespace = _child_ns(ev.stanza[0])
        stored = await self.host.store.get_private(ev.origin.bare, namespace)
        query = Element(QUERY)
        query.append(fromstring(stored) if stored else Element(child.tag))
        return iq_result(ev.stanza, query)

    async def set(self, ev: IqEvent) -> Element:
        child, namespace = _child_ns(ev.stanza[0])
        await self.host.store.set_private(ev.origin.bare, namespace, to_string(child, ""))
        return iq_result(ev.stanza)


def register(host: Host) -> None:
    p = Private(host)
    host.bus.on(f"iq/self/get/{QUERY}", p.get)
    host.bus.on(f"iq/self/set/{QUERY}", p.set)
    host.add_feature(NS, account=False)
