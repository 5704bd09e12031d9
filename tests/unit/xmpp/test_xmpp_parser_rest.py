"""Idle streams give their expat parser back between stanzas (``release()``, called by the
driver that owns the clock) and get a primed one when bytes arrive again (memory per idle
session); nothing a client sends may notice, and no stream touches another's parser."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from xmpp.proto.events import StanzaReceived, StreamClosed, StreamFailed, StreamOpened
from xmpp.proto.parser import StreamParser

from .link import HEADER

# A header declaring an extra prefix that stanzas use, a non-default streams prefix.
ODD_HEADER = (b"<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams' "
              b"xmlns:x='urn:example:x&amp;y' to='example.com' version='1.0' xml:lang='de'>")
MSG = (b"<message to='a@example.com' type='chat' xml:lang='en'><body>hi &amp; bye</body>"
       b"<x:data k='v'>t<x:inner/></x:data></message>")


def released(p: StreamParser) -> bool:
    return p._p is None


def dump(events: list[Any]) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, StanzaReceived):
            out.append(ET.tostring(e.element, encoding="unicode"))
        elif isinstance(e, StreamFailed):
            out.append(f"failed:{e.error.condition}")
        else:
            out.append(type(e).__name__)
    return out


def test_idle_stream_releases_and_rebuilds_with_header_namespaces() -> None:
    p = StreamParser()
    assert isinstance(p.feed(ODD_HEADER)[0], StreamOpened)
    first = dump(p.feed(MSG))
    p.release()
    assert released(p)
    [ev] = p.feed(MSG)
    assert dump([ev]) == first
    assert isinstance(ev, StanzaReceived)
    assert ev.element[1].tag == "{urn:example:x&y}data"  # the x: prefix still resolves
    assert released(p) is False
    assert [type(e) for e in p.feed(b"</s:stream>")] == [StreamClosed]


def test_release_of_one_stream_leaves_the_others_alone() -> None:
    a, b = StreamParser(), StreamParser()
    a.feed(HEADER + b"<presence/>")
    b.feed(HEADER + b"<presence/>")
    held = b._p
    assert a.release() and released(a)
    assert b._p is held
    assert dump(b.feed(b"<presence/>")) == ["<ns0:presence xmlns:ns0=\"jabber:client\" />"]


def test_unfinished_stanza_keeps_its_parser() -> None:
    p = StreamParser()
    p.feed(HEADER + b"<message><body>hel")
    assert not p.release()
    assert not released(p)
    [ev] = p.feed(b"lo</body></message>")
    assert isinstance(ev, StanzaReceived) and ev.element[0].text == "hello"


def test_unfinished_start_tag_after_a_stanza_keeps_its_parser() -> None:
    # The chunk ends in ">" inside an attribute value: expat holds "<iq a='>" unparsed.
    p = StreamParser()
    events = p.feed(HEADER + b"<presence/><iq a='>")
    assert [type(e) for e in events] == [StreamOpened, StanzaReceived]
    assert not p.release()
    assert not released(p)
    [ev] = p.feed(b"' type='get' id='1'/>")
    assert ev.element.get("a") == ">"  # type: ignore[union-attr]


def test_unfinished_end_tag_keeps_its_parser() -> None:
    p = StreamParser()
    p.feed(HEADER + b"<message><body>x</body></mess")
    assert not p.release()
    assert not released(p)
    assert [type(e) for e in p.feed(b"age>")] == [StanzaReceived]
    p.release()
    assert released(p)  # the end tag that began in the earlier chunk is complete


def test_keepalives_after_a_stanza_do_not_prevent_release() -> None:
    p = StreamParser()
    p.feed(HEADER + b"<presence/>")
    assert p.feed(b" ") == [] and p.feed(b"\n") == []
    p.release()
    assert released(p)
    assert p.feed(b"\t") == []  # a keepalive rebuilds the parser, still at rest
    p.release()
    assert released(p)
    assert dump(p.feed(b"<presence/>")) == ["<ns0:presence xmlns:ns0=\"jabber:client\" />"]


def test_header_alone_keeps_its_parser() -> None:
    p = StreamParser()
    p.feed(HEADER)
    assert not p.release()
    assert not released(p)


def test_text_between_stanzas_after_rebuild_is_still_bad_format() -> None:
    p = StreamParser()
    p.feed(HEADER + b"<presence/>")
    p.release()
    assert released(p)
    assert dump(p.feed(b"junk")) == ["failed:bad-format"]


def test_size_limit_and_restart_remainder_after_rebuild() -> None:
    p = StreamParser(max_stanza_bytes=64)
    p.feed(HEADER + b"<presence/>")
    p.release()
    events = p.feed(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>" + HEADER)
    assert isinstance(events[0], StanzaReceived)
    assert p.remainder_after(0) == HEADER  # positions count from the rebuilt parser
    p = StreamParser(max_stanza_bytes=64)
    p.feed(HEADER + b"<presence/>")
    p.release()
    assert dump(p.feed(b"<message><body>" + b"a" * 100 + b"</body></message>")) == [
        "failed:policy-violation"]
    p.release()
    assert released(p)  # a dead stream keeps nothing


def test_reset_after_release_starts_a_new_document() -> None:
    p = StreamParser()
    p.feed(HEADER + b"<presence/>")
    p.release()
    p.reset()
    assert [type(e) for e in p.feed(HEADER)] == [StreamOpened]


STANZAS = [b"<message to='a@b'><body>1 &lt; 2</body></message>", b"<presence/>",
           b" ", b"<iq type='get' id='q'><query xmlns='jabber:iq:roster'/></iq>",
           b"<message><x:data a='&apos;'>z</x:data></message>", b"\n\t"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(STANZAS), min_size=1, max_size=8),
       st.lists(st.integers(0, 400), max_size=12),
       st.lists(st.booleans(), min_size=20, max_size=20))
def test_releases_at_any_chunk_boundary_change_nothing(
        stanzas: list[bytes], cuts: list[int], sweeps: list[bool]) -> None:
    data = ODD_HEADER + b"".join(stanzas) + b"</s:stream>"
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    plain, swept = StreamParser(), StreamParser()
    expected: list[str] = []
    got: list[str] = []
    for i, chunk in enumerate(chunks):
        expected += dump(plain.feed(chunk))
        if sweeps[i % len(sweeps)]:
            swept.release()
        got += dump(swept.feed(chunk))
    assert got == expected
    assert expected[0] == "StreamOpened" and expected[-1] == "StreamClosed"
