"""Serialization in the stream's namespace context, and the typed errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.etree.ElementTree import Element, SubElement

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xmpp.proto import ns
from xmpp.proto.errors import (
    SaslFailure,
    StanzaError,
    StreamError,
    error_reply,
    is_error_stanza,
)
from xmpp.proto.parser import StreamParser
from xmpp.proto.serializer import escape_attr, escape_text, stream_header, to_bytes, to_string

from .link import HEADER


def reparse(data: bytes) -> Element:
    """Parse serialized bytes as they would arrive inside a jabber:client stream."""
    events = StreamParser().feed(HEADER + data)
    assert len(events) == 2, events
    return events[1].element  # type: ignore[union-attr]


def canonical(el: Element) -> tuple:
    return (el.tag, sorted(el.attrib.items()), el.text or "", el.tail or "",
            [canonical(c) for c in el])


def chat(body: str = "hi") -> Element:
    m = Element(ns.MESSAGE, {"to": "romeo@example.net", "type": "chat", "id": "a1"})
    SubElement(m, ns.q(ns.CLIENT, "body")).text = body
    return m


def test_stanza_has_no_xmlns_and_no_prefixes() -> None:
    out = to_string(chat())
    assert out == '<message to="romeo@example.net" type="chat" id="a1"><body>hi</body></message>'


def test_extension_child_declares_its_namespace_once() -> None:
    m = chat()
    req = SubElement(m, "{urn:xmpp:receipts}request")
    SubElement(req, "{urn:xmpp:receipts}inner")
    out = to_string(m)
    assert '<request xmlns="urn:xmpp:receipts"><inner/></request>' in out
    assert "ns0" not in out


def test_jabber_client_inside_foreign_namespace_is_redeclared() -> None:
    fwd = Element("{urn:xmpp:forward:0}forwarded")
    fwd.append(chat())
    m = Element(ns.MESSAGE)
    m.append(fwd)
    out = to_string(m)
    assert '<forwarded xmlns="urn:xmpp:forward:0"><message xmlns="jabber:client"' in out
    assert canonical(reparse(out.encode())) == canonical(m)


def test_jabber_server_stanza_written_in_stream_namespace() -> None:
    m = Element(ns.q(ns.SERVER, "message"), {"to": "a@b"})
    assert to_string(m) == '<message to="a@b"/>'
    assert to_string(Element(ns.MESSAGE), default_ns=ns.SERVER) == "<message/>"


def test_stream_namespace_uses_stream_prefix() -> None:
    assert to_string(Element(ns.FEATURES)) == "<stream:features/>"


def test_unqualified_tags_inherit_default_namespace() -> None:
    m = Element("message", {"to": "a@b"})
    SubElement(m, "body").text = "x"
    assert to_string(m) == '<message to="a@b"><body>x</body></message>'
    assert reparse(to_bytes(m)).tag == ns.MESSAGE


def test_xml_lang_and_foreign_attributes() -> None:
    m = Element(ns.MESSAGE, {ns.XML_LANG: "de", "{urn:a}x": "1"})
    out = to_string(m)
    assert 'xml:lang="de"' in out
    back = reparse(out.encode())
    assert back.get(ns.XML_LANG) == "de" and back.get("{urn:a}x") == "1"


def test_escaping() -> None:
    assert escape_text("a<b>&c\r") == "a&lt;b&gt;&amp;c&#13;"
    assert escape_attr("\"'\t\n<&") == "&quot;'&#9;&#10;&lt;&amp;"
    assert escape_text("plain") == "plain"
    assert escape_text("bad\x00\x1b") == "bad\ufffd\ufffd"


xml_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=200, deadline=None)
@given(body=xml_text, attr=xml_text, tail=xml_text)
def test_roundtrip_any_text(body: str, attr: str, tail: str) -> None:
    m = chat(body)
    m.set("id", attr)
    SubElement(m, "{urn:x}x").tail = tail
    back = reparse(to_bytes(m))

    def legal(s: str) -> str:
        return "".join(c if c in "\t\n\r" or c >= " " and c not in "\ufffe\uffff" else "\ufffd"
                       for c in s)
    assert back.findtext(ns.q(ns.CLIENT, "body")) == legal(body)
    assert back.get("id") == legal(attr)
    assert (back[1].tail or "") == legal(tail)


def test_matches_elementtree_semantics() -> None:
    m = chat("x & y")
    ours = canonical(reparse(to_bytes(m)))
    theirs = canonical(ET.fromstring(ET.tostring(m)))
    assert ours == theirs


def test_stream_header() -> None:
    header = stream_header(from_="example.com", id="abc", to="juliet@example.com")
    assert header.startswith(b"<?xml version='1.0'?><stream:stream xmlns=\"jabber:client\"")
    events = StreamParser().feed(header)
    assert events[0].id == "abc" and events[0].version == "1.0"  # type: ignore[union-attr]


# --- errors -----------------------------------------------------------------------------


def test_stream_error_element() -> None:
    err = StreamError("host-unknown", "No such host")
    out = to_string(err.to_element())
    assert out == ('<stream:error><host-unknown xmlns="urn:ietf:params:xml:ns:xmpp-streams"/>'
                   '<text xmlns="urn:ietf:params:xml:ns:xmpp-streams" xml:lang="en">No such host'
                   '</text></stream:error>')
    assert StreamError.from_element(err.to_element()) == err


def test_see_other_host_carries_host() -> None:
    err = StreamError("see-other-host", content="other.example.com:5222")
    el = err.to_element()
    assert el[0].text == "other.example.com:5222"
    assert StreamError.from_element(el).content == "other.example.com:5222"


def test_unknown_conditions_are_refused() -> None:
    with pytest.raises(ValueError):
        StreamError("made-up")
    with pytest.raises(ValueError):
        StanzaError("made-up")
    with pytest.raises(ValueError):
        StanzaError("bad-request", type="weird")
    with pytest.raises(ValueError):
        SaslFailure("made-up")


def test_stanza_error_defaults_and_element() -> None:
    err = StanzaError("item-not-found", "Gone fishing", by="example.com")
    assert err.type == "cancel"
    el = err.to_element()
    assert el.tag == ns.ERROR and el.get("type") == "cancel" and el.get("by") == "example.com"
    assert el[0].tag == ns.q(ns.STANZA_ERRORS, "item-not-found")
    assert StanzaError.from_element(el) == err
    assert StanzaError("not-authorized").type == "auth"
    assert StanzaError("recipient-unavailable").type == "wait"


def test_stanza_error_from_unknown_element() -> None:
    el = Element(ns.ERROR, {"type": "bogus"})
    SubElement(el, "{urn:other}thing")
    err = StanzaError.from_element(el)
    assert err.condition == "undefined-condition" and err.type == "cancel"


def test_error_reply_swaps_addresses() -> None:
    iq = Element(ns.IQ, {"type": "get", "id": "q1", "from": "juliet@example.com/balcony",
                         "to": "romeo@example.net"})
    SubElement(iq, "{jabber:iq:version}query")
    reply = error_reply(iq, StanzaError("service-unavailable"))
    assert reply.attrib == {"type": "error", "id": "q1", "to": "juliet@example.com/balcony",
                            "from": "romeo@example.net"}
    assert [c.tag for c in reply] == [ns.ERROR]
    with_payload = error_reply(iq, StanzaError("service-unavailable"), include_original=True)
    assert [c.tag for c in with_payload] == ["{jabber:iq:version}query", ns.ERROR]
    assert iq.get("type") == "get"  # the original is untouched


def test_never_reply_to_an_error() -> None:
    err = Element(ns.MESSAGE, {"type": "error"})
    assert is_error_stanza(err)
    with pytest.raises(ValueError):
        error_reply(err, StanzaError("bad-request"))


def test_sasl_failure_element() -> None:
    out = to_string(SaslFailure("not-authorized").to_element())
    assert out == ('<failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><not-authorized/>'
                   "</failure>")
