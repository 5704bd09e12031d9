"""RFC 7395 framing (xmpp.proto.framing) without sockets: client messages become core
input, core output becomes one standalone document per message, across a restart."""

from __future__ import annotations

from xml.etree.ElementTree import fromstring

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xmpp.proto.framing import FRAMING, FramingError, ServerFramer, client_message
from xmpp.proto.serializer import STREAM_CLOSE

HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' from='cx.example' id='s1' "
          b"version='1.0' xml:lang='en'>")


def test_client_open_close_and_stanza() -> None:
    head = client_message(f"<open xmlns='{FRAMING}' to='cx.example' version='1.0'/>")
    assert head.startswith(b"<stream:stream") and b'to="cx.example"' in head
    assert client_message(f"<close xmlns='{FRAMING}'/>") == STREAM_CLOSE
    assert client_message("<message xmlns='jabber:client' to='a@cx.example'><body>x</body>"
                          "</message>") == b'<message to="a@cx.example"><body>x</body></message>'


@pytest.mark.parametrize("bad", ["<a><b></a>", "<a/><b/>", "text",
                                 "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>",
                                 "<!DOCTYPE a [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><a>&e;</a>"])
def test_client_message_must_be_one_element(bad: str) -> None:
    with pytest.raises(FramingError):
        client_message(bad)


def test_server_output_split_into_documents_across_a_restart() -> None:
    f = ServerFramer()
    out = f.feed(HEADER + b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:"
                 b"xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>")
    out += f.feed(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    out += f.feed(HEADER.replace(b"s1", b"s2")[21:] + b"<stream:features/>")
    out += f.feed(b"<message to='a@cx.example'><bo")
    out += f.feed(b"dy>hi</body></message>" + STREAM_CLOSE)
    docs = [fromstring(m) for m in out]  # each one parses alone
    assert [d.tag for d in docs] == [
        f"{{{FRAMING}}}open", "{http://etherx.jabber.org/streams}features",
        "{urn:ietf:params:xml:ns:xmpp-sasl}success", f"{{{FRAMING}}}open",
        "{http://etherx.jabber.org/streams}features", "{jabber:client}message",
        f"{{{FRAMING}}}close"]
    assert docs[0].get("id") == "s1" and docs[3].get("id") == "s2"
    assert docs[5].findtext("{jabber:client}body") == "hi"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=200))
def test_any_body_text_round_trips(text: str) -> None:
    from xml.etree.ElementTree import Element, SubElement

    from xmpp.proto.serializer import to_bytes
    msg = Element("{jabber:client}message", {"to": "a@cx.example"})
    SubElement(msg, "{jabber:client}body").text = text
    f = ServerFramer()
    out = f.feed(HEADER + to_bytes(msg))
    assert fromstring(out[-1]).findtext("{jabber:client}body") == text
    back = client_message(out[-1])
    assert fromstring(b"<w xmlns='jabber:client'>" + back + b"</w>").findtext(
        "{jabber:client}message/{jabber:client}body") == text
