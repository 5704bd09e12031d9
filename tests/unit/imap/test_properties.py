"""Property tests: the core never raises on any input; round trips for the wire forms."""

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrelay.imap.proto import (
    NEED_DATA,
    CommandReceived,
    ConnectionClosed,
    ImapServerCore,
    Login,
    ParseError,
    SequenceSet,
    decode_mutf7,
    encode_mutf7,
    parse_command,
)
from mailrelay.mime import imap_string, parse_message, render_bodystructure, render_envelope

from .conftest import Link

_NO_SURROGATES: Any = ("Cs",)

_WORDS = st.sampled_from(
    [
        b"a1",
        b" ",
        b"LOGIN",
        b"SELECT",
        b"FETCH",
        b"UID",
        b"SEARCH",
        b"STORE",
        b"APPEND",
        b"BODY[",
        b"]",
        b"(",
        b")",
        b"{",
        b"}",
        b"{3}",
        b"{2+}",
        b"~{1}",
        b"\r\n",
        b"\n",
        b'"',
        b"\\",
        b"*",
        b"1:*",
        b"$",
        b",",
        b"INBOX",
        b"NIL",
        b"<0.5>",
        b"HEADER.FIELDS",
        b"IDLE",
        b"DONE",
        b"AUTHENTICATE",
        b"PLAIN",
        b"=",
        b"x",
        b"\x00",
        b"\xff",
        b"OR",
        b"NOT",
        b"SINCE",
        b"1-Jan-2024",
        b"+FLAGS",
        b"\\Seen",
        b"LIST",
        b'""',
        b"%",
        b"RETURN",
    ]
)
_TEXT = st.lists(st.one_of(_WORDS, st.binary(max_size=8)), max_size=40).map(b"".join)


def drive(data: bytes, chunk: int) -> None:
    core = ImapServerCore()
    for i in range(0, len(data), chunk):
        core.receive_data(data[i : i + chunk])
        for _ in range(1000):
            ev = core.next_event()
            if ev is NEED_DATA:
                break
            if isinstance(ev, CommandReceived):
                # play the server: accept everything so states move forward
                from mailrelay.imap.proto import Continuation, Tagged

                if ev.command.name in ("IDLE", "AUTHENTICATE"):
                    core.send(Continuation(""))
                else:
                    core.send(Tagged(ev.command.tag, "OK", "ok"))
            if isinstance(ev, ConnectionClosed):
                return
        core.data_to_send()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT, st.integers(1, 16))
def test_core_never_raises(data: bytes, chunk: int) -> None:
    drive(data, chunk)


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_core_never_raises_on_random_bytes(data: bytes) -> None:
    drive(data, 7)


@settings(max_examples=300)
@given(st.lists(st.one_of(_WORDS, st.binary(max_size=6)), min_size=1, max_size=30))
def test_parser_raises_only_parse_error(words: list[bytes]) -> None:
    line = b"t " + b"".join(words)
    chunks = line.replace(b"\r", b"").split(b"\n")
    # interleave literals where the grammar would put them
    full: list[bytes] = []
    for i, c in enumerate(chunks):
        if i:
            full.append(b"lit")
        full.append(c)
    try:
        parse_command(full)
    except ParseError:
        pass


_ASTR = st.text(
    st.characters(min_codepoint=1, max_codepoint=0x10FFFF, blacklist_categories=_NO_SURROGATES),
    max_size=30,
)


@given(_ASTR, _ASTR)
def test_login_round_trip_quoted_or_literal(user: str, password: str) -> None:
    link = Link()
    u, p = imap_string(user.encode()), imap_string(password.encode())
    data = b"a LOGIN " + u + b" " + p + b"\r\n"
    evs = link.send(data)
    assert evs == [CommandReceived(Login("a", user, password))], link.out()


@given(st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=30))
def test_seqset_round_trip(numbers: list[int]) -> None:
    s = SequenceSet.from_numbers(numbers)
    again = SequenceSet.parse(str(s))
    assert again == s
    assert list(again.filter(sorted(set(numbers)), max(numbers))) == sorted(set(numbers))


@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(1, 10**6)), st.one_of(st.none(), st.integers(1, 10**6))
        ),
        min_size=1,
        max_size=10,
    )
)
def test_seqset_text_round_trip(ranges) -> None:
    s = SequenceSet(tuple(ranges))
    assert SequenceSet.parse(str(s)).bounds(10**6) == s.bounds(10**6)


@given(st.text(st.characters(blacklist_categories=_NO_SURROGATES), max_size=40))
def test_mutf7_round_trip(name: str) -> None:
    wire = encode_mutf7(name)
    assert wire.isascii() and all(0x20 <= ord(c) <= 0x7E for c in wire)
    assert decode_mutf7(wire) == name


@settings(max_examples=200)
@given(st.binary(max_size=2000))
def test_mime_never_raises(raw: bytes) -> None:
    s = parse_message(raw)
    render_envelope(s["env"])
    render_bodystructure(s["body"])


_MIME_WORDS = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Type: text/plain; charset*0*=utf-8''%E4; charset*1=x\r\n",
        b"\r\n",
        b"--b\r\n",
        b"--b--\r\n",
        b'From: "a" <b@c>, (c) d@e;\r\n',
        b" folded\r\n",
        b"Subject: =?x?B?AA==?=\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b'Content-Disposition: attachment; filename="x',
        b"To: g: a@b, ;\r\n",
        b"body\r\n",
        b"\n",
        b":",
        b"<",
        b"(",
        b'"',
    ]
)


@settings(max_examples=300)
@given(st.lists(_MIME_WORDS, max_size=40).map(b"".join))
def test_mime_structured_never_raises(raw: bytes) -> None:
    from mailrelay.mime import section_bytes

    s = parse_message(raw)
    render_envelope(s["env"])
    out = render_bodystructure(s["body"])
    assert out.count(b"(") >= 1
    for sec in ("1", "1.1", "1.MIME", "2.HEADER", "TEXT", "HEADER.FIELDS (FROM)"):
        section_bytes(raw, s, sec)
