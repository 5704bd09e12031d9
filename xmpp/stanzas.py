"""Small builders and readers for stanzas, shared by the router and the feature modules."""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from .proto import ns

DELAY = "urn:xmpp:delay"


def q(namespace: str, local: str) -> str:
    return f"{{{namespace}}}{local}"


def iq_result(iq: Element, child: Element | None = None) -> Element:
    """The 'result' answering `iq` (RFC 6120 §8.2.3): same id, to/from swapped."""
    attrs = {"type": "result", "id": iq.get("id", "")}
    sender = iq.get("from")
    if sender:
        attrs["to"] = sender
    target = iq.get("to")
    if target:
        attrs["from"] = target
    out = Element(ns.IQ, attrs)
    if child is not None:
        out.append(child)
    return out


def payload(iq: Element) -> Element | None:
    """The one child of an iq get/set (RFC 6120 §8.2.3)."""
    return iq[0] if len(iq) else None


def tag_of(namespace: str, local: str) -> str:
    return "{" + namespace + "}" + local


def text_child(parent: Element, tag: str, text: str | None) -> Element:
    el = SubElement(parent, tag)
    if text:
        el.text = text
    return el


def bare_of(jid: str) -> str:
    """'local@domain' of a JID string already normalised by the core."""
    return jid.partition("/")[0]


def presence(type_: str | None = None, to: str | None = None, from_: str | None = None) -> Element:
    attrs: dict[str, str] = {}
    if type_:
        attrs["type"] = type_
    if to:
        attrs["to"] = to
    if from_:
        attrs["from"] = from_
    return Element(ns.PRESENCE, attrs)
