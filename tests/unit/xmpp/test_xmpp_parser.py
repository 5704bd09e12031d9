"""The restricted, incremental XML stream parser (RFC 6120 §4, §11)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xmpp.proto.events import StanzaReceived, StreamClosed, StreamFailed, StreamOpened
from xmpp.proto.parser import StreamParser

from .link import HEADER

MSG = (b"<message to='juliet@example.com/balcony' from='romeo@example.net/orchard' "
       b"type='chat' id='k1' xml:lang='en'><body>Art thou &amp; &lt;not&gt; Romeo?</body>"
       b"<request xmlns='urn:xmpp:receipts'/><x xmlns='urn:x' a='&quot;q&apos;'>t<y/>tail</x>"
       b"</message>")
STREAM = HEADER + b"\n " + MSG + b"<presence/>\t" + b"</stream:stream>"


def parse(data: bytes, **kw: Any) -> list[Any]:
    return StreamParser(**kw).feed(data)


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


def failure(data: bytes, **kw: int) -> str:
    events = parse(data, **kw)
    assert isinstance(events[-1], StreamFailed), events
    return events[-1].error.condition


def check_stream(events: list) -> None:
    assert kinds(events) == ["StreamOpened", "StanzaReceived", "StanzaReceived", "StreamClosed"]
    opened = events[0]
    assert opened == StreamOpened(to="example.com", version="1.0")
    msg = events[1].element
    assert msg.tag == "{jabber:client}message"
    assert msg.attrib == {"to": "juliet@example.com/balcony", "from": "romeo@example.net/orchard",
                          "type": "chat", "id": "k1",
                          "{http://www.w3.org/XML/1998/namespace}lang": "en"}
    assert msg.findtext("{jabber:client}body") == "Art thou & <not> Romeo?"
    assert msg.find("{urn:xmpp:receipts}request") is not None
    x = msg.find("{urn:x}x")
    assert x is not None and x.get("a") == "\"q'" and x.text == "t"
    assert x[0].tag == "{urn:x}y" and x[0].tail == "tail"
    assert events[2].element.tag == "{jabber:client}presence"


def test_whole_stream_in_one_chunk() -> None:
    check_stream(StreamParser().feed(STREAM))


def test_one_byte_at_a_time() -> None:
    parser = StreamParser()
    events: list[Any] = []
    for i in range(len(STREAM)):
        events += parser.feed(STREAM[i:i + 1])
    check_stream(events)


def test_multibyte_utf8_split_across_chunks() -> None:
    data = HEADER + "<message><body>Grüße 😀 ok</body></message>".encode()
    parser = StreamParser()
    events: list[Any] = []
    for i in range(len(data)):
        events += parser.feed(data[i:i + 1])
    assert events[1].element.findtext("{jabber:client}body") == "Grüße 😀 ok"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=12))
def test_any_chunk_boundaries(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    parser = StreamParser()
    events: list[Any] = []
    prev = 0
    for p in [*points, len(STREAM)]:
        events += parser.feed(STREAM[prev:p])
        prev = p
    check_stream(events)


def test_whitespace_keepalives_are_ignored() -> None:
    parser = StreamParser()
    assert kinds(parser.feed(HEADER)) == ["StreamOpened"]
    for _ in range(3):
        assert parser.feed(b" ") == []
        assert parser.feed(b"\n\r\t") == []
    assert kinds(parser.feed(b"<presence/>")) == ["StanzaReceived"]


def test_text_between_stanzas_is_bad_format() -> None:
    assert failure(HEADER + b"hello") == "bad-format"


@pytest.mark.parametrize("data", [
    b"<!DOCTYPE stream>",
    b"<?xml version='1.0'?><!DOCTYPE s [<!ENTITY a 'b'>]>",
    HEADER + b"<!-- a comment -->",
    HEADER + b"<message><!-- in a stanza --></message>",
    b"<?xml-stylesheet href='x'?>",
    HEADER + b"<?pi data?>",
    HEADER + b"<message><body>&custom;</body></message>",
    HEADER + b"<message to='&custom;'/>",
])
def test_restricted_xml(data: bytes) -> None:
    """RFC 6120 §11.1: no DTD, entity, comment or processing instruction."""
    assert failure(data) == "restricted-xml"


def test_billion_laughs_is_refused_before_any_expansion() -> None:
    lol = (b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
           + b"".join(f"<!ENTITY lol{i} '{('&lol' + str(i - 1) + ';') * 10}'>".encode()
                      for i in range(1, 10)).replace(b"&lol0;", b"&lol;")
           + b"]><stream:stream xmlns='jabber:client' "
             b"xmlns:stream='http://etherx.jabber.org/streams'>&lol9;")
    assert failure(lol) == "restricted-xml"


def test_predefined_and_character_references_are_allowed() -> None:
    events = parse(HEADER + b"<m>&amp;&lt;&gt;&quot;&apos;&#65;&#x42;</m>")
    assert events[1].element.text == "&<>\"'AB"


@pytest.mark.parametrize("data", [
    HEADER + b"<message><body></message>",
    HEADER + b"<message a='1' a='2'/>",
    HEADER + b"<message><x:y/></message>",
    HEADER + b"<message>\x00</message>",
    HEADER + b"<message>\xff\xfe</message>",
    b"not xml at all",
    HEADER + b"<?xml version='1.0'?>",
])
def test_not_well_formed(data: bytes) -> None:
    assert failure(data) == "not-well-formed"


def test_dead_after_failure() -> None:
    parser = StreamParser()
    assert isinstance(parser.feed(HEADER + b"<a><b></a>")[-1], StreamFailed)
    assert parser.feed(b"<presence/>") == []


@pytest.mark.parametrize("data", [
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://wrong/streams'>",
    b"<stream xmlns='jabber:client'>",
    b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
    b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>",
])
def test_invalid_namespace(data: bytes) -> None:
    assert failure(data) == "invalid-namespace"


def test_server_role_content_namespace() -> None:
    data = b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>"
    events = parse(data + b"<message/>", content_ns="jabber:server")
    assert events[1].element.tag == "{jabber:server}message"


def test_other_root_element_is_bad_format() -> None:
    assert failure(b"<html xmlns='jabber:client'/>") == "bad-format"


def test_non_utf8_declaration_is_unsupported_encoding() -> None:
    data = b"<?xml version='1.0' encoding='ISO-8859-1'?>" + HEADER[21:]
    assert failure(data) == "unsupported-encoding"


def test_stream_attributes() -> None:
    data = (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
            b" from='juliet@example.com' to='example.com' version='1.0' xml:lang='de' id='x'>")
    assert StreamParser().feed(data) == [StreamOpened(
        to="example.com", from_="juliet@example.com", version="1.0", lang="de", id="x")]


def test_stanza_size_limit_complete_stanza() -> None:
    big = HEADER + b"<message><body>" + b"x" * 2000 + b"</body></message>"
    assert failure(big, max_stanza_bytes=1000) == "policy-violation"
    assert kinds(StreamParser(max_stanza_bytes=4000).feed(big)) == [
        "StreamOpened", "StanzaReceived"]


def test_stanza_size_limit_unfinished_stanza_is_cut_early() -> None:
    parser = StreamParser(max_stanza_bytes=1000)
    parser.feed(HEADER + b"<message><body>")
    events: list[Any] = []
    for _ in range(5):
        events += parser.feed(b"y" * 300)
    assert kinds(events) == ["StreamFailed"]
    assert events[0].error.condition == "policy-violation"


def test_huge_single_chunk_is_cut_without_parsing_it_all() -> None:
    events = parse(HEADER + b"<message><body>" + b"z" * 5_000_000, max_stanza_bytes=10_000)
    assert events[-1].error.condition == "policy-violation"


def test_size_limit_can_be_raised_after_auth() -> None:
    parser = StreamParser(max_stanza_bytes=100)
    parser.feed(HEADER)
    parser.max_stanza_bytes = 10_000
    assert kinds(parser.feed(b"<message><body>" + b"x" * 500 + b"</body></message>")) == [
        "StanzaReceived"]


def test_depth_limit() -> None:
    deep = HEADER + b"<message>" + b"<a>" * 100 + b"</a>" * 100 + b"</message>"
    assert failure(deep, max_depth=20) == "policy-violation"
    shallow = HEADER + b"<message>" + b"<a>" * 10 + b"</a>" * 10 + b"</message>"
    assert kinds(StreamParser(max_depth=20).feed(shallow))[-1] == "StanzaReceived"


def test_reset_starts_a_new_document() -> None:
    parser = StreamParser()
    parser.feed(HEADER + b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>x</auth>")
    parser.reset()
    events = parser.feed(HEADER + b"<presence/>")
    assert kinds(events) == ["StreamOpened", "StanzaReceived"]


def test_remainder_after_element_for_pipelined_restart() -> None:
    parser = StreamParser()
    tail = HEADER + b"<presence/>"
    events = parser.feed(HEADER + b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                         b"mechanism='a>b'/>" + tail)
    assert isinstance(events[1], StanzaReceived)
    assert parser.remainder_after(1) == tail
    # the old document cannot take a second XML declaration: the tail is for a new one
    assert isinstance(events[-1], StreamFailed)


def test_stream_close() -> None:
    parser = StreamParser()
    events = parser.feed(HEADER + b"</stream:stream>")
    assert isinstance(events[-1], StreamClosed)


def test_elements_are_plain_elementtree() -> None:
    events = parse(HEADER + MSG)
    assert isinstance(events[1].element, ET.Element)


@pytest.mark.parametrize(("element", "after"), [
    (b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='a>b'/>", b""),
    (b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>", b"</stream:stream>"),
    (b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>abc</response >", b""),
    (b"<r:response xmlns:r='urn:ietf:params:xml:ns:xmpp-sasl'><x/></r:response>", b" "),
])
def test_remainder_variants(element: bytes, after: bytes) -> None:
    parser = StreamParser()
    parser.feed(HEADER)
    tail = after + b"<presence/>"
    events = parser.feed(element + tail)
    assert isinstance(events[0], StanzaReceived)
    assert parser.remainder_after(0) == tail


def test_remainder_when_end_tag_spans_chunks() -> None:
    parser = StreamParser()
    parser.feed(HEADER + b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>abc</resp")
    events = parser.feed(b"onse><presence/>")
    assert parser.remainder_after(0) == b"<presence/>"
    assert isinstance(events[0], StanzaReceived)


def test_whitespace_before_a_restarted_stream_is_ignored() -> None:
    parser = StreamParser()
    assert parser.feed(b" \n") == []
    assert kinds(parser.feed(b"\t" + HEADER)) == ["StreamOpened"]


# -- the current top-level element is bounded in every state (issue 12, rule 15) -------------

@pytest.mark.parametrize("prefix", [b"", HEADER, HEADER + b"<presence/>"])
def test_unfinished_start_tag_hits_the_limit(prefix: bytes) -> None:
    # `<message x='AAAA…` never closed: no element is started, yet its bytes count.
    p = StreamParser(max_stanza_bytes=10_000)
    events = [e for e in p.feed(prefix + b"<message x='") if isinstance(e, StreamFailed)]
    fed = len(prefix) + 12
    while not events:
        events = p.feed(b"A" * 4096)
        fed += 4096
        assert fed < 10_000 + len(prefix) + 2 * 4096, "the limit never hit"
    assert kinds(events)[-1] == "StreamFailed"
    assert events[-1].error.condition == "policy-violation"
    assert p.feed(b"A" * 4096) == []  # dead: nothing more is parsed


def test_unfinished_header_hits_the_limit() -> None:
    assert failure(b"<stream:stream xmlns='jabber:client' a='" + b"A" * 20_000,
                   max_stanza_bytes=10_000) == "policy-violation"


def test_one_long_token_hits_the_token_bound_below_the_stanza_limit() -> None:
    p = StreamParser(max_stanza_bytes=1 << 20, max_token_bytes=4096)
    p.feed(HEADER)
    events = p.feed(b"<message><x a='" + b"B" * 5000)
    assert kinds(events) == ["StreamFailed"] and events[0].error.condition == "policy-violation"


def test_long_text_is_not_a_long_token() -> None:
    p = StreamParser(max_stanza_bytes=1 << 20, max_token_bytes=4096)
    p.feed(HEADER + b"<message><body>")
    for _ in range(30):
        assert p.feed(b"t" * 1000) == []
    assert kinds(p.feed(b"</body></message>")) == ["StanzaReceived"]


def test_keepalives_between_stanzas_never_add_up() -> None:
    p = StreamParser(max_stanza_bytes=100)
    p.feed(HEADER + b"<presence/>")
    for _ in range(300):
        assert p.feed(b" ") == []
    assert kinds(p.feed(b"<presence/>")) == ["StanzaReceived"]


def test_header_does_not_count_against_the_first_stanza() -> None:
    p = StreamParser(max_stanza_bytes=len(b"<presence/>") + 2)
    assert kinds(p.feed(HEADER + b"<presence/>")) == ["StreamOpened", "StanzaReceived"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=700))
def test_bytes_held_never_exceed_the_limit_plus_one_chunk(junk: bytes, chunk: int) -> None:
    """Whatever follows the header, the parser fails before it has taken more than the
    limit plus one chunk of bytes without completing an element."""
    limit = 500
    p = StreamParser(max_stanza_bytes=limit, max_token_bytes=limit)
    p.feed(HEADER)
    data = b"<message a='" + junk.replace(b"'", b"") + b"A" * 2000
    since = 0
    for i in range(0, len(data), chunk):
        events = p.feed(data[i:i + chunk])
        since = 0 if events else since + len(data[i:i + chunk])
        if any(isinstance(e, StreamFailed) for e in events) or p._dead:
            break
        assert since <= limit + chunk
    assert p._dead
