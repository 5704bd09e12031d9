"""The header-sync ENVELOPE renderer answers byte for byte what mailrelay.mime renders."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailrelay.imap.fetch import envelope_only, render_envelope_fast
from mailrelay.imap.proto.commands import FetchAttr
from mailrelay.mime import parse_message, render_envelope

text = st.one_of(st.none(), st.text(alphabet=st.characters(max_codepoint=255), max_size=40))
addr = st.lists(text, min_size=4, max_size=4)
addrs = st.one_of(st.none(), st.lists(addr, max_size=3))


@given(st.tuples(text, text, addrs, addrs, addrs, addrs, addrs, addrs, text, text))
def test_same_bytes_as_mime_renderer(env: tuple) -> None:
    assert render_envelope_fast(list(env)) == render_envelope(list(env))


def test_real_message() -> None:
    raw = (b'From: "Zhang, San" <z@x.example>\r\nTo: a@b, "q\\"x" <c@d>\r\n'
           b"Subject: =?utf-8?b?5L2g5aW9?=\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n")
    env = parse_message(raw)["env"]
    assert render_envelope_fast(env) == render_envelope(env)
    big = ["x" * 2000, "é\r\n", None, None, None, None, None, None, None, None]
    assert render_envelope_fast(big) == render_envelope(big)


def test_envelope_only() -> None:
    assert envelope_only([FetchAttr("UID"), FetchAttr("FLAGS"), FetchAttr("ENVELOPE")])
    assert not envelope_only([FetchAttr("ENVELOPE"), FetchAttr("BODYSTRUCTURE")])
    assert not envelope_only([FetchAttr("FLAGS")])


def test_rfc822_header_and_text_load_the_structure() -> None:
    from mailrelay.imap.fetch import needs_structure

    # fetchmail fetches RFC822.HEADER alone: the split point comes from the structure
    assert needs_structure([FetchAttr("RFC822.HEADER")])
    assert needs_structure([FetchAttr("RFC822.TEXT")])
    assert not needs_structure([FetchAttr("RFC822.SIZE"), FetchAttr("FLAGS")])
